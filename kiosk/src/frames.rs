//! Where frames come from when there is no camera: an image file, a directory of images
//! (sorted by name), or a stream of PNG/JPEG images on stdin, one after another, for
//! tests and field replays. The camera itself is `camera.rs` (feature `camera`).

use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use crate::error::KioskError;

/// Largest encoded image accepted from a stream: a 4K PNG is well under this.
pub const MAX_IMAGE_BYTES: usize = 32 * 1024 * 1024;

/// The image files of `path`: itself, or a directory's PNG/JPEG files sorted by name.
pub fn image_files(path: &Path) -> Result<Vec<PathBuf>, KioskError> {
    let metadata = std::fs::metadata(path).map_err(|source| KioskError::Io {
        action: "read",
        path: path.to_owned(),
        source,
    })?;
    if !metadata.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let entries = std::fs::read_dir(path).map_err(|source| KioskError::Io {
        action: "list",
        path: path.to_owned(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|file| {
            file.extension()
                .and_then(|extension| extension.to_str())
                .is_some_and(|extension| {
                    matches!(
                        extension.to_ascii_lowercase().as_str(),
                        "png" | "jpg" | "jpeg"
                    )
                })
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(KioskError::Usage(format!(
            "{} holds no .png, .jpg or .jpeg files",
            path.display()
        )));
    }
    Ok(files)
}

/// Splits a byte stream of concatenated PNG and JPEG images into whole images.
pub struct ImageStream<R: Read> {
    reader: BufReader<R>,
    failed: bool,
}

impl<R: Read> ImageStream<R> {
    pub fn new(reader: R) -> Self {
        Self {
            reader: BufReader::new(reader),
            failed: false,
        }
    }

    fn read_exact_into(&mut self, image: &mut Vec<u8>, count: usize) -> Result<(), String> {
        if image.len() + count > MAX_IMAGE_BYTES {
            return Err(format!(
                "an image in the stream is larger than {} MiB",
                MAX_IMAGE_BYTES >> 20
            ));
        }
        let start = image.len();
        image.resize(start + count, 0);
        self.reader
            .read_exact(&mut image[start..])
            .map_err(|_| "the stream ended inside an image".to_owned())
    }

    fn byte(&mut self, image: &mut Vec<u8>) -> Result<u8, String> {
        self.read_exact_into(image, 1)?;
        Ok(image[image.len() - 1])
    }

    fn next_png(&mut self, image: &mut Vec<u8>) -> Result<(), String> {
        self.read_exact_into(image, 6)?;
        if image[..8] != [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a] {
            return Err("the stream holds something that is not a PNG or JPEG image".into());
        }
        loop {
            let start = image.len();
            self.read_exact_into(image, 8)?;
            let length = u32::from_be_bytes([
                image[start],
                image[start + 1],
                image[start + 2],
                image[start + 3],
            ]) as usize;
            let kind = [
                image[start + 4],
                image[start + 5],
                image[start + 6],
                image[start + 7],
            ];
            self.read_exact_into(image, length + 4)?;
            if &kind == b"IEND" {
                return Ok(());
            }
        }
    }

    fn next_jpeg(&mut self, image: &mut Vec<u8>) -> Result<(), String> {
        // Segments with lengths up to the start of scan; then entropy-coded data, where
        // 0xFF is followed by 0x00 (stuffing) or a restart marker, until another marker.
        let mut marker = {
            if self.byte(image)? != 0xff {
                return Err("a JPEG segment does not start with 0xFF".into());
            }
            self.byte(image)?
        };
        loop {
            while marker == 0xff {
                marker = self.byte(image)?;
            }
            match marker {
                0xd9 => return Ok(()),
                0x01 | 0xd0..=0xd7 => {}
                _ => {
                    let high = self.byte(image)?;
                    let low = self.byte(image)?;
                    let length = usize::from(u16::from_be_bytes([high, low]));
                    if length < 2 {
                        return Err("a JPEG segment has an impossible length".into());
                    }
                    self.read_exact_into(image, length - 2)?;
                    if marker == 0xda {
                        marker = self.skip_entropy_coded(image)?;
                        continue;
                    }
                }
            }
            if self.byte(image)? != 0xff {
                return Err("a JPEG segment does not start with 0xFF".into());
            }
            marker = self.byte(image)?;
        }
    }

    /// Reads scan data up to the next marker and returns that marker.
    fn skip_entropy_coded(&mut self, image: &mut Vec<u8>) -> Result<u8, String> {
        loop {
            if self.byte(image)? != 0xff {
                continue;
            }
            let mut next = self.byte(image)?;
            while next == 0xff {
                next = self.byte(image)?;
            }
            if next != 0x00 && !(0xd0..=0xd7).contains(&next) {
                return Ok(next);
            }
        }
    }
}

impl<R: Read> Iterator for ImageStream<R> {
    type Item = Result<Vec<u8>, KioskError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let mut image = Vec::new();
        let mut first = [0u8; 2];
        match self.reader.read(&mut first[..1]) {
            Ok(0) => return None,
            Ok(_) => {}
            Err(error) => {
                self.failed = true;
                return Some(Err(KioskError::Usage(format!(
                    "cannot read stdin: {error}"
                ))));
            }
        }
        if self.reader.read_exact(&mut first[1..]).is_err() {
            self.failed = true;
            return Some(Err(KioskError::Usage(
                "the stream ended inside an image".into(),
            )));
        }
        image.extend_from_slice(&first);
        let result = match first {
            [0x89, b'P'] => self.next_png(&mut image),
            [0xff, 0xd8] => self.next_jpeg(&mut image),
            _ => Err("the stream holds something that is not a PNG or JPEG image".into()),
        };
        match result {
            Ok(()) => Some(Ok(image)),
            Err(reason) => {
                self.failed = true;
                Some(Err(KioskError::Usage(format!("--frames -: {reason}"))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, ImageFormat};
    use std::io::Cursor;

    fn encoded(format: ImageFormat, shade: u8) -> Vec<u8> {
        let image = GrayImage::from_fn(40, 30, |x, y| image::Luma([shade ^ ((x * y) as u8)]));
        let mut bytes = Cursor::new(Vec::new());
        image.write_to(&mut bytes, format).expect("encode");
        bytes.into_inner()
    }

    #[test]
    fn a_stream_of_pngs_and_jpegs_splits_into_the_same_images() {
        let images = [
            encoded(ImageFormat::Png, 1),
            encoded(ImageFormat::Jpeg, 2),
            encoded(ImageFormat::Png, 3),
            encoded(ImageFormat::Jpeg, 4),
        ];
        let stream: Vec<u8> = images.concat();
        let split: Vec<Vec<u8>> = ImageStream::new(Cursor::new(stream))
            .collect::<Result<_, _>>()
            .expect("split");
        assert_eq!(split, images);
        for image in &split {
            assert!(image::load_from_memory(image).is_ok());
        }
    }

    #[test]
    fn hostile_streams_end_with_an_error_never_a_hang_or_panic() {
        let png = encoded(ImageFormat::Png, 1);
        let jpeg = encoded(ImageFormat::Jpeg, 2);
        let cases: Vec<Vec<u8>> = vec![
            b"hello world".to_vec(),
            png[..png.len() - 5].to_vec(),
            jpeg[..jpeg.len() / 2].to_vec(),
            vec![0x89],
            vec![0xff, 0xd8, 0x00],
            vec![0xff, 0xd8, 0xff, 0xe0, 0x00, 0x01],
            {
                let mut huge = png[..8].to_vec();
                huge.extend_from_slice(&[0x7f, 0xff, 0xff, 0xff, b'I', b'D', b'A', b'T']);
                huge
            },
        ];
        for case in cases {
            let results: Vec<_> = ImageStream::new(Cursor::new(case.clone())).collect();
            assert_eq!(results.len(), 1, "{case:?}");
            assert!(results[0].is_err(), "{case:?}");
        }
        assert_eq!(ImageStream::new(Cursor::new(Vec::new())).count(), 0);
        // A good image, then garbage: the image, then one error, then nothing.
        let mut mixed = png.clone();
        mixed.extend_from_slice(b"garbage");
        let results: Vec<_> = ImageStream::new(Cursor::new(mixed)).collect();
        assert_eq!(results.len(), 2);
        assert!(results[0].is_ok() && results[1].is_err());
    }

    #[test]
    fn a_directory_lists_its_images_sorted() {
        let temp = tempfile::tempdir().expect("temp");
        for name in ["b.png", "a.JPG", "c.txt", "d.jpeg"] {
            std::fs::write(temp.path().join(name), b"x").expect("write");
        }
        let files = image_files(temp.path()).expect("list");
        let names: Vec<_> = files
            .iter()
            .map(|file| {
                file.file_name()
                    .and_then(|name| name.to_str())
                    .unwrap_or("")
            })
            .collect();
        assert_eq!(names, ["a.JPG", "b.png", "d.jpeg"]);
        let empty = tempfile::tempdir().expect("temp");
        assert!(image_files(empty.path()).is_err());
        assert!(image_files(&empty.path().join("missing")).is_err());
    }
}
