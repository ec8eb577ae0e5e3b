//! Object-detection task plugin: resizes images into the model's input tensor, runs the
//! graph through wasi-nn, decodes YOLO outputs (v5, v8/11, end-to-end v10/26), applies NMS
//! and maps boxes back to original-image pixels.

use inference_guest as guest;

wit_bindgen::generate!({
    path: "../../wit",
    world: "object-detection",
    generate_all,
});

use exports::inference::plugins::detection::Guest;
use inference::plugins::types::{Detection, DetectionParams, ErrorKind, Image, ModelInfo, PluginError};

guest::plugin_glue!();

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
        run_batches(&model, &input, &images, |outputs, transforms| {
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

export!(Plugin);
