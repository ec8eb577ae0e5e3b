//! Classification task plugin: resizes images into the model's input tensor (for Ultralytics
//! `-cls` exports torchvision's `Resize` + `CenterCrop` on a PIL image, reproduced byte for
//! byte), runs the graph through wasi-nn and turns each image's scores into probabilities
//! ranked highest first.

use inference_guest as guest;

use guest::bindings::classification::exports::inference::plugins::classify::{
    ClassScore, Classification, ClassificationParams, Guest,
};
use guest::wit::{Activation, ErrorKind, Image, ModelInfo, PluginError};

use guest::glue::{error, first_output, model_input, name_of, run_batches};

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
        run_batches(&model, &input, images, |outputs, transforms| {
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
                        class_name: name_of(&model.class_names, class_id),
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

guest::export_classification!(Plugin);
