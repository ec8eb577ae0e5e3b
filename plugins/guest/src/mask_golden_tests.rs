//! Instance masks from the raw outputs of `shapes-seg.onnx` committed under tests/fixtures,
//! against the Ultralytics predictions recorded in
//! `tests/fixtures/reference/dev/shapes-seg.square.json`.

use crate::npy;
use crate::{
    decode, infer_layout, letterbox_geometry, mask_channels, mask_coefficients, nms, rle_area, rle_decode,
    rle_from_string, rle_to_string, BinaryMask, MaskDecoder, MaskMode, MaskToImage, OutputLayout, Protos, Resize,
};

/// Just enough JSON for the reference files: numbers, strings, arrays, objects.
#[derive(Debug, Clone)]
enum Json {
    Null,
    Bool,
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    fn parse(text: &str) -> Json {
        let bytes = text.as_bytes();
        Self::value(bytes, &mut 0)
    }

    fn ws(b: &[u8], at: &mut usize) {
        while *at < b.len() && b[*at].is_ascii_whitespace() {
            *at += 1;
        }
    }

    fn value(b: &[u8], at: &mut usize) -> Json {
        Self::ws(b, at);
        match b[*at] {
            b'{' => {
                *at += 1;
                let mut fields = Vec::new();
                loop {
                    Self::ws(b, at);
                    if b[*at] == b'}' {
                        *at += 1;
                        return Json::Obj(fields);
                    }
                    let Json::Str(key) = Self::value(b, at) else {
                        panic!("object key")
                    };
                    Self::ws(b, at);
                    assert_eq!(b[*at], b':');
                    *at += 1;
                    fields.push((key, Self::value(b, at)));
                    Self::ws(b, at);
                    if b[*at] == b',' {
                        *at += 1;
                    }
                }
            }
            b'[' => {
                *at += 1;
                let mut items = Vec::new();
                loop {
                    Self::ws(b, at);
                    if b[*at] == b']' {
                        *at += 1;
                        return Json::Arr(items);
                    }
                    items.push(Self::value(b, at));
                    Self::ws(b, at);
                    if b[*at] == b',' {
                        *at += 1;
                    }
                }
            }
            b'"' => {
                *at += 1;
                let mut s = String::new();
                while b[*at] != b'"' {
                    if b[*at] == b'\\' {
                        *at += 1;
                        s.push(match b[*at] {
                            b'n' => '\n',
                            b't' => '\t',
                            c => char::from(c),
                        });
                    } else {
                        s.push(char::from(b[*at]));
                    }
                    *at += 1;
                }
                *at += 1;
                Json::Str(s)
            }
            b't' => {
                *at += 4;
                Json::Bool
            }
            b'f' => {
                *at += 5;
                Json::Bool
            }
            b'n' => {
                *at += 4;
                Json::Null
            }
            _ => {
                let start = *at;
                while *at < b.len() && matches!(b[*at], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') {
                    *at += 1;
                }
                Json::Num(std::str::from_utf8(&b[start..*at]).unwrap().parse().unwrap())
            }
        }
    }

    fn get(&self, key: &str) -> &Json {
        match self {
            Json::Obj(fields) => {
                &fields
                    .iter()
                    .find(|(k, _)| k == key)
                    .unwrap_or_else(|| panic!("no {key}"))
                    .1
            }
            _ => panic!("not an object"),
        }
    }

    fn arr(&self) -> &[Json] {
        match self {
            Json::Arr(a) => a,
            _ => panic!("not an array"),
        }
    }

    fn num(&self) -> f64 {
        match self {
            Json::Num(n) => *n,
            _ => panic!("not a number"),
        }
    }

    fn str(&self) -> &str {
        match self {
            Json::Str(s) => s,
            _ => panic!("not a string"),
        }
    }
}

/// One detection of the reference.
struct Reference {
    class_id: u32,
    confidence: f32,
    xyxy: [f32; 4],
    polygon: Vec<[f32; 2]>,
    area_px: usize,
}

fn fixture(rel: &str) -> String {
    format!("{}/../../tests/fixtures/{rel}", env!("CARGO_MANIFEST_DIR"))
}

fn reference(file: &str) -> Vec<Reference> {
    let text = std::fs::read_to_string(fixture("reference/dev/shapes-seg.square.json")).unwrap();
    let json = Json::parse(&text);
    let image = json
        .get("images")
        .arr()
        .iter()
        .find(|i| i.get("file").str() == file)
        .unwrap();
    image
        .get("detections")
        .arr()
        .iter()
        .map(|d| {
            let xyxy = d.get("xyxy").arr();
            Reference {
                class_id: d.get("class_id").num() as u32,
                confidence: d.get("confidence").num() as f32,
                xyxy: [0, 1, 2, 3].map(|k| xyxy[k].num() as f32),
                polygon: d
                    .get("mask_polygon")
                    .arr()
                    .iter()
                    .map(|p| [p.arr()[0].num() as f32, p.arr()[1].num() as f32])
                    .collect(),
                area_px: d.get("mask_area_px").num() as usize,
            }
        })
        .collect()
}

/// Pixels `(x, y)` of a `w x h` image whose centre — at whole coordinates, the contour
/// convention — lies inside the polygon or on its outline (even-odd rule).
fn rasterise(poly: &[[f32; 2]], w: usize, h: usize) -> Vec<u8> {
    let mut out = vec![0u8; w * h];
    if poly.is_empty() {
        return out;
    }
    let edges: Vec<([f64; 2], [f64; 2])> = (0..poly.len())
        .map(|i| {
            let a = poly[i];
            let b = poly[(i + 1) % poly.len()];
            ([f64::from(a[0]), f64::from(a[1])], [f64::from(b[0]), f64::from(b[1])])
        })
        .collect();
    let (mut x0, mut y0, mut x1, mut y1) = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
    for p in poly {
        (x0, y0, x1, y1) = (x0.min(p[0]), y0.min(p[1]), x1.max(p[0]), y1.max(p[1]));
    }
    let clampi = |v: f32, n: usize| (v.max(0.0) as usize).min(n.saturating_sub(1));
    for y in clampi(y0.floor(), h)..=clampi(y1.ceil(), h) {
        for x in clampi(x0.floor(), w)..=clampi(x1.ceil(), w) {
            let (px, py) = (x as f64, y as f64);
            let mut inside = false;
            let mut on_edge = false;
            for &(a, b) in &edges {
                // On the segment?
                let cross = (b[0] - a[0]) * (py - a[1]) - (b[1] - a[1]) * (px - a[0]);
                if cross.abs() < 1e-9
                    && px >= a[0].min(b[0]) - 1e-9
                    && px <= a[0].max(b[0]) + 1e-9
                    && py >= a[1].min(b[1]) - 1e-9
                    && py <= a[1].max(b[1]) + 1e-9
                {
                    on_edge = true;
                    break;
                }
                if (a[1] > py) != (b[1] > py) {
                    let xc = a[0] + (py - a[1]) * (b[0] - a[0]) / (b[1] - a[1]);
                    if px < xc {
                        inside = !inside;
                    }
                }
            }
            out[y * w + x] = u8::from(inside || on_edge);
        }
    }
    out
}

fn iou(a: &[u8], b: &[u8]) -> f64 {
    let inter = a.iter().zip(b).filter(|(x, y)| **x != 0 && **y != 0).count();
    let union = a.iter().zip(b).filter(|(x, y)| **x != 0 || **y != 0).count();
    if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    }
}

struct Decoded {
    class_id: u32,
    score: f32,
    xyxy: [f32; 4],
    polygon: Vec<[f32; 2]>,
    /// The mask at the original size (what the RLE encodes).
    original: BinaryMask,
    counts: Vec<u32>,
    mask: BinaryMask,
}

/// Runs the Ultralytics settings of the fixtures (conf 0.25, IoU 0.45, class-aware,
/// max_det 300) on the raw outputs of 01_multi_320x320.jpg.
fn decode_01(mode: MaskMode) -> Vec<Decoded> {
    let out0 = npy::read_f32(&fixture(
        "reference/dev/tensors/01_multi_320x320.shapes-seg.output0.npy",
    ));
    let out1 = npy::read_f32(&fixture(
        "reference/dev/tensors/01_multi_320x320.shapes-seg.output1.npy",
    ));
    let layout = infer_layout(&out0.shape, 3).unwrap();
    assert_eq!(layout, OutputLayout::YoloV8);
    let protos = Protos::from_output(&out1.data, &out1.shape, 0).unwrap();
    let channels = mask_channels(&out0.shape, layout, 3, protos.channels).unwrap();
    assert_eq!((channels.classes, channels.first, channels.count), (3, 7, 32));
    let cands = decode(&out0.data, &out0.shape, 0, layout, 3, 0.25).unwrap();
    let kept = nms(cands, 0.45, false, 300);
    let decoder = MaskDecoder::new(protos, 320, 320, mode).unwrap();
    let resize = Resize::Letterbox { pad: 114 };
    let t = letterbox_geometry(320, 320, 320, 320, None)
        .unwrap()
        .transform(320, 320);
    let (mw, mh) = decoder.resolution();
    let to_image = MaskToImage::new(resize, 320, 320, &t, mw, mh).unwrap();
    kept.iter()
        .filter_map(|c| {
            let coefs = mask_coefficients(&out0.data, &out0.shape, 0, layout, channels, c.anchor as usize);
            let mask = decoder.decode(&coefs, [c.x1, c.y1, c.x2, c.y2])?;
            let original = to_image.resample(&mask).unwrap();
            Some(Decoded {
                class_id: c.class_id,
                score: c.score,
                xyxy: t.to_original_box(c.x1, c.y1, c.x2, c.y2),
                polygon: to_image.polygon(&mask),
                counts: to_image.rle_counts(&mask),
                original,
                mask,
            })
        })
        .collect()
}

#[test]
fn shapes_seg_01_multi_accurate() {
    let want = reference("01_multi_320x320.jpg");
    let got = decode_01(MaskMode::Accurate);
    assert_eq!(got.len(), want.len(), "detection count");
    let mut exact = 0;
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g.class_id, w.class_id, "[{i}] class");
        assert!(
            (g.score - w.confidence).abs() < 1e-4,
            "[{i}] conf {} vs {}",
            g.score,
            w.confidence
        );
        for k in 0..4 {
            assert!(
                (g.xyxy[k] - w.xyxy[k]).abs() < 1e-2,
                "[{i}] box {:?} vs {:?}",
                g.xyxy,
                w.xyxy
            );
        }
        let mine = rasterise(&g.polygon, 320, 320);
        let theirs = rasterise(&w.polygon, 320, 320);
        let polygon_iou = iou(&mine, &theirs);
        // The polygon is faithful to the mask it outlines.
        let mask_iou = iou(&g.mask.to_full(), &theirs);
        let area = rle_area(&g.counts) as usize;
        eprintln!(
            "[{i}] polygon IoU {polygon_iou:.4}, mask vs reference polygon IoU {mask_iou:.4}, area {area} vs {}, {} vs {} vertices",
            w.area_px,
            g.polygon.len(),
            w.polygon.len()
        );
        assert!(polygon_iou >= 0.95, "[{i}] polygon IoU {polygon_iou}");
        assert!(mask_iou >= 0.95, "[{i}] mask IoU {mask_iou}");
        assert!(
            (area as f64 - w.area_px as f64).abs() <= 0.01 * w.area_px as f64,
            "[{i}] area {area} vs {}",
            w.area_px
        );
        exact += usize::from(g.polygon == w.polygon && area == w.area_px);
        // RLE round trip through the compressed string.
        let s = rle_to_string(&g.counts);
        let counts = rle_from_string(&s).unwrap();
        assert_eq!(counts, g.counts);
        assert_eq!(
            rle_decode(&counts, 320, 320).unwrap(),
            g.original.to_full(),
            "[{i}] RLE round trip"
        );
    }
    eprintln!(
        "{exact} of {} masks identical to the reference (polygon and area)",
        want.len()
    );
}

#[test]
fn fast_and_tradeoff_are_close_to_accurate() {
    let accurate = decode_01(MaskMode::Accurate);
    for mode in [MaskMode::Fast, MaskMode::Tradeoff(0.5)] {
        let other = decode_01(mode);
        assert_eq!(other.len(), accurate.len(), "{mode:?}: detection count");
        let res = other[0].mask.width;
        assert!(res < 320, "{mode:?}: resolution {res}");
        for (i, (a, o)) in accurate.iter().zip(&other).enumerate() {
            assert_eq!((a.class_id, a.score), (o.class_id, o.score));
            let mask_iou = iou(&a.original.to_full(), &o.original.to_full());
            let polygon_iou = iou(&rasterise(&a.polygon, 320, 320), &rasterise(&o.polygon, 320, 320));
            eprintln!("{mode:?} [{i}] mask IoU {mask_iou:.4}, polygon IoU {polygon_iou:.4}");
            assert!(mask_iou >= 0.8, "{mode:?} [{i}] mask IoU {mask_iou}");
            assert!(polygon_iou >= 0.8, "{mode:?} [{i}] polygon IoU {polygon_iou}");
        }
    }
    assert_eq!(decode_01(MaskMode::Fast)[0].mask.width, 80);
    assert_eq!(decode_01(MaskMode::Tradeoff(0.5))[0].mask.width, 200);
}

/// Time of the mask stage (masks, polygons and RLEs) on 01_multi_320x320, per mode; run
/// with `cargo test --release -p inference-guest -- --ignored --nocapture mask_timing`.
#[test]
#[ignore]
fn mask_timing() {
    let out0 = npy::read_f32(&fixture(
        "reference/dev/tensors/01_multi_320x320.shapes-seg.output0.npy",
    ));
    let out1 = npy::read_f32(&fixture(
        "reference/dev/tensors/01_multi_320x320.shapes-seg.output1.npy",
    ));
    let layout = infer_layout(&out0.shape, 3).unwrap();
    let protos = Protos::from_output(&out1.data, &out1.shape, 0).unwrap();
    let channels = mask_channels(&out0.shape, layout, 3, protos.channels).unwrap();
    // The reference settings (8 detections) and a crowded case (conf 0.001: up to 300), for
    // the 320x320 original and as if the tensor came from a 1280x1280 one (RLEs at 4x).
    for (conf, side, label) in [
        (0.25f32, 320, "8 detections"),
        (0.001, 320, "max 300 detections"),
        (0.25f32, 1280, "8 detections, 1280x1280 original"),
    ] {
        let t = letterbox_geometry(side, side, 320, 320, None)
            .unwrap()
            .transform(side, side);
        let kept = nms(
            decode(&out0.data, &out0.shape, 0, layout, 3, conf).unwrap(),
            0.45,
            false,
            300,
        );
        let coefs: Vec<Vec<f32>> = kept
            .iter()
            .map(|c| mask_coefficients(&out0.data, &out0.shape, 0, layout, channels, c.anchor as usize))
            .collect();
        for mode in [MaskMode::Accurate, MaskMode::Tradeoff(0.5), MaskMode::Fast] {
            let runs = 200;
            let (mut n, mut t_mask, mut t_poly, mut t_rle) = (0, 0.0, 0.0, 0.0);
            for _ in 0..runs {
                let start = std::time::Instant::now();
                let decoder = MaskDecoder::new(protos, 320, 320, mode).unwrap();
                let (mw, mh) = decoder.resolution();
                let to_image = MaskToImage::new(Resize::Letterbox { pad: 114 }, 320, 320, &t, mw, mh).unwrap();
                let masks: Vec<BinaryMask> = kept
                    .iter()
                    .zip(&coefs)
                    .filter_map(|(c, k)| decoder.decode(k, [c.x1, c.y1, c.x2, c.y2]))
                    .collect();
                let t1 = std::time::Instant::now();
                for m in &masks {
                    std::hint::black_box(to_image.polygon(m));
                }
                let t2 = std::time::Instant::now();
                for m in &masks {
                    std::hint::black_box(rle_to_string(&to_image.rle_counts(m)));
                }
                let t3 = std::time::Instant::now();
                n = masks.len();
                t_mask += (t1 - start).as_secs_f64();
                t_poly += (t2 - t1).as_secs_f64();
                t_rle += (t3 - t2).as_secs_f64();
            }
            let us = |t: f64| t / f64::from(runs) * 1e6;
            eprintln!(
                "{label}: {mode:?}: {n} masks in {:.1} us, + polygons {:.1} us, + RLEs {:.1} us per image",
                us(t_mask),
                us(t_poly),
                us(t_rle)
            );
        }
    }
}
