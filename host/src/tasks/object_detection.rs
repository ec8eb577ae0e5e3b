//! Object detection: boxes with a class and a confidence.

use serde::Deserialize;
use utoipa::ToSchema;
use wasmtime::component::InstancePre;
use wasmtime::Store;

use super::{Common, Detections, Meta, ObjectDetectionPrediction, Task, Visualization};
use crate::plugins::legacy::Legacy;
use crate::plugins::{wit, Bound, CallState};
use crate::visualize::Scene;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "inference:plugins/object-detection",
        with: {
            "inference:plugins/types": crate::plugins::wit,
            "inference:plugins/imaging": crate::plugins::wit::imaging,
        },
    });
}

pub struct ObjectDetection;

/// Object detection has no options of its own.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct ObjectDetectionOptions {}

impl Task for ObjectDetection {
    const NAME: &'static str = "object-detection";
    const WORLD: &'static str = "object-detection";
    const ROUTES: &'static [&'static str] = &["object_detection"];
    const SUMMARY: &'static str = "Object detection";
    const DESCRIPTION: &'static str =
        "Boxes with class and confidence. A model of another task is refused with a 400 that names its route.";

    type Options = ObjectDetectionOptions;
    type Params = wit::DetectionParams;
    type Output = Vec<wit::Detection>;
    type Response = Detections<ObjectDetectionPrediction>;

    fn params(common: &Common, _: &Self::Options) -> Result<Self::Params, String> {
        Ok(common.detection())
    }

    fn bind(pre: InstancePre<CallState>) -> anyhow::Result<Bound> {
        Legacy::or_bind(pre, "inference:plugins/detection@0.1.0", "detect", |pre| {
            Ok(Box::new(bindings::ObjectDetectionPre::new(pre)?))
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
        let instance =
            super::bound_as::<bindings::ObjectDetectionPre<CallState>>(bound, Self::WORLD)?.instantiate(&mut *store)?;
        instance
            .inference_plugins_detection()
            .call_detect(&mut *store, model, &images, params)
    }

    fn output_bytes(output: &Self::Output) -> usize {
        super::detections_bytes(output)
    }

    fn respond(output: Self::Output, meta: &Meta<'_>) -> Self::Response {
        let predictions = output.into_iter().map(ObjectDetectionPrediction::new).collect();
        Detections::new(meta, predictions)
    }

    fn scene(response: &Self::Response) -> Scene {
        Scene {
            objects: response
                .predictions
                .iter()
                .map(|p| p.object(None, Vec::new()))
                .collect(),
            corner_labels: Vec::new(),
        }
    }

    fn response_schemas(out: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>)>) {
        Detections::<ObjectDetectionPrediction>::schemas(out);
    }

    fn visualization(response: &mut Self::Response) -> &mut Option<Visualization> {
        &mut response.visualization
    }
}
