//! Request images: where they come from (base64, URL, numpy, upload) and decoding them safely.

pub mod decode;
mod error;
pub mod numpy;
pub mod url;

use std::time::Duration;

use base64::Engine as _;

pub use decode::RgbImage;
pub use error::InputError;

/// Limits on untrusted input.
#[derive(Clone, Debug)]
pub struct InputLimits {
    pub max_image_pixels: u64,
    pub max_url_bytes: usize,
    pub url_timeout: Duration,
    pub max_batch: usize,
}

/// Where an image's bytes come from.
#[derive(Debug)]
pub enum ImageSource {
    /// An encoded image file (JPEG, PNG, ...).
    Encoded(Vec<u8>),
    /// A pickled numpy array or .npy file.
    Numpy(Vec<u8>),
    /// An http(s) URL to fetch.
    Url(String),
}

/// Decodes base64 text, tolerating a `data:...;base64,` prefix, whitespace and missing padding.
pub fn decode_base64(text: &str) -> Result<Vec<u8>, InputError> {
    let text = text.trim();
    let payload = match text.strip_prefix("data:") {
        Some(rest) => rest
            .split_once(',')
            .map(|(_, data)| data)
            .ok_or_else(|| InputError::Base64("data URI without ','".into()))?,
        None => text,
    };
    let cleaned: Vec<u8> = payload.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    engine
        .decode(&cleaned)
        .or_else(|_| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(cleaned.iter().copied().filter(|b| *b != b'=').collect::<Vec<_>>())
        })
        .map_err(|e| InputError::Base64(e.to_string()))
}

/// An image's bytes, fetched but not decoded.
pub struct Encoded {
    bytes: Vec<u8>,
    numpy: bool,
}

impl Encoded {
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
    tokio::task::spawn_blocking(move || {
        if encoded.numpy {
            decode::decode_numpy_image(&encoded.bytes, max_pixels)
        } else {
            decode::decode_image(&encoded.bytes, max_pixels)
        }
    })
    .await
    .map_err(|e| InputError::Decode(format!("decoder crashed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_variants() {
        assert_eq!(decode_base64("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(decode_base64("aGVsbG8").unwrap(), b"hello");
        assert_eq!(decode_base64("data:image/jpeg;base64,aGVs\nbG8=").unwrap(), b"hello");
        assert_eq!(decode_base64("_-8").unwrap(), vec![0xff, 0xef]);
        assert!(decode_base64("not base64 !!").is_err());
        assert!(decode_base64("data:image/png;base64").is_err());
    }
}
