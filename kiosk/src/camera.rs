//! Frames from a camera (feature `camera`: nokhwa, V4L on Linux; needs libclang-dev to
//! build). Without the feature, asking for a camera says how to get one.

use crate::error::KioskError;
use crate::run::Kiosk;

#[cfg(not(feature = "camera"))]
pub fn scan(_kiosk: &Kiosk, _index: u32) -> Result<(), KioskError> {
    Err(KioskError::Usage(
        "this kasip-kiosk was built without camera support; rebuild with `cargo build --release -p kasip-kiosk --features camera` (apt install libclang-dev first), or read frames with --frames PATH, --frames - or --wedge".into(),
    ))
}

#[cfg(feature = "camera")]
pub fn scan(kiosk: &Kiosk, index: u32) -> Result<(), KioskError> {
    use std::time::{Duration, Instant};

    use nokhwa::pixel_format::LumaFormat;
    use nokhwa::utils::{CameraIndex, RequestedFormat, RequestedFormatType};

    use crate::decode::{decode, Luma};

    /// The same text again this soon is the same pass still in view: not announced twice.
    const SAME_PASS_QUIET: Duration = Duration::from_secs(2);

    let camera_error = |error: nokhwa::NokhwaError| {
        KioskError::Usage(format!(
            "camera {index}: {error}; check that it is plugged in and that the kiosk's user may open /dev/video{index}"
        ))
    };
    let format = RequestedFormat::new::<LumaFormat>(RequestedFormatType::AbsoluteHighestFrameRate);
    let mut camera =
        nokhwa::Camera::new(CameraIndex::Index(index), format).map_err(camera_error)?;
    camera.open_stream().map_err(camera_error)?;
    let mut last: Option<(String, Instant)> = None;
    loop {
        let started = Instant::now();
        let frame = camera.frame().map_err(camera_error)?;
        let image = frame.decode_image::<LumaFormat>().map_err(camera_error)?;
        let (width, height) = (image.width() as usize, image.height() as usize);
        let Some(luma) = Luma::new(width, height, image.into_raw()) else {
            continue;
        };
        let texts = decode(&luma);
        let Some(first) = texts.first() else {
            continue;
        };
        if last
            .as_ref()
            .is_some_and(|(text, at)| text == first && at.elapsed() < SAME_PASS_QUIET)
        {
            continue;
        }
        last = Some((first.clone(), Instant::now()));
        kiosk.handle(&texts, &format!("camera{index}"), started, true);
    }
}
