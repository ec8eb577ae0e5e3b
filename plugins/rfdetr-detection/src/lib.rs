//! RF-DETR object-detection plugin: Roboflow's DETR family (`rfdetr`'s ONNX exports, Roboflow's
//! `rfdetr-*` model types), stretched and normalised as `rfdetr` does it, decoded with its top-k
//! over queries and classes, without NMS (see `inference_guest::rfdetr`).

use inference_guest as guest;

use guest::bindings::object_detection::exports::inference::plugins::detection::Guest;
use guest::wit::{Detection, DetectionParams, Image, ModelInfo, PluginError};

use guest::glue::{model_input, rfdetr_detections, run_rfdetr_batches};

struct Plugin;

impl Guest for Plugin {
    fn detect(
        model: ModelInfo,
        images: Vec<Image>,
        params: DetectionParams,
    ) -> Result<Vec<Vec<Detection>>, PluginError> {
        let input = model_input(&model)?;
        let mut results = Vec::with_capacity(images.len());
        run_rfdetr_batches(&model, &input, images, |outputs, transforms| {
            for detections in rfdetr_detections(&model, &params, &input, &outputs, &transforms)? {
                results.push(detections.into_iter().map(|(_, d)| d).collect());
            }
            Ok(())
        })?;
        Ok(results)
    }
}

guest::export_object_detection!(Plugin);
