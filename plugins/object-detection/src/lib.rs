//! Object-detection task plugin: resizes images into the model's input tensor, runs the
//! graph through wasi-nn, decodes YOLO outputs (v5, v8/11, end-to-end v10/26), applies NMS
//! and maps boxes back to original-image pixels.

use inference_guest::{self as guest, Candidate, ImageRef, OutputLayout};

wit_bindgen::generate!({
    path: "../../wit",
    world: "object-detection",
    generate_all,
});

use exports::inference::plugins::detection::Guest;
use inference::plugins::types::{
    ChannelOrder, Detection, DetectionParams, ErrorKind, Image, ModelInfo, PluginError, ResizeMode,
};
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
    fn detect(
        model: ModelInfo,
        images: Vec<Image>,
        params: DetectionParams,
    ) -> Result<Vec<Vec<Detection>>, PluginError> {
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
        let graph = graph::load_by_name(&model.graph).map_err(|e| nn_error("loading the model", e))?;
        let context = graph
            .init_execution_context()
            .map_err(|e| nn_error("creating an execution context", e))?;
        let chunk = if model.max_batch == 0 {
            DYNAMIC_BATCH_CHUNK
        } else {
            model.max_batch as usize
        };
        let nc = model.class_names.len();

        let mut results = Vec::with_capacity(images.len());
        for batch in images.chunks(chunk.max(1)) {
            let refs = batch
                .iter()
                .map(|i| ImageRef::new(i.width, i.height, &i.rgb))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| error(ErrorKind::InvalidInput, e))?;
            let (data, transforms) = input.batch(&refs).map_err(|e| error(ErrorKind::InvalidInput, e))?;
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
            let layout = guest::infer_layout(&out_dims, nc).map_err(|e| error(ErrorKind::UnsupportedModel, e))?;
            // Without class names, count classes from the layout so ids are still right.
            let nc = if nc > 0 {
                nc
            } else {
                guest::classes_in(&out_dims, layout)
            };
            for (b, transform) in transforms.iter().enumerate() {
                let candidates = guest::decode(&data, &out_dims, b, layout, nc, params.confidence)
                    .map_err(|e| error(ErrorKind::UnsupportedModel, e))?;
                let kept: Vec<Candidate> = if layout == OutputLayout::EndToEnd {
                    let mut c = candidates;
                    c.sort_by(|a, b| b.score.total_cmp(&a.score));
                    c.truncate(params.max_detections as usize);
                    c
                } else {
                    guest::nms(
                        candidates,
                        params.iou_threshold,
                        params.class_agnostic_nms,
                        params.max_detections as usize,
                    )
                };
                let detections = kept
                    .into_iter()
                    .filter_map(|c| {
                        let class_name = model
                            .class_names
                            .get(c.class_id as usize)
                            .cloned()
                            .unwrap_or_else(|| c.class_id.to_string());
                        if let Some(filter) = &params.class_filter {
                            if !filter.iter().any(|f| f == &class_name) {
                                return None;
                            }
                        }
                        let [x1, y1, x2, y2] = transform.to_original_box(c.x1, c.y1, c.x2, c.y2);
                        Some(Detection {
                            x: (x1 + x2) / 2.0,
                            y: (y1 + y2) / 2.0,
                            width: x2 - x1,
                            height: y2 - y1,
                            confidence: c.score,
                            class_id: c.class_id,
                            class_name,
                        })
                    })
                    .collect();
                results.push(detections);
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
