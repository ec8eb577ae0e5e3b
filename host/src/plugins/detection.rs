//! Calling an `object-detection` world plugin.

use std::time::Instant;

use anyhow::Result;
use wasmtime::component::{Component, InstancePre};

use super::runtime::{CallLimits, PluginRuntime};
use super::{CallError, CallOutcome};
use crate::input::RgbImage;
use crate::models::{LoadedModel, ModelDescription, Resize};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "inference:plugins/object-detection",
    });
}

use bindings::exports::inference::plugins::detection::{Detection, DetectionParams};
use bindings::inference::plugins::types as wit;
use bindings::{ObjectDetection, ObjectDetectionPre};

/// Request parameters for detection.
#[derive(Clone, Debug)]
pub struct DetectParams {
    pub confidence: f32,
    pub iou_threshold: f32,
    pub class_agnostic_nms: bool,
    pub max_detections: u32,
    pub class_filter: Option<Vec<String>>,
}

/// A compiled object-detection plugin, ready to instantiate per call.
pub struct DetectionPlugin {
    pub name: String,
    pre: ObjectDetectionPre<super::runtime::CallState>,
}

impl DetectionPlugin {
    pub fn new(runtime: &PluginRuntime, name: String, component: &Component) -> Result<Self> {
        let instance_pre: InstancePre<_> = runtime.linker().instantiate_pre(component)?;
        let pre = ObjectDetectionPre::new(instance_pre)?;
        Ok(Self { name, pre })
    }

    /// Runs the plugin on `images` with `model`. Blocking: call from a blocking thread.
    pub fn detect(
        &self,
        runtime: &PluginRuntime,
        limits: &CallLimits,
        model: &LoadedModel,
        images: Vec<RgbImage>,
        params: &DetectParams,
    ) -> Result<CallOutcome<Vec<Vec<Detection>>>, CallError> {
        let started = Instant::now();
        let graph_name = model.description.id.clone();
        let mut call = runtime.store(limits, &graph_name, model.onnx.clone());
        let instance: ObjectDetection = match self.pre.instantiate(&mut call.store) {
            Ok(instance) => instance,
            Err(e) => return Err(CallError::from_trap(&self.name, limits, e, &call)),
        };
        let info = model_info(&model.description, &graph_name);
        let images: Vec<wit::Image> = images
            .into_iter()
            .map(|i| wit::Image {
                width: i.width,
                height: i.height,
                rgb: i.rgb,
            })
            .collect();
        let params = DetectionParams {
            confidence: params.confidence,
            iou_threshold: params.iou_threshold,
            class_agnostic_nms: params.class_agnostic_nms,
            max_detections: params.max_detections,
            class_filter: params.class_filter.clone(),
        };
        let result = match instance
            .inference_plugins_detection()
            .call_detect(&mut call.store, &info, &images, &params)
        {
            Ok(result) => result,
            Err(e) => return Err(CallError::from_trap(&self.name, limits, e, &call)),
        };
        let model_runs = call.runs.load(std::sync::atomic::Ordering::Relaxed);
        match result {
            Ok(predictions) => Ok(CallOutcome {
                value: predictions,
                elapsed: started.elapsed(),
                model_runs,
            }),
            Err(e) => Err(CallError::Plugin {
                plugin: self.name.clone(),
                kind: match e.kind {
                    wit::ErrorKind::InvalidInput => super::PluginErrorKind::InvalidInput,
                    wit::ErrorKind::UnsupportedModel => super::PluginErrorKind::UnsupportedModel,
                    wit::ErrorKind::InferenceFailed => super::PluginErrorKind::InferenceFailed,
                },
                message: e.message,
            }),
        }
    }
}

fn model_info(d: &ModelDescription, graph: &str) -> wit::ModelInfo {
    wit::ModelInfo {
        id: d.id.clone(),
        graph: graph.to_string(),
        task: d.task.roboflow_name().to_string(),
        class_names: d.class_names.clone(),
        input_name: d.input_name.clone(),
        input_width: d.input_width,
        input_height: d.input_height,
        max_batch: d.max_batch,
        channel_order: if d.channels_last {
            wit::ChannelOrder::Nhwc
        } else {
            wit::ChannelOrder::Nchw
        },
        resize: match d.resize {
            Resize::Letterbox => wit::ResizeMode::Letterbox,
            Resize::Stretch => wit::ResizeMode::Stretch,
            Resize::CenterCrop => wit::ResizeMode::CenterCrop,
        },
        pad_value: d.pad_value,
        mean: d.mean.to_vec(),
        std: d.std.to_vec(),
        metadata: d.metadata.clone(),
    }
}
