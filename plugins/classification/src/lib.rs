//! Classification task plugin: resizes images into the model's input tensor (for Ultralytics
//! `-cls` exports torchvision's `Resize` + `CenterCrop` on a PIL image, reproduced byte for
//! byte), runs the graph through wasi-nn and turns each image's scores into probabilities
//! ranked highest first.

use inference_guest as guest;

wit_bindgen::generate!({
    path: "../../wit",
    world: "classification",
    generate_all,
});

use exports::inference::plugins::classify::{ClassScore, Classification, ClassificationParams, Guest};
use inference::plugins::types::{Activation, ErrorKind, Image, ModelInfo, PluginError};

guest::plugin_glue!();

struct Plugin;

impl Guest for Plugin {
    fn classify(
        model: ModelInfo,
        images: Vec<Image>,
        // The confidence threshold only decides which classes the host reports as predicted;
        // every class's probability is returned.
        _params: ClassificationParams,
    ) -> Result<Vec<Classification>, PluginError> {
        let input = model_input(&model)?;
        let activation = match model.score_activation {
            Activation::None => guest::Activation::None,
            Activation::Softmax => guest::Activation::Softmax,
            Activation::Sigmoid => guest::Activation::Sigmoid,
        };
        let mut results = Vec::with_capacity(images.len());
        run_batches(&model, &input, &images, |outputs, transforms| {
            let (out_dims, data) = first_output(&outputs)?;
            // One row of scores per image sent: [B, nc] or [B, nc, 1, 1].
            let rows = guest::class_rows(&data, &out_dims, transforms.len())
                .map_err(|e| error(ErrorKind::UnsupportedModel, e))?;
            for row in rows {
                let probs = guest::probabilities(row, activation);
                let scores = guest::ranked(&probs)
                    .into_iter()
                    .map(|(class_id, confidence)| ClassScore {
                        class_id,
                        class_name: model
                            .class_names
                            .get(class_id as usize)
                            .cloned()
                            .unwrap_or_else(|| class_id.to_string()),
                        confidence,
                    })
                    .collect();
                results.push(Classification { scores });
            }
            Ok(())
        })?;
        Ok(results)
    }
}

export!(Plugin);
