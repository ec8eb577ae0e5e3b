//! RF-DETR, Roboflow's DETR-style detector family (`rfdetr`'s ONNX export), pre-processed and
//! decoded as `rfdetr`'s own `predict()` and `PostProcess` do it.
//!
//! - Input `[B, 3, R, R]`; outputs `dets` `[B, Q, 4]` (cx, cy, w, h, normalised to 0..1 of the
//!   network input) and `labels` `[B, Q, C + 1]` (logits; the last column is the no-object
//!   slot); segmentation adds `masks` `[B, Q, Hm, Wm]` (mask logits, see [`masks`]).
//! - Pre-processing ([`stretch_into`]): RGB / 255, stretched to the input size with torch's
//!   bilinear `F.interpolate(align_corners=False, antialias=False)` **on the float image**
//!   (resizing the bytes first, as the YOLO path does bit-exactly with OpenCV, differs by up to
//!   0.75 / 255), then `(x - mean) / std` with ImageNet's mean and std.
//! - Decoding ([`decode`]): a sigmoid over all `Q x (C + 1)` logits, flattened, the top
//!   `num_select` (stable, descending), `query = idx / (C + 1)`, `class = idx % (C + 1)`. The
//!   no-object slot takes part in the top-k, as in `rfdetr`, and is never reported; then
//!   `score > threshold` (strict). Boxes become xyxy scaled to the original image and clamped
//!   ([`to_image`]). There is no NMS: one query may be reported for several classes.

use crate::preprocess::{ImageRef, Layout, Resize, Transform};
use crate::ModelInput;

pub mod masks;

/// ImageNet's per-channel mean (RGB), which every RF-DETR backbone (DINOv2) is trained with.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet's per-channel standard deviation (RGB).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];
/// `num_select` of the stock `rfdetr` models (their `PostProcess` keeps the top 300 pairs).
pub const DEFAULT_NUM_SELECT: usize = 300;
/// The class Roboflow's datasets may carry as a placeholder (usually id 0): never reported.
pub const ROBOFLOW_BACKGROUND: &str = "background_class83422";

/// Stretches one RGB8 image to `in_w x in_h` as `rfdetr` does (see the module docs) and writes
/// it normalised with `mean` / `std` into `out` (`in_w * in_h * 3` values, `layout`); returns
/// the [`Transform`] from tensor pixels back to the image.
#[allow(clippy::too_many_arguments)] // the same flat call as `preprocess_into`
pub fn stretch_into(
    img: &ImageRef,
    in_w: u32,
    in_h: u32,
    mean: [f32; 3],
    std: [f32; 3],
    layout: Layout,
    out: &mut [f32],
) -> Result<Transform, String> {
    crate::preprocess::check_tensor(img, in_w, in_h, std, out)?;
    let (w, h) = (img.width as usize, img.height as usize);
    let (ow, oh) = (in_w as usize, in_h as usize);
    let xt = crate::mask::torch_taps(w, ow);
    let yt = crate::mask::torch_taps(h, oh);
    // `tensor / 255` of each byte, in f32 as torch computes it.
    let mut unit = [0f32; 256];
    for (v, slot) in unit.iter_mut().enumerate() {
        *slot = v as f32 / 255.0;
    }
    // Horizontal pass of source row `r` (torch: the inner, width interpolation first).
    let across = |r: usize, buf: &mut [f32]| {
        let row = &img.rgb[r * w * 3..][..w * 3];
        for (t, o) in xt.iter().zip(buf.chunks_exact_mut(3)) {
            let (a, b) = (&row[t.i0 * 3..][..3], &row[t.i1 * 3..][..3]);
            for c in 0..3 {
                o[c] = unit[usize::from(a[c])] * t.w0 + unit[usize::from(b[c])] * t.w1;
            }
        }
    };
    // The two source rows an output row blends, kept between rows (consecutive output rows
    // mostly read the same or the next source rows).
    let (mut top, mut bottom) = (vec![0f32; ow * 3], vec![0f32; ow * 3]);
    let (mut top_row, mut bottom_row) = (usize::MAX, usize::MAX);
    let plane = ow * oh;
    for (y, t) in yt.iter().enumerate() {
        if top_row != t.i0 {
            if bottom_row == t.i0 {
                std::mem::swap(&mut top, &mut bottom);
                std::mem::swap(&mut top_row, &mut bottom_row);
            } else {
                across(t.i0, &mut top);
                top_row = t.i0;
            }
        }
        if bottom_row != t.i1 {
            across(t.i1, &mut bottom);
            bottom_row = t.i1;
        }
        for (x, (a, b)) in top.chunks_exact(3).zip(bottom.chunks_exact(3)).enumerate() {
            for c in 0..3 {
                let v = (a[c] * t.w0 + b[c] * t.w1 - mean[c]) / std[c];
                match layout {
                    Layout::Nchw => out[c * plane + y * ow + x] = v,
                    Layout::Nhwc => out[(y * ow + x) * 3 + c] = v,
                }
            }
        }
    }
    Ok(Transform {
        scale_x: in_w as f32 / w as f32,
        scale_y: in_h as f32 / h as f32,
        pad_x: 0.0,
        pad_y: 0.0,
        orig_width: img.width,
        orig_height: img.height,
    })
}

/// One batched input tensor for an RF-DETR model: stretched as [`stretch_into`] does when the
/// model is stretched (the family's default), else the shared pre-processing (a Roboflow model
/// trained with a letterbox says so in its `environment.json`).
pub fn batch(input: &ModelInput, images: &[ImageRef]) -> Result<(Vec<f32>, Vec<Transform>), String> {
    let mut data = vec![0f32; input.values_per_image() * images.len()];
    let transforms = batch_into(input, images, &mut data)?;
    Ok((data, transforms))
}

/// `batch` into `data` (`input.values_per_image() * images.len()` values).
pub fn batch_into(input: &ModelInput, images: &[ImageRef], data: &mut [f32]) -> Result<Vec<Transform>, String> {
    if input.resize != Resize::Stretch {
        return input.batch_into(images, data);
    }
    input.each_image_into(images, data, |img, out| {
        stretch_into(img, input.width, input.height, input.mean, input.std, input.layout, out)
    })
}

/// `num_select` as the model's metadata gives it: a `num_select` entry, or the `num_select` of
/// the model kwargs `rfdetr` writes into `rfdetr_notes` (JSON); `None` when neither says.
pub fn num_select(metadata: &[(String, String)]) -> Option<usize> {
    let value = |k: &str| metadata.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    if let Some(n) = value("num_select").and_then(|v| v.trim().parse().ok()) {
        return Some(n);
    }
    // A JSON document: the number after `"num_select":` (no parser needed for one integer).
    let notes = value("rfdetr_notes")?;
    let after = &notes[notes.find("\"num_select\"")? + "\"num_select\"".len()..];
    let digits: String = after
        .trim_start()
        .strip_prefix(':')?
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok().filter(|n| *n > 0)
}

/// One (query, class) pair `rfdetr` reports.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Selected {
    /// The query (row of `dets`, `labels` and `masks`).
    pub query: usize,
    /// The class column of `labels`.
    pub class_id: u32,
    /// Its sigmoid score.
    pub score: f32,
    /// The query's box as normalised xyxy (`cx -/+ w / 2`, `cy -/+ h / 2`).
    pub xyxy: [f32; 4],
}

/// Splits a `[B, Q, n]` (or `[Q, n]`) output's dims into (images, queries, n).
fn rows(dims: &[usize], what: &str) -> Result<(usize, usize, usize), String> {
    match *dims {
        [b, q, n] => Ok((b, q, n)),
        [q, n] => Ok((1, q, n)),
        _ => Err(format!(
            "RF-DETR output {what} must be [batch, queries, n], got {dims:?}"
        )),
    }
}

/// The pairs of image `batch_index` that `rfdetr`'s `PostProcess` keeps with `threshold`
/// (see the module docs), best first, without the no-object slot. `num_select` is capped at
/// `Q x (C + 1)`.
pub fn decode(
    dets: (&[f32], &[usize]),
    labels: (&[f32], &[usize]),
    batch_index: usize,
    num_select: usize,
    threshold: f32,
) -> Result<Vec<Selected>, String> {
    let (db, dq, four) = rows(dets.1, "dets")?;
    let (lb, q, k) = rows(labels.1, "labels")?;
    if four != 4 || dq != q || db != lb || k < 2 {
        return Err(format!(
            "RF-DETR outputs dets {:?} and labels {:?} do not fit: [B, Q, 4] and [B, Q, C + 1] expected",
            dets.1, labels.1
        ));
    }
    let per = q.checked_mul(k).ok_or("RF-DETR labels are too large")?;
    if Some(labels.0.len()) != lb.checked_mul(per) || Some(dets.0.len()) != db.checked_mul(q * 4) {
        return Err(format!(
            "RF-DETR outputs hold {} and {} values, not what dims {:?} and {:?} need",
            dets.0.len(),
            labels.0.len(),
            dets.1,
            labels.1
        ));
    }
    if batch_index >= lb {
        return Err(format!("batch index {batch_index} out of range for {lb}"));
    }
    let logits = &labels.0[batch_index * per..][..per];
    let boxes = &dets.0[batch_index * q * 4..][..q * 4];
    let scores: Vec<f32> = logits.iter().map(|&x| 1.0 / (1.0 + (-x).exp())).collect();
    let mut order: Vec<u32> = (0..per as u32).collect();
    // Stable and descending: ties keep their flat index order, as a stable sort does.
    order.sort_by(|&a, &b| scores[b as usize].total_cmp(&scores[a as usize]));
    order.truncate(num_select.min(per));
    Ok(order
        .into_iter()
        .map(|i| i as usize)
        .filter(|&i| scores[i] > threshold && i % k != k - 1)
        .map(|i| {
            let query = i / k;
            let [cx, cy, w, h] = [0, 1, 2, 3].map(|j| boxes[query * 4 + j]);
            Selected {
                query,
                class_id: (i % k) as u32,
                score: scores[i],
                xyxy: [cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h],
            }
        })
        .collect())
}

/// A normalised xyxy box in original-image pixels, clamped to the image: times (W, H) for a
/// stretched input (as `rfdetr` scales), else through the input pixels and `transform`.
pub fn to_image(xyxy: [f32; 4], resize: Resize, in_w: u32, in_h: u32, transform: &Transform) -> [f32; 4] {
    let (w, h) = (transform.orig_width as f32, transform.orig_height as f32);
    let [x1, y1, x2, y2] = xyxy;
    match resize {
        Resize::Stretch => [
            (x1 * w).clamp(0.0, w),
            (y1 * h).clamp(0.0, h),
            (x2 * w).clamp(0.0, w),
            (y2 * h).clamp(0.0, h),
        ],
        _ => {
            let (iw, ih) = (in_w as f32, in_h as f32);
            transform.to_original_box(x1 * iw, y1 * ih, x2 * iw, y2 * ih)
        }
    }
}

/// Whether `names` marks `class_id` as Roboflow's background placeholder.
pub fn is_background(names: &[String], class_id: u32) -> bool {
    names.get(class_id as usize).is_some_and(|n| n == ROBOFLOW_BACKGROUND)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::npy;

    fn tensor(name: &str) -> npy::Array<f32> {
        npy::read_f32(&format!("{}/tests/data/rfdetr/{name}", env!("CARGO_MANIFEST_DIR")))
    }

    #[test]
    fn stretch_matches_torch_interpolate() {
        // F.interpolate([[0, 1]] as 1x2, size (1, 4), bilinear) = [0, .25, .75, 1] per channel;
        // rows are copied (2 -> 2).
        let rgb: Vec<u8> = [0u8, 0, 0, 255, 255, 255].repeat(2);
        let img = ImageRef::new(2, 2, &rgb).unwrap();
        let mut out = vec![0f32; 4 * 2 * 3];
        let t = stretch_into(&img, 4, 2, [0.0; 3], [1.0; 3], Layout::Nchw, &mut out).unwrap();
        assert_eq!(&out[..4], &[0.0, 0.25, 0.75, 1.0]);
        assert_eq!(&out[4..8], &[0.0, 0.25, 0.75, 1.0]);
        assert_eq!((t.scale_x, t.scale_y), (2.0, 1.0));
        // Down-scaling reads midpoints, without antialiasing: 4 -> 2 samples 0.5 and 2.5.
        let rgb: Vec<u8> = [0u8, 51, 102, 255].iter().flat_map(|&v| [v, v, v]).collect();
        let img = ImageRef::new(4, 1, &rgb).unwrap();
        let mut out = vec![0f32; 2 * 3];
        stretch_into(&img, 2, 1, [0.0; 3], [1.0; 3], Layout::Nhwc, &mut out).unwrap();
        assert!((out[0] - 0.1).abs() < 1e-6 && (out[3] - 0.7).abs() < 1e-6, "{out:?}");
        // Normalisation after the resize.
        let mut out = vec![0f32; 2 * 3];
        stretch_into(&img, 2, 1, IMAGENET_MEAN, IMAGENET_STD, Layout::Nchw, &mut out).unwrap();
        assert!((out[0] - (0.1 - 0.485) / 0.229).abs() < 1e-5);
        assert!(stretch_into(&img, 0, 1, [0.0; 3], [1.0; 3], Layout::Nchw, &mut out).is_err());
        assert!(stretch_into(&img, 3, 1, [0.0; 3], [1.0; 3], Layout::Nchw, &mut out).is_err());
    }

    #[test]
    fn input_matches_rfdetr_preprocess() {
        // 01_multi_320x320.jpg's pixels (its YOLO input: 320x320 needs no letterbox, RGB / 255)
        // and rows 0..8 of the tensor rfdetr's preprocess_to_nchw made of it (tests/data/rfdetr/gen.py).
        let yolo = npy::read_f32(&format!(
            "{}/../../tests/fixtures/reference/dev/tensors/01_multi_320x320.letterbox_320x320.input.npy",
            env!("CARGO_MANIFEST_DIR")
        ));
        let plane = 320 * 320;
        let rgb: Vec<u8> = (0..plane)
            .flat_map(|i| (0..3).map(move |c| (c, i)))
            .map(|(c, i)| (yolo.data[c * plane + i] * 255.0).round() as u8)
            .collect();
        let want = tensor("01_multi_320x320.rfdetr-input.rows0-8.npy");
        assert_eq!(want.shape, [3, 8, 320]);
        let img = ImageRef::new(320, 320, &rgb).unwrap();
        let mut out = vec![0f32; plane * 3];
        stretch_into(&img, 320, 320, IMAGENET_MEAN, IMAGENET_STD, Layout::Nchw, &mut out).unwrap();
        let mut worst = 0f32;
        for c in 0..3 {
            for (a, b) in out[c * plane..][..8 * 320]
                .iter()
                .zip(&want.data[c * 8 * 320..][..8 * 320])
            {
                worst = worst.max((a - b).abs());
            }
        }
        assert!(worst < 1e-5, "max diff {worst}");
    }

    #[test]
    fn stretch_of_a_larger_image_matches_float_bilinear() {
        // 02_multi_640x480.jpg's rows 0..8 stretched, against cv2.resize on the float image
        // (equal to torchvision's bilinear to 1.1e-5, fixtures' MODELS.md): tests/data/rfdetr/gen.py.
        let pixels = npy::read_u8(&format!(
            "{}/tests/data/rfdetr/crop_37x23.rgb.npy",
            env!("CARGO_MANIFEST_DIR")
        ));
        let want = tensor("crop_37x23.to_16x29.npy");
        let (h, w) = (pixels.shape[0] as u32, pixels.shape[1] as u32);
        let img = ImageRef::new(w, h, &pixels.data).unwrap();
        let mut out = vec![0f32; 16 * 29 * 3];
        stretch_into(&img, 16, 29, [0.0; 3], [1.0; 3], Layout::Nhwc, &mut out).unwrap();
        let worst = out
            .iter()
            .zip(&want.data)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 2e-5, "max diff {worst}");
    }

    /// rfdetr-shapes-detect.json, 01_multi_320x320.jpg: (query, class, confidence, xyxy).
    const DETECT_01: &[(usize, u32, f32, [f32; 4])] = &[
        (2, 0, 0.419949, [246.869, 187.469, 303.459, 243.195]),
        (2, 1, 0.408893, [246.869, 187.469, 303.459, 243.195]),
        (9, 2, 0.390405, [99.354, 33.334, 136.49, 68.667]),
        (0, 0, 0.381024, [172.608, 102.724, 238.442, 169.514]),
        (1, 1, 0.373394, [231.391, 64.997, 272.197, 105.904]),
        (1, 0, 0.354906, [231.391, 64.997, 272.197, 105.904]),
        (6, 0, 0.350893, [247.79, 187.216, 303.327, 243.486]),
        (0, 1, 0.327327, [172.608, 102.724, 238.442, 169.514]),
        (5, 1, 0.308853, [100.576, 147.227, 151.847, 198.073]),
        (1, 2, 0.306318, [231.391, 64.997, 272.197, 105.904]),
        (5, 0, 0.303332, [100.576, 147.227, 151.847, 198.073]),
        (6, 1, 0.301139, [247.79, 187.216, 303.327, 243.486]),
        (3, 2, 0.300857, [101.656, 35.722, 133.59, 67.727]),
    ];

    #[test]
    fn decodes_like_rfdetr_postprocess() {
        let dets = tensor("01_multi_320x320.rfdetr-shapes-detect.dets.npy");
        let labels = tensor("01_multi_320x320.rfdetr-shapes-detect.labels.npy");
        let got = decode((&dets.data, &dets.shape), (&labels.data, &labels.shape), 0, 100, 0.3).unwrap();
        let t = Transform {
            scale_x: 1.0,
            scale_y: 1.0,
            pad_x: 0.0,
            pad_y: 0.0,
            orig_width: 320,
            orig_height: 320,
        };
        assert_eq!(got.len(), DETECT_01.len());
        for (g, &(query, class, conf, xyxy)) in got.iter().zip(DETECT_01) {
            assert_eq!((g.query, g.class_id), (query, class), "{g:?}");
            assert!((g.score - conf).abs() < 2e-6, "{g:?} vs {conf}");
            let b = to_image(g.xyxy, Resize::Stretch, 320, 320, &t);
            for i in 0..4 {
                assert!((b[i] - xyxy[i]).abs() < 2e-3, "{b:?} vs {xyxy:?}");
            }
        }
        // The stock num_select (300) keeps the same rows here; a tiny one keeps the best only.
        let stock = decode((&dets.data, &dets.shape), (&labels.data, &labels.shape), 0, 300, 0.3).unwrap();
        assert_eq!(stock, got);
        let one = decode((&dets.data, &dets.shape), (&labels.data, &labels.shape), 0, 1, 0.3).unwrap();
        assert_eq!(one, got[..1]);
        // The seg model clears nothing at 0.3 on this image (the reference has no rows).
        let dets = tensor("01_multi_320x320.rfdetr-shapes-seg.dets.npy");
        let labels = tensor("01_multi_320x320.rfdetr-shapes-seg.labels.npy");
        assert!(
            decode((&dets.data, &dets.shape), (&labels.data, &labels.shape), 0, 100, 0.3)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn background_slot_takes_part_in_the_top_k() {
        // One query, 2 classes + no-object: the no-object slot (0.9) is selected first and
        // dropped, so num_select = 1 leaves nothing; 2 keeps class 1.
        let dets = [0.5f32, 0.5, 0.2, 0.4];
        let labels = [-1.0f32, 1.0, 3.0];
        let d = (&dets[..], &[1usize, 1, 4][..]);
        let l = (&labels[..], &[1usize, 1, 3][..]);
        assert!(decode(d, l, 0, 1, 0.3).unwrap().is_empty());
        let two = decode(d, l, 0, 2, 0.3).unwrap();
        assert_eq!(two.len(), 1);
        assert_eq!((two[0].query, two[0].class_id), (0, 1));
        assert_eq!(two[0].xyxy, [0.4, 0.3, 0.6, 0.7]);
        // Strictly above the threshold.
        let sig1 = 1.0 / (1.0 + (-1.0f32).exp());
        assert!(decode(d, l, 0, 3, sig1).unwrap().is_empty());
        // Mismatched outputs are refused.
        assert!(decode(d, (&labels[..], &[1usize, 3, 1][..]), 0, 2, 0.3).is_err());
        assert!(decode(d, l, 1, 2, 0.3).is_err());
    }

    #[test]
    fn boxes_scale_and_clamp() {
        let t = Transform {
            scale_x: 0.5,
            scale_y: 320.0 / 480.0,
            pad_x: 0.0,
            pad_y: 0.0,
            orig_width: 640,
            orig_height: 480,
        };
        assert_eq!(
            to_image([-0.1, 0.25, 0.5, 1.2], Resize::Stretch, 320, 320, &t),
            [0.0, 120.0, 320.0, 480.0]
        );
    }

    #[test]
    fn reads_num_select() {
        let m = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        assert_eq!(num_select(&m("num_select", "100")), Some(100));
        let notes = r#"{"class_names": ["a"], "model_kwargs": {"cls": "RFDETRNano", "num_select": 100}}"#;
        assert_eq!(num_select(&m("rfdetr_notes", notes)), Some(100));
        assert_eq!(num_select(&m("rfdetr_notes", "{}")), None);
        assert_eq!(num_select(&[]), None);
        assert!(is_background(&["background_class83422".into(), "cat".into()], 0));
        assert!(!is_background(&["cat".into()], 0) && !is_background(&[], 3));
    }
}
