//! QR decoding of camera frames (design §5.3, issue "Kiosk").
//!
//! First rxing (a Rust port of ZXing's reader: hybrid binarizer, try-harder, inverted
//! codes), then rqrr on the luma image and on transformed copies. Measured on the ZXing
//! blackbox photos at four rotations (BENCHMARKS.md): rxing alone reads 598 of 656, rqrr
//! with every retry 458; the rqrr retries still add reads rxing misses. rxing goes first
//! because it is also faster: 1.6 ms for a 1280×720 frame against rqrr's 14.7 ms.
//!
//! Each rqrr retry targets a way real frames fail: high resolution with noise or blur (2×
//! downscale), a washed-out pass (contrast stretch), uneven light that defeats rqrr's
//! moving-average threshold (Otsu's global threshold), a dark-mode screen (inverted
//! image), and a small code far from the camera (2× upscale). The first attempt that
//! reads anything wins. A panic inside a decoder on a hostile frame is contained: that
//! attempt counts as "nothing found".

use std::panic::{catch_unwind, AssertUnwindSafe};

/// An 8-bit luma image, row-major.
#[derive(Clone)]
pub struct Luma {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

impl Luma {
    pub fn new(width: usize, height: usize, pixels: Vec<u8>) -> Option<Self> {
        (width.checked_mul(height)? == pixels.len() && width > 0 && height > 0).then_some(Self {
            width,
            height,
            pixels,
        })
    }

    /// From encoded PNG or JPEG bytes.
    pub fn from_encoded(bytes: &[u8]) -> Result<Self, image::ImageError> {
        let image = image::load_from_memory(bytes)?.into_luma8();
        let (width, height) = (image.width() as usize, image.height() as usize);
        Ok(Self {
            width,
            height,
            pixels: image.into_raw(),
        })
    }

    fn at(&self, x: usize, y: usize) -> u8 {
        self.pixels[y * self.width + x]
    }

    fn map(&self, transform: impl Fn(u8) -> u8) -> Self {
        Self {
            width: self.width,
            height: self.height,
            pixels: self.pixels.iter().map(|&value| transform(value)).collect(),
        }
    }

    /// Half size, each pixel the mean of a 2×2 block.
    fn downscaled(&self) -> Self {
        let (width, height) = (self.width / 2, self.height / 2);
        let mut pixels = Vec::with_capacity(width * height);
        for y in 0..height {
            for x in 0..width {
                let sum = u16::from(self.at(2 * x, 2 * y))
                    + u16::from(self.at(2 * x + 1, 2 * y))
                    + u16::from(self.at(2 * x, 2 * y + 1))
                    + u16::from(self.at(2 * x + 1, 2 * y + 1));
                pixels.push((sum / 4) as u8);
            }
        }
        Self {
            width,
            height,
            pixels,
        }
    }

    /// Double size, nearest neighbour (keeps module edges sharp).
    fn upscaled(&self) -> Self {
        let (width, height) = (self.width * 2, self.height * 2);
        let mut pixels = Vec::with_capacity(width * height);
        for y in 0..height {
            for x in 0..width {
                pixels.push(self.at(x / 2, y / 2));
            }
        }
        Self {
            width,
            height,
            pixels,
        }
    }

    fn histogram(&self) -> [usize; 256] {
        let mut histogram = [0usize; 256];
        for &value in &self.pixels {
            histogram[usize::from(value)] += 1;
        }
        histogram
    }

    /// Stretches the 1st–99th percentile of brightness over the full range.
    fn contrast_stretched(&self) -> Self {
        let histogram = self.histogram();
        let total = self.pixels.len();
        let percentile = |share: usize| {
            let mut seen = 0;
            for (value, count) in histogram.iter().enumerate() {
                seen += count;
                if seen * 100 >= total * share {
                    return value;
                }
            }
            255
        };
        let (low, high) = (percentile(1), percentile(99));
        if high <= low {
            return self.clone();
        }
        let span = (high - low) as u32;
        self.map(|value| {
            let value = usize::from(value).clamp(low, high) - low;
            ((value as u32 * 255) / span) as u8
        })
    }

    /// Otsu's threshold: the level that best separates two classes of brightness.
    fn otsu_level(&self) -> u8 {
        let histogram = self.histogram();
        let total = self.pixels.len() as f64;
        let sum_all: f64 = histogram
            .iter()
            .enumerate()
            .map(|(value, count)| value as f64 * *count as f64)
            .sum();
        let (mut weight_low, mut sum_low) = (0.0, 0.0);
        let (mut best_level, mut best_variance) = (128u8, -1.0);
        for (level, count) in histogram.iter().enumerate() {
            weight_low += *count as f64;
            if weight_low == 0.0 {
                continue;
            }
            let weight_high = total - weight_low;
            if weight_high == 0.0 {
                break;
            }
            sum_low += level as f64 * *count as f64;
            let mean_low = sum_low / weight_low;
            let mean_high = (sum_all - sum_low) / weight_high;
            let variance = weight_low * weight_high * (mean_low - mean_high).powi(2);
            if variance > best_variance {
                best_variance = variance;
                best_level = level as u8;
            }
        }
        best_level
    }
}

/// One way of looking at a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    Plain,
    Downscaled,
    ContrastStretched,
    Otsu,
    Inverted,
    Upscaled,
    /// rxing (a Rust port of ZXing): hybrid binarizer, try-harder, inverted too.
    Rxing,
}

/// The order retries run in: cheapest and most often useful first.
pub const ATTEMPTS: [Attempt; 7] = [
    Attempt::Rxing,
    Attempt::Plain,
    Attempt::Downscaled,
    Attempt::ContrastStretched,
    Attempt::Otsu,
    Attempt::Inverted,
    Attempt::Upscaled,
];

/// Codes found in `frame` by the first attempt that finds any.
pub fn decode(frame: &Luma) -> Vec<String> {
    decode_with(frame, &ATTEMPTS).0
}

/// Codes found, and the attempt that found them (None when nothing was read).
pub fn decode_with(frame: &Luma, attempts: &[Attempt]) -> (Vec<String>, Option<Attempt>) {
    for &attempt in attempts {
        let found = match attempt {
            Attempt::Plain => read_greyscale(frame),
            Attempt::Downscaled if frame.width >= 800 || frame.height >= 800 => {
                read_greyscale(&frame.downscaled())
            }
            Attempt::ContrastStretched => read_greyscale(&frame.contrast_stretched()),
            Attempt::Otsu => {
                let level = frame.otsu_level();
                read_bitmap(frame, |value| value <= level)
            }
            Attempt::Inverted => read_greyscale(&frame.map(|value| 255 - value)),
            Attempt::Upscaled if frame.width <= 400 && frame.height <= 400 => {
                read_greyscale(&frame.upscaled())
            }
            Attempt::Rxing => read_rxing(frame),
            Attempt::Downscaled | Attempt::Upscaled => Vec::new(),
        };
        if !found.is_empty() {
            return (found, Some(attempt));
        }
    }
    (Vec::new(), None)
}

/// The texts of every grid rqrr finds in a prepared image (a macro: rqrr does not name
/// the buffer type its constructors return).
macro_rules! read_grids {
    ($prepared:expr) => {
        $prepared
            .detect_grids()
            .iter()
            .filter_map(|grid| {
                let mut bytes = Vec::new();
                grid.decode_to(&mut bytes).ok()?;
                Some(text_of(bytes))
            })
            .collect()
    };
}

fn read_rxing(frame: &Luma) -> Vec<String> {
    contained(|| {
        let mut hints = rxing::DecodeHints {
            TryHarder: Some(true),
            AlsoInverted: Some(true),
            ..rxing::DecodeHints::default()
        };
        rxing::helpers::detect_in_luma_slice_with_hints(
            &frame.pixels,
            frame.width as u32,
            frame.height as u32,
            Some(rxing::BarcodeFormat::QR_CODE),
            &mut hints,
        )
        .map(|result| vec![result.getText().to_owned()])
        .unwrap_or_default()
    })
}

fn read_greyscale(frame: &Luma) -> Vec<String> {
    contained(|| {
        let mut prepared =
            rqrr::PreparedImage::prepare_from_greyscale(frame.width, frame.height, |x, y| {
                frame.at(x, y)
            });
        read_grids!(prepared)
    })
}

fn read_bitmap(frame: &Luma, dark: impl Fn(u8) -> bool) -> Vec<String> {
    contained(|| {
        let mut prepared =
            rqrr::PreparedImage::prepare_from_bitmap(frame.width, frame.height, |x, y| {
                dark(frame.at(x, y))
            });
        read_grids!(prepared)
    })
}

/// QR byte segments carry no declared encoding: UTF-8 when valid (phones write UTF-8),
/// otherwise ISO-8859-1, the standard's default.
fn text_of(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|error| {
        error
            .into_bytes()
            .iter()
            .map(|&byte| char::from(byte))
            .collect()
    })
}

/// Runs an rqrr attempt; a panic in it (seen on hostile frames) means "nothing found".
fn contained(read: impl FnOnce() -> Vec<String>) -> Vec<String> {
    catch_unwind(AssertUnwindSafe(read)).unwrap_or_default()
}

/// A decoded text on one line for `kasip-kiosk decode`: `\n`, `\t`, `\r` and `\\`
/// escaped so each code is exactly one line after its path and a tab.
pub fn escape_line(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '\\' => escaped.push_str("\\\\"),
            '\n' => escaped.push_str("\\n"),
            '\t' => escaped.push_str("\\t"),
            '\r' => escaped.push_str("\\r"),
            other => escaped.push(other),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A QR of `text` drawn `scale` pixels per module with a 4-module quiet zone.
    fn rendered(text: &str, scale: usize) -> Luma {
        let code = qrcode::QrCode::new(text.as_bytes()).expect("encodable");
        let modules = code.width();
        let size = (modules + 8) * scale;
        let mut pixels = vec![255u8; size * size];
        for y in 0..modules {
            for x in 0..modules {
                if code[(x, y)] == qrcode::Color::Dark {
                    for dy in 0..scale {
                        for dx in 0..scale {
                            pixels[(y + 4) * scale * size + dy * size + (x + 4) * scale + dx] = 0;
                        }
                    }
                }
            }
        }
        Luma::new(size, size, pixels).expect("sized")
    }

    #[test]
    fn a_clean_code_is_read_by_the_first_attempt() {
        let (found, attempt) = decode_with(&rendered("KP1.hello", 6), &ATTEMPTS);
        assert_eq!(found, ["KP1.hello"]);
        assert_eq!(attempt, Some(ATTEMPTS[0]));
        let (found, attempt) = decode_with(&rendered("KP1.hello", 6), &[Attempt::Plain]);
        assert_eq!(found, ["KP1.hello"]);
        assert_eq!(attempt, Some(Attempt::Plain));
    }

    #[test]
    fn a_dark_mode_code_needs_the_inverted_retry() {
        let inverted = rendered("dark mode", 6).map(|value| 255 - value);
        assert!(decode_with(&inverted, &[Attempt::Plain]).0.is_empty());
        let (found, attempt) = decode_with(&inverted, &[Attempt::Plain, Attempt::Inverted]);
        assert_eq!(found, ["dark mode"]);
        assert_eq!(attempt, Some(Attempt::Inverted));
        assert_eq!(decode(&inverted), ["dark mode"]);
    }

    #[test]
    fn a_washed_out_code_is_read_after_stretching() {
        // Dark modules at 200, light at 215: a pass on a dim screen under glare.
        let faint = rendered("faint", 5).map(|value| if value == 0 { 200 } else { 215 });
        assert_eq!(decode(&faint), ["faint"]);
    }

    #[test]
    fn blank_noise_and_tiny_frames_read_nothing_and_never_panic() {
        assert!(decode(&Luma::new(1, 1, vec![0]).expect("1x1")).is_empty());
        assert!(decode(&Luma::new(640, 480, vec![255; 640 * 480]).expect("white")).is_empty());
        let mut state = 0x1234_5678u32;
        let noise = (0..320 * 240)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state >> 24) as u8
            })
            .collect();
        assert!(decode(&Luma::new(320, 240, noise).expect("noise")).is_empty());
        assert!(Luma::new(10, 10, vec![0; 99]).is_none());
        assert!(Luma::new(0, 10, Vec::new()).is_none());
    }

    #[test]
    fn non_utf8_bytes_read_as_latin1() {
        assert_eq!(text_of(vec![0x63, 0x61, 0x66, 0xe9]), "café");
        assert_eq!(text_of("қазақ".as_bytes().to_vec()), "қазақ");
    }

    #[test]
    fn escaping_keeps_one_code_on_one_line() {
        assert_eq!(escape_line("a\nb\tc\\d\re"), "a\\nb\\tc\\\\d\\re");
        assert_eq!(escape_line("plain"), "plain");
    }

    #[test]
    fn garbage_image_bytes_are_an_error() {
        assert!(Luma::from_encoded(b"not an image").is_err());
        assert!(Luma::from_encoded(&[0x89, b'P', b'N', b'G', 0, 0]).is_err());
    }
}
