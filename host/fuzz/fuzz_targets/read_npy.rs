//! `.npy` files: the magic is prepended when missing so every run reaches the header parser.
#![no_main]

use inference_host_fuzz::{check, decode::decode_numpy_image, MAX_PIXELS};
use libfuzzer_sys::fuzz_target;

const MAGIC: &[u8] = b"\x93NUMPY";

fuzz_target!(|data: &[u8]| {
    let bytes = if data.starts_with(MAGIC) {
        data.to_vec()
    } else {
        [MAGIC, data].concat()
    };
    check(decode_numpy_image(&bytes, MAX_PIXELS), true);
});
