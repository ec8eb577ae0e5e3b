//! Turning encoded bytes (JPEG, PNG, BMP, WebP, GIF, TIFF) or numpy arrays into RGB8 pixels,
//! with the size checked from the header before any pixel is decoded.
//!
//! JPEGs are decoded with libjpeg-turbo's decoder (via mozjpeg) rather than the `image`
//! crate's: it is what OpenCV uses, and models' confidences move measurably with the decoder
//! (one golden detection moved by 0.011 with another decoder's IDCT and upsampling).

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageReader};

use super::numpy::{decode_numpy, NumpyImage};
use super::InputError;

/// A decoded image: RGB8, row-major, tightly packed.
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
}

impl std::fmt::Debug for RgbImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RgbImage({}x{})", self.width, self.height)
    }
}

/// Decodes an encoded image: EXIF orientation applied, alpha dropped (not composited, as
/// OpenCV does), grey expanded to RGB.
pub fn decode_image(bytes: &[u8], max_pixels: u64) -> Result<RgbImage, InputError> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| InputError::Decode(e.to_string()))?;
    if reader.format().is_none() {
        return Err(InputError::Decode(
            "unrecognised image format (expected JPEG, PNG, BMP, WebP, GIF or TIFF)".into(),
        ));
    }
    let mut limits = image::Limits::default();
    // Caps allocations as a second line of defence behind the pixel check below.
    limits.max_alloc = Some(max_pixels.saturating_mul(8).max(64 << 20));
    let is_jpeg = reader.format() == Some(image::ImageFormat::Jpeg);
    let mut reader = reader;
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(|e| InputError::Decode(e.to_string()))?;
    let (w, h) = decoder.dimensions();
    check_pixels(w as u64, h as u64, max_pixels)?;
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    if is_jpeg {
        check_jpeg_structure(bytes)?;
    }
    let mut img = match is_jpeg.then(|| decode_jpeg(bytes, w, h)).flatten() {
        Some(img) => img,
        None => DynamicImage::from_decoder(decoder).map_err(|e| InputError::Decode(e.to_string()))?,
    };
    img.apply_orientation(orientation);
    let rgb = img.into_rgb8();
    Ok(RgbImage {
        width: rgb.width(),
        height: rgb.height(),
        rgb: rgb.into_raw(),
    })
}

/// Start-of-scan and end-of-image markers. Inside entropy-coded data 0xFF is always stuffed,
/// so these byte pairs occur only as markers or inside metadata segments.
const SOS: [u8; 2] = [0xFF, 0xDA];
const EOI: [u8; 2] = [0xFF, 0xD9];

/// A progressive JPEG may hold any number of scans, and libjpeg walks every block of the image
/// for each: 12 bytes per scan made a 0.8 MB 7000x7000 file cost 12 s of CPU with 20 000 scans.
/// Encoders write about 10 (libjpeg's default progression); metadata can only add to the count.
const MAX_JPEG_SCANS: usize = 100;

/// Refuses what libjpeg would accept but we must not: too many scans (above), and truncation
/// (libjpeg pads a truncated JPEG with grey and only warns; OpenCV, and we, refuse it). An EOI
/// after the last SOS means the file is whole.
fn check_jpeg_structure(bytes: &[u8]) -> Result<(), InputError> {
    let scans = bytes.windows(2).filter(|w| *w == SOS).count();
    if scans > MAX_JPEG_SCANS {
        return Err(InputError::Decode(format!(
            "JPEG with {scans} scans (more than {MAX_JPEG_SCANS}) is refused"
        )));
    }
    let last_sos = bytes.windows(2).rposition(|w| w == SOS);
    let last_eoi = bytes.windows(2).rposition(|w| w == EOI);
    if !matches!((last_sos, last_eoi), (Some(sos), Some(eoi)) if eoi > sos) {
        return Err(InputError::Decode(
            "truncated JPEG (no end-of-image marker after the last scan)".into(),
        ));
    }
    Ok(())
}

/// libjpeg-turbo decode to RGB (ISLOW IDCT, fancy upsampling: OpenCV's settings). `None`
/// when libjpeg refuses the file (e.g. CMYK), so the caller falls back to the other decoder,
/// which then reports the problem.
fn decode_jpeg(bytes: &[u8], width: u32, height: u32) -> Option<DynamicImage> {
    // libjpeg reports errors by unwinding (mozjpeg's design); contain it here.
    let pixels = std::panic::catch_unwind(|| -> std::io::Result<Vec<u8>> {
        let mut d = mozjpeg::Decompress::builder().with_markers(&[]).from_mem(bytes)?;
        d.dct_method(mozjpeg::DctMethod::IntegerSlow);
        d.do_fancy_upsampling(true);
        let mut started = d.rgb()?;
        let pixels = started.read_scanlines::<u8>()?;
        started.finish()?;
        Ok(pixels)
    })
    .ok()?
    .ok()?;
    if pixels.len() != width as usize * height as usize * 3 {
        return None;
    }
    image::RgbImage::from_raw(width, height, pixels).map(DynamicImage::ImageRgb8)
}

fn check_pixels(w: u64, h: u64, max_pixels: u64) -> Result<(), InputError> {
    if w == 0 || h == 0 {
        return Err(InputError::Decode(format!("image has no pixels ({w}x{h})")));
    }
    if w.saturating_mul(h) > max_pixels {
        return Err(InputError::TooManyPixels {
            width: w,
            height: h,
            max: max_pixels,
        });
    }
    Ok(())
}

/// Decodes a numpy array as sent by `pickle.dumps(cv2.imread(...))`: channels are BGR(A).
pub fn decode_numpy_image(bytes: &[u8], max_pixels: u64) -> Result<RgbImage, InputError> {
    let max_elements = usize::try_from(max_pixels.saturating_mul(4)).unwrap_or(usize::MAX);
    let NumpyImage {
        height,
        width,
        channels,
        data,
    } = decode_numpy(bytes, max_elements).map_err(|e| InputError::Numpy(e.to_string()))?;
    check_pixels(width as u64, height as u64, max_pixels)?;
    let pixels = width * height;
    let mut rgb = Vec::with_capacity(pixels * 3);
    match channels {
        1 => {
            for &v in &data[..pixels] {
                rgb.extend_from_slice(&[v, v, v]);
            }
        }
        3 | 4 => {
            for px in data.chunks_exact(channels) {
                rgb.extend_from_slice(&[px[2], px[1], px[0]]);
            }
        }
        n => return Err(InputError::Numpy(format!("arrays with {n} channels are not images"))),
    }
    Ok(RgbImage {
        width: width as u32,
        height: height as u32,
        rgb,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32, color: image::ColorType) -> Vec<u8> {
        let img = match color {
            image::ColorType::L8 => DynamicImage::new_luma8(w, h),
            image::ColorType::Rgba8 => DynamicImage::new_rgba8(w, h),
            _ => DynamicImage::new_rgb8(w, h),
        };
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    }

    #[test]
    fn decodes_grey_and_rgba_to_rgb() {
        for color in [image::ColorType::L8, image::ColorType::Rgba8, image::ColorType::Rgb8] {
            let img = decode_image(&png(5, 3, color), 1000).unwrap();
            assert_eq!((img.width, img.height, img.rgb.len()), (5, 3, 45));
        }
    }

    #[test]
    fn refuses_too_many_pixels_before_decoding() {
        let err = decode_image(&png(50, 50, image::ColorType::Rgb8), 100).unwrap_err();
        assert!(
            matches!(
                err,
                InputError::TooManyPixels {
                    width: 50,
                    height: 50,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn rejects_garbage_and_truncation() {
        assert!(decode_image(b"definitely not an image", 1000).is_err());
        let full = png(20, 20, image::ColorType::Rgb8);
        assert!(decode_image(&full[..full.len() / 2], 1000).is_err());
        assert!(decode_image(&[], 1000).is_err());
    }

    #[test]
    fn refuses_truncated_jpeg() {
        let bytes = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/images/dev/02_multi_640x480.jpg"
        ))
        .unwrap();
        assert!(decode_image(&bytes, 1 << 24).is_ok());
        for cut in [1000, bytes.len() / 2, bytes.len() - 2] {
            let err = decode_image(&bytes[..cut], 1 << 24).unwrap_err();
            assert!(
                err.to_string().contains("JPEG") || err.to_string().contains("decode"),
                "{err}"
            );
        }
    }

    /// A progressive JPEG from libjpeg (mozjpeg), and its start-of-scan offsets.
    fn progressive_jpeg() -> (Vec<u8>, Vec<usize>) {
        let (w, h) = (64, 48);
        let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i * 37 % 251) as u8).collect();
        let mut c = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_RGB);
        c.set_size(w, h);
        c.set_progressive_mode();
        let mut started = c.start_compress(Vec::new()).unwrap();
        started.write_scanlines(&rgb).unwrap();
        let jpeg = started.finish().unwrap();
        let scans = jpeg
            .windows(2)
            .enumerate()
            .filter(|(_, w)| *w == SOS)
            .map(|(i, _)| i)
            .collect();
        (jpeg, scans)
    }

    #[test]
    fn refuses_scan_bombs() {
        let (jpeg, scans) = progressive_jpeg();
        assert!(
            scans.len() > 1 && scans.len() <= MAX_JPEG_SCANS,
            "{} scans",
            scans.len()
        );
        assert_eq!(decode_image(&jpeg, 1 << 20).unwrap().rgb.len(), 64 * 48 * 3);
        // The last scan (header and entropy data up to EOI) repeated: libjpeg decodes each one.
        let last = &jpeg[*scans.last().unwrap()..jpeg.len() - 2];
        let mut bomb = jpeg[..jpeg.len() - 2].to_vec();
        for _ in 0..MAX_JPEG_SCANS {
            bomb.extend_from_slice(last);
        }
        bomb.extend_from_slice(&EOI);
        let err = decode_image(&bomb, 1 << 20).unwrap_err().to_string();
        assert!(err.contains("scans (more than 100) is refused"), "{err}");
    }

    #[test]
    fn applies_exif_orientation() {
        let bytes = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/images/dev/11_multi_640x480_exif6.jpg"
        ))
        .unwrap();
        let img = decode_image(&bytes, 1 << 24).unwrap();
        assert_eq!((img.width, img.height), (640, 480));
    }
}
