//! What the registry reads from an agent: the compact JWS, its kid, the batch envelope,
//! every record kind in both formats (and an attendance chain's re-walk), heartbeats,
//! name updates, receipts, request authorizations and month-close statements; and what
//! the agent reads back: the policy and the name it was given.
#![no_main]

use kasip_core::batch::{check_record, BatchEnvelope, BatchKind, Receipt};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = BatchEnvelope::parse(data);
    let _ = Receipt::parse(data);
    if let Ok(record) = serde_json::from_slice::<kasip_core::batch::RecordText>(data) {
        for kind in BatchKind::ALL {
            for version in kasip_core::batch::SUPPORTED_BATCH_VERSIONS {
                let _ = check_record(version, kind, &record);
            }
        }
    }
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        // The one-pass canonical check agrees with canonicalising the parsed value.
        if let Ok(text) = std::str::from_utf8(data) {
            let canonical = kasip_core::to_canonical_json(&value).ok();
            assert_eq!(
                kasip_core::canonical_json::is_canonical(text),
                canonical.as_deref() == Some(text),
                "{text}"
            );
        }
        if let Ok(records) =
            serde_json::from_value::<Vec<kasip_core::batch::AttendanceRecord>>(value)
        {
            let _ =
                kasip_core::chain::rewalk(&kasip_core::chain::ChainHead::genesis(), &records, 2);
        }
    }
    // A month-close statement's payload, as the registry's month audit reads it.
    let _ = kasip_registry::audit::parse_statement(1, data);
    let _ = serde_json::from_slice::<kasip_core::wire::Heartbeat>(data);
    // A name update the registry would publish holds only what its zone may carry.
    if let Ok(update) = kasip_core::wire::NameUpdate::parse(data) {
        let addresses = update.parsed_addresses().unwrap_or_default();
        assert_eq!(addresses.len(), update.addresses.as_ref().map_or(0, Vec::len));
        assert!(addresses.len() <= kasip_core::wire::NameUpdate::MAX_ADDRESSES);
        assert!(addresses.iter().all(|address| !address.is_unspecified() && !address.is_multicast()));
        assert!(update
            .acme_challenge
            .iter()
            .flatten()
            .all(|value| kasip_core::wire::is_dns01_value(value)));
    }
    let _ = kasip_sync::is_hostname(std::str::from_utf8(data).unwrap_or_default());
    let _ = serde_json::from_slice::<kasip_core::wire::Policy>(data);
    let _ = serde_json::from_slice::<kasip_core::wire::SignedPolicy>(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = kasip_certs::agent_auth::jws_kid(text);
    let _ = kasip_certs::agent_auth::claimed_agent(text);
    let key = kasip_certs::DeviceKey::from_seed(&[7; 32]).expect("a seed");
    if let Ok(verified) = kasip_certs::jws::verify_compact(text, key.public_key()) {
        let _ = BatchEnvelope::parse(&verified.payload);
    }
    let _ = kasip_certs::agent_auth::verify(text, key.public_key(), "GET", "/v1/x", 0);
});
