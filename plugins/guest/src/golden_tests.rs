//! decode + NMS + transform on raw model outputs committed under tests/fixtures,
//! against the Ultralytics predictions recorded next to them.

use crate::npy;
use crate::{decode, infer_layout, letterbox_geometry, nms, OutputLayout, Resize, Transform};

/// One expected detection: class id, confidence, xyxy in original pixels.
type Expected = (u32, f32, [f32; 4]);

fn output(rel: &str) -> npy::Array<f32> {
    npy::read_f32(&format!(
        "{}/../../tests/fixtures/reference/{rel}",
        env!("CARGO_MANIFEST_DIR")
    ))
}

/// Letterbox transform as `preprocess_into` builds it, for an image of `w x h`.
fn letterbox(w: u32, h: u32, resize: Resize, in_w: u32, in_h: u32) -> Transform {
    let g = match resize {
        Resize::LetterboxRect {
            target_w,
            target_h,
            stride,
            ..
        } => letterbox_geometry(w, h, target_w, target_h, Some(stride)).unwrap(),
        _ => letterbox_geometry(w, h, in_w, in_h, None).unwrap(),
    };
    assert_eq!(g.tensor_size(), (in_w, in_h));
    g.transform(w, h)
}

/// Runs the Ultralytics settings of the fixtures (conf 0.25, IoU 0.45, class-aware,
/// max_det 300) and compares with the expected detections, in order.
fn check(rel: &str, nc: usize, t: Transform, expected: &[Expected]) {
    let out = output(rel);
    let layout = infer_layout(&out.shape, nc).unwrap();
    assert_eq!(layout, OutputLayout::YoloV8, "{rel}");
    let cands = decode(&out.data, &out.shape, 0, layout, nc, 0.25).unwrap();
    let kept = nms(cands, 0.45, false, 300);
    assert_eq!(kept.len(), expected.len(), "{rel}: detection count");
    for (i, (got, &(class, conf, xyxy))) in kept.iter().zip(expected).enumerate() {
        let b = t.to_original_box(got.x1, got.y1, got.x2, got.y2);
        assert_eq!(got.class_id, class, "{rel}[{i}] class");
        assert!(
            (got.score - conf).abs() < 1e-4,
            "{rel}[{i}] conf {} vs {conf}",
            got.score
        );
        for k in 0..4 {
            assert!((b[k] - xyxy[k]).abs() < 1e-2, "{rel}[{i}] box {b:?} vs {xyxy:?}");
        }
    }
}

#[test]
fn shapes_detect_01_multi() {
    // tests/fixtures/reference/dev/shapes-detect.square.json, "01_multi_320x320.jpg".
    let expected: &[Expected] = &[
        (0, 0.959801, [246.289, 188.04, 302.763, 243.279]),
        (1, 0.959151, [91.159, 139.879, 157.419, 207.193]),
        (1, 0.924257, [233.558, 69.026, 266.147, 101.492]),
        (2, 0.858893, [76.225, 278.671, 109.65, 298.797]),
        (0, 0.704709, [107.319, 39.769, 132.512, 64.736]),
        (0, 0.678723, [109.091, 282.956, 136.152, 309.485]),
        (1, 0.309791, [178.797, 102.331, 237.563, 168.474]),
        (2, 0.250879, [174.497, 101.2, 236.744, 163.047]),
    ];
    let t = letterbox(320, 320, Resize::Letterbox { pad: 114 }, 320, 320);
    check("dev/tensors/01_multi_320x320.shapes-detect.output0.npy", 3, t, expected);
}

#[test]
fn nudenet_astronaut() {
    // tests/fixtures/reference/photos/nudenet-320n.json (and .square.json), "astronaut.png",
    // 512x512 letterboxed to 320x320 (scale 0.625, no padding).
    let expected: &[Expected] = &[(1, 0.81055, [173.244, 82.824, 274.025, 180.161])];
    let t = letterbox(512, 512, Resize::Letterbox { pad: 114 }, 320, 320);
    assert_eq!((t.scale_x, t.pad_x, t.pad_y), (0.625, 0.0, 0.0));
    check("photos/tensors/astronaut.nudenet-320n.output0.npy", 18, t, expected);
}

#[test]
fn nudenet_zidane_rect() {
    // tests/fixtures/reference/photos/nudenet-320n.json, "zidane.jpg": rect input 192x320,
    // letterbox {"scale": 0.25, "pad_top": 6, "pad_bottom": 6}, no detections.
    let rect = Resize::LetterboxRect {
        pad: 114,
        target_w: 320,
        target_h: 320,
        stride: 32,
    };
    let t = letterbox(1280, 720, rect, 320, 192);
    assert_eq!((t.scale_x, t.pad_x, t.pad_y), (0.25, 0.0, 6.0));
    check("photos/tensors/zidane.nudenet-320n.output0.npy", 18, t, &[]);
    // The empty result is down to the threshold, not to a decoding failure.
    let out = output("photos/tensors/zidane.nudenet-320n.output0.npy");
    let low = decode(&out.data, &out.shape, 0, OutputLayout::YoloV8, 18, 0.1).unwrap();
    assert!(!low.is_empty());
}
