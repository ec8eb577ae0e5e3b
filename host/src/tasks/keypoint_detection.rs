//! Keypoint detection (pose): detections with named points each.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use wasmtime::component::InstancePre;
use wasmtime::Store;

use super::{Common, Detections, Meta, ObjectDetectionPrediction, Task, Visualization};
use crate::plugins::legacy::Legacy;
use crate::plugins::{wit, Bound, CallState};
use crate::visualize::{self, Scene};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "inference:plugins/keypoint-detection",
        with: {
            "inference:plugins/types": crate::plugins::wit,
            "inference:plugins/imaging": crate::plugins::wit::imaging,
        },
    });
}

use bindings::exports::inference::plugins::keypoints as api;

pub struct KeypointDetection;

/// Keypoint detection's own request fields.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct KeypointDetectionOptions {
    /// Keypoints below it are left out (default 0).
    #[serde(default)]
    pub keypoint_confidence: Option<f32>,
}

/// A keypoint of a pose prediction.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeypointPrediction {
    pub x: f64,
    pub y: f64,
    pub confidence: f64,
    pub class_id: u32,
    pub class: String,
}

/// A detection and its keypoints.
#[derive(Debug, Serialize, ToSchema)]
pub struct PosePrediction {
    #[serde(flatten)]
    pub detection: ObjectDetectionPrediction,
    pub keypoints: Vec<KeypointPrediction>,
}

impl Task for KeypointDetection {
    const NAME: &'static str = "keypoint-detection";
    const WORLD: &'static str = "keypoint-detection";
    const ROUTES: &'static [&'static str] = &["keypoints_detection"];
    const SUMMARY: &'static str = "Keypoint detection";
    const DESCRIPTION: &'static str =
        "Boxes plus each instance's `keypoints` (those under `keypoint_confidence` are left out).";

    type Options = KeypointDetectionOptions;
    type Params = api::KeypointParams;
    type Output = Vec<api::Pose>;
    type Response = Detections<PosePrediction>;

    fn params(common: &Common, options: &Self::Options) -> Result<Self::Params, String> {
        let keypoint_confidence = options.keypoint_confidence.unwrap_or(0.0);
        if !keypoint_confidence.is_finite() {
            return Err(format!(
                "keypoint_confidence must be a finite number, got {keypoint_confidence}"
            ));
        }
        Ok(api::KeypointParams {
            detection: common.detection(),
            keypoint_confidence,
        })
    }

    fn bind(pre: InstancePre<CallState>) -> anyhow::Result<Bound> {
        Legacy::or_bind(pre, "inference:plugins/keypoints@0.1.0", "detect-keypoints", |pre| {
            Ok(Box::new(bindings::KeypointDetectionPre::new(pre)?))
        })
    }

    fn invoke(
        bound: &Bound,
        store: &mut Store<CallState>,
        model: &wit::ModelInfo,
        params: &Self::Params,
    ) -> wasmtime::Result<Result<Vec<Self::Output>, wit::PluginError>> {
        if let Some(legacy) = bound.downcast_ref::<Legacy>() {
            return super::invoke_legacy(legacy, store, model, params);
        }
        let images = store.data_mut().image_handles()?;
        let instance = super::bound_as::<bindings::KeypointDetectionPre<CallState>>(bound, Self::WORLD)?
            .instantiate(&mut *store)?;
        instance
            .inference_plugins_keypoints()
            .call_detect_keypoints(&mut *store, model, &images, params)
    }

    fn output_bytes(output: &Self::Output) -> usize {
        output
            .iter()
            .map(|p| {
                crate::plugins::detection_bytes(&p.detection)
                    + p.keypoints.iter().map(|k| 16 + k.class_name.len()).sum::<usize>()
            })
            .sum()
    }

    fn respond(output: Self::Output, meta: &Meta<'_>) -> Self::Response {
        let predictions = output
            .into_iter()
            .map(|p| PosePrediction {
                detection: ObjectDetectionPrediction::new(p.detection),
                keypoints: p
                    .keypoints
                    .into_iter()
                    .map(|k| KeypointPrediction {
                        x: f64::from(k.x),
                        y: f64::from(k.y),
                        confidence: f64::from(k.confidence),
                        class_id: k.class_id,
                        class: k.class_name,
                    })
                    .collect(),
            })
            .collect();
        Detections::new(meta, predictions)
    }

    fn scene(response: &Self::Response) -> Scene {
        let keypoints = |p: &PosePrediction| {
            p.keypoints
                .iter()
                .map(|k| visualize::Keypoint {
                    class_id: k.class_id,
                    x: k.x,
                    y: k.y,
                })
                .collect()
        };
        Scene {
            objects: response
                .predictions
                .iter()
                .map(|p| p.detection.object(None, keypoints(p)))
                .collect(),
            corner_labels: Vec::new(),
        }
    }

    fn response_schemas(out: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>)>) {
        Detections::<PosePrediction>::schemas(out);
    }

    fn visualization(response: &mut Self::Response) -> &mut Option<Visualization> {
        &mut response.visualization
    }
}
