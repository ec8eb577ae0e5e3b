//! Classification task plugin: resizes images into the model's input tensor (for Ultralytics
//! `-cls` exports torchvision's `Resize` + `CenterCrop` on a PIL image, reproduced byte for
//! byte), runs the graph through wasi-nn and turns each image's scores into probabilities
//! ranked highest first.

use inference_guest::{self as guest, ImageRef};

wit_bindgen::generate!({
    path: "../../wit",
    world: "classification",
    generate_all,
});

use exports::inference::plugins::classify::{ClassScore, Classification, ClassificationParams, Guest};
use inference::plugins::types::{Activation, ChannelOrder, ErrorKind, Image, ModelInfo, PluginError, ResizeMode};
use wasi::nn::{graph, tensor};

/// Images per run when the model's batch dimension is dynamic: bounds the tensor's memory.
const DYNAMIC_BATCH_CHUNK: usize = 16;

struct Plugin;

fn error(kind: ErrorKind, message: impl Into<String>) -> PluginError {
    PluginError {
        kind,
        message: message.into(),
    }
}

fn nn_error(what: &str, e: wasi::nn::errors::Error) -> PluginError {
    error(
        ErrorKind::InferenceFailed,
        format!("{what}: {:?}: {}", e.code(), e.data()),
    )
}

impl Guest for Plugin {
    fn classify(
        model: ModelInfo,
        images: Vec<Image>,
        // The confidence threshold only decides which classes the host reports as predicted;
        // every class's probability is returned.
        _params: ClassificationParams,
    ) -> Result<Vec<Classification>, PluginError> {
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
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let activation = match model.score_activation {
            Activation::None => guest::Activation::None,
            Activation::Softmax => guest::Activation::Softmax,
            Activation::Sigmoid => guest::Activation::Sigmoid,
        };
        let graph = graph::load_by_name(&model.graph).map_err(|e| nn_error("loading the model", e))?;
        let context = graph
            .init_execution_context()
            .map_err(|e| nn_error("creating an execution context", e))?;
        let chunk = if model.max_batch == 0 {
            DYNAMIC_BATCH_CHUNK
        } else {
            model.max_batch as usize
        };

        let mut results = Vec::with_capacity(images.len());
        for batch in images.chunks(chunk.max(1)) {
            let refs = batch
                .iter()
                .map(|i| ImageRef::new(i.width, i.height, &i.rgb))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| error(ErrorKind::InvalidInput, e))?;
            let (data, _) = input.batch(&refs).map_err(|e| error(ErrorKind::InvalidInput, e))?;
            let tensor = tensor::Tensor::new(&input.dims(refs.len()), tensor::TensorType::Fp32, as_le_bytes(&data));
            drop(data);
            let outputs = context
                .compute(vec![(model.input_name.clone(), tensor)])
                .map_err(|e| nn_error("running the model", e))?;
            let (_, output) = outputs
                .first()
                .ok_or_else(|| error(ErrorKind::UnsupportedModel, "the model returned no outputs"))?;
            if output.ty() != tensor::TensorType::Fp32 {
                return Err(error(
                    ErrorKind::UnsupportedModel,
                    format!("output 0 is {:?}, float32 expected", output.ty()),
                ));
            }
            let out_dims: Vec<usize> = output.dimensions().iter().map(|d| *d as usize).collect();
            let data = guest::le_bytes_to_f32(&output.data());
            // One row of scores per image sent: [B, nc] or [B, nc, 1, 1].
            let rows =
                guest::class_rows(&data, &out_dims, refs.len()).map_err(|e| error(ErrorKind::UnsupportedModel, e))?;
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
        }
        Ok(results)
    }
}

/// Views f32 data as the little-endian bytes a wasi-nn tensor carries, without copying the
/// (megabyte-sized) input: WebAssembly is little-endian.
fn as_le_bytes(data: &[f32]) -> &[u8] {
    // SAFETY: any f32 bit pattern is valid bytes; u8 has alignment 1; the length is in bytes.
    unsafe { std::slice::from_raw_parts(data.as_ptr().cast::<u8>(), std::mem::size_of_val(data)) }
}

export!(Plugin);
