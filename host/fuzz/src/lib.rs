//! The host's input decoders and the reading of a request body's images, compiled from the
//! host's own source files (not a copy), plus the invariants every fuzz target checks. Only
//! these files are included so the fuzz build needs their few dependencies, not the server's.

#[path = "../../src/input/decode.rs"]
pub mod decode;
#[path = "../../src/input/error.rs"]
mod error;
#[path = "../../src/input/numpy.rs"]
pub mod numpy;
#[path = "../../src/input/request.rs"]
pub mod request;

pub use decode::RgbImage;
pub use error::InputError;
pub use request::ImageSource;

/// Pixel cap for fuzzing: far below the server's default (50 MP) so a fuzzed header cannot
/// make every run allocate hundreds of MB, yet large enough for every code path.
pub const MAX_PIXELS: u64 = 1 << 20;

/// What the server relies on from a decoder: an image within the cap whose buffer is exactly
/// width x height RGB triples; or an error of the kind the decoder is meant to return.
pub fn check(result: Result<RgbImage, InputError>, numpy: bool) {
    match result {
        Ok(img) => {
            let pixels = u64::from(img.width) * u64::from(img.height);
            assert!(pixels > 0, "empty image accepted");
            assert!(pixels <= MAX_PIXELS, "{}x{} exceeds the cap", img.width, img.height);
            assert_eq!(img.rgb.len() as u64, pixels * 3, "{}x{} buffer", img.width, img.height);
        }
        Err(InputError::TooManyPixels { width, height, max }) => {
            assert!(
                width.saturating_mul(height) > max,
                "{width}x{height} refused under {max}"
            );
        }
        Err(InputError::Numpy(msg)) if numpy => assert!(!msg.is_empty()),
        Err(InputError::Decode(msg)) => assert!(!msg.is_empty()),
        Err(other) => panic!("unexpected error kind from the decoder: {other:?}"),
    }
}
