//! The kiosk decoder against zbarimg on the ZXing blackbox QR photos, in one run.
//!
//!     cargo bench -p kasip-kiosk --bench decode
//!
//! For every image of `../shared/data/qr-blackbox/manifest.tsv` at 0°, 90°, 180° and 270°:
//! our `decode` (in process, one core) and `zbarimg` (Debian zbar-tools, one process per
//! image, its start-up measured on a blank image and reported beside it). A read counts
//! when the expected text's bytes are among the texts found. Then the median decode time
//! of 1280×720 frames holding a student pass. Figures go to BENCHMARKS.md.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use image::{GrayImage, ImageFormat};
use kasip_kiosk::decode::{decode, decode_with, Attempt, Luma, ATTEMPTS};

const ROTATIONS: [u32; 4] = [0, 90, 180, 270];

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/qr-blackbox");
    let manifest = std::fs::read_to_string(root.join("manifest.tsv")).unwrap_or_else(|error| {
        panic!(
            "{}: {error} (the benchmark reads ../shared/data/qr-blackbox)",
            root.display()
        )
    });
    let cases: Vec<(String, PathBuf, Vec<u8>)> = manifest
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once('\t'))
        .map(|(image, expected)| {
            let set = image.split('/').nth(1).unwrap_or("?").to_owned();
            let expected = std::fs::read(root.join(expected)).expect("expected text");
            (set, root.join(image), expected)
        })
        .collect();
    let zbar = Command::new("zbarimg").arg("--version").output().is_ok();
    let scratch = tempfile::tempdir().expect("scratch dir");
    let zbar_startup = zbar.then(|| zbar_startup(scratch.path()));

    // (set, rotation) → (tries, ours, zbar)
    let mut table: BTreeMap<(String, u32), (u32, u32, u32)> = BTreeMap::new();
    let mut our_times = Vec::new();
    let mut zbar_times = Vec::new();
    let mut load_times = Vec::new();
    let mut attempts_used: BTreeMap<String, u32> = BTreeMap::new();
    for (index, (set, path, expected)) in cases.iter().enumerate() {
        let started = Instant::now();
        let original = image::open(path).expect("image").into_luma8();
        load_times.push(started.elapsed());
        for rotation in ROTATIONS {
            let rotated = rotate(&original, rotation);
            let frame = Luma::new(
                rotated.width() as usize,
                rotated.height() as usize,
                rotated.as_raw().clone(),
            )
            .expect("frame");
            let started = Instant::now();
            let (found, attempt) = decode_with(&frame, &ATTEMPTS);
            our_times.push(started.elapsed());
            let ours = found
                .iter()
                .any(|text| text.as_bytes() == expected.as_slice());
            if ours {
                *attempts_used
                    .entry(format!("{:?}", attempt.unwrap_or(Attempt::Plain)))
                    .or_default() += 1;
            }
            let theirs = if zbar {
                let file = scratch.path().join(format!("{index}-{rotation}.png"));
                rotated
                    .save_with_format(&file, ImageFormat::Png)
                    .expect("write png");
                let started = Instant::now();
                let output = Command::new("zbarimg")
                    .args(["-q", "--raw", "-Sdisable", "-Sqrcode.enable"])
                    .arg(&file)
                    .output()
                    .expect("zbarimg");
                zbar_times.push(started.elapsed());
                zbar_texts(&output.stdout)
                    .iter()
                    .any(|text| text == expected)
            } else {
                false
            };
            let entry = table.entry((set.clone(), rotation)).or_default();
            entry.0 += 1;
            entry.1 += u32::from(ours);
            entry.2 += u32::from(theirs);
        }
    }

    println!("## Blackbox QR photos: reads per set and rotation (ours / zbarimg)");
    println!("| set | rotation | tries | kiosk decoder | zbarimg |");
    println!("|---|---|---|---|---|");
    let mut totals: BTreeMap<String, (u32, u32, u32)> = BTreeMap::new();
    for ((set, rotation), (tries, ours, theirs)) in &table {
        println!("| {set} | {rotation}° | {tries} | {ours} | {theirs} |");
        for key in [set.clone(), format!("all {rotation}°"), "all".to_owned()] {
            let total = totals.entry(key).or_default();
            total.0 += tries;
            total.1 += ours;
            total.2 += theirs;
        }
    }
    println!("| set or rotation | tries | kiosk decoder | zbarimg |");
    println!("|---|---|---|---|");
    for (key, (tries, ours, theirs)) in &totals {
        println!(
            "| {key} | {tries} | {ours} ({:.1}%) | {theirs} ({:.1}%) |",
            100.0 * f64::from(*ours) / f64::from(*tries),
            100.0 * f64::from(*theirs) / f64::from(*tries)
        );
    }
    println!("reads by the attempt that succeeded: {attempts_used:?}");
    let (load_median, _) = percentiles(&mut load_times);
    let (our_median, our_p95) = percentiles(&mut our_times);
    println!(
        "kiosk decoder per image: median {}, p95 {} (baseline: PNG load + luma conversion median {}; ratio {:.1}x)",
        millis(our_median),
        millis(our_p95),
        millis(load_median),
        our_median.as_secs_f64() / load_median.as_secs_f64().max(1e-9)
    );
    if let Some(startup) = zbar_startup {
        let (zbar_median, zbar_p95) = percentiles(&mut zbar_times);
        println!(
            "zbarimg per image (whole process): median {}, p95 {}; its start-up on a blank 1x1 image {}; median less start-up {}",
            millis(zbar_median),
            millis(zbar_p95),
            millis(startup),
            millis(zbar_median.saturating_sub(startup))
        );
    } else {
        println!("zbarimg not found (apt install zbar-tools): no comparison");
    }
    let frame_median = frame_benchmark();
    let record_median = verdict_benchmark();
    println!(
        "frame to verdict on the kiosk (decode a 1280x720 frame + verify + durable record): {} (target: feedback within 300 ms)",
        millis(frame_median + record_median)
    );
}

/// Median time to verify a fresh pass and record it durably (SQLite, synchronous=FULL).
fn verdict_benchmark() -> Duration {
    use kasip_kiosk::store::{KioskDir, KioskStore, PassHolder};
    use kasip_kiosk::verify::{Verdict, Verifier};
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

    let random = SystemRandom::new();
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &random).expect("key");
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &random)
        .expect("key");
    let scratch = tempfile::tempdir().expect("scratch");
    let mut store = KioskStore::open(&KioskDir::new(scratch.path())).expect("store");
    let student = "900101300017";
    let public_key = kasip_core::PassPublicKey::from_bytes(key.public_key().as_ref())
        .expect("point")
        .to_base64url();
    store
        .replace_holders(
            &[PassHolder {
                iin: student.into(),
                name: "Бенчмарк Студент".into(),
                active: true,
                keys: vec![public_key],
            }],
            0,
            0,
        )
        .expect("holders");
    let verifier = Verifier {
        window_secs: 30,
        repeat_secs: 5,
    };
    let base = 1_790_000_000;
    let mut times = Vec::new();
    for index in 0..200 {
        let signed_at = base + index;
        let text = format!("KP1.{student}.{signed_at}");
        let signature = key.sign(&random, text.as_bytes()).expect("sign");
        let pass = kasip_core::StudentPass::assemble(
            &kasip_core::Iin::parse(student).expect("iin"),
            signed_at,
            signature.as_ref(),
        );
        let started = Instant::now();
        let verdict = verifier
            .check(&mut store, &pass, signed_at + 1)
            .expect("check");
        times.push(started.elapsed());
        assert!(matches!(verdict, Verdict::Accepted { .. }), "{verdict:?}");
    }
    let (median, p95) = percentiles(&mut times);
    println!(
        "verify a pass and record it durably: median {}, p95 {}",
        millis(median),
        millis(p95)
    );
    median
}

/// Median decode time of 1280×720 frames with a pass QR, and of a frame with none.
fn frame_benchmark() -> Duration {
    let pass = "KP1.900101300017.1790000000.MEUCIQDd5l2p0qJv8mXw3L0b0lH6yZq1pX9nq7rU8vX2bP3s7wIgR2f8aQ9pL1mN4kY7sT0uV3wX6zB9cE2fH5jK8mP1qS4";
    let code = qrcode::QrCode::new(pass.as_bytes()).expect("encodable");
    let modules = code.width();
    let scale = 7;
    let (width, height) = (1280usize, 720usize);
    let mut pixels = vec![150u8; width * height];
    let origin = (400, 120);
    for y in 0..(modules + 8) * scale {
        for x in 0..(modules + 8) * scale {
            let (mx, my) = ((x / scale) as isize - 4, (y / scale) as isize - 4);
            let dark = mx >= 0
                && my >= 0
                && (mx as usize) < modules
                && (my as usize) < modules
                && code[(mx as usize, my as usize)] == qrcode::Color::Dark;
            pixels[(origin.1 + y) * width + origin.0 + x] = if dark { 20 } else { 235 };
        }
    }
    let frame = Luma::new(width, height, pixels).expect("frame");
    let empty = Luma::new(width, height, vec![150u8; width * height]).expect("frame");
    let mut with_pass = Vec::new();
    let mut without = Vec::new();
    for _ in 0..50 {
        let started = Instant::now();
        let found = decode(&frame);
        with_pass.push(started.elapsed());
        assert_eq!(found, [pass], "the synthetic frame must decode");
        let started = Instant::now();
        assert!(decode(&empty).is_empty());
        without.push(started.elapsed());
    }
    let mut copy = Vec::new();
    for _ in 0..50 {
        let started = Instant::now();
        let copied: Vec<u8> = std::hint::black_box(frame.pixels.clone());
        copy.push(started.elapsed());
        drop(copied);
    }
    let (median, p95) = percentiles(&mut with_pass);
    let (empty_median, _) = percentiles(&mut without);
    let (copy_median, _) = percentiles(&mut copy);
    println!(
        "1280x720 frame with a pass: median {}, p95 {} (target <= 15 ms); frame with no code (all retries): median {}; baseline copy of the frame {} (ratio {:.0}x)",
        millis(median),
        millis(p95),
        millis(empty_median),
        millis(copy_median),
        median.as_secs_f64() / copy_median.as_secs_f64().max(1e-9)
    );
    median
}

fn rotate(image: &GrayImage, degrees: u32) -> GrayImage {
    match degrees {
        90 => image::imageops::rotate90(image),
        180 => image::imageops::rotate180(image),
        270 => image::imageops::rotate270(image),
        _ => image.clone(),
    }
}

/// zbarimg --raw prints each code followed by a newline; codes may hold newlines too, so
/// compare whole output as one text and each line.
fn zbar_texts(stdout: &[u8]) -> Vec<Vec<u8>> {
    let whole = stdout.strip_suffix(b"\n").unwrap_or(stdout).to_vec();
    let mut texts = vec![whole];
    texts.extend(stdout.split(|byte| *byte == b'\n').map(<[u8]>::to_vec));
    texts
}

fn zbar_startup(scratch: &Path) -> Duration {
    let blank = scratch.join("blank.png");
    GrayImage::from_pixel(1, 1, image::Luma([255]))
        .save_with_format(&blank, ImageFormat::Png)
        .expect("blank");
    let mut times: Vec<Duration> = (0..10)
        .map(|_| {
            let started = Instant::now();
            let _ = Command::new("zbarimg")
                .args(["-q", "--raw"])
                .arg(&blank)
                .output();
            started.elapsed()
        })
        .collect();
    percentiles(&mut times).0
}

fn percentiles(times: &mut [Duration]) -> (Duration, Duration) {
    times.sort();
    if times.is_empty() {
        return (Duration::ZERO, Duration::ZERO);
    }
    let at = |share: f64| times[((times.len() - 1) as f64 * share).round() as usize];
    (at(0.5), at(0.95))
}

fn millis(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1000.0)
}
