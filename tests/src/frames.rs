//! Synthetic camera frames for kiosk tests: a QR pasted into a 1280×720 picture the way
//! a phone held up to a kiosk looks — turned, tilted in perspective, out of focus, noisy,
//! washed out, with glare. Deterministic: the same style gives the same PNG.

use std::io::Cursor;

/// Frame size of the kiosk camera the tests stand for.
pub const WIDTH: usize = 1280;
pub const HEIGHT: usize = 720;

/// How a pass appears in front of the camera.
#[derive(Debug, Clone, Copy)]
pub struct FrameStyle {
    /// Turn of the phone in the image plane, degrees.
    pub rotation_deg: f64,
    /// How much farther one edge is than the other (0 = facing the camera; 0.3 = strong).
    pub perspective: f64,
    /// Side of the code (quiet zone included) in pixels before perspective.
    pub size_px: f64,
    /// Box-blur radius in pixels (out of focus or moving).
    pub blur_radius: usize,
    /// Uniform noise amplitude (sensor noise in dim light).
    pub noise: u8,
    /// Luma of dark and light modules (low contrast: close together).
    pub dark: u8,
    pub light: u8,
    /// A bright reflection across part of the code.
    pub glare: bool,
    /// Seed of the noise.
    pub seed: u32,
}

impl Default for FrameStyle {
    fn default() -> Self {
        Self {
            rotation_deg: 0.0,
            perspective: 0.0,
            size_px: 420.0,
            blur_radius: 0,
            noise: 0,
            dark: 20,
            light: 235,
            glare: false,
            seed: 1,
        }
    }
}

impl FrameStyle {
    /// The hard cases the kiosk issue names, one per style.
    pub fn hard_cases() -> Vec<(&'static str, FrameStyle)> {
        let base = FrameStyle::default();
        vec![
            (
                "rotated",
                FrameStyle {
                    rotation_deg: 33.0,
                    ..base
                },
            ),
            (
                "perspective",
                FrameStyle {
                    perspective: 0.28,
                    rotation_deg: -8.0,
                    ..base
                },
            ),
            (
                "blurred",
                FrameStyle {
                    blur_radius: 2,
                    ..base
                },
            ),
            (
                "noisy",
                FrameStyle {
                    noise: 60,
                    seed: 7,
                    ..base
                },
            ),
            (
                "low-contrast",
                FrameStyle {
                    dark: 110,
                    light: 150,
                    ..base
                },
            ),
            (
                "glare",
                FrameStyle {
                    glare: true,
                    ..base
                },
            ),
        ]
    }
}

/// A PNG frame with `text` as a QR code (error correction M) in the given style.
pub fn qr_frame(text: &str, style: &FrameStyle) -> Vec<u8> {
    let code = qrcode::QrCode::with_error_correction_level(text.as_bytes(), qrcode::EcLevel::M)
        .expect("the text fits in a QR code");
    let modules = code.width();
    let quiet = 4usize;
    let total = (modules + 2 * quiet) as f64;
    let dark_at = |u: f64, v: f64| -> Option<bool> {
        // (u, v) in [0, 1)² over the code with its quiet zone.
        if !(0.0..1.0).contains(&u) || !(0.0..1.0).contains(&v) {
            return None;
        }
        let (x, y) = ((u * total) as usize, (v * total) as usize);
        if x < quiet || y < quiet || x >= quiet + modules || y >= quiet + modules {
            return Some(false);
        }
        Some(code[(x - quiet, y - quiet)] == qrcode::Color::Dark)
    };
    // Corners of the code in the frame: a square around the centre, turned, then with
    // the right edge pulled in (perspective).
    let (centre_x, centre_y) = (WIDTH as f64 / 2.0, HEIGHT as f64 / 2.0);
    let half = style.size_px / 2.0;
    let angle = style.rotation_deg.to_radians();
    let corner = |sx: f64, sy: f64| {
        let shrink = 1.0 - style.perspective * (sx + 1.0) / 2.0;
        let (x, y) = (sx * half, sy * half * shrink);
        (
            centre_x + x * angle.cos() - y * angle.sin(),
            centre_y + x * angle.sin() + y * angle.cos(),
        )
    };
    let quad = [
        corner(-1.0, -1.0),
        corner(1.0, -1.0),
        corner(1.0, 1.0),
        corner(-1.0, 1.0),
    ];
    let to_frame = square_to_quad(quad);
    let to_code = invert(to_frame);
    let mut pixels = vec![0u8; WIDTH * HEIGHT];
    for y in 0..HEIGHT {
        for x in 0..WIDTH {
            // A grey, slightly textured background (a wall, a coat).
            let background = 90 + ((x / 40 + y / 30) % 3) as u8 * 12;
            let (u, v) = apply(to_code, x as f64 + 0.5, y as f64 + 0.5);
            pixels[y * WIDTH + x] = match dark_at(u, v) {
                Some(true) => style.dark,
                Some(false) => style.light,
                None => background,
            };
        }
    }
    if style.blur_radius > 0 {
        pixels = box_blur(&pixels, style.blur_radius);
        pixels = box_blur(&pixels, style.blur_radius);
    }
    if style.glare {
        let (gx, gy, radius) = (centre_x + half * 0.3, centre_y - half * 0.2, half * 0.6);
        for y in 0..HEIGHT {
            for x in 0..WIDTH {
                let distance = ((x as f64 - gx).powi(2) + (y as f64 - gy).powi(2)).sqrt();
                if distance < radius {
                    let strength = 1.0 - distance / radius;
                    let pixel = &mut pixels[y * WIDTH + x];
                    *pixel = (f64::from(*pixel) + strength * 110.0).min(255.0) as u8;
                }
            }
        }
    }
    if style.noise > 0 {
        let mut state = style.seed.max(1);
        for pixel in &mut pixels {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let offset = (state % (u32::from(style.noise) * 2 + 1)) as i32 - i32::from(style.noise);
            *pixel = (i32::from(*pixel) + offset).clamp(0, 255) as u8;
        }
    }
    let image = image::GrayImage::from_raw(WIDTH as u32, HEIGHT as u32, pixels).expect("sized");
    let mut png = Cursor::new(Vec::new());
    image
        .write_to(&mut png, image::ImageFormat::Png)
        .expect("encode PNG");
    png.into_inner()
}

type Matrix = [[f64; 3]; 3];

/// The homography taking the unit square's corners (0,0) (1,0) (1,1) (0,1) to `quad`.
fn square_to_quad(quad: [(f64, f64); 4]) -> Matrix {
    let [(x0, y0), (x1, y1), (x2, y2), (x3, y3)] = quad;
    let (dx1, dx2, dx3) = (x1 - x2, x3 - x2, x0 - x1 + x2 - x3);
    let (dy1, dy2, dy3) = (y1 - y2, y3 - y2, y0 - y1 + y2 - y3);
    let denominator = dx1 * dy2 - dx2 * dy1;
    let g = (dx3 * dy2 - dx2 * dy3) / denominator;
    let h = (dx1 * dy3 - dx3 * dy1) / denominator;
    [
        [x1 - x0 + g * x1, x3 - x0 + h * x3, x0],
        [y1 - y0 + g * y1, y3 - y0 + h * y3, y0],
        [g, h, 1.0],
    ]
}

fn apply(matrix: Matrix, x: f64, y: f64) -> (f64, f64) {
    let w = matrix[2][0] * x + matrix[2][1] * y + matrix[2][2];
    (
        (matrix[0][0] * x + matrix[0][1] * y + matrix[0][2]) / w,
        (matrix[1][0] * x + matrix[1][1] * y + matrix[1][2]) / w,
    )
}

/// The inverse up to scale (the adjugate), which is all a homography needs.
fn invert(m: Matrix) -> Matrix {
    [
        [
            m[1][1] * m[2][2] - m[1][2] * m[2][1],
            m[0][2] * m[2][1] - m[0][1] * m[2][2],
            m[0][1] * m[1][2] - m[0][2] * m[1][1],
        ],
        [
            m[1][2] * m[2][0] - m[1][0] * m[2][2],
            m[0][0] * m[2][2] - m[0][2] * m[2][0],
            m[0][2] * m[1][0] - m[0][0] * m[1][2],
        ],
        [
            m[1][0] * m[2][1] - m[1][1] * m[2][0],
            m[0][1] * m[2][0] - m[0][0] * m[2][1],
            m[0][0] * m[1][1] - m[0][1] * m[1][0],
        ],
    ]
}

fn box_blur(pixels: &[u8], radius: usize) -> Vec<u8> {
    let horizontal = |source: &[u8], out: &mut [u8]| {
        for y in 0..HEIGHT {
            for x in 0..WIDTH {
                let (from, to) = (x.saturating_sub(radius), (x + radius).min(WIDTH - 1));
                let sum: u32 = (from..=to).map(|i| u32::from(source[y * WIDTH + i])).sum();
                out[y * WIDTH + x] = (sum / (to - from + 1) as u32) as u8;
            }
        }
    };
    let mut once = vec![0u8; pixels.len()];
    horizontal(pixels, &mut once);
    // Vertical pass.
    let mut twice = vec![0u8; pixels.len()];
    for y in 0..HEIGHT {
        for x in 0..WIDTH {
            let (from, to) = (y.saturating_sub(radius), (y + radius).min(HEIGHT - 1));
            let sum: u32 = (from..=to).map(|i| u32::from(once[i * WIDTH + x])).sum();
            twice[y * WIDTH + x] = (sum / (to - from + 1) as u32) as u8;
        }
    }
    twice
}
