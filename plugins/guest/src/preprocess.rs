//! Image → model-input tensor: letterbox (Ultralytics `LetterBox`), stretch or
//! center-crop, normalised to f32 in NCHW or NHWC order, and the [`Transform`] back.

use crate::pil_resize::PilResampler;
use crate::py_round;
use crate::resize::{Region, Resampler};

/// A borrowed RGB8 image: tightly packed, row-major, `width * height * 3` bytes.
#[derive(Clone, Copy, Debug)]
pub struct ImageRef<'a> {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height * 3` bytes, R G B per pixel.
    pub rgb: &'a [u8],
}

impl<'a> ImageRef<'a> {
    /// Wraps `rgb`, checking that the sizes are non-zero and that its length is `width * height * 3`.
    pub fn new(width: u32, height: u32, rgb: &'a [u8]) -> Result<Self, String> {
        let img = Self { width, height, rgb };
        img.check()?;
        Ok(img)
    }

    fn check(&self) -> Result<(), String> {
        if self.width == 0 || self.height == 0 {
            return Err(format!("empty image {}x{}", self.width, self.height));
        }
        // u64: the product can overflow usize on wasm32.
        let need = u64::from(self.width) * u64::from(self.height) * 3;
        if self.rgb.len() as u64 != need {
            return Err(format!(
                "{}x{} RGB image needs {need} bytes, got {}",
                self.width,
                self.height,
                self.rgb.len()
            ));
        }
        Ok(())
    }
}

/// How the image is fitted to the model input size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resize {
    /// Ultralytics `LetterBox` (`auto=False`, `scaleup=True`, `center=True`): keep the aspect
    /// ratio, fit inside the input, pad the rest with `pad` (Ultralytics uses 114).
    Letterbox {
        /// Value of the padding bytes, before normalisation.
        pad: u8,
    },
    /// Ultralytics `LetterBox` with `auto=True` (rect inference of dynamic-shape models):
    /// the scale is chosen for `target_w x target_h` and the padding is cut down to its
    /// remainder modulo `stride`. The tensor size (`in_w x in_h` of [`preprocess_into`])
    /// must be `letterbox_geometry(w, h, target_w, target_h, Some(stride)).tensor_size()`.
    LetterboxRect {
        /// Value of the padding bytes, before normalisation.
        pad: u8,
        /// Width the scale is chosen for (Ultralytics `imgsz`).
        target_w: u32,
        /// Height the scale is chosen for.
        target_h: u32,
        /// Model stride (32 for YOLO).
        stride: u32,
    },
    /// Resize to the input size, ignoring the aspect ratio.
    Stretch,
    /// torchvision `Resize(size)` + `CenterCrop(size)` on a PIL image, as Ultralytics
    /// classification runs them: scale so the image covers the input (the shorter side
    /// becomes the input size, the longer `int(size * long / short)`), then crop the centre
    /// at `int(round((resized - size) / 2))`. Resampling is Pillow's antialiased bilinear
    /// (see [`crate::pil_resize`]), not OpenCV's.
    CenterCrop,
}

/// Memory order of the tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Channel planes: `[3, H, W]`.
    Nchw,
    /// Interleaved channels: `[H, W, 3]`.
    Nhwc,
}

/// Maps tensor (model-input) pixel coordinates back to original image pixels:
/// `original = (tensor - pad) / scale`, clipped to the image.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Transform {
    /// Tensor pixels per original pixel, horizontally.
    pub scale_x: f32,
    /// Tensor pixels per original pixel, vertically.
    pub scale_y: f32,
    /// Tensor x of original x = 0 (negative when cropped).
    pub pad_x: f32,
    /// Tensor y of original y = 0 (negative when cropped).
    pub pad_y: f32,
    /// Width of the original image.
    pub orig_width: u32,
    /// Height of the original image.
    pub orig_height: u32,
}

impl Transform {
    /// Maps a tensor-space box to the original image and clips it to `[0, w] x [0, h]`,
    /// as Ultralytics `scale_boxes` + `clip_boxes` do (in f32, subtract then divide).
    pub fn to_original_box(&self, x1: f32, y1: f32, x2: f32, y2: f32) -> [f32; 4] {
        let (x1, y1) = self.to_original_point(x1, y1);
        let (x2, y2) = self.to_original_point(x2, y2);
        [x1, y1, x2, y2]
    }

    /// Maps a tensor-space point to the original image, clipped to `[0, w] x [0, h]`
    /// as Ultralytics `scale_coords` does for keypoints.
    pub fn to_original_point(&self, x: f32, y: f32) -> (f32, f32) {
        let x = (x - self.pad_x) / self.scale_x;
        let y = (y - self.pad_y) / self.scale_y;
        (
            x.clamp(0.0, self.orig_width as f32),
            y.clamp(0.0, self.orig_height as f32),
        )
    }
}

/// Where the resized image sits in a letterboxed tensor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LetterboxGeometry {
    /// Scale factor `r` (tensor pixels per original pixel), as Ultralytics computes it (f64).
    pub scale: f64,
    /// Width of the resized image.
    pub new_w: u32,
    /// Height of the resized image.
    pub new_h: u32,
    /// Padding columns on the left.
    pub left: u32,
    /// Padding rows on top.
    pub top: u32,
    /// Padding columns on the right.
    pub right: u32,
    /// Padding rows at the bottom.
    pub bottom: u32,
}

impl LetterboxGeometry {
    /// Size of the padded tensor image: `(width, height)`.
    pub fn tensor_size(&self) -> (u32, u32) {
        (self.new_w + self.left + self.right, self.new_h + self.top + self.bottom)
    }

    /// The [`Transform`] back to a `width x height` original image: scale `r` on both axes,
    /// offset by the left / top pads actually applied (which is what Ultralytics
    /// `scale_boxes` subtracts).
    pub fn transform(&self, width: u32, height: u32) -> Transform {
        let scale = self.scale as f32;
        Transform {
            scale_x: scale,
            scale_y: scale,
            pad_x: self.left as f32,
            pad_y: self.top as f32,
            orig_width: width,
            orig_height: height,
        }
    }
}

/// Ultralytics `LetterBox` geometry for a `width x height` image and a
/// `target_w x target_h` input: `r = min(target_h / h, target_w / w)`, resized size
/// `(round(w r), round(h r))` and pads `round(d - 0.1)` / `round(d + 0.1)` of half the
/// slack `d`, with Python's half-to-even `round`. With `stride` (`auto=True`, rect
/// inference) the slack is first reduced modulo the stride, so the tensor is smaller
/// than the target; [`LetterboxGeometry::tensor_size`] gives its size.
pub fn letterbox_geometry(
    width: u32,
    height: u32,
    target_w: u32,
    target_h: u32,
    stride: Option<u32>,
) -> Result<LetterboxGeometry, String> {
    if width == 0 || height == 0 || target_w == 0 || target_h == 0 || stride == Some(0) {
        return Err(format!(
            "bad letterbox sizes: image {width}x{height}, target {target_w}x{target_h}"
        ));
    }
    let (w, h) = (f64::from(width), f64::from(height));
    let scale = (f64::from(target_h) / h).min(f64::from(target_w) / w);
    // A very thin image could round to zero; cv2.resize would refuse that, keep one pixel.
    let new_w = (py_round(w * scale) as u32).clamp(1, target_w);
    let new_h = (py_round(h * scale) as u32).clamp(1, target_h);
    let (mut dw, mut dh) = (target_w - new_w, target_h - new_h);
    if let Some(s) = stride {
        dw %= s;
        dh %= s;
    }
    let split = |d: u32| {
        let half = f64::from(d) / 2.0;
        let first = py_round(half - 0.1).max(0.0) as u32;
        (first, d - first)
    };
    let (left, right) = split(dw);
    let (top, bottom) = split(dh);
    Ok(LetterboxGeometry {
        scale,
        new_w,
        new_h,
        left,
        top,
        right,
        bottom,
    })
}

/// Tensor input size of Ultralytics rect inference: `letterbox_geometry` with a stride.
pub fn rect_input_size(
    width: u32,
    height: u32,
    target_w: u32,
    target_h: u32,
    stride: u32,
) -> Result<(u32, u32), String> {
    Ok(letterbox_geometry(width, height, target_w, target_h, Some(stride))?.tensor_size())
}

/// Writes normalised pixels into the tensor.
struct Writer<'o> {
    out: &'o mut [f32],
    w: usize,
    h: usize,
    layout: Layout,
    /// Normalised value of each byte, per channel: 3 x 256 lookups beat per-pixel arithmetic.
    lut: [[f32; 256]; 3],
}

impl<'o> Writer<'o> {
    fn new(out: &'o mut [f32], w: u32, h: u32, layout: Layout, mean: [f32; 3], std: [f32; 3]) -> Self {
        let mut lut = [[0f32; 256]; 3];
        for (c, table) in lut.iter_mut().enumerate() {
            for (v, slot) in table.iter_mut().enumerate() {
                // Same f32 operations as `tensor / 255` then `(x - mean) / std`.
                *slot = (v as f32 / 255.0 - mean[c]) / std[c];
            }
        }
        Self {
            out,
            w: w as usize,
            h: h as usize,
            layout,
            lut,
        }
    }

    /// Writes the RGB pixels of `rgb` to row `y` starting at column `x`.
    fn row(&mut self, x: usize, y: usize, rgb: &[u8]) {
        let n = rgb.len() / 3;
        let at = y * self.w + x;
        let lut = &self.lut;
        match self.layout {
            Layout::Nchw => {
                let plane = self.w * self.h;
                let (r, rest) = self.out.split_at_mut(plane);
                let (g, b) = rest.split_at_mut(plane);
                let planes = r[at..at + n].iter_mut().zip(&mut g[at..at + n]).zip(&mut b[at..at + n]);
                for (px, ((r, g), b)) in rgb.chunks_exact(3).zip(planes) {
                    *r = lut[0][usize::from(px[0])];
                    *g = lut[1][usize::from(px[1])];
                    *b = lut[2][usize::from(px[2])];
                }
            }
            Layout::Nhwc => {
                let dst = &mut self.out[at * 3..(at + n) * 3];
                for (px, o) in rgb.chunks_exact(3).zip(dst.chunks_exact_mut(3)) {
                    o[0] = lut[0][usize::from(px[0])];
                    o[1] = lut[1][usize::from(px[1])];
                    o[2] = lut[2][usize::from(px[2])];
                }
            }
        }
    }

    /// Fills a `w x h` rectangle at `(x, y)` with the byte value `v` in every channel.
    fn fill(&mut self, x: u32, y: u32, w: u32, h: u32, v: u8) {
        if w == 0 || h == 0 {
            return;
        }
        let line = vec![v; w as usize * 3];
        for r in y..y + h {
            self.row(x as usize, r as usize, &line);
        }
    }
}

/// Writes ONE image, fitted to `in_w x in_h` per `resize`, as f32
/// `(v / 255 - mean[c]) / std[c]` in RGB channel order into `out`
/// (`in_w * in_h * 3` values) in the given layout, and returns the [`Transform`] from
/// tensor pixels back to image pixels. For Ultralytics models use mean 0 and std 1.
///
/// Resampling is bit-exact with `cv2.resize(INTER_LINEAR)` (see [`crate::resize`]) for the
/// letterbox and stretch modes and with Pillow's `BILINEAR` (see [`crate::pil_resize`]) for
/// the center crop; an image that needs no resizing is copied straight through.
#[allow(clippy::too_many_arguments)] // one flat call per image; a struct would only move the list
pub fn preprocess_into(
    img: &ImageRef,
    resize: Resize,
    in_w: u32,
    in_h: u32,
    mean: [f32; 3],
    std: [f32; 3],
    layout: Layout,
    out: &mut [f32],
) -> Result<Transform, String> {
    check_tensor(img, in_w, in_h, std, out)?;
    let (w, h) = (img.width, img.height);
    let mut writer = Writer::new(out, in_w, in_h, layout, mean, std);

    // Resized size, the part of it that lands in the tensor, and where it lands.
    let (rw, rh, region, at, transform) = match resize {
        Resize::Letterbox { pad } | Resize::LetterboxRect { pad, .. } => {
            let g = match resize {
                Resize::LetterboxRect {
                    target_w,
                    target_h,
                    stride,
                    ..
                } => letterbox_geometry(w, h, target_w, target_h, Some(stride))?,
                _ => letterbox_geometry(w, h, in_w, in_h, None)?,
            };
            if g.tensor_size() != (in_w, in_h) {
                return Err(format!(
                    "letterbox of {w}x{h} gives a {:?} tensor, not {in_w}x{in_h}",
                    g.tensor_size()
                ));
            }
            writer.fill(0, 0, in_w, g.top, pad);
            writer.fill(0, g.top + g.new_h, in_w, g.bottom, pad);
            writer.fill(0, g.top, g.left, g.new_h, pad);
            writer.fill(g.left + g.new_w, g.top, g.right, g.new_h, pad);
            let t = g.transform(w, h);
            let full = Region {
                x: 0,
                y: 0,
                w: g.new_w,
                h: g.new_h,
            };
            (g.new_w, g.new_h, full, (g.left, g.top), t)
        }
        Resize::Stretch => {
            let t = Transform {
                scale_x: in_w as f32 / w as f32,
                scale_y: in_h as f32 / h as f32,
                pad_x: 0.0,
                pad_y: 0.0,
                orig_width: w,
                orig_height: h,
            };
            let full = Region {
                x: 0,
                y: 0,
                w: in_w,
                h: in_h,
            };
            (in_w, in_h, full, (0, 0), t)
        }
        Resize::CenterCrop => {
            let (rw, rh) = cover_size(w, h, in_w, in_h);
            // torchvision CenterCrop: int(round((size - crop) / 2.0)).
            let x = py_round(f64::from(rw - in_w) / 2.0) as u32;
            let y = py_round(f64::from(rh - in_h) / 2.0) as u32;
            let t = Transform {
                scale_x: rw as f32 / w as f32,
                scale_y: rh as f32 / h as f32,
                pad_x: -(x as f32),
                pad_y: -(y as f32),
                orig_width: w,
                orig_height: h,
            };
            let crop = Region { x, y, w: in_w, h: in_h };
            (rw, rh, crop, (0, 0), t)
        }
    };

    let (ax, ay) = (at.0 as usize, at.1 as usize);
    if (rw, rh) == (w, h) {
        // No resampling: copy the region straight from the source rows.
        let stride = w as usize * 3;
        for r in 0..region.h as usize {
            let row = &img.rgb[(region.y as usize + r) * stride..][..stride];
            let part = &row[region.x as usize * 3..][..region.w as usize * 3];
            writer.row(ax, ay + r, part);
        }
    } else if resize == Resize::CenterCrop {
        PilResampler::new(img.rgb, (w, h), 3, (rw, rh), region).for_each_row(|r, row| writer.row(ax, ay + r, row));
    } else {
        Resampler::new(img.rgb, (w, h), 3, (rw, rh), region).for_each_row(|r, row| writer.row(ax, ay + r, row));
    }
    Ok(transform)
}

/// Checks the arguments of a pre-processing call: a well-formed image, a non-empty input size,
/// an `out` of `in_w * in_h * 3` values and a non-zero `std`.
pub(crate) fn check_tensor(img: &ImageRef, in_w: u32, in_h: u32, std: [f32; 3], out: &[f32]) -> Result<(), String> {
    img.check()?;
    if in_w == 0 || in_h == 0 {
        return Err(format!("empty input size {in_w}x{in_h}"));
    }
    let need = u64::from(in_w) * u64::from(in_h) * 3;
    if out.len() as u64 != need {
        return Err(format!("{in_w}x{in_h}x3 tensor needs {need} values, got {}", out.len()));
    }
    if std.contains(&0.0) {
        return Err("std must not be zero".into());
    }
    Ok(())
}

/// torchvision `Resize(size)` sizing generalised to a rectangle: the smallest scale that
/// covers `in_w x in_h`; the side that binds gets exactly its size, the other side
/// `int(size * long / short)` (truncated, as torchvision does).
fn cover_size(w: u32, h: u32, in_w: u32, in_h: u32) -> (u32, u32) {
    let (w64, h64) = (u64::from(w), u64::from(h));
    if u64::from(in_w) * h64 >= u64::from(in_h) * w64 {
        (in_w, ((h64 * u64::from(in_w)) / w64).max(u64::from(in_h)) as u32)
    } else {
        (((w64 * u64::from(in_h)) / h64).max(u64::from(in_w)) as u32, in_h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::npy;
    use crate::resize::resize_bilinear_u8;

    const ZERO: [f32; 3] = [0.0; 3];
    const ONE: [f32; 3] = [1.0; 3];

    fn geometry(w: u32, h: u32, tw: u32, th: u32) -> LetterboxGeometry {
        letterbox_geometry(w, h, tw, th, None).unwrap()
    }

    #[test]
    fn letterbox_geometry_matches_ultralytics() {
        let g = geometry(640, 480, 320, 320);
        assert_eq!(
            (g.new_w, g.new_h, g.left, g.top, g.right, g.bottom),
            (320, 240, 0, 40, 0, 40)
        );
        let g = geometry(1280, 720, 320, 320);
        assert_eq!((g.new_w, g.new_h, g.top, g.bottom), (320, 180, 70, 70));
        assert_eq!(g.scale, 0.25);
        // Odd slack: the extra row goes to the bottom / right (round(d - 0.1), round(d + 0.1)).
        let g = geometry(417, 311, 320, 320);
        assert_eq!((g.new_w, g.new_h), (320, 239));
        assert_eq!((g.top, g.bottom), (40, 41));
        let g = geometry(333, 517, 320, 320);
        assert_eq!((g.new_w, g.new_h, g.left, g.right), (206, 320, 57, 57));
        let g = geometry(517, 333, 320, 320);
        assert_eq!((g.new_h, g.top, g.bottom), (206, 57, 57));
        let g = geometry(300, 200, 320, 320);
        assert_eq!((g.new_w, g.new_h, g.top, g.bottom), (320, 213, 53, 54));
        // Python's round is half to even: 2.5 -> 2 here (w * r = 2.5).
        let g = geometry(5, 200, 100, 100);
        assert_eq!(g.new_w, 2);
        // Up-scaling (scaleup=True).
        let g = geometry(160, 120, 320, 320);
        assert_eq!((g.new_w, g.new_h, g.top, g.bottom), (320, 240, 40, 40));
        assert_eq!(g.tensor_size(), (320, 320));
    }

    #[test]
    fn rect_sizes_match_reference() {
        // tests/fixtures/reference/photos/nudenet-320n.json: zidane.jpg -> [1, 3, 192, 320], pads 6/6.
        assert_eq!(rect_input_size(1280, 720, 320, 320, 32).unwrap(), (320, 192));
        let g = letterbox_geometry(1280, 720, 320, 320, Some(32)).unwrap();
        assert_eq!((g.top, g.bottom, g.new_h), (6, 6, 180));
        assert_eq!(rect_input_size(512, 512, 320, 320, 32).unwrap(), (320, 320));
        assert_eq!(rect_input_size(640, 480, 320, 320, 32).unwrap(), (320, 256));
    }

    #[test]
    fn transform_round_trip() {
        let img = vec![0u8; 1280 * 720 * 3];
        let img = ImageRef::new(1280, 720, &img).unwrap();
        let mut out = vec![0f32; 320 * 320 * 3];
        let t = preprocess_into(
            &img,
            Resize::Letterbox { pad: 114 },
            320,
            320,
            ZERO,
            ONE,
            Layout::Nchw,
            &mut out,
        )
        .unwrap();
        assert_eq!((t.scale_x, t.scale_y, t.pad_x, t.pad_y), (0.25, 0.25, 0.0, 70.0));
        // Original (100, 200)-(400, 600) is tensor (25, 120)-(100, 220).
        assert_eq!(
            t.to_original_box(25.0, 120.0, 100.0, 220.0),
            [100.0, 200.0, 400.0, 600.0]
        );
        // Clipped to the image.
        assert_eq!(t.to_original_box(-5.0, 60.0, 330.0, 260.0), [0.0, 0.0, 1280.0, 720.0]);
        assert_eq!(t.to_original_point(160.0, 160.0), (640.0, 360.0));

        let mut out = vec![0f32; 100 * 50 * 3];
        let t = preprocess_into(&img, Resize::Stretch, 100, 50, ZERO, ONE, Layout::Nhwc, &mut out).unwrap();
        let (x, y) = t.to_original_point(50.0, 25.0);
        assert!((x - 640.0).abs() < 1e-3 && (y - 360.0).abs() < 1e-3);
    }

    /// A small image with distinct pixels: R = x, G = y, B = x + y.
    fn ramp(w: u32, h: u32) -> Vec<u8> {
        (0..h)
            .flat_map(|y| (0..w).flat_map(move |x| [x as u8, y as u8, (x + y) as u8]))
            .collect()
    }

    #[test]
    fn letterbox_pads_and_layouts() {
        let (w, h) = (6, 4);
        let rgb = ramp(w, h);
        let img = ImageRef::new(w, h, &rgb).unwrap();
        // 6x4 into 6x8: no resize, 2 rows of padding on each side.
        let mut nchw = vec![0f32; 6 * 8 * 3];
        let t = preprocess_into(
            &img,
            Resize::Letterbox { pad: 114 },
            6,
            8,
            ZERO,
            ONE,
            Layout::Nchw,
            &mut nchw,
        )
        .unwrap();
        assert_eq!((t.scale_x, t.pad_x, t.pad_y), (1.0, 0.0, 2.0));
        let mut nhwc = vec![0f32; 6 * 8 * 3];
        preprocess_into(
            &img,
            Resize::Letterbox { pad: 114 },
            6,
            8,
            ZERO,
            ONE,
            Layout::Nhwc,
            &mut nhwc,
        )
        .unwrap();
        for y in 0..8usize {
            for x in 0..6usize {
                for c in 0..3usize {
                    let want = if (2..6).contains(&y) {
                        f32::from(rgb[((y - 2) * 6 + x) * 3 + c]) / 255.0
                    } else {
                        114.0 / 255.0
                    };
                    assert_eq!(nchw[c * 48 + y * 6 + x], want);
                    assert_eq!(nhwc[(y * 6 + x) * 3 + c], want);
                }
            }
        }
        // Mean / std per channel.
        let mut out = vec![0f32; 6 * 8 * 3];
        let (mean, std) = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]);
        preprocess_into(
            &img,
            Resize::Letterbox { pad: 0 },
            6,
            8,
            mean,
            std,
            Layout::Nhwc,
            &mut out,
        )
        .unwrap();
        let v = f32::from(rgb[(6 + 3) * 3 + 2]) / 255.0;
        assert_eq!(out[(3 * 6 + 3) * 3 + 2], (v - mean[2]) / std[2]);
        assert_eq!(out[0], (0.0 - mean[0]) / std[0]);
    }

    #[test]
    fn letterbox_resizes_like_resize_bilinear() {
        let (w, h) = (37, 23);
        let rgb = ramp(w, h);
        let img = ImageRef::new(w, h, &rgb).unwrap();
        let mut out = vec![0f32; 32 * 32 * 3];
        let t = preprocess_into(
            &img,
            Resize::Letterbox { pad: 114 },
            32,
            32,
            ZERO,
            ONE,
            Layout::Nhwc,
            &mut out,
        )
        .unwrap();
        let g = geometry(w, h, 32, 32);
        assert_eq!((g.new_w, g.new_h, g.top, g.bottom), (32, 20, 6, 6));
        assert_eq!(t.pad_y, 6.0);
        let resized = resize_bilinear_u8(&rgb, w, h, 3, 32, 20);
        for (i, &v) in resized.iter().enumerate() {
            assert_eq!(out[6 * 32 * 3 + i], f32::from(v) / 255.0);
        }
    }

    #[test]
    fn center_crop_takes_the_middle() {
        // 60x40 -> cover 30x30: resized 45x30, crop columns 8..38 (round(7.5) = 8, half to even).
        let (w, h) = (60, 40);
        let rgb = ramp(w, h);
        let img = ImageRef::new(w, h, &rgb).unwrap();
        let mut out = vec![0f32; 30 * 30 * 3];
        let t = preprocess_into(&img, Resize::CenterCrop, 30, 30, ZERO, ONE, Layout::Nhwc, &mut out).unwrap();
        assert_eq!((t.scale_x, t.scale_y, t.pad_x, t.pad_y), (0.75, 0.75, -8.0, 0.0));
        let resized = crate::resize_pil_bilinear_u8(&rgb, w, h, 3, 45, 30);
        for y in 0..30usize {
            for x in 0..30usize {
                for c in 0..3usize {
                    assert_eq!(
                        out[(y * 30 + x) * 3 + c],
                        f32::from(resized[(y * 45 + x + 8) * 3 + c]) / 255.0
                    );
                }
            }
        }
        // Tensor centre maps to the image centre.
        assert_eq!(t.to_original_point(7.0, 15.0), (20.0, 20.0));
        // Already the right size on the short side: a pure crop, no resampling.
        let (w, h) = (30, 50);
        let rgb = ramp(w, h);
        let img = ImageRef::new(w, h, &rgb).unwrap();
        let t = preprocess_into(&img, Resize::CenterCrop, 30, 30, ZERO, ONE, Layout::Nhwc, &mut out).unwrap();
        assert_eq!((t.scale_x, t.pad_y), (1.0, -10.0));
        assert_eq!(out[0], f32::from(rgb[10 * 30 * 3]) / 255.0);
        assert_eq!(cover_size(500, 375, 224, 224), (298, 224));
        assert_eq!(cover_size(375, 500, 224, 224), (224, 298));
    }

    #[test]
    fn rejects_bad_buffers() {
        let rgb = vec![0u8; 10];
        assert!(ImageRef::new(2, 2, &rgb).is_err());
        let rgb = vec![0u8; 12];
        let img = ImageRef::new(2, 2, &rgb).unwrap();
        let mut out = vec![0f32; 5];
        assert!(preprocess_into(&img, Resize::Stretch, 2, 2, ZERO, ONE, Layout::Nchw, &mut out).is_err());
        let mut out = vec![0f32; 12];
        let wrong = Resize::LetterboxRect {
            pad: 114,
            target_w: 4,
            target_h: 4,
            stride: 32,
        };
        assert!(preprocess_into(&img, wrong, 2, 2, ZERO, ONE, Layout::Nchw, &mut out).is_err());
    }

    fn fixture_tensor(rel: &str) -> npy::Array<f32> {
        npy::read_f32(&format!(
            "{}/../../tests/fixtures/reference/{rel}",
            env!("CARGO_MANIFEST_DIR")
        ))
    }

    /// Letterboxes a photo of which only rows `band_start..` are known (the rest zero) and
    /// compares the tensor rows that depend only on known rows with the Ultralytics tensor.
    /// Returns (compared values, differing values, max |diff|).
    fn check_band(
        (w, h): (u32, u32),
        band_file: &str,
        band_start: usize,
        resize: Resize,
        tensor_file: &str,
    ) -> (usize, usize, f32) {
        let band = npy::read_u8(&format!("{}/tests/data/{band_file}", env!("CARGO_MANIFEST_DIR")));
        assert_eq!(band.shape[1..], [w as usize, 3]);
        let mut rgb = vec![0u8; (w * h * 3) as usize];
        let start = band_start * w as usize * 3;
        rgb[start..start + band.data.len()].copy_from_slice(&band.data);
        let want = fixture_tensor(tensor_file);
        let (in_h, in_w) = (want.shape[2], want.shape[3]);
        let mut got = vec![0f32; in_w * in_h * 3];
        let img = ImageRef::new(w, h, &rgb).unwrap();
        let t = preprocess_into(
            &img,
            resize,
            in_w as u32,
            in_h as u32,
            ZERO,
            ONE,
            Layout::Nchw,
            &mut got,
        )
        .unwrap();
        let band_end = band_start + band.shape[0];
        let (mut compared, mut differ, mut max) = (0, 0, 0f32);
        let resized_h = (f64::from(h) * f64::from(t.scale_y)).round() as usize;
        for ty in t.pad_y as usize..t.pad_y as usize + resized_h {
            // Source rows of this output row (half-pixel centres), with one row of margin.
            let sy = ((ty - t.pad_y as usize) as f64 + 0.5) / f64::from(t.scale_y) - 0.5;
            if (sy.floor() as isize - 1) < band_start as isize || sy.floor() as usize + 2 >= band_end {
                continue;
            }
            for c in 0..3 {
                let at = c * in_w * in_h + ty * in_w;
                for (a, b) in got[at..at + in_w].iter().zip(&want.data[at..at + in_w]) {
                    compared += 1;
                    differ += usize::from(a != b);
                    max = max.max((a - b).abs());
                }
            }
        }
        (compared, differ, max)
    }

    #[test]
    fn letterbox_matches_ultralytics_tensors() {
        // zidane.jpg 1280x720 -> rect 320x192 (scale 0.25, pads 6/6): 4x down-scale.
        let rect = Resize::LetterboxRect {
            pad: 114,
            target_w: 320,
            target_h: 320,
            stride: 32,
        };
        let z = check_band(
            (1280, 720),
            "zidane_rows_320_344.npy",
            320,
            rect,
            "photos/tensors/zidane.letterbox_192x320.input.npy",
        );
        // astronaut.png 512x512 -> 320x320 (scale 0.625).
        let a = check_band(
            (512, 512),
            "astronaut_rows_200_224.npy",
            200,
            Resize::Letterbox { pad: 114 },
            "photos/tensors/astronaut.letterbox_320x320.input.npy",
        );
        for (name, (compared, differ, max)) in [("zidane", z), ("astronaut", a)] {
            eprintln!(
                "{name}: {compared} values compared, {differ} differ ({:.4}%), max diff {max}",
                100.0 * differ as f64 / compared as f64
            );
            assert!(compared >= 320 * 3 * 4, "{name}: too few rows compared");
            assert_eq!((differ, max), (0, 0.0), "{name}: tensor differs from Ultralytics");
        }
    }

    #[test]
    fn unresized_image_round_trips_the_ultralytics_tensor() {
        // 01_multi_320x320.jpg needs no resize: rebuild its pixels from the reference tensor
        // (v / 255 is exact to invert) and check the copy path writes the very same floats.
        let want = fixture_tensor("dev/tensors/01_multi_320x320.letterbox_320x320.input.npy");
        let plane = 320 * 320;
        let rgb: Vec<u8> = (0..plane)
            .flat_map(|i| (0..3).map(move |c| i + c * plane))
            .map(|i| (want.data[i] * 255.0).round() as u8)
            .collect();
        let img = ImageRef::new(320, 320, &rgb).unwrap();
        let mut got = vec![0f32; plane * 3];
        let t = preprocess_into(
            &img,
            Resize::Letterbox { pad: 114 },
            320,
            320,
            ZERO,
            ONE,
            Layout::Nchw,
            &mut got,
        )
        .unwrap();
        assert_eq!((t.scale_x, t.pad_x, t.pad_y), (1.0, 0.0, 0.0));
        assert!(got == want.data);
    }
}
