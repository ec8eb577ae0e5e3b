//! Decoding of raw YOLO detection outputs into candidate boxes (tensor pixels),
//! following Ultralytics' `non_max_suppression` up to the NMS itself.

/// A detection before NMS, in tensor (model-input) pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate {
    /// Left edge.
    pub x1: f32,
    /// Top edge.
    pub y1: f32,
    /// Right edge.
    pub x2: f32,
    /// Bottom edge.
    pub y2: f32,
    /// Confidence: best class score (times objectness for YOLOv5).
    pub score: f32,
    /// Index of the best class.
    pub class_id: u32,
    /// Index of the anchor (row / column) in the raw output; the extra channels of that
    /// anchor hold the mask coefficients or keypoints of this detection.
    pub anchor: u32,
}

/// Memory layout of a raw detection output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputLayout {
    /// YOLOv8 / v11 style `[B, 4 + nc (+ extra), N]`, channels first: `cx cy w h` then the
    /// class scores (already sigmoid), no objectness; extra channels (mask coefficients,
    /// keypoints) follow the class scores.
    YoloV8,
    /// YOLOv5 style `[B, N, 5 + nc (+ extra)]`: `cx cy w h obj cls...`; score = obj * cls.
    YoloV5,
    /// End-to-end (NMS-free) `[B, N, 6 (+ extra)]`: `x1 y1 x2 y2 score class_id`
    /// (YOLOv10, YOLO26 end2end). Needs no NMS: Ultralytics keeps the rows with
    /// score > conf, in output order, and then the first `max_det` of them.
    EndToEnd,
}

/// End-to-end heads emit at most `max_det` rows (300 by default); anchor-based heads have
/// over a thousand rows from 128x128 inputs up, which tells the two apart when the widths fit both.
const MAX_END_TO_END_ROWS: usize = 1000;

/// `[B, d1, d2]` (or `[d1, d2]` for one image) as `(B, d1, d2)`.
pub(crate) fn split_dims(dims: &[usize]) -> Result<(usize, usize, usize), String> {
    match *dims {
        [b, d1, d2] => Ok((b, d1, d2)),
        [d1, d2] => Ok((1, d1, d2)),
        _ => Err(format!("the output must have 3 dimensions [batch, a, b], got {dims:?}")),
    }
}

/// Image `batch_index`'s slice of a `[B, d1, d2]` detection output, with `d1` and `d2`; an
/// output whose size does not match its dims, or a batch index out of range, is an error.
pub(crate) fn batch_slice<'a>(
    output: &'a [f32],
    dims: &[usize],
    batch_index: usize,
) -> Result<(&'a [f32], usize, usize), String> {
    let (b, d1, d2) = split_dims(dims)?;
    let per = d1 * d2;
    if output.len() != b * per {
        return Err(format!(
            "output has {} values but dims {dims:?} need {}",
            output.len(),
            b * per
        ));
    }
    if batch_index >= b {
        return Err(format!("batch index {batch_index} out of range for {b}"));
    }
    Ok((&output[batch_index * per..][..per], d1, d2))
}

/// Guesses the layout from the output dims `[B, d1, d2]` and the number of classes
/// (`nc` = 0 when unknown). Channels-first (`d1 < d2`) is YOLOv8; otherwise rows of
/// `d2` values are YOLOv5 when they hold exactly `5 + nc`, end-to-end when they are too
/// narrow for YOLOv5, and by row count (at most 1000 rows: end-to-end) when both fit.
pub fn infer_layout(dims: &[usize], nc: usize) -> Result<OutputLayout, String> {
    let (_, d1, d2) = split_dims(dims)?;
    let min_classes = nc.max(1);
    if d1 < d2 {
        if d1 >= 4 + min_classes {
            return Ok(OutputLayout::YoloV8);
        }
        return Err(format!(
            "output {dims:?} looks channels-first but has {d1} channels, fewer than 4 + {min_classes} classes"
        ));
    }
    if d2 < 6 {
        return Err(format!(
            "output {dims:?} has rows of {d2} values, too few for any YOLO layout"
        ));
    }
    if nc > 0 && d2 < 5 + nc {
        return Ok(OutputLayout::EndToEnd);
    }
    if nc > 0 && d2 == 5 + nc && d2 != 6 {
        return Ok(OutputLayout::YoloV5);
    }
    if d1 <= MAX_END_TO_END_ROWS {
        Ok(OutputLayout::EndToEnd)
    } else {
        Ok(OutputLayout::YoloV5)
    }
}

/// Decodes one batch element's candidates with score strictly greater than
/// `conf_threshold`, as Ultralytics does (class = argmax of the class scores, first on ties).
/// `nc` is the number of class scores to read; channels after them (mask coefficients,
/// keypoints) are ignored. `nc` = 0 means every channel after the box (and objectness)
/// is a class score. For [`OutputLayout::EndToEnd`] `nc` is not used.
/// Candidates come in anchor order; boxes are `x1 y1 x2 y2` in tensor pixels.
pub fn decode(
    output: &[f32],
    dims: &[usize],
    batch_index: usize,
    layout: OutputLayout,
    nc: usize,
    conf_threshold: f32,
) -> Result<Vec<Candidate>, String> {
    let (out, d1, d2) = batch_slice(output, dims, batch_index)?;
    match layout {
        OutputLayout::YoloV8 => {
            let nc = classes(nc, d1, 4, dims)?;
            Ok(decode_v8(out, d2, nc, conf_threshold))
        }
        OutputLayout::YoloV5 => {
            let nc = classes(nc, d2, 5, dims)?;
            Ok(decode_v5(out, d1, d2, nc, conf_threshold))
        }
        OutputLayout::EndToEnd => {
            if d2 < 6 {
                return Err(format!("end-to-end output {dims:?} needs rows of at least 6 values"));
            }
            Ok(decode_end_to_end(out, d1, d2, conf_threshold))
        }
    }
}

/// Number of class scores, checked against the `width` values available after `skip`.
fn classes(nc: usize, width: usize, skip: usize, dims: &[usize]) -> Result<usize, String> {
    let available = width.saturating_sub(skip);
    let nc = if nc == 0 { available } else { nc };
    if nc == 0 || nc > available {
        return Err(format!(
            "output {dims:?} has room for {available} class scores, {nc} needed"
        ));
    }
    Ok(nc)
}

/// `cx cy w h` → `x1 y1 x2 y2` as Ultralytics `xywh2xyxy` (f32, half sizes).
fn xyxy(cx: f32, cy: f32, w: f32, h: f32) -> [f32; 4] {
    let (hw, hh) = (w / 2.0, h / 2.0);
    [cx - hw, cy - hh, cx + hw, cy + hh]
}

/// Channels-first: `out` is `(4 + nc + extra) x n`.
fn decode_v8(out: &[f32], n: usize, nc: usize, conf: f32) -> Vec<Candidate> {
    let row = |c: usize| &out[c * n..(c + 1) * n];
    // Scan class rows in memory order (the output is channel-major) keeping a running argmax.
    let mut best = row(4).to_vec();
    let mut class = vec![0u32; n];
    for c in 1..nc {
        for ((b, k), &s) in best.iter_mut().zip(&mut class).zip(row(4 + c)) {
            if s > *b {
                *b = s;
                *k = c as u32;
            }
        }
    }
    let (cx, cy, w, h) = (row(0), row(1), row(2), row(3));
    best.iter()
        .enumerate()
        .filter(|(_, &s)| s > conf)
        .map(|(i, &score)| {
            let [x1, y1, x2, y2] = xyxy(cx[i], cy[i], w[i], h[i]);
            Candidate {
                x1,
                y1,
                x2,
                y2,
                score,
                class_id: class[i],
                anchor: i as u32,
            }
        })
        .collect()
}

/// Rows of `width` values: `cx cy w h obj cls...`.
fn decode_v5(out: &[f32], n: usize, width: usize, nc: usize, conf: f32) -> Vec<Candidate> {
    let mut found = Vec::new();
    for (i, r) in out.chunks_exact(width).take(n).enumerate() {
        let obj = r[4];
        // YOLOv5 first drops rows with obj <= conf, then scores are cls * obj.
        if obj <= conf {
            continue;
        }
        let (mut score, mut class) = (r[5] * obj, 0u32);
        for (c, &s) in r[6..5 + nc].iter().enumerate() {
            let s = s * obj;
            if s > score {
                score = s;
                class = c as u32 + 1;
            }
        }
        if score > conf {
            let [x1, y1, x2, y2] = xyxy(r[0], r[1], r[2], r[3]);
            found.push(Candidate {
                x1,
                y1,
                x2,
                y2,
                score,
                class_id: class,
                anchor: i as u32,
            });
        }
    }
    found
}

/// Rows of `width` values: `x1 y1 x2 y2 score class_id ...`.
fn decode_end_to_end(out: &[f32], n: usize, width: usize, conf: f32) -> Vec<Candidate> {
    out.chunks_exact(width)
        .take(n)
        .enumerate()
        .filter(|(_, r)| r[4] > conf)
        .map(|(i, r)| Candidate {
            x1: r[0],
            y1: r[1],
            x2: r[2],
            y2: r[3],
            score: r[4],
            // Class ids are small whole numbers stored as floats; `as` saturates NaN / negatives to 0.
            class_id: r[5].round() as u32,
            anchor: i as u32,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infers_layouts() {
        use OutputLayout::*;
        let cases: &[(&[usize], usize, OutputLayout)] = &[
            (&[1, 7, 2100], 3, YoloV8),
            (&[1, 7, 2100], 0, YoloV8),
            (&[1, 84, 8400], 80, YoloV8),
            (&[1, 116, 8400], 80, YoloV8), // segmentation: 32 mask coefficients
            (&[1, 56, 8400], 1, YoloV8),   // pose: 17 x 3 keypoints
            (&[7, 2100], 3, YoloV8),
            (&[1, 25200, 85], 80, YoloV5),
            (&[1, 25200, 117], 80, YoloV5), // YOLOv5-seg
            (&[1, 25200, 6], 1, YoloV5),
            (&[1, 25200, 85], 0, YoloV5),
            (&[1, 300, 6], 80, EndToEnd),
            (&[1, 300, 38], 80, EndToEnd), // end-to-end segmentation
            (&[1, 300, 6], 1, EndToEnd),
            (&[1, 300, 57], 1, EndToEnd), // end-to-end pose
            (&[1, 300, 6], 0, EndToEnd),
        ];
        for &(dims, nc, want) in cases {
            assert_eq!(infer_layout(dims, nc), Ok(want), "{dims:?} nc={nc}");
        }
        for (dims, nc) in [
            (&[1usize, 7, 2100][..], 80),
            (&[1, 300, 4], 0),
            (&[1, 2, 3, 4], 0),
            (&[5, 5, 5], 0),
        ] {
            assert!(infer_layout(dims, nc).is_err(), "{dims:?}");
        }
    }

    /// Builds a `[B, 4 + nc + extra, N]` output from per-anchor rows.
    fn channels_first(anchors: &[Vec<f32>]) -> Vec<f32> {
        let c = anchors[0].len();
        (0..c).flat_map(|k| anchors.iter().map(move |a| a[k])).collect()
    }

    #[test]
    fn decodes_yolov8_with_extra_channels() {
        // 3 anchors, 2 classes, 2 extra (mask) channels that must not be read as classes.
        let anchors = vec![
            vec![10.0, 20.0, 4.0, 6.0, 0.1, 0.9, 0.99, 0.99],
            vec![50.0, 50.0, 10.0, 10.0, 0.25, 0.2, 0.99, 0.99], // exactly conf: dropped
            vec![30.0, 40.0, 2.0, 2.0, 0.6, 0.6, 0.99, 0.99],    // tie: first class wins
        ];
        let out = channels_first(&anchors);
        let got = decode(&out, &[1, 8, 3], 0, OutputLayout::YoloV8, 2, 0.25).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0],
            Candidate {
                x1: 8.0,
                y1: 17.0,
                x2: 12.0,
                y2: 23.0,
                score: 0.9,
                class_id: 1,
                anchor: 0
            }
        );
        assert_eq!((got[1].class_id, got[1].anchor, got[1].score), (0, 2, 0.6));
        // Second batch element.
        let mut two = vec![0f32; out.len()];
        two.extend_from_slice(&out);
        let got2 = decode(&two, &[2, 8, 3], 1, OutputLayout::YoloV8, 2, 0.25).unwrap();
        assert_eq!(got, got2);
        assert!(decode(&two, &[2, 8, 3], 2, OutputLayout::YoloV8, 2, 0.25).is_err());
        assert!(decode(&out, &[1, 8, 3], 0, OutputLayout::YoloV8, 5, 0.25).is_err());
        assert!(decode(&out[1..], &[1, 8, 3], 0, OutputLayout::YoloV8, 2, 0.25).is_err());
    }

    #[test]
    fn decodes_yolov5() {
        let rows = [
            [100.0, 100.0, 20.0, 40.0, 0.9, 0.1, 0.5, 0.0], // 0.45 for class 1
            [10.0, 10.0, 2.0, 2.0, 0.2, 1.0, 1.0, 0.0],     // objectness below conf
            [10.0, 10.0, 2.0, 2.0, 0.5, 0.4, 0.2, 0.7],     // best of 2 classes: 0.4 * 0.5 < conf
        ];
        let out: Vec<f32> = rows.iter().flatten().copied().collect();
        let got = decode(&out, &[1, 3, 8], 0, OutputLayout::YoloV5, 2, 0.25).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].class_id, 1);
        assert_eq!(got[0].score, 0.5f32 * 0.9);
        assert_eq!([got[0].x1, got[0].y1, got[0].x2, got[0].y2], [90.0, 80.0, 110.0, 120.0]);
        // With 3 classes the third row's class 2 (0.7 * 0.5 = 0.35) passes.
        let got = decode(&out, &[1, 3, 8], 0, OutputLayout::YoloV5, 3, 0.25).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!((got[1].class_id, got[1].anchor), (2, 2));
    }

    #[test]
    fn decodes_end_to_end() {
        let rows = [
            [1.0, 2.0, 3.0, 4.0, 0.9, 7.0, 0.5],
            [5.0, 6.0, 7.0, 8.0, 0.25, 1.0, 0.5],
            [9.0, 9.0, 19.0, 19.0, 0.3, 2.0, 0.5],
        ];
        let out: Vec<f32> = rows.iter().flatten().copied().collect();
        let got = decode(&out, &[1, 3, 7], 0, OutputLayout::EndToEnd, 0, 0.25).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0],
            Candidate {
                x1: 1.0,
                y1: 2.0,
                x2: 3.0,
                y2: 4.0,
                score: 0.9,
                class_id: 7,
                anchor: 0
            }
        );
        assert_eq!((got[1].class_id, got[1].anchor), (2, 2));
        assert!(decode(&out[..15], &[1, 3, 5], 0, OutputLayout::EndToEnd, 0, 0.25).is_err());
    }
}
