//! `roboflow_core/detections_consensus@v1`: detections several sources agree on (by IoU and,
//! with `class_aware`, class), merged; whether objects are present, and how confidently.

use std::sync::Arc;

use serde_json::{json, Value};

use super::{either, selectors, Check, Input, Manifest, Output, Run};
use crate::workflows::value::{Detection, Detections, Val};

pub static MANIFEST: Manifest = Manifest {
    type_id: "roboflow_core/detections_consensus@v1",
    aliases: &["DetectionsConsensus"],
    name: "Detections Consensus",
    description: "Merges the detections that at least required_votes of the sources agree on.",
    fields: &[
        selectors(
            "predictions_batches",
            Input::SelectorList,
            None,
            "The detections of each source",
        ),
        either(
            "required_votes",
            &["integer"],
            None,
            Check::Int,
            "Sources that must agree",
        ),
        either(
            "class_aware",
            &["boolean"],
            Some("true"),
            Check::Bool,
            "Only detections of one class agree",
        ),
        either(
            "iou_threshold",
            &["float_zero_to_one"],
            Some("0.3"),
            Check::Unit,
            "IoU for two detections to agree",
        ),
        either(
            "confidence",
            &["float_zero_to_one"],
            Some("0.0"),
            Check::Unit,
            "Minimum merged confidence",
        ),
        either(
            "classes_to_consider",
            &["list_of_values"],
            Some("null"),
            Check::StrList,
            "Only these classes",
        ),
        either(
            "required_objects",
            &["integer", "dictionary"],
            Some("null"),
            Check::Any,
            "Objects (per class) for object_present",
        ),
        either(
            "presence_confidence_aggregation",
            &[],
            Some("\"max\""),
            Check::OneOf(&["max", "min", "average"]),
            "How presence confidence is aggregated",
        ),
        either(
            "detections_merge_confidence_aggregation",
            &[],
            Some("\"average\""),
            Check::OneOf(&["max", "min", "average"]),
            "How merged confidences are aggregated",
        ),
        either(
            "detections_merge_coordinates_aggregation",
            &[],
            Some("\"average\""),
            Check::OneOf(&["average", "max", "min"]),
            "How merged boxes are aggregated",
        ),
    ],
    outputs: &[
        Output {
            name: "predictions",
            kinds: &[super::kinds::OBJECT_DETECTION],
        },
        Output {
            name: "object_present",
            kinds: &["boolean", "dictionary"],
        },
        Output {
            name: "presence_confidence",
            kinds: &["float_zero_to_one", "dictionary"],
        },
    ],
    output_offset: 0,
    reduces: None,
    run: Run::Light(run),
};

pub fn iou(a: &Detection, b: &Detection) -> f64 {
    let (a0, a1, a2, a3) = a.xyxy();
    let (b0, b1, b2, b3) = b.xyxy();
    let iw = (a2.min(b2) - a0.max(b0)).max(0.0);
    let ih = (a3.min(b3) - a1.max(b1)).max(0.0);
    let inter = iw * ih;
    let union = a.width * a.height + b.width * b.height - inter;
    if union <= 0.0 {
        0.0
    } else {
        inter / union
    }
}

fn aggregate(values: &[f64], mode: &str) -> f64 {
    match mode {
        "max" => values.iter().copied().fold(f64::MIN, f64::max),
        "min" => values.iter().copied().fold(f64::MAX, f64::min),
        _ => values.iter().sum::<f64>() / values.len().max(1) as f64,
    }
}

fn run(args: &super::Args) -> Result<Vec<Val>, String> {
    let sources: Vec<Arc<Detections>> = match args.get("predictions_batches") {
        Val::List(items) => items
            .iter()
            .filter_map(|v| match v {
                Val::Detections(d) => Some(d.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let votes = args.f64("required_votes", 1.0)? as usize;
    let class_aware = args.bool("class_aware", true);
    let iou_min = args.f64("iou_threshold", 0.3)?;
    let min_conf = args.f64("confidence", 0.0)?;
    let consider: Option<Vec<String>> = args
        .json("classes_to_consider")
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect());
    let conf_mode = args
        .str("detections_merge_confidence_aggregation")
        .unwrap_or("average")
        .to_string();
    let box_mode = args
        .str("detections_merge_coordinates_aggregation")
        .unwrap_or("average")
        .to_string();
    let mut all: Vec<(usize, &Detection)> = sources
        .iter()
        .enumerate()
        .flat_map(|(s, d)| d.items.iter().map(move |d| (s, d)))
        .filter(|(_, d)| consider.as_ref().is_none_or(|c| c.contains(&d.class_name)))
        .collect();
    all.sort_by(|a, b| b.1.confidence.total_cmp(&a.1.confidence));
    let mut used = vec![false; all.len()];
    let mut merged = Vec::new();
    for i in 0..all.len() {
        if used[i] {
            continue;
        }
        used[i] = true;
        let mut cluster = vec![all[i]];
        for j in i + 1..all.len() {
            let (s, d) = all[j];
            if used[j] || cluster.iter().any(|(cs, _)| *cs == s) {
                continue;
            }
            if (!class_aware || d.class_name == all[i].1.class_name) && iou(all[i].1, d) >= iou_min {
                used[j] = true;
                cluster.push(all[j]);
            }
        }
        if cluster.len() < votes {
            continue;
        }
        let pick = |f: &dyn Fn(&Detection) -> f64| {
            aggregate(&cluster.iter().map(|(_, d)| f(d)).collect::<Vec<_>>(), &box_mode)
        };
        let (x0, y0) = (pick(&|d| d.xyxy().0), pick(&|d| d.xyxy().1));
        let (x1, y1) = (pick(&|d| d.xyxy().2), pick(&|d| d.xyxy().3));
        let confidence = aggregate(
            &cluster.iter().map(|(_, d)| d.confidence).collect::<Vec<_>>(),
            &conf_mode,
        );
        if confidence < min_conf {
            continue;
        }
        merged.push(Detection {
            x: (x0 + x1) / 2.0,
            y: (y0 + y1) / 2.0,
            width: x1 - x0,
            height: y1 - y0,
            confidence,
            detection_id: uuid::Uuid::new_v4().to_string(),
            ..all[i].1.clone()
        });
    }
    let presence_mode = args.str("presence_confidence_aggregation").unwrap_or("max").to_string();
    let (present, confidence) = match args.json("required_objects") {
        Value::Object(per_class) => {
            let mut present = serde_json::Map::new();
            let mut conf = serde_json::Map::new();
            for (class, n) in per_class {
                let of: Vec<f64> = merged
                    .iter()
                    .filter(|d| &d.class_name == class)
                    .map(|d| d.confidence)
                    .collect();
                present.insert(class.clone(), json!(of.len() as u64 >= n.as_u64().unwrap_or(1)));
                conf.insert(
                    class.clone(),
                    json!(if of.is_empty() {
                        0.0
                    } else {
                        aggregate(&of, &presence_mode)
                    }),
                );
            }
            (Value::Object(present), Value::Object(conf))
        }
        other => {
            let n = other.as_u64().unwrap_or(1) as usize;
            let confs: Vec<f64> = merged.iter().map(|d| d.confidence).collect();
            (
                json!(merged.len() >= n),
                json!(if confs.is_empty() {
                    0.0
                } else {
                    aggregate(&confs, &presence_mode)
                }),
            )
        }
    };
    let root = sources.first().and_then(|s| s.root.clone());
    Ok(vec![
        Val::Detections(Arc::new(Detections {
            items: merged,
            image: None,
            root,
        })),
        Val::Json(present),
        Val::Json(confidence),
    ])
}
