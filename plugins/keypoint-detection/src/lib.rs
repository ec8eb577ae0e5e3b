//! Keypoint-detection (pose) task plugin: letterboxes images into the model's input tensor,
//! runs the graph through wasi-nn, decodes YOLO pose outputs (v8/11 `-pose`, end-to-end pose
//! heads) with NMS, and maps boxes and keypoints back to original-image pixels.

use inference_guest::{self as guest, pose, Candidate, ImageRef, KeypointShape, OutputLayout};

wit_bindgen::generate!({
    path: "../../wit",
    world: "keypoint-detection",
    generate_all,
});

use exports::inference::plugins::keypoints::{Guest, Keypoint, KeypointParams, Pose};
use inference::plugins::types::{ChannelOrder, Detection, ErrorKind, Image, ModelInfo, PluginError, ResizeMode};
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
    fn detect_keypoints(
        model: ModelInfo,
        images: Vec<Image>,
        params: KeypointParams,
    ) -> Result<Vec<Vec<Pose>>, PluginError> {
        let det = &params.detection;
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
        // Ultralytics writes `kpt_shape` ("[17, 3]") into the ONNX metadata.
        let declared = match model.metadata.iter().find(|(k, _)| k == "kpt_shape") {
            Some((_, v)) => Some(KeypointShape::parse(v).ok_or_else(|| {
                error(
                    ErrorKind::UnsupportedModel,
                    format!("cannot read the model's kpt_shape {v:?}"),
                )
            })?),
            None => None,
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
        let named = model.class_names.len();
        let unsupported = |e: String| error(ErrorKind::UnsupportedModel, e);

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
            let layout = guest::infer_layout(&out_dims, named).map_err(unsupported)?;
            // Classes (counted from the output when the model names none) and keypoints per detection.
            let (nc, shape) = pose::pose_geometry(&out_dims, layout, named, declared).map_err(unsupported)?;
            if out_dims.len() == 3 && out_dims[0] < refs.len() {
                return Err(unsupported(format!(
                    "output {out_dims:?} holds fewer images than the {} sent",
                    refs.len()
                )));
            }
            for (b, transform) in transforms.iter().enumerate() {
                let candidates = guest::decode(&data, &out_dims, b, layout, nc, det.confidence).map_err(unsupported)?;
                let kept: Vec<Candidate> = if layout == OutputLayout::EndToEnd {
                    let mut c = candidates;
                    c.sort_by(|a, b| b.score.total_cmp(&a.score));
                    c.truncate(det.max_detections as usize);
                    c
                } else {
                    guest::nms(
                        candidates,
                        det.iou_threshold,
                        det.class_agnostic_nms,
                        det.max_detections as usize,
                    )
                };
                let mut poses = Vec::with_capacity(kept.len());
                for c in kept {
                    let class_name = model
                        .class_names
                        .get(c.class_id as usize)
                        .cloned()
                        .unwrap_or_else(|| c.class_id.to_string());
                    if let Some(filter) = &det.class_filter {
                        if !filter.iter().any(|f| f == &class_name) {
                            continue;
                        }
                    }
                    let raw = pose::raw_keypoints(&data, &out_dims, b, layout, nc, shape, c.anchor as usize)
                        .map_err(unsupported)?;
                    let names = model.keypoint_names.get(c.class_id as usize);
                    let keypoints = pose::to_original(&raw, transform, params.keypoint_confidence)
                        .into_iter()
                        .map(|k| Keypoint {
                            x: k.x,
                            y: k.y,
                            confidence: k.confidence,
                            class_id: k.id,
                            class_name: names
                                .and_then(|n| n.get(k.id as usize))
                                .cloned()
                                .unwrap_or_else(|| k.id.to_string()),
                        })
                        .collect();
                    let [x1, y1, x2, y2] = transform.to_original_box(c.x1, c.y1, c.x2, c.y2);
                    poses.push(Pose {
                        detection: Detection {
                            x: (x1 + x2) / 2.0,
                            y: (y1 + y2) / 2.0,
                            width: x2 - x1,
                            height: y2 - y1,
                            confidence: c.score,
                            class_id: c.class_id,
                            class_name,
                        },
                        keypoints,
                    });
                }
                results.push(poses);
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
