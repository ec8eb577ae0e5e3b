//! Code shared by the task plugins: plain data in, plain data out.
//!
//! - [`resize`]: bilinear resampling, bit-exact with OpenCV's `INTER_LINEAR` on u8.
//! - [`preprocess`]: letterbox / stretch / center-crop of an RGB image into an f32
//!   NCHW or NHWC tensor, and the [`Transform`] that maps tensor pixels back.
//! - [`detect`]: decoding of raw YOLO outputs into [`Candidate`] boxes.
//! - [`mod@nms`]: Ultralytics-style non-maximum suppression.
//! - [`batch`]: batched input tensors and wasi-nn's little-endian tensor bytes.
//! - [`pil_resize`]: Pillow's antialiased bilinear resize (classification's centre crop).
//! - [`classify`]: class scores → probabilities, ranked.
//! - [`mask`], [`contour`], [`rle`]: instance masks from prototypes, their outlines as
//!   OpenCV traces them, and COCO run-length encoding.
//! - [`pose`]: keypoints carried by detection rows.
//! - [`glue`]: the WIT glue each plugin crate expands ([`plugin_glue!`]).
//!
//! Everything here follows Ultralytics' Python pipeline closely, because the plugins
//! are checked against golden outputs produced by it.
//! The crate has no dependencies and no host bindings so that it builds for
//! `wasm32-wasip2` and is unit-tested natively.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod batch;
pub mod classify;
pub mod contour;
pub mod detect;
pub mod glue;
pub mod mask;
pub mod nms;
pub mod pil_resize;
pub mod pose;
pub mod preprocess;
pub mod resize;
pub mod rle;

#[cfg(test)]
mod golden_tests;
#[cfg(test)]
mod mask_golden_tests;
#[cfg(test)]
mod npy;

pub use batch::{classes_in, f32_to_le_bytes, le_bytes_to_f32, ModelInput};
pub use classify::{class_rows, probabilities, ranked, Activation};
pub use contour::{find_external_contours, mask_outline, merge_multi_segment, merge_plan, offset_outline};
pub use detect::{decode, infer_layout, Candidate, OutputLayout};
pub use mask::{
    mask_channels, mask_coefficients, BinaryMask, MaskChannels, MaskDecoder, MaskMode, MaskToImage, Protos,
};
pub use nms::{iou, keep, nms, MAX_NMS};
pub use pil_resize::resize_pil_bilinear_u8;
pub use pose::{pose_geometry, raw_keypoints, KeypointShape};
pub use preprocess::{
    letterbox_geometry, preprocess_into, rect_input_size, ImageRef, Layout, LetterboxGeometry, Resize, Transform,
};
pub use resize::resize_bilinear_u8;
pub use rle::{rle_area, rle_counts, rle_counts_region, rle_decode, rle_from_string, rle_to_string};

/// Python's `round()` on floats: half to even (`round(2.5) == 2`).
/// Ultralytics' letterbox geometry depends on it.
pub(crate) fn py_round(x: f64) -> f64 {
    x.round_ties_even()
}
