//! Agents' names in the registry's DNS zone: one opaque label per college, the LAN
//! addresses its agent serves on, and the `_acme-challenge` values it is proving. Only
//! the college's own agent changes them, by a signed, single-use `NameUpdate`.

use std::net::IpAddr;

use crate::db::params;
use kasip_core::wire::{NameRecords, NameUpdate};

use super::{RegistryError, RegistryStore};

/// One name as the zone publishes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneEntry {
    pub label: String,
    pub addresses: Vec<IpAddr>,
    pub acme_challenge: Vec<String>,
}

/// Why an update was not applied, by who should fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameRefusal {
    /// Not signed by an enrolled agent, badly signed, stale or replayed: 401.
    Unauthenticated(String),
    /// A genuine agent asking for another college's name: 403.
    NotYours(String),
    /// Well signed, but an address or value that cannot be published: 400.
    Invalid(String),
}

/// The label a new college's name gets: `c` and 11 base32 characters of randomness.
/// Opaque rather than derived from the BIN: BINs are public, and a zone that answered
/// for every BIN would let anyone list every college's LAN addresses.
fn new_label() -> Result<String, RegistryError> {
    use ring::rand::SecureRandom;
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut random = [0u8; 11];
    ring::rand::SystemRandom::new()
        .fill(&mut random)
        .map_err(|_| RegistryError::Random)?;
    let mut label = String::from("c");
    label.extend(
        random
            .iter()
            .map(|byte| char::from(ALPHABET[usize::from(byte & 31)])),
    );
    Ok(label)
}

fn json_list(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_default()
}

impl RegistryStore {
    /// The label of `bin`'s name, made on first use; stable for the college's lifetime,
    /// whichever agent key it enrols.
    pub fn name_label(&self, bin: &str) -> Result<String, RegistryError> {
        let existing: Option<String> = self
            .db
            .query_opt(
                "SELECT label FROM agent_names WHERE bin = ?1",
                params![bin],
                |row| row.get(0),
            )
            .map_err(|source| self.fail(source))?;
        if let Some(label) = existing {
            return Ok(label);
        }
        let label = new_label()?;
        self.db
            .execute(
                "INSERT INTO agent_names (bin, label) VALUES (?1, ?2) ON CONFLICT (bin) DO NOTHING",
                params![bin, label],
            )
            .map_err(|source| self.fail(source))?;
        self.db
            .query_one(
                "SELECT label FROM agent_names WHERE bin = ?1",
                params![bin],
                |row| row.get(0),
            )
            .map_err(|source| self.fail(source))
    }

    /// Applies a signed `NameUpdate` for the zone `zone` (e.g. `agents.kasip.kz`).
    pub fn update_name(
        &mut self,
        jws: &str,
        zone: &str,
        now: i64,
    ) -> Result<Result<NameRecords, NameRefusal>, RegistryError> {
        use NameRefusal::{Invalid, NotYours, Unauthenticated};
        let Some(kid) = kasip_certs::agent_auth::jws_kid(jws) else {
            return Ok(Err(Unauthenticated("not a compact JWS with a kid".into())));
        };
        let Some(signer) = self.agent(&kid)? else {
            return Ok(Err(Unauthenticated(format!(
                "no agent with key {kid} is enrolled"
            ))));
        };
        let verified = match kasip_certs::jws::verify_compact(jws, &signer.public_key) {
            Ok(verified) => verified,
            Err(error) => return Ok(Err(Unauthenticated(error.to_string()))),
        };
        let update = match NameUpdate::parse(&verified.payload) {
            Ok(update) => update,
            Err(reason) => return Ok(Err(Invalid(reason))),
        };
        if update.agent != signer.agent_id {
            return Ok(Err(Unauthenticated(
                "the update names another agent than its signer".into(),
            )));
        }
        if (update.iat - now).abs() > kasip_certs::agent_auth::MAX_SKEW_SECS {
            return Ok(Err(Unauthenticated(format!(
                "the update was signed at {} but the registry's clock says {now}: check the agent's clock",
                update.iat
            ))));
        }
        let label = self.name_label(&signer.bin)?;
        let hostname = format!("{label}.{zone}");
        if let Some(asked) = &update.hostname {
            if !asked.eq_ignore_ascii_case(&hostname) {
                return Ok(Err(NotYours(format!(
                    "{asked} is not this agent's name: an agent changes only its own college's name ({hostname})"
                ))));
            }
        }
        let addresses: Option<Vec<String>> = update
            .parsed_addresses()
            .map(|parsed| parsed.iter().map(IpAddr::to_string).collect());
        // Only now, when everything else holds: a refused update spends no jti.
        if !self.use_authorization(&signer.agent_id, &update.jti, update.iat, now)? {
            return Ok(Err(Unauthenticated(
                "this update was already applied: each signed update is single-use".into(),
            )));
        }
        let fail = |source| self.fail(source);
        let to_json = |list: &Vec<String>| serde_json::to_string(list).unwrap_or_default();
        self.db
            .execute(
                "UPDATE agent_names SET
                     addresses = COALESCE(?2, addresses),
                     acme_challenge = COALESCE(?3, acme_challenge),
                     updated_at = ?4
                 WHERE bin = ?1",
                params![
                    signer.bin,
                    addresses.as_ref().map(to_json),
                    update.acme_challenge.as_ref().map(to_json),
                    now
                ],
            )
            .map_err(fail)?;
        let (addresses, acme_challenge): (String, String) = self
            .db
            .query_one(
                "SELECT addresses, acme_challenge FROM agent_names WHERE bin = ?1",
                params![&signer.bin],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .map_err(fail)?;
        Ok(Ok(NameRecords {
            hostname,
            addresses: json_list(&addresses),
            acme_challenge: json_list(&acme_challenge),
        }))
    }

    /// Every name with something to publish, for the DNS server.
    pub fn zone_entries(&self) -> Result<Vec<ZoneEntry>, RegistryError> {
        let rows: Vec<(String, String, String)> = self
            .db
            .query(
                "SELECT label, addresses, acme_challenge FROM agent_names ORDER BY label",
                params![],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .map_err(|source| self.fail(source))?;
        Ok(rows
            .into_iter()
            .map(|(label, addresses, acme_challenge)| ZoneEntry {
                label,
                addresses: json_list(&addresses)
                    .iter()
                    .filter_map(|address| address.parse().ok())
                    .collect(),
                acme_challenge: json_list(&acme_challenge),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_opaque_dns_labels() {
        let label = new_label().expect("random");
        assert_eq!(label.len(), 12);
        assert!(label.starts_with('c'));
        assert!(label
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || (b'2'..=b'7').contains(&byte)));
        assert_ne!(label, new_label().expect("random"));
    }
}
