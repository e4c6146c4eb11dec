//! The LAN TLS certificate: self-signed at `init`, with the names phones will use.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::device_key::KEY_FILE_MODE;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot make a TLS certificate")]
    Generate(#[source] rcgen::Error),
    #[error("cannot write {path}: {source}")]
    Write {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Writes a self-signed certificate for `names` (host names and IP addresses) valid for
/// ten years, and its private key (mode 0600). Refuses to overwrite either file.
pub fn write_self_signed(
    names: &[String],
    cert_path: &Path,
    key_path: &Path,
) -> Result<(), TlsError> {
    let mut subject_alt_names: Vec<String> = names.to_vec();
    for default in ["localhost", "127.0.0.1", "::1"] {
        if !subject_alt_names.iter().any(|name| name == default) {
            subject_alt_names.push(default.to_owned());
        }
    }
    let mut params = rcgen::CertificateParams::new(
        subject_alt_names
            .iter()
            .filter(|name| name.parse::<IpAddr>().is_err())
            .cloned()
            .collect::<Vec<_>>(),
    )
    .map_err(TlsError::Generate)?;
    for name in &subject_alt_names {
        if let Ok(address) = name.parse::<IpAddr>() {
            params
                .subject_alt_names
                .push(rcgen::SanType::IpAddress(address));
        }
    }
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "KasipTech college agent");
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2035, 12, 31);
    let key_pair = rcgen::KeyPair::generate().map_err(TlsError::Generate)?;
    let certificate = params.self_signed(&key_pair).map_err(TlsError::Generate)?;
    write_new(key_path, key_pair.serialize_pem().as_bytes(), KEY_FILE_MODE)?;
    write_new(cert_path, certificate.pem().as_bytes(), 0o644)?;
    Ok(())
}

/// The first certificate's DER in PEM text.
pub fn first_certificate_der(pem: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let start = pem.find("-----BEGIN CERTIFICATE-----")? + "-----BEGIN CERTIFICATE-----".len();
    let end = start + pem[start..].find("-----END CERTIFICATE-----")?;
    let body: String = pem[start..end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

/// One DER element: (tag, contents, rest).
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let length = rest[..count]
            .iter()
            .fold(0usize, |length, byte| (length << 8) | usize::from(*byte));
        (length, &rest[count..])
    };
    if rest.len() < length {
        return None;
    }
    Some((tag, &rest[..length], &rest[length..]))
}

/// The end of a certificate's validity (`notAfter`) as a Unix time, from its DER: for
/// the expiry warnings and `doctor`. None when the DER is not a certificate.
pub fn not_after(der: &[u8]) -> Option<i64> {
    validity(der).map(|(_, not_after)| not_after)
}

/// A certificate's TBSCertificate fields after the optional `[0] version`, from its DER:
/// serialNumber first.
fn tbs_after_version(der: &[u8]) -> Option<&[u8]> {
    let (0x30, certificate, _) = der_element(der)? else {
        return None;
    };
    let (0x30, tbs, _) = der_element(certificate)? else {
        return None;
    };
    if tbs.first() == Some(&0xa0) {
        return Some(der_element(tbs)?.2);
    }
    Some(tbs)
}

/// A certificate's validity (`notBefore`, `notAfter`) as Unix times, from its DER: the
/// renewal is timed by it. None when the DER is not a certificate.
pub fn validity(der: &[u8]) -> Option<(i64, i64)> {
    let mut tbs = tbs_after_version(der)?;
    // serialNumber, signature algorithm, issuer, then validity.
    for _ in 0..3 {
        tbs = der_element(tbs)?.2;
    }
    let (0x30, validity, _) = der_element(tbs)? else {
        return None;
    };
    let (before_tag, before, after_not_before) = der_element(validity)?;
    let (after_tag, after, _) = der_element(after_not_before)?;
    Some((asn1_time(before_tag, before)?, asn1_time(after_tag, after)?))
}

/// The DNS names of a certificate's subjectAltName extension, from its DER: which name
/// a certificate on disk is for. Empty when the DER is not a certificate or has none.
pub fn dns_names(der: &[u8]) -> Vec<String> {
    dns_names_of(der).unwrap_or_default()
}

fn dns_names_of(der: &[u8]) -> Option<Vec<String>> {
    const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];
    let mut tbs = tbs_after_version(der)?;
    // serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo.
    for _ in 0..6 {
        tbs = der_element(tbs)?.2;
    }
    // Optional issuerUniqueID [1] and subjectUniqueID [2], then extensions [3].
    while let Some((tag, contents, rest)) = der_element(tbs) {
        if tag != 0xa3 {
            tbs = rest;
            continue;
        }
        let (0x30, mut extensions, _) = der_element(contents)? else {
            return None;
        };
        while let Some((0x30, extension, rest)) = der_element(extensions) {
            extensions = rest;
            let (0x06, oid, mut fields) = der_element(extension)? else {
                return None;
            };
            if oid != SUBJECT_ALT_NAME {
                continue;
            }
            // Optional `critical` BOOLEAN, then the OCTET STRING holding GeneralNames.
            if fields.first() == Some(&0x01) {
                fields = der_element(fields)?.2;
            }
            let (0x04, value, _) = der_element(fields)? else {
                return None;
            };
            let (0x30, mut general_names, _) = der_element(value)? else {
                return None;
            };
            let mut names = Vec::new();
            while let Some((tag, name, rest)) = der_element(general_names) {
                general_names = rest;
                // dNSName [2] IA5String.
                if tag == 0x82 {
                    names.push(std::str::from_utf8(name).ok()?.to_owned());
                }
            }
            return Some(names);
        }
        return Some(Vec::new());
    }
    Some(Vec::new())
}

/// A UTCTime or GeneralizedTime (`Z` form, as RFC 5280 requires) as a Unix time.
fn asn1_time(tag: u8, time: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(time).ok()?.strip_suffix('Z')?;
    let (year, rest) = match tag {
        // UTCTime: YY (50-99 → 19YY), GeneralizedTime: YYYY.
        0x17 if text.len() == 12 => {
            let year: i32 = text.get(..2)?.parse().ok()?;
            (
                if year >= 50 { 1900 + year } else { 2000 + year },
                &text[2..],
            )
        }
        0x18 if text.len() == 14 => (text.get(..4)?.parse().ok()?, &text[4..]),
        _ => return None,
    };
    let field = |range: std::ops::Range<usize>| rest.get(range)?.parse::<u8>().ok();
    let date = kasip_core::Date::new(year, field(0..2)?, field(2..4)?)?;
    let (hour, minute, second) = (field(4..6)?, field(6..8)?, field(8..10)?);
    Some(
        date.days_since_epoch() * 86_400
            + i64::from(hour) * 3600
            + i64::from(minute) * 60
            + i64::from(second),
    )
}

/// SHA-256 of a certificate's DER, lowercase hex: what a kiosk pins and an admin
/// compares by eye.
pub fn fingerprint_der(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The fingerprint of the first certificate in PEM text (the served, end-entity one).
pub fn fingerprint_pem(pem: &str) -> Option<String> {
    Some(fingerprint_der(&first_certificate_der(pem)?))
}

fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), TlsError> {
    let write_error = |source| TlsError::Write {
        path: path.to_owned(),
        source,
    };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(write_error)?;
    file.write_all(contents).map_err(write_error)?;
    file.sync_all().map_err(write_error)
}

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// Accepts exactly the certificate with the expected fingerprint; with none expected
/// (first enrolment), accepts any and remembers what it saw. The handshake signature is
/// still verified, so whoever answers holds that certificate's key.
#[derive(Debug)]
pub struct PinnedCertificate {
    expected: Option<String>,
    seen: Arc<Mutex<Option<String>>>,
    provider: Arc<CryptoProvider>,
}

impl PinnedCertificate {
    /// Accepts only `expected` (lower-case hex SHA-256 of the DER), or any when None.
    pub fn new(expected: Option<String>, provider: Arc<CryptoProvider>) -> Self {
        Self {
            expected,
            seen: Arc::new(Mutex::new(None)),
            provider,
        }
    }

    /// Where the fingerprint of the last certificate presented is kept.
    pub fn seen(&self) -> Arc<Mutex<Option<String>>> {
        Arc::clone(&self.seen)
    }
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let fingerprint = fingerprint_der(end_entity.as_ref());
        *self
            .seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(fingerprint.clone());
        match &self.expected {
            Some(expected)
                if !kasip_core::constant_time_eq(expected.as_bytes(), fingerprint.as_bytes()) =>
            {
                Err(rustls::Error::General(format!(
                    "the agent's certificate has fingerprint {fingerprint}, not the pinned {expected}"
                )))
            }
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            certificate,
            signature,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            certificate,
            signature,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn fingerprint_of_pem_is_that_of_its_der() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        write_self_signed(&[], &cert, &key).expect("write");
        let pem = fs::read_to_string(&cert).expect("cert");
        let fingerprint = fingerprint_pem(&pem).expect("a certificate");
        assert_eq!(fingerprint.len(), 64);
        let body: String = pem
            .lines()
            .filter(|line| !line.starts_with("-----"))
            .collect();
        use base64::Engine;
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .expect("base64");
        assert_eq!(fingerprint, fingerprint_der(&der));
        assert_eq!(fingerprint_pem("no certificate here"), None);
        assert_eq!(
            fingerprint_pem("-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----"),
            None
        );
    }

    #[test]
    fn not_after_reads_the_validity_end_and_nothing_from_garbage() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        write_self_signed(&[], &cert, &key).expect("write");
        let der = first_certificate_der(&fs::read_to_string(&cert).expect("cert")).expect("der");
        let end = kasip_core::Date::new(2035, 12, 31)
            .expect("date")
            .days_since_epoch()
            * 86_400;
        assert_eq!(not_after(&der), Some(end));
        let start = kasip_core::Date::new(2024, 1, 1)
            .expect("date")
            .days_since_epoch()
            * 86_400;
        assert_eq!(validity(&der), Some((start, end)));
        assert_eq!(dns_names(&der), vec!["localhost".to_owned()]);
        assert!(dns_names(&der[..60]).is_empty());
        assert!(dns_names(b"").is_empty());
        assert_eq!(not_after(b""), None);
        assert_eq!(not_after(&der[..40]), None);
        assert_eq!(not_after(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        let mut flipped = der.clone();
        flipped[0] = 0x31;
        assert_eq!(not_after(&flipped), None);
    }

    #[test]
    fn writes_a_pem_pair_with_a_private_key_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        write_self_signed(&["agent.college.kz".into(), "10.0.0.5".into()], &cert, &key)
            .expect("generate");
        let pem = fs::read_to_string(&cert).expect("cert");
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
        let mode = fs::metadata(&key).expect("key").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(
            write_self_signed(&[], &cert, &key).is_err(),
            "never overwrites"
        );
    }
}
