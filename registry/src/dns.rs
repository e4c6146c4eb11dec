//! The agents' zone, served by the registry as its authoritative DNS server
//! (hickory-dns): an agent's name resolves to the LAN addresses it reported, and its
//! `_acme-challenge` TXT record carries the DNS-01 values it is proving. The zone is
//! rebuilt from the store after every change: a few thousand names take microseconds.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_server::net::runtime::{Time, TokioRuntimeProvider};
use hickory_server::proto::rr::rdata::{A, AAAA, NS, SOA, TXT};
use hickory_server::proto::rr::{LowerName, Name, RData, Record};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};

use crate::store::{RegistryError, ZoneEntry};

/// Short TTLs: a DHCP lease that moves an agent, or a challenge value, shows within a
/// minute; LAN resolvers cache the answers anyway.
const ADDRESS_TTL: u32 = 60;
const CHALLENGE_TTL: u32 = 10;
const ZONE_TTL: u32 = 3600;

/// The zone's fixed facts: its name and its name server.
#[derive(Debug, Clone)]
pub struct ZoneConfig {
    /// e.g. `agents.kasip.kz`.
    pub origin: Name,
    /// The server's own addresses, published as `ns.<zone>` (the glue the parent zone
    /// also carries); none in tests, where nothing delegates to it.
    pub name_server_addresses: Vec<IpAddr>,
}

impl ZoneConfig {
    /// Parses `--agents-zone`: a domain name of at least two labels.
    pub fn parse(zone: &str, name_server_addresses: Vec<IpAddr>) -> Result<Self, RegistryError> {
        let trimmed = zone.trim().trim_end_matches('.').to_ascii_lowercase();
        let origin = Name::from_ascii(format!("{trimmed}."))
            .ok()
            .filter(|name| name.num_labels() >= 2 && !trimmed.is_empty())
            .ok_or_else(|| {
                RegistryError::Usage(format!(
                    "--agents-zone '{zone}' is not a domain name such as agents.kasip.kz"
                ))
            })?;
        Ok(Self {
            origin,
            name_server_addresses,
        })
    }

    /// The zone's name without the final dot, as hostnames are written.
    pub fn domain(&self) -> String {
        self.origin.to_ascii().trim_end_matches('.').to_owned()
    }

    fn child(&self, label: &str) -> Option<Name> {
        Name::from_ascii(label)
            .ok()?
            .append_domain(&self.origin)
            .ok()
    }
}

/// The zone as served now; `refresh` swaps in a new one.
pub struct AgentsZone {
    config: ZoneConfig,
    catalog: RwLock<Arc<Catalog>>,
    serial: std::sync::atomic::AtomicU32,
}

impl AgentsZone {
    pub fn new(config: ZoneConfig, entries: &[ZoneEntry], now: i64) -> Self {
        // Serials grow with time, so a restarted registry never goes back.
        let serial = u32::try_from(now.max(0)).unwrap_or(u32::MAX);
        Self {
            catalog: RwLock::new(Arc::new(build(&config, entries, serial))),
            config,
            serial: std::sync::atomic::AtomicU32::new(serial),
        }
    }

    pub fn config(&self) -> &ZoneConfig {
        &self.config
    }

    /// Publishes `entries` in place of what was served.
    pub fn refresh(&self, entries: &[ZoneEntry]) {
        let serial = self
            .serial
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .wrapping_add(1);
        let catalog = Arc::new(build(&self.config, entries, serial));
        *self
            .catalog
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = catalog;
    }

    fn current(&self) -> Arc<Catalog> {
        Arc::clone(
            &self
                .catalog
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }
}

fn build(config: &ZoneConfig, entries: &[ZoneEntry], serial: u32) -> Catalog {
    let origin = config.origin.clone();
    let mut handler = InMemoryZoneHandler::<TokioRuntimeProvider>::empty(
        origin.clone(),
        ZoneType::Primary,
        AxfrPolicy::Deny,
    );
    let name_server = config.child("ns").unwrap_or_else(|| origin.clone());
    let hostmaster = config.child("hostmaster").unwrap_or_else(|| origin.clone());
    let mut add = |record: Record| {
        handler.upsert_mut(record, serial);
    };
    add(Record::from_rdata(
        origin.clone(),
        ZONE_TTL,
        RData::SOA(SOA::new(
            name_server.clone(),
            hostmaster,
            serial,
            3600,
            600,
            604_800,
            CHALLENGE_TTL,
        )),
    ));
    add(Record::from_rdata(
        origin.clone(),
        ZONE_TTL,
        RData::NS(NS(name_server.clone())),
    ));
    for address in &config.name_server_addresses {
        add(address_record(name_server.clone(), *address, ZONE_TTL));
    }
    for entry in entries {
        if let Some(published) = entry_records(config, entry) {
            published.records.into_iter().for_each(&mut add);
        }
    }
    let mut catalog = Catalog::new();
    catalog.upsert(LowerName::new(&origin), vec![Arc::new(handler)]);
    catalog
}

/// One name's records, as both the registry's server and an operator's (RFC 2136) hold
/// them.
pub(crate) struct EntryRecords {
    pub name: Name,
    /// `_acme-challenge.<name>`.
    pub challenge: Name,
    /// A/AAAA for the addresses, TXT for the challenge values.
    pub records: Vec<Record>,
}

/// `entry`'s records in the zone; None when its label is not a DNS label.
pub(crate) fn entry_records(config: &ZoneConfig, entry: &ZoneEntry) -> Option<EntryRecords> {
    let name = config.child(&entry.label)?;
    let challenge = Name::from_ascii("_acme-challenge")
        .ok()?
        .append_domain(&name)
        .ok()?;
    let mut records: Vec<Record> = entry
        .addresses
        .iter()
        .map(|address| address_record(name.clone(), *address, ADDRESS_TTL))
        .collect();
    records.extend(entry.acme_challenge.iter().map(|value| {
        Record::from_rdata(
            challenge.clone(),
            CHALLENGE_TTL,
            RData::TXT(TXT::new(vec![value.clone()])),
        )
    }));
    Some(EntryRecords {
        name,
        challenge,
        records,
    })
}

fn address_record(name: Name, address: IpAddr, ttl: u32) -> Record {
    match address {
        IpAddr::V4(v4) => Record::from_rdata(name, ttl, RData::A(A(v4))),
        IpAddr::V6(v6) => Record::from_rdata(name, ttl, RData::AAAA(AAAA(v6))),
    }
}

/// Answers every query from the zone as it is at that moment.
struct Handler(Arc<AgentsZone>);

// The trait is declared with async-trait; its implementations must be too.
#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        self.0
            .current()
            .handle_request::<R, T>(request, response_handle)
            .await
    }
}

/// Serves `zone` on UDP and TCP at `address` until the runtime stops. Returns the bound
/// address (port 0 picks one).
pub async fn serve(zone: Arc<AgentsZone>, address: &str) -> Result<SocketAddr, RegistryError> {
    let udp = tokio::net::UdpSocket::bind(address)
        .await
        .map_err(RegistryError::io(format!(
            "cannot serve DNS on {address} (UDP)"
        )))?;
    let bound = udp
        .local_addr()
        .map_err(RegistryError::io("cannot read the DNS address"))?;
    let tcp = tokio::net::TcpListener::bind(bound)
        .await
        .map_err(RegistryError::io(format!(
            "cannot serve DNS on {bound} (TCP)"
        )))?;
    let mut server = hickory_server::Server::new(Handler(zone));
    server.register_socket(udp);
    server.register_listener(tcp, Duration::from_secs(10), 16 * 1024);
    tokio::spawn(async move {
        if let Err(error) = server.block_until_done().await {
            tracing::error!(%error, "the DNS server stopped");
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_names_are_checked() {
        assert_eq!(
            ZoneConfig::parse("Agents.Kasip.Test.", vec![])
                .expect("valid")
                .domain(),
            "agents.kasip.test"
        );
        for bad in ["", "kasip", "agents..kasip.kz", "agents kasip.kz"] {
            assert!(ZoneConfig::parse(bad, vec![]).is_err(), "{bad}");
        }
    }
}
