//! Frames from a camera (feature `camera`: nokhwa, V4L on Linux; needs libclang-dev to
//! build). Without the feature, asking for a camera says how to get one. The camera
//! hands each new reading to `on_texts` (the kiosk's `handle`), so it knows nothing of
//! what a kiosk does with a pass.

use std::time::Instant;

use crate::error::KioskError;

#[cfg(not(feature = "camera"))]
pub fn scan(_index: u32, _on_texts: impl FnMut(&[String], Instant)) -> Result<(), KioskError> {
    Err(KioskError::Usage(
        "this kasip-kiosk was built without camera support; rebuild with `cargo build --release -p kasip-kiosk --features camera` (apt install libclang-dev first), or read frames with --frames PATH, --frames - or --wedge".into(),
    ))
}

#[cfg(feature = "camera")]
pub fn scan(index: u32, mut on_texts: impl FnMut(&[String], Instant)) -> Result<(), KioskError> {
    use std::time::Duration;

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
        on_texts(&texts, started);
    }
}
