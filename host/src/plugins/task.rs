//! A compiled task plugin and one call into it: fresh store, instantiate, call, account.

use std::time::Instant;

use anyhow::Result;
use wasmtime::component::{Component, InstancePre};

use super::bindings::{self, classify, keypoints_api, segment, wit};
use super::manifest::World;
use super::runtime::{CallLimits, CallState, PluginRuntime};
use super::{CallError, CallOutcome, PluginErrorKind};
use crate::input::RgbImage;
use crate::models::{LoadedModel, ModelDescription, Resize, ScoreActivation};

/// A task's request parameters, in the WIT's terms.
pub enum TaskParams {
    Detection(wit::DetectionParams),
    Classification(classify::ClassificationParams),
    Segmentation(segment::SegmentationParams),
    Keypoints(keypoints_api::KeypointParams),
    /// The request's JSON body without its images.
    Custom(String),
}

/// A task's results, one entry per image.
pub enum TaskOutput {
    Detection(Vec<Vec<wit::Detection>>),
    Classification(Vec<classify::Classification>),
    Segmentation(Vec<Vec<segment::Instance>>),
    Keypoints(Vec<Vec<keypoints_api::Pose>>),
    /// One JSON document for the whole call, validated by the host.
    Custom(serde_json::Value),
}

impl TaskOutput {
    pub fn len(&self) -> usize {
        match self {
            TaskOutput::Detection(v) => v.len(),
            TaskOutput::Classification(v) => v.len(),
            TaskOutput::Segmentation(v) => v.len(),
            TaskOutput::Keypoints(v) => v.len(),
            TaskOutput::Custom(_) => 1,
        }
    }

    /// About how many bytes the typed results take (strings, lists and numbers), for the
    /// output limit; custom documents are measured exactly where they are checked.
    fn approx_bytes(&self) -> usize {
        const BOX: usize = 6 * 4;
        let detection = |d: &wit::Detection| BOX + d.class_name.len();
        match self {
            TaskOutput::Detection(v) => v.iter().flatten().map(detection).sum(),
            TaskOutput::Classification(v) => v.iter().flat_map(|c| &c.scores).map(|s| 8 + s.class_name.len()).sum(),
            TaskOutput::Segmentation(v) => v
                .iter()
                .flatten()
                .map(|i| detection(&i.detection) + 8 * i.points.len() + i.rle.as_ref().map_or(0, |r| r.counts.len()))
                .sum(),
            TaskOutput::Keypoints(v) => v
                .iter()
                .flatten()
                .map(|p| detection(&p.detection) + p.keypoints.iter().map(|k| 16 + k.class_name.len()).sum::<usize>())
                .sum(),
            TaskOutput::Custom(_) => 0,
        }
    }

    /// Whether the plugin answered for each of `images` images.
    fn fits(&self, images: usize) -> bool {
        matches!(self, TaskOutput::Custom(_)) || self.len() == images
    }
}

enum Pre {
    Detection(bindings::detection::ObjectDetectionPre<CallState>),
    Classification(bindings::classification::ClassificationPre<CallState>),
    Segmentation(bindings::segmentation::InstanceSegmentationPre<CallState>),
    Keypoints(bindings::keypoints::KeypointDetectionPre<CallState>),
    Custom(bindings::custom::CustomTaskPre<CallState>),
}

/// A compiled plugin for one task, ready to instantiate per call.
pub struct TaskPlugin {
    pub name: String,
    pre: Pre,
}

impl TaskPlugin {
    /// Type-checks `component` against `world`.
    pub fn new(runtime: &PluginRuntime, name: String, world: World, component: &Component) -> Result<Self> {
        let instance_pre: InstancePre<CallState> = runtime.linker().instantiate_pre(component)?;
        let pre = match world {
            World::ObjectDetection => Pre::Detection(bindings::detection::ObjectDetectionPre::new(instance_pre)?),
            World::Classification => {
                Pre::Classification(bindings::classification::ClassificationPre::new(instance_pre)?)
            }
            World::InstanceSegmentation => {
                Pre::Segmentation(bindings::segmentation::InstanceSegmentationPre::new(instance_pre)?)
            }
            World::KeypointDetection => Pre::Keypoints(bindings::keypoints::KeypointDetectionPre::new(instance_pre)?),
            World::CustomTask => Pre::Custom(bindings::custom::CustomTaskPre::new(instance_pre)?),
        };
        Ok(Self { name, pre })
    }

    /// Runs the plugin on `images` with `model`. Blocking: call from a blocking thread.
    /// The pixels are lent to the call and handed back in `images` when it returns.
    pub fn call(
        &self,
        runtime: &PluginRuntime,
        limits: &CallLimits,
        model: &LoadedModel,
        images: &mut [RgbImage],
        params: TaskParams,
    ) -> Result<CallOutcome<TaskOutput>, CallError> {
        let started = Instant::now();
        let graph_name = model.description.id.clone();
        let mut call = runtime.store(limits, &graph_name, model.onnx.clone());
        let info = model_info(&model.description, &graph_name);
        let lent = images;
        let images: Vec<wit::Image> = lent
            .iter_mut()
            .map(|i| wit::Image {
                width: i.width,
                height: i.height,
                rgb: std::mem::take(&mut i.rgb),
            })
            .collect();
        let store = &mut call.store;
        // Instantiation and the call both run guest code: a trap in either is the plugin's.
        let result: wasmtime::Result<Result<TaskOutput, wit::PluginError>> = (|| match (&self.pre, params) {
            (Pre::Detection(pre), TaskParams::Detection(p)) => {
                let instance = pre.instantiate(&mut *store)?;
                let r = instance
                    .inference_plugins_detection()
                    .call_detect(&mut *store, &info, &images, &p)?;
                Ok(r.map(TaskOutput::Detection))
            }
            (Pre::Classification(pre), TaskParams::Classification(p)) => {
                let instance = pre.instantiate(&mut *store)?;
                let r = instance
                    .inference_plugins_classify()
                    .call_classify(&mut *store, &info, &images, p)?;
                Ok(r.map(TaskOutput::Classification))
            }
            (Pre::Segmentation(pre), TaskParams::Segmentation(p)) => {
                let instance = pre.instantiate(&mut *store)?;
                let r = instance
                    .inference_plugins_segment()
                    .call_segment(&mut *store, &info, &images, &p)?;
                Ok(r.map(TaskOutput::Segmentation))
            }
            (Pre::Keypoints(pre), TaskParams::Keypoints(p)) => {
                let instance = pre.instantiate(&mut *store)?;
                let r =
                    instance
                        .inference_plugins_keypoints()
                        .call_detect_keypoints(&mut *store, &info, &images, &p)?;
                Ok(r.map(TaskOutput::Keypoints))
            }
            (Pre::Custom(pre), TaskParams::Custom(p)) => {
                let instance = pre.instantiate(&mut *store)?;
                let r = instance
                    .inference_plugins_custom()
                    .call_run(&mut *store, &info, &images, &p)?;
                Ok(r.map(|json| TaskOutput::Custom(serde_json::Value::String(json))))
            }
            _ => Err(wasmtime::format_err!(
                "parameters for another task were sent to plugin {}",
                self.name
            )),
        })();
        // The guest got copies of the pixels: hand them back (for drawing the predictions).
        let count = images.len();
        for (image, wit_image) in lent.iter_mut().zip(images) {
            image.rgb = wit_image.rgb;
        }
        let result = result.map_err(|e| CallError::from_trap(&self.name, limits, e, &call))?;
        let model_runs = call.runs.load(std::sync::atomic::Ordering::Relaxed);
        match result {
            Ok(TaskOutput::Custom(serde_json::Value::String(json))) => {
                // The plugin's document must be JSON and within its size limit.
                if json.len() > limits.output_bytes {
                    return Err(CallError::Plugin {
                        plugin: self.name.clone(),
                        kind: PluginErrorKind::OutputTooLarge,
                        message: format!(
                            "returned {} bytes, over its output limit of {} bytes",
                            json.len(),
                            limits.output_bytes
                        ),
                    });
                }
                let value = serde_json::from_str(&json).map_err(|e| CallError::Plugin {
                    plugin: self.name.clone(),
                    kind: PluginErrorKind::InvalidOutput,
                    message: format!("returned invalid JSON: {e}"),
                })?;
                Ok(CallOutcome {
                    value: TaskOutput::Custom(value),
                    elapsed: started.elapsed(),
                    model_runs,
                })
            }
            // Typed results get the output limit per image (a batch's results grow with it).
            Ok(value) if value.approx_bytes() > limits.output_bytes.saturating_mul(count.max(1)) => {
                Err(CallError::Plugin {
                    plugin: self.name.clone(),
                    kind: PluginErrorKind::OutputTooLarge,
                    message: format!(
                        "returned about {} bytes of results for {} image(s), over its output limit of {} bytes per image",
                        value.approx_bytes(),
                        count,
                        limits.output_bytes
                    ),
                })
            }
            Ok(value) if value.fits(count) => Ok(CallOutcome {
                value,
                elapsed: started.elapsed(),
                model_runs,
            }),
            Ok(value) => Err(CallError::Trap {
                plugin: self.name.clone(),
                reason: format!("returned {} results for {count} images", value.len()),
            }),
            Err(e) => Err(CallError::Plugin {
                plugin: self.name.clone(),
                kind: match e.kind {
                    wit::ErrorKind::InvalidInput => PluginErrorKind::InvalidInput,
                    wit::ErrorKind::UnsupportedModel => PluginErrorKind::UnsupportedModel,
                    wit::ErrorKind::InferenceFailed => PluginErrorKind::InferenceFailed,
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
        score_activation: match d.score_activation {
            ScoreActivation::None => wit::Activation::None,
            ScoreActivation::Softmax => wit::Activation::Softmax,
        },
        multi_label: d.multi_label,
        keypoint_names: d.keypoint_names.clone(),
        metadata: d.metadata.clone(),
    }
}
