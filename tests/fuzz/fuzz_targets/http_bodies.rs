//! JSON bodies the agent, the kiosk and the registry accept from the network: a kiosk's
//! scan upload, the registry's enrolment, and every answer of `kasip_core::wire` the
//! agent and the kiosk read from the other end.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(scans) = kasip_agent::kiosks::parse_scan_upload(data) {
        for scan in scans {
            let _ = kasip_core::StudentPass::parse(&scan.pass);
        }
    }
    let _ = kasip_registry::http::parse_enrolment(data);
    use kasip_core::wire;
    let _ = serde_json::from_slice::<wire::EnrolmentAnswer>(data);
    let _ = serde_json::from_slice::<wire::Checkpoint>(data);
    let _ = serde_json::from_slice::<wire::BeneficiaryList>(data);
    let _ = serde_json::from_slice::<wire::ReceiptAnswer>(data);
    let _ = serde_json::from_slice::<wire::ErrorAnswer>(data);
    let _ = serde_json::from_slice::<wire::KioskEnrolAnswer>(data);
    let _ = serde_json::from_slice::<wire::PassKeyList>(data);
    let _ = serde_json::from_slice::<wire::ScanAnswers>(data);
});
