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

/// Fetches (for URLs) and decodes one image. CPU-heavy decoding runs on a blocking thread.
pub async fn load(
    source: ImageSource,
    limits: &InputLimits,
    http: &reqwest::Client,
    policy: &url::UrlPolicy,
) -> Result<RgbImage, InputError> {
    let max_pixels = limits.max_image_pixels;
    let (bytes, numpy) = match source {
        ImageSource::Encoded(b) => (b, false),
        ImageSource::Numpy(b) => (b, true),
        ImageSource::Url(u) => (url::fetch(http, policy, &u, limits).await?, false),
    };
    tokio::task::spawn_blocking(move || {
        if numpy {
            decode::decode_numpy_image(&bytes, max_pixels)
        } else {
            decode::decode_image(&bytes, max_pixels)
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
