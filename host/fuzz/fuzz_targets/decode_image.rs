//! Encoded images (JPEG via libjpeg-turbo, PNG, BMP, WebP, GIF, TIFF via `image`).
#![no_main]

use inference_host_fuzz::{check, decode::decode_image, MAX_PIXELS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    check(decode_image(data, MAX_PIXELS), false);
});
