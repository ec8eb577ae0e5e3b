//! Pickled ndarrays: the PROTO opcode is prepended when missing so every run reaches the
//! restricted pickle machine.
#![no_main]

use inference_host_fuzz::{check, decode::decode_numpy_image, MAX_PIXELS};
use libfuzzer_sys::fuzz_target;

const PROTO: u8 = 0x80;

fuzz_target!(|data: &[u8]| {
    let bytes = if data.first() == Some(&PROTO) {
        data.to_vec()
    } else {
        [&[PROTO], data].concat()
    };
    check(decode_numpy_image(&bytes, MAX_PIXELS), true);
});
