//! Object-detection task plugin: resizes images into the model's input tensor, runs the
//! graph through wasi-nn, decodes YOLO outputs (v5, v8/11, end-to-end v10/26), applies NMS
//! and maps boxes back to original-image pixels.

use inference_guest as guest;

use guest::bindings::object_detection::exports::inference::plugins::detection::Guest;
use guest::wit::{Detection, DetectionParams, ErrorKind, Image, ModelInfo, PluginError};

use guest::glue::{detection, error, first_output, kept, model_input, run_batches};

struct Plugin;

impl Guest for Plugin {
    fn detect(
        model: ModelInfo,
        images: Vec<Image>,
        params: DetectionParams,
    ) -> Result<Vec<Vec<Detection>>, PluginError> {
        let input = model_input(&model)?;
        let nc = model.class_names.len();
        let unsupported = |e: String| error(ErrorKind::UnsupportedModel, e);
        let mut results = Vec::with_capacity(images.len());
        run_batches(&model, &input, images, |outputs, transforms| {
            let (out_dims, data) = first_output(&outputs)?;
            let layout = guest::infer_layout(&out_dims, nc).map_err(unsupported)?;
            // Without class names, count classes from the layout so ids are still right.
            let nc = if nc > 0 {
                nc
            } else {
                guest::classes_in(&out_dims, layout)
            };
            for (b, transform) in transforms.iter().enumerate() {
                let candidates =
                    guest::decode(&data, &out_dims, b, layout, nc, params.confidence).map_err(unsupported)?;
                let kept = kept(candidates, layout, &params);
                results.push(
                    kept.iter()
                        .filter_map(|c| detection(&model, &params, transform, c))
                        .collect(),
                );
            }
            Ok(())
        })?;
        Ok(results)
    }
}

guest::export_object_detection!(Plugin);
