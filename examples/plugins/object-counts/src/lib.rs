//! An example plugin with a task of its own: it runs an object-detection model through
//! wasi-nn and answers how many objects of each class it found, optionally counting only
//! those whose centre lies inside a region.
//!
//! Request (`POST /infer/object_counts`), besides `model_id` and `image`:
//! `confidence` (0.4), `iou_threshold` (0.45), `region` ([x1, y1, x2, y2] in image pixels).
//! Answer (`result`): `{"images": [{"counts": {"circle": 2, ...}, "total": 3}], "counts": {...}, "total": N}`.

use std::collections::BTreeMap;

use inference_guest as guest;
use serde::Deserialize;

use guest::bindings::custom_task::exports::inference::plugins::custom::Guest;
use guest::wit::{ErrorKind, Image, ModelInfo, PluginError};

#[derive(Deserialize)]
struct Params {
    #[serde(default = "default_confidence")]
    confidence: f32,
    #[serde(default = "default_iou")]
    iou_threshold: f32,
    #[serde(default)]
    region: Option<[f32; 4]>,
}

fn default_confidence() -> f32 {
    0.4
}

fn default_iou() -> f32 {
    0.45
}

use guest::glue::{error, first_output, model_input, name_of, run_batches};

struct Plugin;

impl Guest for Plugin {
    fn run(model: ModelInfo, images: Vec<Image>, params: String) -> Result<String, PluginError> {
        let params: Params = serde_json::from_str(&params)
            .map_err(|e| error(ErrorKind::InvalidInput, format!("bad parameters: {e}")))?;
        let input = model_input(&model)?;
        let unsupported = |e: String| error(ErrorKind::UnsupportedModel, e);
        let mut per_image = Vec::new();
        let mut totals: BTreeMap<String, u32> = BTreeMap::new();
        run_batches(&model, &input, images, |outputs, transforms| {
            let (dims, values) = first_output(&outputs)?;
            let nc = model.class_names.len();
            let layout = guest::infer_layout(&dims, nc).map_err(unsupported)?;
            let nc = if nc > 0 { nc } else { guest::classes_in(&dims, layout) };
            for (b, transform) in transforms.iter().enumerate() {
                let candidates =
                    guest::decode(&values, &dims, b, layout, nc, params.confidence).map_err(unsupported)?;
                let mut counts: BTreeMap<String, u32> = BTreeMap::new();
                for c in guest::keep(candidates, layout, params.iou_threshold, false, 300) {
                    let [x1, y1, x2, y2] = transform.to_original_box(c.x1, c.y1, c.x2, c.y2);
                    let (cx, cy) = ((x1 + x2) / 2.0, (y1 + y2) / 2.0);
                    if let Some([rx1, ry1, rx2, ry2]) = params.region {
                        if cx < rx1 || cx > rx2 || cy < ry1 || cy > ry2 {
                            continue;
                        }
                    }
                    let name = name_of(&model.class_names, c.class_id);
                    *counts.entry(name.clone()).or_default() += 1;
                    *totals.entry(name).or_default() += 1;
                }
                let total: u32 = counts.values().sum();
                per_image.push(serde_json::json!({ "counts": counts, "total": total }));
            }
            Ok(())
        })?;
        let total: u32 = totals.values().sum();
        Ok(serde_json::json!({ "images": per_image, "counts": totals, "total": total }).to_string())
    }
}

guest::export_custom_task!(Plugin);
