//! Keypoints of pose models (YOLOv8 / v11 `-pose`, and end-to-end pose heads): where they sit
//! in the raw output, how many there are, and their mapping back to the original image.
//!
//! A pose output is a detection output (see [`crate::detect`]) whose anchors carry
//! `K x D` extra values after the class scores: `x y` (D = 2) or `x y visibility`
//! (D = 3, visibility already passed through a sigmoid), `x`/`y` in tensor pixels.

use crate::detect::{batch_slice, split_dims, OutputLayout};
use crate::preprocess::Transform;

/// How many keypoints a detection has and how many values each one takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeypointShape {
    /// Keypoints per detection (`K`).
    pub count: usize,
    /// Values per keypoint (`D`): 2 (`x y`) or 3 (`x y visibility`).
    pub dims: usize,
}

impl KeypointShape {
    /// Parses Ultralytics' `kpt_shape` metadata, e.g. `[17, 3]` (or `(17, 3)`).
    /// Returns `None` unless it is two numbers with a count > 0 and 2 or 3 values each.
    pub fn parse(text: &str) -> Option<Self> {
        let inner = text.trim().trim_start_matches(['[', '(']).trim_end_matches([']', ')']);
        let mut parts = inner.split(',').map(str::trim).filter(|s| !s.is_empty());
        let count = parts.next()?.parse().ok()?;
        let dims = parts.next()?.parse().ok()?;
        if parts.next().is_some() || count == 0 || !(2..=3).contains(&dims) {
            return None;
        }
        Some(Self { count, dims })
    }

    /// Values per detection.
    pub fn values(&self) -> usize {
        self.count * self.dims
    }
}

/// Values per anchor and the values before the class scores end, for `layout`.
/// End-to-end rows are `x1 y1 x2 y2 score class` whatever the class count.
fn anchor_width(d1: usize, d2: usize, layout: OutputLayout, nc: usize) -> (usize, usize) {
    match layout {
        OutputLayout::YoloV8 => (d1, 4 + nc),
        OutputLayout::YoloV5 => (d2, 5 + nc),
        OutputLayout::EndToEnd => (d2, 6),
    }
}

/// Resolves the class count and the keypoint shape of a pose output of `dims`.
///
/// `nc` is the number of class names (0 when the model names none) and `declared` the
/// `kpt_shape` of the model's metadata, if any. Without names, the classes are what the
/// declared keypoints leave, or 1 (pose models are almost always single-class); without a
/// declared shape, the values after the classes are `x y visibility` triples.
pub fn pose_geometry(
    dims: &[usize],
    layout: OutputLayout,
    nc: usize,
    declared: Option<KeypointShape>,
) -> Result<(usize, KeypointShape), String> {
    let (_, d1, d2) = split_dims(dims)?;
    let (width, base_without_classes) = anchor_width(d1, d2, layout, 0);
    let nc = match (nc, declared) {
        (0, _) if layout == OutputLayout::EndToEnd => 0,
        (0, Some(k)) => width
            .checked_sub(base_without_classes + k.values())
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                format!(
                    "pose output {dims:?} has no room for classes and {} keypoint values",
                    k.values()
                )
            })?,
        (0, None) => 1,
        (n, _) => n,
    };
    let (_, base) = anchor_width(d1, d2, layout, nc);
    let extra = width
        .checked_sub(base)
        .ok_or_else(|| format!("pose output {dims:?} has no room for {nc} classes"))?;
    let shape = match declared {
        Some(k) if k.values() == extra => k,
        Some(k) => {
            return Err(format!(
                "pose output {dims:?} has {extra} values per detection after the classes, \
                 kpt_shape [{}, {}] needs {}",
                k.count,
                k.dims,
                k.values()
            ))
        }
        None if extra > 0 && extra % 3 == 0 => KeypointShape {
            count: extra / 3,
            dims: 3,
        },
        None => {
            return Err(format!(
                "pose output {dims:?} has {extra} values per detection after {nc} classes, \
                 not a whole number of (x, y, visibility) keypoints"
            ))
        }
    };
    Ok((nc, shape))
}

/// The raw keypoints `(x, y, confidence)` in tensor pixels of the detection at `anchor` of
/// batch element `batch_index`; confidence is 1 for keypoints without visibility (D = 2).
pub fn raw_keypoints(
    output: &[f32],
    dims: &[usize],
    batch_index: usize,
    layout: OutputLayout,
    nc: usize,
    shape: KeypointShape,
    anchor: usize,
) -> Result<Vec<[f32; 3]>, String> {
    let (out, d1, d2) = batch_slice(output, dims, batch_index)?;
    let (width, base) = anchor_width(d1, d2, layout, nc);
    let anchors = if layout == OutputLayout::YoloV8 { d2 } else { d1 };
    if anchor >= anchors || base + shape.values() > width || shape.dims < 2 {
        return Err(format!(
            "no keypoints at batch {batch_index}, anchor {anchor} of output {dims:?} ({nc} classes, {} x {})",
            shape.count, shape.dims
        ));
    }
    let value = |i: usize| match layout {
        OutputLayout::YoloV8 => out[(base + i) * d2 + anchor],
        _ => out[anchor * d2 + base + i],
    };
    Ok((0..shape.count)
        .map(|k| {
            let at = k * shape.dims;
            let conf = if shape.dims >= 3 { value(at + 2) } else { 1.0 };
            [value(at), value(at + 1), conf]
        })
        .collect())
}

/// One keypoint in original-image pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Keypoint {
    /// Index of the keypoint in the model's list.
    pub id: u32,
    /// Position in original-image pixels, clipped to the image.
    pub x: f32,
    /// Position in original-image pixels, clipped to the image.
    pub y: f32,
    /// Visibility confidence, 0..1.
    pub confidence: f32,
}

/// Maps raw keypoints to the original image (Ultralytics `scale_coords`: subtract the pad,
/// divide by the gain, clip to the image) and leaves out those whose confidence is below
/// `min_confidence` (NaN confidences too).
pub fn to_original(raw: &[[f32; 3]], transform: &Transform, min_confidence: f32) -> Vec<Keypoint> {
    raw.iter()
        .enumerate()
        .filter(|(_, p)| p[2] >= min_confidence)
        .map(|(id, p)| {
            let (x, y) = transform.to_original_point(p[0], p[1]);
            Keypoint {
                id: id as u32,
                x,
                y,
                confidence: p[2],
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::npy;
    use crate::{decode, infer_layout, letterbox_geometry, nms};

    const K3: KeypointShape = KeypointShape { count: 3, dims: 3 };

    #[test]
    fn parses_kpt_shape() {
        assert_eq!(KeypointShape::parse("[3, 3]"), Some(K3));
        assert_eq!(
            KeypointShape::parse(" (17,2) "),
            Some(KeypointShape { count: 17, dims: 2 })
        );
        for bad in ["", "[3]", "[0, 3]", "[3, 4]", "[3, 3, 3]", "[a, 3]", "[-1, 3]"] {
            assert_eq!(KeypointShape::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn infers_classes_and_keypoints() {
        let v8 = OutputLayout::YoloV8;
        // shapes-pose: 4 + 1 + 3 x 3.
        assert_eq!(pose_geometry(&[1, 14, 2100], v8, 1, Some(K3)), Ok((1, K3)));
        assert_eq!(pose_geometry(&[1, 14, 2100], v8, 1, None), Ok((1, K3)));
        assert_eq!(pose_geometry(&[1, 14, 2100], v8, 0, Some(K3)), Ok((1, K3)));
        assert_eq!(pose_geometry(&[1, 14, 2100], v8, 0, None), Ok((1, K3)));
        // COCO pose: 17 x 3.
        let coco = KeypointShape { count: 17, dims: 3 };
        assert_eq!(pose_geometry(&[1, 56, 8400], v8, 1, None), Ok((1, coco)));
        // Two classes of 2-value keypoints, from the metadata alone.
        let k2 = KeypointShape { count: 4, dims: 2 };
        assert_eq!(pose_geometry(&[1, 14, 2100], v8, 0, Some(k2)), Ok((2, k2)));
        // End-to-end: x1 y1 x2 y2 score class + 17 x 3.
        let e2e = OutputLayout::EndToEnd;
        assert_eq!(pose_geometry(&[1, 300, 57], e2e, 1, None), Ok((1, coco)));
        // Mismatches.
        assert!(pose_geometry(&[1, 14, 2100], v8, 2, None).is_err()); // 8 values: not triples
        assert!(pose_geometry(&[1, 14, 2100], v8, 1, Some(coco)).is_err());
        assert!(pose_geometry(&[1, 14, 2100], v8, 20, None).is_err());
        assert!(pose_geometry(&[1, 5, 2100], v8, 1, None).is_err()); // no keypoints at all
        assert!(pose_geometry(&[1, 14, 2100], v8, 0, Some(KeypointShape { count: 5, dims: 2 })).is_err());
        assert!(pose_geometry(&[14, 2100, 1, 1], v8, 1, None).is_err());
    }

    #[test]
    fn reads_keypoints_of_an_anchor() {
        // 2 anchors, 1 class, 2 keypoints x 3, channels first.
        let anchors = [
            [10.0, 10.0, 4.0, 4.0, 0.9, 1.0, 2.0, 0.3, 3.0, 4.0, 0.8],
            [50.0, 50.0, 4.0, 4.0, 0.1, 5.0, 6.0, 0.7, 7.0, 8.0, 0.6],
        ];
        let v8: Vec<f32> = (0..11).flat_map(|c| anchors.iter().map(move |a| a[c])).collect();
        let k2 = KeypointShape { count: 2, dims: 3 };
        let got = raw_keypoints(&v8, &[1, 11, 2], 0, OutputLayout::YoloV8, 1, k2, 1).unwrap();
        assert_eq!(got, [[5.0, 6.0, 0.7], [7.0, 8.0, 0.6]]);
        // The same anchors as rows (YOLOv5 layout has objectness: shift by one column).
        let rows: Vec<f32> = anchors
            .iter()
            .flat_map(|a| {
                a[..4]
                    .iter()
                    .chain([1.0f32].iter())
                    .chain(&a[4..])
                    .copied()
                    .collect::<Vec<_>>()
            })
            .collect();
        let got = raw_keypoints(&rows, &[1, 2, 12], 0, OutputLayout::YoloV5, 1, k2, 0).unwrap();
        assert_eq!(got, [[1.0, 2.0, 0.3], [3.0, 4.0, 0.8]]);
        // Without visibility the confidence is 1.
        let xy = KeypointShape { count: 3, dims: 2 };
        let got = raw_keypoints(&v8, &[1, 11, 2], 0, OutputLayout::YoloV8, 1, xy, 0).unwrap();
        assert_eq!(got, [[1.0, 2.0, 1.0], [0.3, 3.0, 1.0], [4.0, 0.8, 1.0]]);
        // Out of range: anchor, batch, too many keypoints, wrong length.
        assert!(raw_keypoints(&v8, &[1, 11, 2], 0, OutputLayout::YoloV8, 1, k2, 2).is_err());
        assert!(raw_keypoints(&v8, &[1, 11, 2], 1, OutputLayout::YoloV8, 1, k2, 0).is_err());
        assert!(raw_keypoints(&v8, &[1, 11, 2], 0, OutputLayout::YoloV8, 1, K3, 0).is_err());
        assert!(raw_keypoints(&v8[1..], &[1, 11, 2], 0, OutputLayout::YoloV8, 1, k2, 0).is_err());
    }

    #[test]
    fn maps_and_filters_keypoints() {
        // 1280x720 letterboxed into 320x320: scale 0.25, 70 rows of padding on top.
        let t = letterbox_geometry(1280, 720, 320, 320, None)
            .unwrap()
            .transform(1280, 720);
        let raw = [
            [25.0, 120.0, 0.9],
            [-4.0, 330.0, 0.5],
            [100.0, 100.0, 0.2],
            [1.0, 1.0, f32::NAN],
        ];
        let got = to_original(&raw, &t, 0.5);
        assert_eq!(
            got,
            [
                Keypoint {
                    id: 0,
                    x: 100.0,
                    y: 200.0,
                    confidence: 0.9
                },
                // Clipped to the image, as Ultralytics' scale_coords does; 0.5 is kept (>=).
                Keypoint {
                    id: 1,
                    x: 0.0,
                    y: 720.0,
                    confidence: 0.5
                },
            ]
        );
        assert_eq!(to_original(&raw, &t, 0.0).len(), 3);
    }

    #[test]
    fn shapes_pose_01_multi() {
        // tests/fixtures/reference/dev/shapes-pose.square.json, "01_multi_320x320.jpg"
        // (320x320: no resize, no padding): class, confidence, xyxy, keypoints (x, y, conf).
        type Expected = (f32, [f32; 4], [[f32; 3]; 3]);
        let expected: [Expected; 4] = [
            (
                0.74892,
                [77.353, 276.835, 110.788, 298.564],
                [
                    [80.915, 284.279, 0.955508],
                    [108.765, 286.4, 0.934829],
                    [101.984, 294.854, 0.94513],
                ],
            ),
            (
                0.73779,
                [181.431, 100.191, 240.592, 160.203],
                [
                    [208.279, 115.566, 0.982096],
                    [232.052, 149.153, 0.990995],
                    [201.311, 157.307, 0.98109],
                ],
            ),
            (
                0.476296,
                [168.991, 107.845, 189.929, 147.96],
                [
                    [180.708, 117.816, 0.922261],
                    [191.737, 140.947, 0.929374],
                    [171.56, 139.369, 0.891007],
                ],
            ),
            (
                0.323627,
                [191.212, 150.183, 238.002, 172.723],
                [
                    [212.879, 158.61, 0.819135],
                    [220.626, 160.566, 0.835488],
                    [218.318, 164.061, 0.844884],
                ],
            ),
        ];
        let out = npy::read_f32(&format!(
            "{}/../../tests/fixtures/reference/dev/tensors/01_multi_320x320.shapes-pose.output0.npy",
            env!("CARGO_MANIFEST_DIR")
        ));
        let layout = infer_layout(&out.shape, 1).unwrap();
        assert_eq!(layout, OutputLayout::YoloV8);
        let (nc, shape) = pose_geometry(&out.shape, layout, 1, KeypointShape::parse("[3, 3]")).unwrap();
        assert_eq!((nc, shape), (1, K3));
        let t = letterbox_geometry(320, 320, 320, 320, None)
            .unwrap()
            .transform(320, 320);
        let cands = decode(&out.data, &out.shape, 0, layout, nc, 0.25).unwrap();
        let kept = nms(cands, 0.45, false, 300);
        assert_eq!(kept.len(), expected.len());
        for (i, (c, (conf, xyxy, kpts))) in kept.iter().zip(expected).enumerate() {
            assert_eq!(c.class_id, 0);
            assert!((c.score - conf).abs() <= 1e-4, "[{i}] conf {} vs {conf}", c.score);
            let b = t.to_original_box(c.x1, c.y1, c.x2, c.y2);
            for k in 0..4 {
                assert!((b[k] - xyxy[k]).abs() <= 1e-2, "[{i}] box {b:?} vs {xyxy:?}");
            }
            let raw = raw_keypoints(&out.data, &out.shape, 0, layout, nc, shape, c.anchor as usize).unwrap();
            let got = to_original(&raw, &t, 0.0);
            assert_eq!(got.len(), 3);
            for (k, (g, w)) in got.iter().zip(kpts).enumerate() {
                assert_eq!(g.id, k as u32);
                assert!(
                    (g.x - w[0]).abs() <= 1e-2 && (g.y - w[1]).abs() <= 1e-2 && (g.confidence - w[2]).abs() <= 1e-4,
                    "[{i}] keypoint {k}: {g:?} vs {w:?}"
                );
            }
            // Every keypoint here is confident; a threshold above all of them leaves none.
            assert!(to_original(&raw, &t, 0.999).is_empty());
        }
    }
}
