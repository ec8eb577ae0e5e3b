//! Keypoint-detection (pose) task plugin: letterboxes images into the model's input tensor,
//! runs the graph through wasi-nn, decodes YOLO pose outputs (v8/11 `-pose`, end-to-end pose
//! heads) with NMS, and maps boxes and keypoints back to original-image pixels.

use inference_guest::{self as guest, pose, KeypointShape};

use guest::bindings::keypoint_detection::exports::inference::plugins::keypoints::{
    Guest, Keypoint, KeypointParams, Pose,
};
use guest::wit::{ErrorKind, Image, ModelInfo, PluginError};

use guest::glue::{detection, error, first_output, kept, model_input, name_of, run_batches};

struct Plugin;

impl Guest for Plugin {
    fn detect_keypoints(
        model: ModelInfo,
        images: Vec<Image>,
        params: KeypointParams,
    ) -> Result<Vec<Vec<Pose>>, PluginError> {
        let det = &params.detection;
        let input = model_input(&model)?;
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
        let named = model.class_names.len();
        let unsupported = |e: String| error(ErrorKind::UnsupportedModel, e);

        let mut results = Vec::with_capacity(images.len());
        run_batches(&model, &input, images, |outputs, transforms| {
            let (out_dims, data) = first_output(&outputs)?;
            let layout = guest::infer_layout(&out_dims, named).map_err(unsupported)?;
            // Classes (counted from the output when the model names none) and keypoints per detection.
            let (nc, shape) = pose::pose_geometry(&out_dims, layout, named, declared).map_err(unsupported)?;
            if out_dims.len() == 3 && out_dims[0] < transforms.len() {
                return Err(unsupported(format!(
                    "output {out_dims:?} holds fewer images than the {} sent",
                    transforms.len()
                )));
            }
            for (b, transform) in transforms.iter().enumerate() {
                let candidates = guest::decode(&data, &out_dims, b, layout, nc, det.confidence).map_err(unsupported)?;
                let kept = kept(candidates, layout, det);
                let mut poses = Vec::with_capacity(kept.len());
                for c in kept {
                    let Some(detection) = detection(&model, det, transform, &c) else {
                        continue;
                    };
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
                            class_name: names.map_or_else(|| k.id.to_string(), |n| name_of(n, k.id)),
                        })
                        .collect();
                    poses.push(Pose { detection, keypoints });
                }
                results.push(poses);
            }
            Ok(())
        })?;
        Ok(results)
    }
}

guest::export_keypoint_detection!(Plugin);
