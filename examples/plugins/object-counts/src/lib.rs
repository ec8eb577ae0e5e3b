//! An example plugin with a task of its own: it runs an object-detection model through
//! wasi-nn and answers how many objects of each class it found, optionally counting only
//! those whose centre lies inside a region.
//!
//! Request (`POST /infer/object_counts`), besides `model_id` and `image`:
//! `confidence` (0.4), `iou_threshold` (0.45), `region` ([x1, y1, x2, y2] in image pixels).
//! Answer (`result`): `{"images": [{"counts": {"circle": 2, ...}, "total": 3}], "counts": {...}, "total": N}`.

use std::collections::BTreeMap;

use inference_guest::{self as guest, ImageRef, OutputLayout};
use serde::Deserialize;

wit_bindgen::generate!({
    path: "../../../wit",
    world: "custom-task",
    generate_all,
});

use exports::inference::plugins::custom::Guest;
use inference::plugins::types::{ChannelOrder, ErrorKind, Image, ModelInfo, PluginError, ResizeMode};
use wasi::nn::{graph, tensor};

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

fn error(kind: ErrorKind, message: impl Into<String>) -> PluginError {
    PluginError {
        kind,
        message: message.into(),
    }
}

struct Plugin;

impl Guest for Plugin {
    fn run(model: ModelInfo, images: Vec<Image>, params: String) -> Result<String, PluginError> {
        let params: Params = serde_json::from_str(&params)
            .map_err(|e| error(ErrorKind::InvalidInput, format!("bad parameters: {e}")))?;
        let input = guest::ModelInput::new(
            model.input_width,
            model.input_height,
            match model.resize {
                ResizeMode::Letterbox => guest::Resize::Letterbox { pad: model.pad_value },
                ResizeMode::Stretch => guest::Resize::Stretch,
                ResizeMode::CenterCrop => guest::Resize::CenterCrop,
            },
            match model.channel_order {
                ChannelOrder::Nchw => guest::Layout::Nchw,
                ChannelOrder::Nhwc => guest::Layout::Nhwc,
            },
            &model.mean,
            &model.std,
        )
        .map_err(|e| error(ErrorKind::UnsupportedModel, e))?;
        let graph = graph::load_by_name(&model.graph)
            .map_err(|e| error(ErrorKind::InferenceFailed, format!("loading the model: {}", e.data())))?;
        let context = graph
            .init_execution_context()
            .map_err(|e| error(ErrorKind::InferenceFailed, e.data()))?;

        let mut per_image = Vec::new();
        let mut totals: BTreeMap<String, u32> = BTreeMap::new();
        // One image per run keeps the example short; the task plugins batch.
        for image in &images {
            let refs =
                [ImageRef::new(image.width, image.height, &image.rgb)
                    .map_err(|e| error(ErrorKind::InvalidInput, e))?];
            let (data, transforms) = input.batch(&refs).map_err(|e| error(ErrorKind::InvalidInput, e))?;
            let tensor = tensor::Tensor::new(&input.dims(1), tensor::TensorType::Fp32, &guest::f32_to_le_bytes(&data));
            let outputs = context
                .compute(vec![(model.input_name.clone(), tensor)])
                .map_err(|e| error(ErrorKind::InferenceFailed, e.data()))?;
            let (_, output) = outputs
                .first()
                .ok_or_else(|| error(ErrorKind::UnsupportedModel, "no outputs"))?;
            let dims: Vec<usize> = output.dimensions().iter().map(|d| *d as usize).collect();
            let values = guest::le_bytes_to_f32(&output.data());
            let nc = model.class_names.len();
            let layout = guest::infer_layout(&dims, nc).map_err(|e| error(ErrorKind::UnsupportedModel, e))?;
            let nc = if nc > 0 { nc } else { guest::classes_in(&dims, layout) };
            let candidates = guest::decode(&values, &dims, 0, layout, nc, params.confidence)
                .map_err(|e| error(ErrorKind::UnsupportedModel, e))?;
            let kept = if layout == OutputLayout::EndToEnd {
                candidates
            } else {
                guest::nms(candidates, params.iou_threshold, false, 300)
            };
            let mut counts: BTreeMap<String, u32> = BTreeMap::new();
            for c in kept {
                let [x1, y1, x2, y2] = transforms[0].to_original_box(c.x1, c.y1, c.x2, c.y2);
                let (cx, cy) = ((x1 + x2) / 2.0, (y1 + y2) / 2.0);
                if let Some([rx1, ry1, rx2, ry2]) = params.region {
                    if cx < rx1 || cx > rx2 || cy < ry1 || cy > ry2 {
                        continue;
                    }
                }
                let name = model
                    .class_names
                    .get(c.class_id as usize)
                    .cloned()
                    .unwrap_or_else(|| c.class_id.to_string());
                *counts.entry(name.clone()).or_default() += 1;
                *totals.entry(name).or_default() += 1;
            }
            let total: u32 = counts.values().sum();
            per_image.push(serde_json::json!({ "counts": counts, "total": total }));
        }
        let total: u32 = totals.values().sum();
        Ok(serde_json::json!({ "images": per_image, "counts": totals, "total": total }).to_string())
    }
}

export!(Plugin);
