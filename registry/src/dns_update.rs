//! The agents' zone kept on an operator's own DNS server (BIND, Knot, PowerDNS…) by
//! RFC 2136 dynamic updates signed with TSIG (RFC 8945), instead of or besides the
//! registry's own server. Each change of a name sends one UPDATE that replaces the
//! name's A, AAAA and `_acme-challenge` TXT record sets with what the store holds.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use hickory_proto::op::{Message, OpCode, Query, UpdateMessage};
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_proto::rr::{DNSClass, Name, Record, RecordType, TSigner};

use crate::dns::{entry_records, EntryRecords, ZoneConfig};
use crate::store::{RegistryError, ZoneEntry};

/// Clocks of the registry and the DNS server may differ this much (RFC 8945's usual).
const TSIG_FUDGE_SECS: u16 = 300;

/// Where updates go and how they are signed.
pub struct ZoneUpdates {
    server: SocketAddr,
    zone: ZoneConfig,
    signer: TSigner,
    key_name: String,
}

impl std::fmt::Debug for ZoneUpdates {
    // The TSIG secret never reaches a log.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ZoneUpdates")
            .field("server", &self.server)
            .field("key", &self.key_name)
            .finish_non_exhaustive()
    }
}

impl ZoneUpdates {
    /// `server` is `host:port` (an address); `key_text` is the key file's contents,
    /// `ALGORITHM:NAME:BASE64-SECRET` (e.g. `hmac-sha256:kasip-registry:…`, what
    /// `tsig-keygen` prints, rearranged).
    pub fn new(server: &str, key_text: &str, zone: ZoneConfig) -> Result<Self, RegistryError> {
        let server: SocketAddr = server.parse().map_err(|_| {
            RegistryError::Usage(format!(
                "--dns-update '{server}' is not an address and port such as 192.0.2.53:53"
            ))
        })?;
        let shape = || {
            RegistryError::Usage(
                "the TSIG key file must hold ALGORITHM:NAME:SECRET, e.g. hmac-sha256:kasip-registry:BASE64 (tsig-keygen makes one)".into(),
            )
        };
        let mut parts = key_text.trim().splitn(3, ':');
        let (Some(algorithm), Some(name), Some(secret)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(shape());
        };
        let algorithm = match algorithm.to_ascii_lowercase().as_str() {
            "hmac-sha256" => TsigAlgorithm::HmacSha256,
            "hmac-sha384" => TsigAlgorithm::HmacSha384,
            "hmac-sha512" => TsigAlgorithm::HmacSha512,
            other => {
                return Err(RegistryError::Usage(format!(
                    "TSIG algorithm '{other}': use hmac-sha256, hmac-sha384 or hmac-sha512"
                )))
            }
        };
        let secret = base64::engine::general_purpose::STANDARD
            .decode(secret.trim())
            .map_err(|_| shape())?;
        let key_name = Name::from_ascii(name).map_err(|_| shape())?;
        let signer = TSigner::new(secret, algorithm, key_name, TSIG_FUDGE_SECS)
            .map_err(|error| RegistryError::Usage(format!("the TSIG key: {error}")))?;
        Ok(Self {
            server,
            zone,
            signer,
            key_name: name.to_owned(),
        })
    }

    /// Replaces what the DNS server holds for `entry`'s name with `entry`. An error says
    /// what the server answered, for the agent to retry and the operator to read.
    pub async fn publish(&self, entry: &ZoneEntry, now: i64) -> Result<(), String> {
        let origin = self.zone.origin.clone();
        let EntryRecords {
            name,
            challenge,
            records,
        } = entry_records(&self.zone, entry)
            .ok_or_else(|| format!("'{}' is not a DNS label", entry.label))?;
        let mut message = Message::query();
        message.metadata.op_code = OpCode::Update;
        message.metadata.recursion_desired = false;
        let mut zone = Query::new();
        zone.set_name(origin)
            .set_query_class(DNSClass::IN)
            .set_query_type(RecordType::SOA);
        message.add_zone(zone);
        // RFC 2136 §2.5.2: delete an RRset (class ANY, TTL 0, no data), then add.
        for (owner, kind) in [
            (&name, RecordType::A),
            (&name, RecordType::AAAA),
            (&challenge, RecordType::TXT),
        ] {
            let mut delete = Record::update0(owner.clone(), 0, kind);
            delete.dns_class = DNSClass::ANY;
            message.add_update(delete.into_record_of_rdata());
        }
        for record in records {
            message.add_update(record);
        }
        message
            .finalize(&self.signer, u64::try_from(now).unwrap_or_default())
            .map_err(|error| format!("cannot sign the update: {error}"))?;
        let bytes = message
            .to_vec()
            .map_err(|error| format!("cannot encode the update: {error}"))?;
        let answer = self.exchange(&bytes).await?;
        let answer = Message::from_vec(&answer)
            .map_err(|error| format!("the DNS server {} answered garbage: {error}", self.server))?;
        if answer.metadata.id != message.metadata.id {
            return Err(format!(
                "the DNS server {} answered another query",
                self.server
            ));
        }
        match answer.metadata.response_code {
            hickory_proto::op::ResponseCode::NoError => Ok(()),
            code => Err(format!(
                "the DNS server {} refused the update of {name} ({code:?}): check that key {} may update zone {}",
                self.server,
                self.key_name,
                self.zone.domain()
            )),
        }
    }

    /// One UDP exchange, tried three times.
    async fn exchange(&self, bytes: &[u8]) -> Result<Vec<u8>, String> {
        let local = if self.server.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        };
        let socket = tokio::net::UdpSocket::bind(local)
            .await
            .map_err(|error| format!("cannot open a UDP socket: {error}"))?;
        socket
            .connect(self.server)
            .await
            .map_err(|error| format!("cannot reach the DNS server {}: {error}", self.server))?;
        let mut buffer = vec![0u8; 4096];
        for _ in 0..3 {
            socket.send(bytes).await.map_err(|error| {
                format!("cannot send to the DNS server {}: {error}", self.server)
            })?;
            if let Ok(Ok(length)) =
                tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut buffer)).await
            {
                buffer.truncate(length);
                return Ok(buffer);
            }
        }
        Err(format!(
            "the DNS server {} did not answer the update",
            self.server
        ))
    }
}
