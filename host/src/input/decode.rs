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
#[derive(Default)]
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

/// An encoded image's width and height from its header. A PNG's are read from its IHDR chunk
/// directly: the PNG decoder reads (and inflates) every chunk before the first IDAT to report
/// them, an iCCP bomb included.
pub fn dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        let ihdr = bytes.get(8..24).filter(|c| &c[4..8] == b"IHDR")?;
        let w = u32::from_be_bytes([ihdr[8], ihdr[9], ihdr[10], ihdr[11]]);
        let h = u32::from_be_bytes([ihdr[12], ihdr[13], ihdr[14], ihdr[15]]);
        return Some((w, h));
    }
    ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .ok()?
        .into_dimensions()
        .ok()
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
    let format = reader.format();
    let is_jpeg = format == Some(image::ImageFormat::Jpeg);
    // The PNG decoder inflates text and profile chunks whatever their size: drop them first.
    let stripped = (format == Some(image::ImageFormat::Png))
        .then(|| without_png_text_chunks(bytes))
        .flatten();
    let bytes = stripped.as_deref().unwrap_or(bytes);
    let mut reader = match &stripped {
        Some(png) => ImageReader::with_format(Cursor::new(&png[..]), image::ImageFormat::Png),
        None => reader,
    };
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
    if format == Some(image::ImageFormat::Gif) {
        check_gif_frames(bytes)?;
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

/// A progressive JPEG may hold any number of scans, and libjpeg walks every block of the image
/// for each: 12 bytes per scan made a 0.8 MB 7000x7000 file cost 12 s of CPU with 20 000 scans.
/// Encoders write about 10 (libjpeg's default progression).
const MAX_JPEG_SCANS: usize = 100;

/// Refuses what libjpeg would accept but we must not: too many scans (above), and truncation
/// (libjpeg pads a truncated JPEG with grey and only warns; OpenCV, and we, refuse it): the
/// file must reach an end-of-image marker after its last scan.
///
/// The markers are walked as libjpeg reads them: a segment's payload is skipped by its length
/// (a comment or EXIF block may hold any bytes, `FF DA` included), and a scan's entropy-coded
/// data runs to the first marker that is not a restart (0xFF in it is stuffed as `FF 00`).
fn check_jpeg_structure(bytes: &[u8]) -> Result<(), InputError> {
    let truncated = || InputError::Decode("truncated JPEG (no end-of-image marker after the last scan)".into());
    let mut scans = 0usize;
    // After SOI.
    let mut i = 2;
    loop {
        // libjpeg skips stray bytes before a marker (with a warning); so do we.
        while i < bytes.len() && bytes[i] != 0xFF {
            i += 1;
        }
        // Fill bytes: any number of 0xFF before the marker code.
        while i < bytes.len() && bytes[i] == 0xFF {
            i += 1;
        }
        let Some(&marker) = bytes.get(i) else {
            return Err(truncated());
        };
        i += 1;
        match marker {
            0xD9 if scans > 0 => return Ok(()),
            0xD9 => return Err(truncated()),
            // Standalone markers: SOI, RSTn, TEM.
            0xD8 | 0xD0..=0xD7 | 0x01 => continue,
            _ => {}
        }
        let Some(length) = bytes
            .get(i..i + 2)
            .map(|l| usize::from(u16::from_be_bytes([l[0], l[1]])))
        else {
            return Err(truncated());
        };
        if length < 2 {
            return Err(InputError::Decode(format!("corrupt JPEG segment length {length}")));
        }
        i += length;
        if marker == 0xDA {
            scans += 1;
            if scans > MAX_JPEG_SCANS {
                return Err(InputError::Decode(format!(
                    "JPEG with more than {MAX_JPEG_SCANS} scans is refused"
                )));
            }
            // Entropy-coded data: up to a 0xFF that starts a marker other than RSTn.
            while i + 1 < bytes.len() {
                if bytes[i] == 0xFF && !matches!(bytes[i + 1], 0x00 | 0xD0..=0xD7) {
                    break;
                }
                i += 1;
            }
        }
    }
}

/// GIF frames are decoded into buffers of their own size, which the header's logical screen
/// (checked against the pixel cap) does not bound: a 35-byte file with a 1x1 screen and a
/// 9999x9999 frame made the decoder allocate 85 MB. No frame may be larger than the
/// screen's size; the file is walked block by block (no pixel is decoded).
fn check_gif_frames(bytes: &[u8]) -> Result<(), InputError> {
    let u16_at = |i: usize| bytes.get(i..i + 2).map(|b| u32::from(u16::from_le_bytes([b[0], b[1]])));
    let (Some(screen_w), Some(screen_h), Some(&flags)) = (u16_at(6), u16_at(8), bytes.get(10)) else {
        return Ok(()); // The decoder reports the truncated header.
    };
    let mut i = 13;
    if flags & 0x80 != 0 {
        i += 3 << ((flags & 7) + 1);
    }
    // Skips data sub-blocks (a length byte, that many bytes) up to the empty one.
    let skip_blocks = |mut i: usize| -> usize {
        while let Some(&n) = bytes.get(i) {
            i += 1;
            if n == 0 {
                break;
            }
            i += usize::from(n);
        }
        i
    };
    while let Some(&block) = bytes.get(i) {
        match block {
            // Extension: label, then sub-blocks.
            0x21 => i = skip_blocks(i + 2),
            // Image descriptor: left, top, width, height, flags; local colour table; LZW code
            // size; sub-blocks.
            0x2C => {
                let (Some(left), Some(top), Some(w), Some(h), Some(&flags)) = (
                    u16_at(i + 1),
                    u16_at(i + 3),
                    u16_at(i + 5),
                    u16_at(i + 7),
                    bytes.get(i + 9),
                ) else {
                    return Ok(());
                };
                // Only the size matters for memory (a frame placed partly off-screen is clipped).
                if w > screen_w || h > screen_h {
                    return Err(InputError::Decode(format!(
                        "GIF frame of {w}x{h} at ({left}, {top}) is larger than its {screen_w}x{screen_h} screen"
                    )));
                }
                i += 10;
                if flags & 0x80 != 0 {
                    i += 3 << ((flags & 7) + 1);
                }
                i = skip_blocks(i + 1);
            }
            // Trailer, or bytes the decoder will refuse.
            _ => return Ok(()),
        }
    }
    Ok(())
}

/// PNG chunks that carry compressed text or a colour profile: the decoder inflates them (an
/// iCCP chunk of 1 MB inflated to 1 GB held hundreds of MB), and decoding uses none of them.
const PNG_SKIPPED_CHUNKS: [&[u8; 4]; 4] = [b"iCCP", b"zTXt", b"iTXt", b"tEXt"];

/// The PNG without its text and profile chunks; `None` when it has none (or is not a
/// well-formed chunk list, which the decoder then reports).
fn without_png_text_chunks(bytes: &[u8]) -> Option<Vec<u8>> {
    const SIGNATURE: usize = 8;
    let chunks = || {
        let mut i = SIGNATURE;
        std::iter::from_fn(move || {
            let header = bytes.get(i..i + 8)?;
            let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
            let end = i.checked_add(12)?.checked_add(length)?.min(bytes.len());
            let chunk = (&bytes[i + 4..i + 8], i..end);
            i = end;
            Some(chunk)
        })
    };
    let skipped = |kind: &[u8]| PNG_SKIPPED_CHUNKS.iter().any(|s| &s[..] == kind);
    if !chunks().any(|(kind, _)| skipped(kind)) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&bytes[..SIGNATURE]);
    for (kind, range) in chunks() {
        if !skipped(kind) {
            out.extend_from_slice(&bytes[range]);
        }
    }
    Some(out)
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

    const SOS: [u8; 2] = [0xFF, 0xDA];
    const EOI: [u8; 2] = [0xFF, 0xD9];

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
        assert!(err.contains("more than 100 scans is refused"), "{err}");
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

    #[test]
    fn start_of_scan_bytes_in_a_comment_are_not_scans() {
        let (jpeg, _) = progressive_jpeg();
        let comment = SOS.repeat(150);
        let mut tricky = jpeg[..2].to_vec();
        tricky.extend_from_slice(&[0xFF, 0xFE]);
        tricky.extend_from_slice(&((comment.len() + 2) as u16).to_be_bytes());
        tricky.extend_from_slice(&comment);
        tricky.extend_from_slice(&jpeg[2..]);
        assert_eq!(decode_image(&tricky, 1 << 20).unwrap().rgb.len(), 64 * 48 * 3);
        // Still whole only with its end-of-image marker.
        assert!(decode_image(&tricky[..tricky.len() - 2], 1 << 20).is_err());
    }

    fn png_chunk(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut out = (payload.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(payload);
        // The CRC is not checked for chunks that are dropped; a wrong one would be for others.
        out.extend_from_slice(&[0; 4]);
        out
    }

    #[test]
    fn png_text_and_profile_chunks_are_dropped_before_decoding() {
        let plain = png(8, 8, image::ColorType::Rgb8);
        assert!(without_png_text_chunks(&plain).is_none());
        let ihdr_end = 8 + 25;
        let mut with_text = plain[..ihdr_end].to_vec();
        with_text.extend(png_chunk(b"iCCP", b"garbage that does not inflate"));
        with_text.extend(png_chunk(b"zTXt", b"more garbage"));
        with_text.extend_from_slice(&plain[ihdr_end..]);
        assert_eq!(without_png_text_chunks(&with_text).unwrap(), plain);
        assert_eq!(dimensions(&with_text), Some((8, 8)));
        assert_eq!(decode_image(&with_text, 1000).unwrap().rgb.len(), 8 * 8 * 3);
    }

    /// A GIF with a `screen` logical screen and one `frame`-sized frame of LZW data for 1 pixel.
    fn gif(screen: (u16, u16), frame: (u16, u16)) -> Vec<u8> {
        let mut out = b"GIF89a".to_vec();
        for v in [screen.0, screen.1] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&[0x80, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF]);
        out.push(0x2C);
        for v in [0, 0, frame.0, frame.1] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&[0, 2, 2, 0x44, 0x01, 0, 0x3B]);
        out
    }

    #[test]
    fn gif_frames_larger_than_the_screen_are_refused() {
        let err = decode_image(&gif((1, 1), (9999, 9999)), 1 << 20)
            .unwrap_err()
            .to_string();
        assert!(err.contains("larger than its 1x1 screen"), "{err}");
        assert!(check_gif_frames(&gif((1, 1), (1, 1))).is_ok());
        // Truncated or odd files are left to the decoder.
        assert!(check_gif_frames(b"GIF89a").is_ok());
    }
}
