//! The object-detection plugin of a made-up model family, for the tests of choosing plugins
//! per model: it decodes YOLO outputs like our own plugin, through the real model, and marks
//! every class name with `madeup:` so that a test can tell which plugin answered. Unlike ours, it
//! pre-processes a copy of the pixels itself, in WebAssembly (`run_batches_with`), so the tests
//! also compare that path with the host's imaging.

use inference_guest as guest;

use guest::bindings::object_detection::exports::inference::plugins::detection::Guest;
use guest::wit::{Detection, DetectionParams, ErrorKind, Image, ModelInfo, PluginError};

use guest::glue::{detection, error, first_output, kept, model_input, run_batches_with};

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
        let prepare = |batch: &[guest::ImageRef<'_>]| input.batch(batch);
        run_batches_with(
            &model,
            images,
            |n| input.dims(n),
            prepare,
            |outputs, transforms| {
                let (dims, data) = first_output(&outputs)?;
                let layout = guest::infer_layout(&dims, nc).map_err(unsupported)?;
                for (b, transform) in transforms.iter().enumerate() {
                    let candidates =
                        guest::decode(&data, &dims, b, layout, nc, params.confidence).map_err(unsupported)?;
                    results.push(
                        kept(candidates, layout, &params)
                            .iter()
                            .filter_map(|c| detection(&model, &params, transform, c))
                            .map(|d| Detection {
                                class_name: format!("madeup:{}", d.class_name),
                                ..d
                            })
                            .collect(),
                    );
                }
                Ok(())
            },
        )?;
        Ok(results)
    }
}

guest::export_object_detection!(Plugin);
