//! Non-maximum suppression as Ultralytics' `non_max_suppression` runs it
//! (`torchvision.ops.nms` on class-offset boxes).

use std::collections::HashMap;

use crate::detect::Candidate;

/// Ultralytics keeps at most this many highest-scoring candidates before NMS.
pub const MAX_NMS: usize = 30_000;

/// Ultralytics offsets boxes by `class * MAX_WH` so one NMS call never mixes classes.
/// The IoU is computed on the offset coordinates, like torchvision does, so that f32
/// rounding (and thus decisions right at the threshold) matches the reference.
const MAX_WH: f32 = 7680.0;

/// Intersection over union of two `x1 y1 x2 y2` boxes, with torchvision's f32 arithmetic
/// (0/0 for empty boxes gives NaN, which never exceeds a threshold).
pub fn iou(a: [f32; 4], b: [f32; 4]) -> f32 {
    iou_with_areas(a, area(a), b, area(b))
}

fn area(b: [f32; 4]) -> f32 {
    (b[2] - b[0]) * (b[3] - b[1])
}

fn iou_with_areas(a: [f32; 4], area_a: f32, b: [f32; 4], area_b: f32) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    inter / (area_a + area_b - inter)
}

/// The detections to keep from one image's candidates: end-to-end heads (YOLOv10/26) already
/// ran their own NMS, so they are only ranked and cut to `max_det`; the others go through
/// [`nms`].
pub fn keep(
    mut cands: Vec<Candidate>,
    layout: crate::OutputLayout,
    iou_threshold: f32,
    agnostic: bool,
    max_det: usize,
) -> Vec<Candidate> {
    if layout == crate::OutputLayout::EndToEnd {
        cands.sort_by(|a, b| b.score.total_cmp(&a.score));
        cands.truncate(max_det);
        cands
    } else {
        nms(cands, iou_threshold, agnostic, max_det)
    }
}

/// Greedy NMS, Ultralytics / torchvision style: candidates are sorted by score (descending,
/// stable, so ties keep their anchor order) and cut to the best [`MAX_NMS`]; a box is kept
/// unless its IoU with an already kept box — of the same class unless `agnostic` — is
/// greater than `iou_threshold`. Stops after `max_det` boxes. Returns the kept
/// candidates, best first.
pub fn nms(mut cands: Vec<Candidate>, iou_threshold: f32, agnostic: bool, max_det: usize) -> Vec<Candidate> {
    cands.sort_by(|a, b| b.score.total_cmp(&a.score));
    cands.truncate(MAX_NMS);
    let mut kept = Vec::new();
    // Offset boxes and areas of the kept candidates, per class (one group when agnostic):
    // boxes of different classes are MAX_WH apart and never overlap, so only a box's own
    // group can suppress it, and the groups stay short.
    let mut groups: HashMap<u32, Vec<([f32; 4], f32)>> = HashMap::new();
    for c in cands {
        if kept.len() >= max_det {
            break;
        }
        let (key, off) = if agnostic {
            (0, 0.0)
        } else {
            (c.class_id, c.class_id as f32 * MAX_WH)
        };
        let b = [c.x1 + off, c.y1 + off, c.x2 + off, c.y2 + off];
        let a = area(b);
        let group = groups.entry(key).or_default();
        if !group
            .iter()
            .any(|&(kb, ka)| iou_with_areas(kb, ka, b, a) > iou_threshold)
        {
            group.push((b, a));
            kept.push(c);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_ranks_end_to_end_output_without_nms() {
        let overlapping = vec![cand(0.0, 0.0, 10.0, 10.0, 0.5, 0), cand(0.0, 0.0, 10.0, 10.0, 0.9, 0)];
        let e2e = keep(overlapping.clone(), crate::OutputLayout::EndToEnd, 0.5, false, 5);
        assert_eq!(e2e.iter().map(|c| c.score).collect::<Vec<_>>(), vec![0.9, 0.5]);
        assert_eq!(
            keep(overlapping.clone(), crate::OutputLayout::EndToEnd, 0.5, false, 1).len(),
            1
        );
        let v8 = keep(overlapping, crate::OutputLayout::YoloV8, 0.5, false, 5);
        assert_eq!(v8.iter().map(|c| c.score).collect::<Vec<_>>(), vec![0.9]);
    }

    fn cand(x1: f32, y1: f32, x2: f32, y2: f32, score: f32, class_id: u32) -> Candidate {
        Candidate {
            x1,
            y1,
            x2,
            y2,
            score,
            class_id,
            anchor: 0,
        }
    }

    #[test]
    fn iou_values() {
        assert_eq!(iou([0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]), 1.0);
        assert_eq!(iou([0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 15.0, 10.0]), 50.0 / 150.0);
        assert_eq!(iou([0.0, 0.0, 1.0, 1.0], [2.0, 2.0, 3.0, 3.0]), 0.0);
        assert!(iou([1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]).is_nan());
    }

    #[test]
    fn class_aware_and_agnostic() {
        let c = vec![
            cand(0.0, 0.0, 10.0, 10.0, 0.8, 0),
            cand(1.0, 0.0, 11.0, 10.0, 0.9, 1), // overlaps the first, other class
            cand(0.0, 1.0, 10.0, 11.0, 0.7, 0), // overlaps the first, same class
            cand(50.0, 50.0, 60.0, 60.0, 0.6, 0),
        ];
        let aware = nms(c.clone(), 0.45, false, 300);
        let scores: Vec<f32> = aware.iter().map(|c| c.score).collect();
        assert_eq!(scores, [0.9, 0.8, 0.6]);
        let agnostic = nms(c, 0.45, true, 300);
        let scores: Vec<f32> = agnostic.iter().map(|c| c.score).collect();
        assert_eq!(scores, [0.9, 0.6]);
    }

    #[test]
    fn suppressed_boxes_do_not_suppress() {
        // B overlaps A (IoU 0.43, suppressed); C overlaps B a lot (0.67) but A little (0.25),
        // and only kept boxes suppress, so C survives.
        let c = vec![
            cand(0.0, 0.0, 10.0, 10.0, 0.9, 0),
            cand(4.0, 0.0, 14.0, 10.0, 0.8, 0),
            cand(6.0, 0.0, 16.0, 10.0, 0.7, 0),
        ];
        assert_eq!(nms(c, 0.4, false, 300).len(), 2);
    }

    #[test]
    fn iou_threshold_is_strict() {
        // IoU exactly 0.5: kept at threshold 0.5 (strict >), suppressed just below.
        let a = cand(0.0, 0.0, 10.0, 10.0, 0.9, 0);
        let b = cand(0.0, 0.0, 10.0, 10.0, 0.8, 0);
        let half = cand(0.0, 0.0, 10.0, 5.0, 0.8, 0); // IoU 50/100 = 0.5
        assert_eq!(iou([0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0]), 0.5);
        assert_eq!(nms(vec![a, half], 0.5, false, 300).len(), 2);
        assert_eq!(nms(vec![a, half], 0.4999, false, 300).len(), 1);
        assert_eq!(nms(vec![a, b], 1.0, false, 300).len(), 2);
    }

    #[test]
    fn max_det_and_ordering() {
        let c: Vec<Candidate> = (0..10)
            .map(|i| Candidate {
                anchor: i,
                ..cand(i as f32 * 20.0, 0.0, i as f32 * 20.0 + 10.0, 10.0, 0.1 * i as f32, 0)
            })
            .collect();
        let kept = nms(c.clone(), 0.45, false, 3);
        let anchors: Vec<u32> = kept.iter().map(|c| c.anchor).collect();
        assert_eq!(anchors, [9, 8, 7]);
        assert_eq!(nms(c, 0.45, false, 0).len(), 0);
        // Equal scores keep their input (anchor) order.
        let mut tie = vec![cand(0.0, 0.0, 1.0, 1.0, 0.5, 0); 3];
        for (i, t) in tie.iter_mut().enumerate() {
            t.x1 += 10.0 * i as f32;
            t.x2 += 10.0 * i as f32;
            t.anchor = i as u32;
        }
        let anchors: Vec<u32> = nms(tie, 0.45, false, 300).iter().map(|c| c.anchor).collect();
        assert_eq!(anchors, [0, 1, 2]);
    }

    #[test]
    fn keeps_at_most_max_nms_candidates() {
        // One class each: all survive NMS, but only the best MAX_NMS are considered.
        let c: Vec<Candidate> = (0..MAX_NMS + 5)
            .map(|i| cand(0.0, 0.0, 1.0, 1.0, 1.0 - i as f32 * 1e-6, i as u32))
            .collect();
        let kept = nms(c, 0.45, false, usize::MAX);
        assert_eq!(kept.len(), MAX_NMS);
        assert_eq!(kept.last().unwrap().class_id, MAX_NMS as u32 - 1);
    }
}
