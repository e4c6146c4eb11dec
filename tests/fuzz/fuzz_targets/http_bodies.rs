//! JSON bodies the agent and the registry accept from the network: a kiosk's scan
//! upload, and the pass-key registration and enrolment shapes, parsed as the handlers do.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(scans) = kasip_agent::kiosks::parse_scan_upload(data) {
        for scan in scans {
            let _ = kasip_core::StudentPass::parse(&scan.pass);
        }
    }
    let _ = kasip_registry::http::parse_enrolment(data);
});
