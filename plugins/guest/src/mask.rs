//! Instance masks of YOLO segmentation models, as Ultralytics 8.4 computes them
//! (`ops.process_mask`, `ops.scale_masks`, `ops.scale_coords`, `Masks.xy`).
//!
//! A model returns, per detection, mask coefficients next to its class scores, and once per
//! image a stack of prototypes `[nm, mh, mw]` at a fraction (1/4) of the input size. The
//! mask logits are `coefficients · prototypes`; then, per [`MaskMode`]:
//!
//! - `Accurate` (Ultralytics' `predict` with `retina_masks=False`): the logits are
//!   upsampled to the input size (torch `F.interpolate(..., mode="bilinear")`,
//!   `align_corners=False`: half-pixel centres, edges clamped, no antialiasing), thresholded
//!   at 0 (sigmoid > 0.5), and cut to the box: columns `c` with `x1 <= c < x2` and rows
//!   `r` with `y1 <= r < y2` are kept.
//! - `Fast`: thresholded at the prototypes' resolution (Ultralytics' `upsample=False`),
//!   keeping the cells whose centre, as an input pixel index, passes the same box test
//!   (Ultralytics compares the cell index itself with the scaled box, which shifts the cut
//!   by up to half a cell).
//! - `Tradeoff(f)`: like `Fast` at an intermediate resolution `proto + (input - proto) * f`
//!   (rounded), the logits upsampled to it as for `Accurate`.
//!
//! Only the pixels inside the box are ever computed, and only the prototype cells they
//! read, one detection at a time, so memory stays at one box-sized mask. A detection
//! whose mask comes out empty is dropped, as Ultralytics does.
//!
//! [`MaskToImage`] then maps a mask to the original image: its outline as the polygon of
//! `results.masks.xy` (OpenCV contours, merged, scaled back with `scale_coords`), or the
//! mask resampled to the original size as `ops.scale_masks` does (padding cut away,
//! bilinear resize of the 0 / 1 mask, > 0.5), which is what a COCO RLE encodes.

use crate::contour::{find_external_contours, merge_plan, offset_outline};
use crate::detect::OutputLayout;
use crate::preprocess::{letterbox_geometry, Resize, Transform};
use crate::py_round;
use crate::rle::rle_counts_region;

/// How finely masks are computed from the prototypes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MaskMode {
    /// At the model's input resolution (Ultralytics' default).
    Accurate,
    /// At the prototypes' resolution (1/4 of the input): fastest, coarsest.
    Fast,
    /// At `proto + (input - proto) * factor` per axis, `factor` in 0..=1.
    Tradeoff(f32),
}

/// The mask prototypes of one image: `channels x height x width` values, channel-major.
#[derive(Clone, Copy, Debug)]
pub struct Protos<'a> {
    /// `channels * height * width` values.
    pub data: &'a [f32],
    /// Number of prototypes (mask coefficients per detection), 32 for YOLO.
    pub channels: usize,
    /// Prototype rows.
    pub height: usize,
    /// Prototype columns.
    pub width: usize,
}

impl<'a> Protos<'a> {
    /// Image `batch_index` of a `[B, C, H, W]` (or `[C, H, W]`) prototype output.
    pub fn from_output(data: &'a [f32], dims: &[usize], batch_index: usize) -> Result<Self, String> {
        let (b, c, h, w) = match *dims {
            [b, c, h, w] => (b, c, h, w),
            [c, h, w] => (1, c, h, w),
            _ => {
                return Err(format!(
                    "mask prototypes must have 4 dimensions [batch, nm, h, w], got {dims:?}"
                ))
            }
        };
        let per = c
            .checked_mul(h)
            .and_then(|v| v.checked_mul(w))
            .ok_or_else(|| format!("prototype dims {dims:?} overflow"))?;
        if c == 0 || h == 0 || w == 0 || Some(data.len()) != b.checked_mul(per) {
            return Err(format!(
                "prototype output has {} values, dims {dims:?} need {}",
                data.len(),
                b.saturating_mul(per)
            ));
        }
        if batch_index >= b {
            return Err(format!("batch index {batch_index} out of range for {b}"));
        }
        Ok(Self {
            data: &data[batch_index * per..][..per],
            channels: c,
            height: h,
            width: w,
        })
    }
}

/// Where a segmentation output keeps its class scores and mask coefficients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaskChannels {
    /// Number of class scores.
    pub classes: usize,
    /// Index of the first mask coefficient within an anchor's values.
    pub first: usize,
    /// Number of mask coefficients (the number of prototypes).
    pub count: usize,
}

/// Splits the values per anchor of a detection output of `dims` into box, classes and `nm`
/// mask coefficients: `4 + nc + nm` (YOLOv8), `5 + nc + nm` (YOLOv5) or `6 + nm`
/// (end-to-end). `nc` = 0 (unknown) takes whatever is left for the classes.
pub fn mask_channels(dims: &[usize], layout: OutputLayout, nc: usize, nm: usize) -> Result<MaskChannels, String> {
    let (d1, d2) = match *dims {
        [_, d1, d2] | [d1, d2] => (d1, d2),
        _ => return Err(format!("detection output must have 3 dimensions, got {dims:?}")),
    };
    let (width, header) = match layout {
        OutputLayout::YoloV8 => (d1, 4),
        OutputLayout::YoloV5 => (d2, 5),
        OutputLayout::EndToEnd => (d2, 6),
    };
    let classes = match layout {
        OutputLayout::EndToEnd => 0,
        _ if nc == 0 => width.saturating_sub(header + nm),
        _ => nc,
    };
    if nm == 0 || header + classes + nm != width || (layout != OutputLayout::EndToEnd && classes == 0) {
        return Err(format!(
            "detection output {dims:?} has {width} values per anchor, not {header} + {} classes + {nm} mask coefficients",
            if layout == OutputLayout::EndToEnd { "0".to_string() } else { classes.to_string() }
        ));
    }
    Ok(MaskChannels {
        classes,
        first: header + classes,
        count: nm,
    })
}

/// The mask coefficients of `anchor` in image `batch_index` of a detection output.
/// `dims` and `output` must already have passed [`crate::decode`] (which checks sizes).
pub fn mask_coefficients(
    output: &[f32],
    dims: &[usize],
    batch_index: usize,
    layout: OutputLayout,
    channels: MaskChannels,
    anchor: usize,
) -> Vec<f32> {
    let (d1, d2) = match *dims {
        [_, d1, d2] | [d1, d2] => (d1, d2),
        _ => return Vec::new(),
    };
    let base = batch_index * d1 * d2;
    let range = channels.first..channels.first + channels.count;
    match layout {
        OutputLayout::YoloV8 => range.map(|c| output[base + c * d2 + anchor]).collect(),
        OutputLayout::YoloV5 | OutputLayout::EndToEnd => range.map(|c| output[base + anchor * d2 + c]).collect(),
    }
}

/// A binary mask of `width x height` pixels, kept as the smallest rectangle holding all its
/// set pixels (`region_width x region_height` at `x0, y0`, row-major 0 / 1 bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BinaryMask {
    /// Width of the whole mask.
    pub width: usize,
    /// Height of the whole mask.
    pub height: usize,
    /// Left column of the region.
    pub x0: usize,
    /// Top row of the region.
    pub y0: usize,
    /// Width of the region.
    pub region_width: usize,
    /// Height of the region.
    pub region_height: usize,
    /// The region's pixels, row-major, 0 or 1.
    pub data: Vec<u8>,
}

impl BinaryMask {
    /// The tight mask of the set pixels of a `rw x rh` block at `(x0, y0)` of a `width x
    /// height` mask; `None` when no pixel is set.
    pub(crate) fn tight(width: usize, height: usize, x0: usize, y0: usize, rw: usize, block: &[u8]) -> Option<Self> {
        if rw == 0 {
            return None;
        }
        let rh = block.len() / rw;
        let (mut xa, mut xb, mut ya, mut yb) = (usize::MAX, 0, usize::MAX, 0);
        for (y, row) in block.chunks_exact(rw).enumerate() {
            if let Some(first) = row.iter().position(|&v| v != 0) {
                let last = row.iter().rposition(|&v| v != 0).unwrap_or(first);
                xa = xa.min(first);
                xb = xb.max(last + 1);
                ya = ya.min(y);
                yb = y + 1;
            }
        }
        if ya == usize::MAX {
            return None;
        }
        debug_assert!(yb <= rh);
        let (w, h) = (xb - xa, yb - ya);
        let mut data = Vec::with_capacity(w * h);
        for row in block.chunks_exact(rw).skip(ya).take(h) {
            data.extend_from_slice(&row[xa..xb]);
        }
        Some(Self {
            width,
            height,
            x0: x0 + xa,
            y0: y0 + ya,
            region_width: w,
            region_height: h,
            data,
        })
    }

    /// Whether the fields agree (the region lies in the mask and `data` fills it).
    pub fn is_consistent(&self) -> bool {
        self.x0.checked_add(self.region_width).is_some_and(|x| x <= self.width)
            && self
                .y0
                .checked_add(self.region_height)
                .is_some_and(|y| y <= self.height)
            && self.region_width.checked_mul(self.region_height) == Some(self.data.len())
    }

    /// Whether pixel `(x, y)` of the whole mask is set.
    pub fn get(&self, x: usize, y: usize) -> bool {
        x >= self.x0
            && y >= self.y0
            && x < self.x0 + self.region_width
            && y < self.y0 + self.region_height
            && self
                .data
                .get((y - self.y0) * self.region_width + (x - self.x0))
                .is_some_and(|&v| v != 0)
    }

    /// Number of set pixels.
    pub fn area(&self) -> usize {
        self.data.iter().filter(|&&v| v != 0).count()
    }

    /// The whole mask, row-major 0 / 1 bytes (empty if not [consistent](Self::is_consistent)).
    pub fn to_full(&self) -> Vec<u8> {
        let mut full = vec![0u8; self.width * self.height];
        if !self.is_consistent() {
            return full;
        }
        for (r, row) in self.data.chunks_exact(self.region_width.max(1)).enumerate() {
            full[(self.y0 + r) * self.width + self.x0..][..self.region_width].copy_from_slice(row);
        }
        full
    }

    /// Column-major COCO runs of the whole mask (see [`crate::rle`]); all zeros when the
    /// mask is not [consistent](Self::is_consistent).
    pub fn rle_counts(&self) -> Vec<u32> {
        if !self.is_consistent() {
            return vec![(self.width * self.height) as u32];
        }
        rle_counts_region(
            self.width,
            self.height,
            self.x0,
            self.y0,
            self.region_width,
            self.region_height,
            &self.data,
        )
    }
}

/// One output coordinate of a linear resampling along an axis: two source indexes and
/// their weights.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Tap {
    pub(crate) i0: usize,
    pub(crate) i1: usize,
    pub(crate) w0: f32,
    pub(crate) w1: f32,
}

/// torch `F.interpolate(mode="bilinear", align_corners=False)` taps from `src` to `dst`
/// samples, in torch's f32 arithmetic: `s = (src / dst) * (d + 0.5) - 0.5`, clamped at 0,
/// index `min(floor(s), src - 1)`, the next index (if any) weighted by the fraction.
pub(crate) fn torch_taps(src: usize, dst: usize) -> Vec<Tap> {
    let ratio = src as f32 / dst as f32;
    (0..dst)
        .map(|d| {
            let s = (ratio * (d as f32 + 0.5) - 0.5).max(0.0);
            let i0 = (s.floor() as usize).min(src - 1);
            let w1 = (s - i0 as f32).clamp(0.0, 1.0);
            let i1 = if i0 < src - 1 { i0 + 1 } else { i0 };
            Tap {
                i0,
                i1,
                w0: 1.0 - w1,
                w1,
            }
        })
        .collect()
}

/// Taps of an affine map from `dst` samples to a `src`-sample axis: destination `d` reads
/// source position `s = (d + 0.5) * scale + offset - 0.5`; positions outside the source
/// (by more than half a sample) read nothing.
pub(crate) fn affine_taps(src: usize, dst: usize, scale: f64, offset: f64) -> Vec<Tap> {
    (0..dst)
        .map(|d| {
            let s = (d as f64 + 0.5) * scale + offset - 0.5;
            if !(s >= -0.5 && s <= src as f64 - 0.5) {
                return Tap {
                    i0: 0,
                    i1: 0,
                    w0: 0.0,
                    w1: 0.0,
                };
            }
            let s = s.max(0.0) as f32;
            let i0 = (s.floor() as usize).min(src - 1);
            let w1 = (s - i0 as f32).clamp(0.0, 1.0);
            let i1 = if i0 < src - 1 { i0 + 1 } else { i0 };
            Tap {
                i0,
                i1,
                w0: 1.0 - w1,
                w1,
            }
        })
        .collect()
}

/// `[first, last]` source indexes read by `taps` (non-decreasing indexes).
fn source_span(taps: &[Tap]) -> (usize, usize) {
    let lo = taps.iter().map(|t| t.i0).min().unwrap_or(0);
    let hi = taps.iter().map(|t| t.i1).max().unwrap_or(0);
    (lo, hi)
}

/// Turns mask coefficients and a box into a binary mask, per [`MaskMode`].
#[derive(Clone, Debug)]
pub struct MaskDecoder<'a> {
    protos: Protos<'a>,
    /// Mask resolution.
    width: usize,
    height: usize,
    /// Scale from input pixels to mask pixels, when they differ.
    box_scale: Option<[f32; 2]>,
    /// Taps from prototype columns / rows to mask columns / rows; `None`: the same grid.
    xtaps: Option<Vec<Tap>>,
    ytaps: Option<Vec<Tap>>,
}

impl<'a> MaskDecoder<'a> {
    /// A decoder for a model with `input_width x input_height` inputs.
    pub fn new(protos: Protos<'a>, input_width: u32, input_height: u32, mode: MaskMode) -> Result<Self, String> {
        let (mw, mh) = (protos.width, protos.height);
        let (iw, ih) = (input_width as usize, input_height as usize);
        if iw == 0 || ih == 0 || mw == 0 || mh == 0 || protos.channels == 0 {
            return Err(format!("bad mask geometry: input {iw}x{ih}, prototypes {mw}x{mh}"));
        }
        if Some(protos.data.len()) != protos.channels.checked_mul(mw).and_then(|v| v.checked_mul(mh)) {
            return Err(format!("bad mask geometry: input {iw}x{ih}, prototypes {mw}x{mh}"));
        }
        let (width, height) = match mode {
            MaskMode::Accurate => (iw, ih),
            MaskMode::Fast => (mw, mh),
            MaskMode::Tradeoff(f) => {
                if !(0.0..=1.0).contains(&f) {
                    return Err(format!("tradeoff factor must be in 0..1, got {f}"));
                }
                let between = |p: usize, i: usize| -> usize {
                    let v = p as f64 + (i as f64 - p as f64) * f64::from(f);
                    (py_round(v) as usize).max(1)
                };
                (between(mw, iw), between(mh, ih))
            }
        };
        let box_scale = ((width, height) != (iw, ih))
            .then(|| [(width as f64 / iw as f64) as f32, (height as f64 / ih as f64) as f32]);
        let taps = |p: usize, m: usize| (p != m).then(|| torch_taps(p, m));
        Ok(Self {
            protos,
            width,
            height,
            box_scale,
            xtaps: taps(mw, width),
            ytaps: taps(mh, height),
        })
    }

    /// Resolution of the masks: `(width, height)`.
    pub fn resolution(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    /// The mask of one detection: `coefficients` (one per prototype) and its box
    /// `[x1, y1, x2, y2]` in input pixels. `None` when the mask is empty (Ultralytics
    /// drops such detections) or the coefficients do not match the prototypes.
    pub fn decode(&self, coefficients: &[f32], bbox: [f32; 4]) -> Option<BinaryMask> {
        let p = &self.protos;
        // A NaN edge keeps nothing (every comparison with it is false).
        if coefficients.len() != p.channels || bbox.iter().any(|v| v.is_nan()) {
            return None;
        }
        let [mut x1, mut y1, mut x2, mut y2] = bbox;
        if let Some([sx, sy]) = self.box_scale {
            // Keep the cells whose centre, as an input pixel index, is in the box: what the
            // comparison below does at the input resolution, carried to this one.
            let to_mask = |v: f32, s: f32| (v + 0.5) * s - 0.5;
            (x1, x2, y1, y2) = (to_mask(x1, sx), to_mask(x2, sx), to_mask(y1, sy), to_mask(y2, sy));
        }
        // Kept as Ultralytics' crop_mask: x1 <= c < x2, i.e. c in ceil(x1)..ceil(x2).
        let edge = |v: f32, n: usize| v.ceil().clamp(0.0, n as f32) as usize;
        let (cx1, cx2) = (edge(x1, self.width), edge(x2, self.width));
        let (cy1, cy2) = (edge(y1, self.height), edge(y2, self.height));
        if cx1 >= cx2 || cy1 >= cy2 {
            return None;
        }
        let identity = |a: usize, b: usize| {
            (a..b)
                .map(|i| Tap {
                    i0: i,
                    i1: i,
                    w0: 1.0,
                    w1: 0.0,
                })
                .collect::<Vec<_>>()
        };
        let xt = match &self.xtaps {
            Some(t) => t[cx1..cx2].to_vec(),
            None => identity(cx1, cx2),
        };
        let yt = match &self.ytaps {
            Some(t) => t[cy1..cy2].to_vec(),
            None => identity(cy1, cy2),
        };
        // Logits of the prototype cells the box reads: sum_k c_k * P_k.
        let (px0, px1) = source_span(&xt);
        let (py0, py1) = source_span(&yt);
        let (lw, lh) = (px1 - px0 + 1, py1 - py0 + 1);
        let mut logits = vec![0f32; lw * lh];
        let plane = p.width * p.height;
        for (k, &c) in coefficients.iter().enumerate() {
            let proto = &p.data[k * plane..][..plane];
            for (r, out) in logits.chunks_exact_mut(lw).enumerate() {
                let src = &proto[(py0 + r) * p.width + px0..][..lw];
                for (o, &v) in out.iter_mut().zip(src) {
                    *o += c * v;
                }
            }
        }
        let (bw, bh) = (cx2 - cx1, cy2 - cy1);
        let mut block = vec![0u8; bw * bh];
        if self.xtaps.is_none() && self.ytaps.is_none() {
            // Same grid: threshold the logits themselves.
            for (out, row) in block.chunks_exact_mut(bw).zip(logits.chunks_exact(lw)) {
                for (o, &v) in out.iter_mut().zip(row) {
                    *o = u8::from(v > 0.0);
                }
            }
        } else {
            // Horizontal pass per prototype row, then vertical, in torch's order of operations:
            // (L00 w0x + L01 w1x) w0y + (L10 w0x + L11 w1x) w1y.
            let mut across = vec![0f32; bw * lh];
            for (out, row) in across.chunks_exact_mut(bw).zip(logits.chunks_exact(lw)) {
                for (o, t) in out.iter_mut().zip(&xt) {
                    *o = row[t.i0 - px0] * t.w0 + row[t.i1 - px0] * t.w1;
                }
            }
            for (out, t) in block.chunks_exact_mut(bw).zip(&yt) {
                let r0 = &across[(t.i0 - py0) * bw..][..bw];
                let r1 = &across[(t.i1 - py0) * bw..][..bw];
                for ((o, &a), &b) in out.iter_mut().zip(r0).zip(r1) {
                    *o = u8::from(a * t.w0 + b * t.w1 > 0.0);
                }
            }
        }
        BinaryMask::tight(self.width, self.height, cx1, cy1, bw, &block)
    }
}

/// How a mask maps back to the original image.
#[derive(Clone, Debug)]
enum Mapping {
    /// Ultralytics letterbox: `new_w x new_h` content at `(left, top)` of the input.
    Letterbox {
        new_w: u32,
        new_h: u32,
        left: u32,
        top: u32,
    },
    /// Any other resize: the plugin's [`Transform`].
    Affine(Transform),
}

/// Maps masks of one resolution back to one original image: outline polygons and
/// original-size masks.
#[derive(Clone, Debug)]
pub struct MaskToImage {
    mapping: Mapping,
    input: (usize, usize),
    mask: (usize, usize),
    orig: (usize, usize),
    /// Taps from original columns / rows to mask columns / rows; `None`: the same grid.
    xtaps: Option<Vec<Tap>>,
    ytaps: Option<Vec<Tap>>,
}

impl MaskToImage {
    /// For `mask_width x mask_height` masks of a model with `input_width x input_height`
    /// inputs, made from an image pre-processed with `resize` into `transform`.
    pub fn new(
        resize: Resize,
        input_width: u32,
        input_height: u32,
        transform: &Transform,
        mask_width: usize,
        mask_height: usize,
    ) -> Result<Self, String> {
        let (w0, h0) = (transform.orig_width, transform.orig_height);
        if w0 == 0 || h0 == 0 || mask_width == 0 || mask_height == 0 || input_width == 0 || input_height == 0 {
            return Err("empty image or mask".into());
        }
        let mapping = match resize {
            Resize::Letterbox { .. } | Resize::LetterboxRect { .. } => {
                let g = match resize {
                    Resize::LetterboxRect {
                        target_w,
                        target_h,
                        stride,
                        ..
                    } => letterbox_geometry(w0, h0, target_w, target_h, Some(stride))?,
                    _ => letterbox_geometry(w0, h0, input_width, input_height, None)?,
                };
                Mapping::Letterbox {
                    new_w: g.new_w,
                    new_h: g.new_h,
                    left: g.left,
                    top: g.top,
                }
            }
            Resize::Stretch | Resize::CenterCrop => Mapping::Affine(*transform),
        };
        let (mw, mh) = (mask_width, mask_height);
        let (ow, oh) = (w0 as usize, h0 as usize);
        let (xtaps, ytaps) = if (mw, mh) == (ow, oh) {
            // `scale_masks` returns masks of the original size unchanged.
            (None, None)
        } else {
            match &mapping {
                Mapping::Letterbox { .. } => {
                    // ops.scale_masks: the content's span at the mask resolution, then a resize.
                    let gain = (mh as f64 / oh as f64).min(mw as f64 / ow as f64);
                    let span = |orig: usize, m: usize| -> (usize, usize) {
                        let new = (py_round(orig as f64 * gain) as usize).max(1);
                        let pad = (m as f64 - new as f64) / 2.0;
                        let first = (py_round(pad - 0.1).max(0.0) as usize).min(m - 1);
                        (first, (first + new).min(m))
                    };
                    let taps = |orig: usize, m: usize| {
                        let (a, b) = span(orig, m);
                        let mut t = torch_taps(b - a, orig);
                        for tap in &mut t {
                            tap.i0 += a;
                            tap.i1 += a;
                        }
                        t
                    };
                    (Some(taps(ow, mw)), Some(taps(oh, mh)))
                }
                Mapping::Affine(t) => {
                    let (sx, sy) = (mw as f64 / input_width as f64, mh as f64 / input_height as f64);
                    (
                        Some(affine_taps(mw, ow, f64::from(t.scale_x) * sx, f64::from(t.pad_x) * sx)),
                        Some(affine_taps(mh, oh, f64::from(t.scale_y) * sy, f64::from(t.pad_y) * sy)),
                    )
                }
            }
        };
        Ok(Self {
            mapping,
            input: (input_width as usize, input_height as usize),
            mask: (mw, mh),
            orig: (ow, oh),
            xtaps,
            ytaps,
        })
    }

    /// Maps a mask pixel (centre) to original-image coordinates: first to input pixels
    /// (pixel centres line up), then as Ultralytics `scale_coords` does for a letterbox
    /// (subtract the pad, divide by `new / orig` per axis, in f32), clipped to the image.
    pub fn point(&self, x: f32, y: f32) -> [f32; 2] {
        let to_input = |v: f32, m: usize, i: usize| {
            if m == i {
                v
            } else {
                ((f64::from(v) + 0.5) * (i as f64 / m as f64) - 0.5) as f32
            }
        };
        let (xi, yi) = (
            to_input(x, self.mask.0, self.input.0),
            to_input(y, self.mask.1, self.input.1),
        );
        let (ow, oh) = (self.orig.0 as f32, self.orig.1 as f32);
        match &self.mapping {
            Mapping::Letterbox {
                new_w,
                new_h,
                left,
                top,
            } => {
                let gx = (f64::from(*new_w) / self.orig.0 as f64) as f32;
                let gy = (f64::from(*new_h) / self.orig.1 as f64) as f32;
                [
                    ((xi - *left as f32) / gx).clamp(0.0, ow),
                    ((yi - *top as f32) / gy).clamp(0.0, oh),
                ]
            }
            Mapping::Affine(t) => {
                let (x, y) = t.to_original_point(xi, yi);
                [x, y]
            }
        }
    }

    /// The mask's outline as `results.masks.xy` gives it: OpenCV's external contours of
    /// the mask, merged into one polygon when there are several, in original pixels.
    ///
    /// A mask coarser than the input (`Fast`, `Tradeoff`) is outlined through the centres
    /// of its coarse pixels; those outlines are moved out to half an input pixel inside the
    /// coarse pixels' edges, where an input-resolution outline would run.
    pub fn polygon(&self, mask: &BinaryMask) -> Vec<[f32; 2]> {
        if !mask.is_consistent() {
            return Vec::new();
        }
        let (x0, y0) = (mask.x0 as f64, mask.y0 as f64);
        // Outward shift in mask pixels: half a mask pixel less half an input pixel.
        let shift = |m: usize, i: usize| if m < i { 0.5 - 0.5 * m as f64 / i as f64 } else { 0.0 };
        let (dx, dy) = (shift(self.mask.0, self.input.0), shift(self.mask.1, self.input.1));
        let contours = find_external_contours(&mask.data, mask.region_width, mask.region_height);
        let plan = merge_plan(&contours);
        if dx == 0.0 && dy == 0.0 {
            return plan
                .into_iter()
                .map(|(s, v)| {
                    let [x, y] = contours[s][v];
                    self.point((f64::from(x) + x0) as f32, (f64::from(y) + y0) as f32)
                })
                .collect();
        }
        let moved: Vec<Vec<[f64; 2]>> = contours.iter().map(|c| offset_outline(c, dx, dy)).collect();
        plan.into_iter()
            .map(|(s, v)| {
                let [x, y] = moved[s][v];
                self.point((x + x0) as f32, (y + y0) as f32)
            })
            .collect()
    }

    /// The mask at the original image's size, as `ops.scale_masks(mask) > 0.5`; `None`
    /// when nothing is left (e.g. a mask only in the letterbox padding).
    pub fn resample(&self, mask: &BinaryMask) -> Option<BinaryMask> {
        let (ow, oh) = self.orig;
        if !mask.is_consistent() || (mask.width, mask.height) != self.mask || mask.data.is_empty() {
            return None;
        }
        let (Some(xt), Some(yt)) = (&self.xtaps, &self.ytaps) else {
            return BinaryMask::tight(ow, oh, mask.x0, mask.y0, mask.region_width, &mask.data);
        };
        // Original columns / rows whose taps touch the mask's region.
        let touching = |taps: &[Tap], lo: usize, len: usize| -> Option<(usize, usize)> {
            let hits = |t: &Tap| {
                (t.w0 != 0.0 && t.i0 >= lo && t.i0 < lo + len) || (t.w1 != 0.0 && t.i1 >= lo && t.i1 < lo + len)
            };
            let first = taps.iter().position(hits)?;
            let last = taps.iter().rposition(hits)?;
            Some((first, last + 1))
        };
        let (dx0, dx1) = touching(xt, mask.x0, mask.region_width)?;
        let (dy0, dy1) = touching(yt, mask.y0, mask.region_height)?;
        let (xt, yt) = (&xt[dx0..dx1], &yt[dy0..dy1]);
        let (bw, bh) = (dx1 - dx0, dy1 - dy0);
        // Horizontal pass over the mask rows the taps read (rows outside the region stay 0),
        // then the vertical one, in torch's order of operations.
        let (sx0, sx1) = source_span(xt);
        let (sy0, sy1) = source_span(yt);
        let mut across = vec![0f32; bw * (sy1 - sy0 + 1)];
        let mut row = vec![0f32; sx1 - sx0 + 1];
        let (rx0, rx1) = (mask.x0.max(sx0), (mask.x0 + mask.region_width).min(sx1 + 1));
        for r in sy0.max(mask.y0)..=sy1.min(mask.y0 + mask.region_height - 1) {
            let src = &mask.data[(r - mask.y0) * mask.region_width..][..mask.region_width];
            for x in rx0..rx1 {
                row[x - sx0] = f32::from(src[x - mask.x0]);
            }
            let out = &mut across[(r - sy0) * bw..][..bw];
            for (o, t) in out.iter_mut().zip(xt) {
                *o = row[t.i0 - sx0] * t.w0 + row[t.i1 - sx0] * t.w1;
            }
        }
        let mut block = vec![0u8; bw * bh];
        for (out, t) in block.chunks_exact_mut(bw).zip(yt) {
            let r0 = &across[(t.i0 - sy0) * bw..][..bw];
            let r1 = &across[(t.i1 - sy0) * bw..][..bw];
            for ((o, &a), &b) in out.iter_mut().zip(r0).zip(r1) {
                *o = u8::from(a * t.w0 + b * t.w1 > 0.5);
            }
        }
        BinaryMask::tight(ow, oh, dx0, dy0, bw, &block)
    }

    /// COCO runs of the mask at the original size (see [`MaskToImage::resample`]).
    pub fn rle_counts(&self, mask: &BinaryMask) -> Vec<u32> {
        match self.resample(mask) {
            Some(m) => m.rle_counts(),
            None => vec![(self.orig.0 * self.orig.1) as u32],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torch_bilinear_taps() {
        // F.interpolate(tensor([[[[0., 1.]]]]), size=(1, 4), mode="bilinear") = [0, .25, .75, 1].
        let t = torch_taps(2, 4);
        let src = [0.0f32, 1.0];
        let values: Vec<f32> = t.iter().map(|t| src[t.i0] * t.w0 + src[t.i1] * t.w1).collect();
        assert_eq!(values, [0.0, 0.25, 0.75, 1.0]);
        assert_eq!((t[0].i0, t[0].i1, t[3].i0, t[3].i1), (0, 1, 1, 1));
        // Down-sampling 4 -> 2 reads the pairs' midpoints: s = 0.5, 2.5.
        let t = torch_taps(4, 2);
        assert_eq!((t[0].i0, t[0].w1, t[1].i0, t[1].w1), (0, 0.5, 2, 0.5));
        // Same size: the identity.
        assert!(torch_taps(5, 5)
            .iter()
            .enumerate()
            .all(|(i, t)| t.i0 == i && t.w0 == 1.0));
    }

    /// One prototype of `w x h` whose value is `x - 1.5` (a ramp along x).
    fn ramp(w: usize, h: usize) -> Vec<f32> {
        (0..w * h).map(|i| (i % w) as f32 - 1.5).collect()
    }

    fn protos(data: &[f32], w: usize, h: usize) -> Protos<'_> {
        Protos::from_output(data, &[1, 1, h, w], 0).unwrap()
    }

    #[test]
    fn decodes_and_crops_like_ultralytics() {
        let data = ramp(4, 4);
        let d = MaskDecoder::new(protos(&data, 4, 4), 16, 16, MaskMode::Accurate).unwrap();
        assert_eq!(d.resolution(), (16, 16));
        // Upsampled x 4, the ramp crosses 0 between input columns 7 and 8.
        let m = d.decode(&[1.0], [0.0, 0.0, 16.0, 16.0]).unwrap();
        assert_eq!(
            (m.x0, m.y0, m.region_width, m.region_height, m.area()),
            (8, 0, 8, 16, 128)
        );
        assert!(m.get(8, 0) && !m.get(7, 0) && m.get(15, 15));
        // Kept columns: x1 <= c < x2.
        let m = d.decode(&[1.0], [12.5, 2.0, 16.0, 3.0]).unwrap();
        assert_eq!((m.x0, m.region_width, m.y0, m.region_height), (13, 3, 2, 1));
        let m = d.decode(&[1.0], [0.0, 0.0, 12.0, 16.0]).unwrap();
        assert_eq!((m.x0, m.region_width), (8, 4));
        // Empty masks are dropped; so are mismatched coefficients.
        assert!(d.decode(&[1.0], [0.0, 0.0, 7.0, 16.0]).is_none());
        assert!(d.decode(&[-1.0], [0.0, 0.0, 16.0, 16.0]).is_some()); // 1.5 - x > 0 on the left
        assert!(d.decode(&[1.0, 2.0], [0.0, 0.0, 16.0, 16.0]).is_none());
        assert!(d.decode(&[1.0], [f32::NAN, 0.0, 16.0, 16.0]).is_none());
        assert!(d.decode(&[1.0], [20.0, 0.0, 30.0, 16.0]).is_none());

        // Fast: thresholded at 4 x 4, columns 2 and 3.
        let f = MaskDecoder::new(protos(&data, 4, 4), 16, 16, MaskMode::Fast).unwrap();
        assert_eq!(f.resolution(), (4, 4));
        let m = f.decode(&[1.0], [0.0, 0.0, 16.0, 16.0]).unwrap();
        assert_eq!((m.x0, m.region_width, m.area()), (2, 2, 8));
        // A cell is kept when its centre (input pixel 4c + 1.5) is in the box.
        let m = f.decode(&[1.0], [9.5, 0.0, 16.0, 16.0]).unwrap();
        assert_eq!((m.x0, m.region_width), (2, 2));
        let m = f.decode(&[1.0], [9.6, 0.0, 16.0, 16.0]).unwrap();
        assert_eq!((m.x0, m.region_width), (3, 1));

        let t = MaskDecoder::new(protos(&data, 4, 4), 16, 16, MaskMode::Tradeoff(0.5)).unwrap();
        assert_eq!(t.resolution(), (10, 10));
        assert_eq!(
            MaskDecoder::new(protos(&data, 4, 4), 16, 16, MaskMode::Tradeoff(1.0))
                .unwrap()
                .resolution(),
            (16, 16)
        );
        for bad in [f32::NAN, -0.1, 1.5] {
            assert!(MaskDecoder::new(protos(&data, 4, 4), 16, 16, MaskMode::Tradeoff(bad)).is_err());
        }
    }

    #[test]
    fn outputs_and_channels() {
        let data = vec![0f32; 2 * 3 * 4 * 5];
        let p = Protos::from_output(&data, &[2, 3, 4, 5], 1).unwrap();
        assert_eq!((p.channels, p.height, p.width, p.data.len()), (3, 4, 5, 60));
        assert!(Protos::from_output(&data, &[2, 3, 4, 5], 2).is_err());
        assert!(Protos::from_output(&data, &[2, 3, 4, 4], 0).is_err());
        assert!(Protos::from_output(&data, &[120], 0).is_err());

        let v8 = mask_channels(&[1, 39, 2100], OutputLayout::YoloV8, 3, 32).unwrap();
        assert_eq!((v8.classes, v8.first, v8.count), (3, 7, 32));
        assert_eq!(mask_channels(&[1, 39, 2100], OutputLayout::YoloV8, 0, 32).unwrap(), v8);
        assert!(mask_channels(&[1, 39, 2100], OutputLayout::YoloV8, 4, 32).is_err());
        assert!(mask_channels(&[1, 36, 2100], OutputLayout::YoloV8, 0, 32).is_err());
        let v5 = mask_channels(&[1, 25200, 117], OutputLayout::YoloV5, 80, 32).unwrap();
        assert_eq!((v5.classes, v5.first), (80, 85));
        let e2e = mask_channels(&[1, 300, 38], OutputLayout::EndToEnd, 80, 32).unwrap();
        assert_eq!((e2e.classes, e2e.first), (0, 6));

        // [1, 4 + 1 + 2, 3] channel-major: anchor 1's coefficients are rows 5 and 6.
        let out: Vec<f32> = (0..21).map(|v| v as f32).collect();
        let ch = mask_channels(&[1, 7, 3], OutputLayout::YoloV8, 1, 2).unwrap();
        assert_eq!(
            mask_coefficients(&out, &[1, 7, 3], 0, OutputLayout::YoloV8, ch, 1),
            [16.0, 19.0]
        );
        // [1, 3, 5 + 1 + 2] row-major: anchor 2's are its last two values.
        let out: Vec<f32> = (0..24).map(|v| v as f32).collect();
        let ch = mask_channels(&[1, 3, 8], OutputLayout::YoloV5, 1, 2).unwrap();
        assert_eq!(
            mask_coefficients(&out, &[1, 3, 8], 0, OutputLayout::YoloV5, ch, 2),
            [22.0, 23.0]
        );
    }

    /// A `w x h` mask with the rectangle `x0..x1, y0..y1` set.
    fn rect(w: usize, h: usize, x0: usize, y0: usize, x1: usize, y1: usize) -> BinaryMask {
        let block = vec![1u8; (x1 - x0) * (y1 - y0)];
        BinaryMask::tight(w, h, x0, y0, x1 - x0, &block).unwrap()
    }

    #[test]
    fn letterboxed_masks_map_back_like_scale_masks() {
        // 640x480 letterboxed into 320x320: scale 0.5, 40 rows of padding on top.
        let t = letterbox_geometry(640, 480, 320, 320, None)
            .unwrap()
            .transform(640, 480);
        let to = MaskToImage::new(Resize::Letterbox { pad: 114 }, 320, 320, &t, 320, 320).unwrap();
        assert_eq!(to.point(100.0, 100.0), [200.0, 120.0]);
        assert_eq!(to.point(-3.0, 500.0), [0.0, 480.0]); // clipped
        let m = rect(320, 320, 100, 100, 140, 140);
        let o = to.resample(&m).unwrap();
        assert_eq!((o.width, o.height), (640, 480));
        assert_eq!((o.x0, o.y0, o.region_width, o.region_height), (200, 120, 80, 80));
        assert_eq!(o.area(), 6400);
        assert_eq!(crate::rle_area(&to.rle_counts(&m)), 6400);
        // Only in the padding: nothing left.
        assert!(to.resample(&rect(320, 320, 0, 0, 320, 40)).is_none());
        assert_eq!(to.rle_counts(&rect(320, 320, 0, 0, 320, 40)), [640 * 480]);
        // The polygon of the rectangle, in original pixels.
        assert_eq!(
            to.polygon(&m),
            [[200.0, 120.0], [200.0, 198.0], [278.0, 198.0], [278.0, 120.0]]
        );

        // The same at the prototype resolution (80x80): pixel centres line up, outlines move
        // out to half an input pixel inside the coarse pixels' edges.
        let fast = MaskToImage::new(Resize::Letterbox { pad: 114 }, 320, 320, &t, 80, 80).unwrap();
        let m = rect(80, 80, 25, 25, 35, 35); // input 100..140
        let o = fast.resample(&m).unwrap();
        assert_eq!((o.x0, o.y0, o.region_width, o.region_height), (200, 120, 80, 80));
        assert_eq!(
            fast.polygon(&m),
            [[200.0, 120.0], [200.0, 198.0], [278.0, 198.0], [278.0, 120.0]]
        );
    }

    #[test]
    fn stretched_masks_map_back() {
        // 100x50 stretched to 20x20.
        let t = Transform {
            scale_x: 0.2,
            scale_y: 0.4,
            pad_x: 0.0,
            pad_y: 0.0,
            orig_width: 100,
            orig_height: 50,
        };
        let to = MaskToImage::new(Resize::Stretch, 20, 20, &t, 20, 20).unwrap();
        let o = to.resample(&rect(20, 20, 0, 0, 10, 20)).unwrap();
        assert_eq!((o.x0, o.y0, o.region_width, o.region_height), (0, 0, 50, 50));
        assert_eq!(to.point(10.0, 10.0), [50.0, 25.0]);
    }
    #[test]
    fn odd_inputs_do_not_panic() {
        let data = ramp(4, 4);
        let empty = Protos {
            data: &[],
            channels: 0,
            height: 4,
            width: 4,
        };
        assert!(MaskDecoder::new(empty, 16, 16, MaskMode::Accurate).is_err());
        let short = Protos {
            data: &data[..10],
            channels: 1,
            height: 4,
            width: 4,
        };
        assert!(MaskDecoder::new(short, 16, 16, MaskMode::Accurate).is_err());
        assert!(MaskDecoder::new(protos(&data, 4, 4), 0, 16, MaskMode::Fast).is_err());
        let d = MaskDecoder::new(protos(&data, 4, 4), 16, 16, MaskMode::Accurate).unwrap();
        let m = d
            .decode(&[1.0], [f32::NEG_INFINITY, -1e30, f32::INFINITY, 1e30])
            .unwrap();
        assert_eq!(m.area(), 128);
        assert!(d.decode(&[f32::NAN], [0.0, 0.0, 16.0, 16.0]).is_none());

        let t = letterbox_geometry(16, 16, 16, 16, None).unwrap().transform(16, 16);
        let to = MaskToImage::new(Resize::Letterbox { pad: 114 }, 16, 16, &t, 16, 16).unwrap();
        let bad = BinaryMask {
            width: 16,
            height: 16,
            x0: 10,
            y0: 0,
            region_width: 10,
            region_height: 1,
            data: vec![1; 10],
        };
        assert!(!bad.is_consistent());
        assert!(to.polygon(&bad).is_empty());
        assert!(to.resample(&bad).is_none());
        assert_eq!(bad.rle_counts(), [256]);
        assert_eq!(bad.to_full(), vec![0; 256]);
        let _ = bad.get(19, 0); // reads inside `data`: no panic
    }
}
