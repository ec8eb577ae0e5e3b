//! `roboflow_core/detections_stitch@v1`: the detections of every crop or slice (one level
//! deeper) moved back into the reference image, overlaps removed by NMS (or merged).

use std::sync::Arc;

use super::{batch, either, Check, Manifest, Output, Run};
use crate::workflows::value::{Detection, Detections, Val};

pub static MANIFEST: Manifest = Manifest {
    type_id: "roboflow_core/detections_stitch@v1",
    aliases: &["DetectionsStitch"],
    name: "Detections Stitch",
    description: "Merges the detections made on crops or slices into the reference image's coordinates.",
    fields: &[
        batch(
            "reference_image",
            &["image"],
            "The image the crops or slices were cut from",
        ),
        batch(
            "predictions",
            super::kinds::DETECTIONS,
            "The detections on each crop or slice",
        ),
        either(
            "overlap_filtering_strategy",
            &["string"],
            Some("\"nms\""),
            Check::OneOf(&["none", "nms", "nmm"]),
            "How overlapping detections are resolved",
        ),
        either(
            "iou_threshold",
            &["float_zero_to_one"],
            Some("0.3"),
            Check::Unit,
            "IoU of overlapping detections",
        ),
    ],
    outputs: &[Output {
        name: "predictions",
        kinds: &[super::kinds::OBJECT_DETECTION, super::kinds::INSTANCE_SEGMENTATION],
    }],
    output_offset: 0,
    reduces: Some("predictions"),
    run: Run::Light(run),
};

fn run(args: &super::Args) -> Result<Vec<Val>, String> {
    let reference = args.image("reference_image")?;
    let parts: Vec<&Arc<Detections>> = match args.get("predictions") {
        Val::List(items) => items
            .iter()
            .filter_map(|v| match v {
                Val::Detections(d) => Some(d),
                _ => None,
            })
            .collect(),
        Val::Detections(d) => vec![d],
        _ => Vec::new(),
    };
    let mut all: Vec<Detection> = Vec::new();
    for part in parts {
        for d in &part.items {
            let (dx, dy) = d
                .parent_origin
                .map_or((0.0, 0.0), |o| (o.offset_x as f64, o.offset_y as f64));
            all.push(Detection {
                x: d.x + dx,
                y: d.y + dy,
                parent_id: reference.parent_id.clone(),
                image: reference.size(),
                parent_origin: reference.parent_origin,
                root_parent_id: reference.root_parent_id.clone(),
                root_origin: reference.root_origin,
                points: d
                    .points
                    .as_ref()
                    .map(|p| p.iter().map(|(x, y)| (x + dx, y + dy)).collect()),
                ..d.clone()
            });
        }
    }
    let iou_min = args.f64("iou_threshold", 0.3)?;
    let items = match args.str("overlap_filtering_strategy").unwrap_or("nms") {
        "none" => all,
        strategy => suppress(all, iou_min, strategy == "nmm"),
    };
    let root = reference.root_origin.map(|o| (reference.root_parent_id.clone(), o));
    Ok(vec![Val::Detections(Arc::new(Detections {
        items,
        image: None,
        root,
    }))])
}

/// Per-class NMS, highest confidence first; with `merge`, a suppressed box widens its keeper.
fn suppress(mut all: Vec<Detection>, iou_min: f64, merge: bool) -> Vec<Detection> {
    all.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
    let mut kept: Vec<Detection> = Vec::new();
    for d in all {
        let hit = kept
            .iter_mut()
            .find(|k| k.class_id == d.class_id && super::detections_consensus::iou(k, &d) > iou_min);
        match hit {
            Some(k) if merge => {
                let (a, b) = (k.xyxy(), d.xyxy());
                let (x0, y0, x1, y1) = (a.0.min(b.0), a.1.min(b.1), a.2.max(b.2), a.3.max(b.3));
                k.x = (x0 + x1) / 2.0;
                k.y = (y0 + y1) / 2.0;
                k.width = x1 - x0;
                k.height = y1 - y0;
            }
            Some(_) => {}
            None => kept.push(d),
        }
    }
    kept
}
