//! Pebble, Let's Encrypt's ACME test server (Debian's `pebble`), as a real CA for the
//! tests, and an NSS database that makes Chromium trust its root (`certutil`, Debian's
//! `libnss3-tools`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running Pebble whose DNS-01 lookups go to `dns_server`.
pub struct Pebble {
    child: Child,
    dir: tempfile::TempDir,
    /// The ACME directory URL.
    pub directory: String,
    management: String,
}

impl Pebble {
    /// Starts Pebble on loopback with a certificate of our own for its HTTPS API
    /// (`https_ca()`), validating DNS-01 challenges against `dns_server` (`host:port`).
    pub fn start(dns_server: &str) -> Pebble {
        let dir = tempfile::tempdir().expect("pebble dir");
        let key_pair = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress("127.0.0.1".parse().expect("ip")));
        let certificate = params.self_signed(&key_pair).expect("pebble's certificate");
        std::fs::write(dir.path().join("api.pem"), certificate.pem()).expect("write");
        std::fs::write(dir.path().join("api.key"), key_pair.serialize_pem()).expect("write");
        let (api, management) = (crate::free_port(), crate::free_port());
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{api}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": dir.path().join("api.pem"),
            "privateKey": dir.path().join("api.key"),
            "httpPort": crate::free_port(),
            "tlsPort": crate::free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        std::fs::write(dir.path().join("config.json"), config.to_string()).expect("write");
        let log = std::fs::File::create(dir.path().join("pebble.log")).expect("log");
        let child = Command::new("pebble")
            .arg("-config")
            .arg(dir.path().join("config.json"))
            .args(["-dnsserver", dns_server])
            // Validate at once, accept any nonce on the first try, never reuse an
            // authorization (each order proves the name again).
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!("cannot start pebble ({error}); install Debian's pebble")
            });
        let pebble = Pebble {
            child,
            directory: format!("https://127.0.0.1:{api}/dir"),
            management: format!("https://127.0.0.1:{management}"),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while pebble.api_client().get(&pebble.directory).send().is_err() {
            assert!(
                Instant::now() < deadline,
                "pebble did not start: {}",
                pebble.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        pebble
    }

    /// The CA of Pebble's own HTTPS API (what the ACME client must trust to reach it).
    pub fn https_ca(&self) -> PathBuf {
        self.dir.path().join("api.pem")
    }

    fn api_client(&self) -> reqwest::blocking::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let pem = std::fs::read(self.https_ca()).expect("api.pem");
        reqwest::blocking::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("pem"))
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client")
    }

    /// The root that signs the certificates Pebble issues (a new one each start).
    pub fn issuing_root(&self) -> String {
        self.api_client()
            .get(format!("{}/roots/0", self.management))
            .send()
            .and_then(|response| response.text())
            .expect("pebble's root")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test CA of our own (rcgen) and one server certificate it issued for `names` (DNS
/// names or IP addresses): (CA PEM, certificate PEM, key PEM). For a server the test
/// starts with a certificate file, e.g. the registry on `kasip.test`.
pub fn test_ca_issuing(names: &[&str]) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "KasipTech test CA");
    let ca_pem = ca_params.self_signed(&ca_key).expect("CA").pem();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("key");
    let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
    let params = CertificateParams::new(names).expect("params");
    let certificate = params.signed_by(&key, &issuer).expect("certificate");
    (ca_pem, certificate.pem(), key.serialize_pem())
}

/// A `$HOME` whose NSS database (`.pki/nssdb`, where Chromium on Linux looks) trusts
/// `root_pem` to identify web sites, and nothing else beyond Chromium's own roots.
pub fn nss_home_trusting(root_pem: &str) -> tempfile::TempDir {
    nss_home_trusting_all(&[root_pem])
}

/// `nss_home_trusting` for several roots (e.g. Pebble's and a test CA's).
pub fn nss_home_trusting_all(root_pems: &[&str]) -> tempfile::TempDir {
    let home = tempfile::tempdir().expect("home");
    let database = home.path().join(".pki/nssdb");
    std::fs::create_dir_all(&database).expect("nssdb dir");
    let certutil = |args: &[&str]| {
        let output = Command::new("certutil")
            .args(args)
            .output()
            .unwrap_or_else(|error| {
                panic!("cannot run certutil ({error}); install Debian's libnss3-tools")
            });
        assert!(
            output.status.success(),
            "certutil {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let db = format!("sql:{}", database.display());
    certutil(&["-N", "--empty-password", "-d", &db]);
    for (index, root_pem) in root_pems.iter().enumerate() {
        let root = home.path().join(format!("root-{index}.pem"));
        std::fs::write(&root, root_pem).expect("root");
        certutil(&[
            "-A",
            "-d",
            &db,
            "-n",
            &format!("test root {index}"),
            "-t",
            "C,,",
            "-i",
            path_str(&root),
        ]);
    }
    home
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}
