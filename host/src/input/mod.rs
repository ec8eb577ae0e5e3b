//! Request images: where they come from (base64, URL, numpy, upload) and decoding them safely.

pub mod decode;
mod error;
pub mod numpy;
pub mod request;
pub mod url;

use std::time::Duration;

pub use decode::RgbImage;
pub use error::InputError;
pub use request::{decode_base64, ImageSource};

/// Limits on untrusted input.
#[derive(Clone, Debug)]
pub struct InputLimits {
    pub max_image_pixels: u64,
    pub max_url_bytes: usize,
    pub url_timeout: Duration,
    pub max_batch: usize,
}

/// An image's bytes, fetched but not decoded.
pub struct Encoded {
    bytes: Vec<u8>,
    numpy: bool,
}

impl Encoded {
    /// The encoded bytes' length.
    pub fn encoded_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// About how many bytes the decoded image takes (RGB8), read from the header alone; `None`
    /// when the header cannot be read (decoding will then say why).
    pub fn decoded_size(&self) -> Option<u64> {
        if self.numpy {
            // The array's bytes are the payload: its decoded RGB is about as large.
            return Some(self.bytes.len() as u64);
        }
        let (w, h) = decode::dimensions(&self.bytes)?;
        Some(u64::from(w) * u64::from(h) * 3)
    }
}

/// Fetches an image's bytes (URLs are downloaded under `policy` and the limits).
pub async fn fetch(
    source: ImageSource,
    limits: &InputLimits,
    http: &reqwest::Client,
    policy: &url::UrlPolicy,
) -> Result<Encoded, InputError> {
    Ok(match source {
        ImageSource::Encoded(bytes) => Encoded { bytes, numpy: false },
        ImageSource::Numpy(bytes) => Encoded { bytes, numpy: true },
        ImageSource::Url(u) => Encoded {
            bytes: url::fetch(http, policy, &u, limits).await?,
            numpy: false,
        },
    })
}

/// Decodes fetched bytes, on a blocking thread (decoding is CPU work).
pub async fn decode(encoded: Encoded, max_pixels: u64) -> Result<RgbImage, InputError> {
    tokio::task::spawn_blocking(move || decode_here(&encoded, max_pixels))
        .await
        .map_err(|e| InputError::Decode(format!("decoder crashed: {e}")))?
}

/// Decodes fetched bytes on this thread (one that may block).
pub fn decode_here(encoded: &Encoded, max_pixels: u64) -> Result<RgbImage, InputError> {
    if encoded.numpy {
        decode::decode_numpy_image(&encoded.bytes, max_pixels)
    } else {
        decode::decode_image(&encoded.bytes, max_pixels)
    }
}
