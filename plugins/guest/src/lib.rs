//! Code shared by the task plugins: plain data in, plain data out.
//!
//! - [`resize`]: bilinear resampling, bit-exact with OpenCV's `INTER_LINEAR` on u8.
//! - [`preprocess`]: letterbox / stretch / center-crop of an RGB image into an f32
//!   NCHW or NHWC tensor, and the [`Transform`] that maps tensor pixels back.
//! - [`detect`]: decoding of raw YOLO outputs into [`Candidate`] boxes.
//! - [`mod@nms`]: Ultralytics-style non-maximum suppression.
//! - [`batch`]: batched input tensors and wasi-nn's little-endian tensor bytes.
//!
//! Everything here follows Ultralytics' Python pipeline closely, because the plugins
//! are checked against golden outputs produced by it.
//! The crate has no dependencies and no host bindings so that it builds for
//! `wasm32-wasip2` and is unit-tested natively.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod batch;
pub mod detect;
pub mod nms;
pub mod preprocess;
pub mod resize;

#[cfg(test)]
mod golden_tests;
#[cfg(test)]
mod npy;

pub use batch::{classes_in, f32_to_le_bytes, le_bytes_to_f32, ModelInput};
pub use detect::{decode, infer_layout, Candidate, OutputLayout};
pub use nms::{iou, nms, MAX_NMS};
pub use preprocess::{
    letterbox_geometry, preprocess_into, rect_input_size, ImageRef, Layout, LetterboxGeometry, Resize, Transform,
};
pub use resize::resize_bilinear_u8;

/// Python's `round()` on floats: half to even (`round(2.5) == 2`).
/// Ultralytics' letterbox geometry depends on it.
pub(crate) fn py_round(x: f64) -> f64 {
    x.round_ties_even()
}
