//! An example custom workflow block: it keeps the detections whose box centre lies inside a
//! zone and counts them per class. Its manifest (`plugin.toml`, `[block]`) declares the step type
//! `examples/zone_counter@v1`, its fields `predictions` (detections) and `zone` (optional
//! `[x1, y1, x2, y2]`) and its outputs `predictions`, `counts` (`{"class": n}`) and `total`.
//!
//! The host calls `run` with every item of the step (one per input image, or per crop) and checks
//! the answer against the manifest; the detections it returns keep their ids and lineage.

use std::collections::BTreeMap;

use inference_guest as guest;

use guest::block::{self, Detections, Guest, Value, Values};
use guest::wit::{ErrorKind, PluginError};

struct ZoneCounter;

fn invalid(message: String) -> PluginError {
    PluginError {
        kind: ErrorKind::InvalidInput,
        message,
    }
}

/// `[x1, y1, x2, y2]`, or `None` (the whole image) when the field is left out.
fn zone(value: &Value) -> Result<Option<[f64; 4]>, PluginError> {
    let text = match value {
        Value::Null => return Ok(None),
        Value::Json(text) => text,
        _ => return Err(invalid("zone must be a list [x1, y1, x2, y2]".into())),
    };
    serde_json::from_str::<[f64; 4]>(text)
        .map(Some)
        .map_err(|e| invalid(format!("zone must be [x1, y1, x2, y2] in pixels: {e}")))
}

impl Guest for ZoneCounter {
    fn run(items: Vec<Values>) -> Result<Vec<Values>, PluginError> {
        block::each(items, |item| {
            let zone = zone(block::field(&item, "zone"))?;
            let Some(detections) = block::detections(block::field(&item, "predictions")) else {
                return Err(invalid("predictions must be detections".into()));
            };
            let inside = |x: f64, y: f64| zone.is_none_or(|[x1, y1, x2, y2]| x >= x1 && x <= x2 && y >= y1 && y <= y2);
            let kept: Vec<_> = detections.items.iter().filter(|d| inside(d.x, d.y)).cloned().collect();
            let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
            for d in &kept {
                *counts.entry(&d.class_name).or_default() += 1;
            }
            let counts = serde_json::to_string(&counts).map_err(|e| invalid(e.to_string()))?;
            let total = kept.len() as i64;
            Ok(vec![
                (
                    "predictions".to_string(),
                    Value::Detections(Detections {
                        image_width: detections.image_width,
                        image_height: detections.image_height,
                        items: kept,
                    }),
                ),
                ("counts".to_string(), Value::Json(counts)),
                ("total".to_string(), Value::Integer(total)),
            ])
        })
    }
}

guest::export_workflow_block!(ZoneCounter);
