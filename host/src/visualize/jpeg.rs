//! JPEG encoding of annotated pictures (libjpeg-turbo through mozjpeg).

use anyhow::{anyhow, Context, Result};

/// Quality of the annotated JPEGs: annotations have hard coloured edges.
const QUALITY: f32 = 90.0;

/// Encodes tightly packed RGB8 pixels. Chroma is kept at full resolution so that thin
/// coloured lines keep their colour.
pub fn encode(width: u32, height: u32, rgb: &[u8]) -> Result<Vec<u8>> {
    // libjpeg reports errors by unwinding (mozjpeg's design); contain it here.
    std::panic::catch_unwind(|| -> Result<Vec<u8>> {
        let mut compress = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_RGB);
        // libjpeg-turbo's defaults: mozjpeg's own (trellis, progressive) are many times slower.
        compress.set_fastest_defaults();
        compress.set_size(width as usize, height as usize);
        compress.set_quality(QUALITY);
        compress.set_chroma_sampling_pixel_sizes((1, 1), (1, 1));
        let mut started = compress
            .start_compress(Vec::new())
            .context("cannot start JPEG encoding")?;
        started.write_scanlines(rgb).context("cannot encode JPEG rows")?;
        started.finish().context("cannot finish JPEG")
    })
    .map_err(|_| anyhow!("the JPEG encoder failed"))?
}
