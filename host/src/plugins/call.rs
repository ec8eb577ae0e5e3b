//! One call into a plugin, whatever its world: a fresh store with the call's limits and the
//! model's graph (none for a workflow block), the images lent to the store (`imaging`), the
//! world's export invoked (by the caller, which knows the world's bindings), and the outcome
//! checked and accounted.

use std::time::Instant;

use wasmtime::Store;

use super::imaging::Lent;
use super::registry::LoadedPlugin;
use super::runtime::{CallLimits, CallState, CallStore, PluginRuntime};
use super::world::Bound;
use super::{wit, CallError, CallOutcome, PluginErrorKind};
use crate::input::RgbImage;
use crate::models::{LoadedModel, ModelDescription, Resize, ScoreActivation};

/// Calls a world's export: instantiate from the bound component, then call, both in `store`,
/// whose state holds the call's images (`CallState::image_handles`).
pub type Invoke<'a, O> = Box<
    dyn FnOnce(&Bound, &mut Store<CallState>, &wit::ModelInfo) -> wasmtime::Result<Result<O, wit::PluginError>> + 'a,
>;

/// Calls a world's export that takes no model (a workflow block's `run`): instantiate, then call.
pub type Call<'a, O> =
    Box<dyn FnOnce(&Bound, &mut Store<CallState>) -> wasmtime::Result<Result<O, wit::PluginError>> + 'a>;

impl LoadedPlugin {
    /// Runs `invoke` on `images` with `model`'s graph. Blocking: call from a blocking thread.
    /// The pixels are lent to the call and handed back in `images` when it returns; without
    /// `keep`, an image whose handle the plugin dropped comes back without its pixels (freed as
    /// soon as the plugin let go of them, typically once its input tensor is made).
    pub fn call<O>(
        &self,
        runtime: &PluginRuntime,
        limits: &CallLimits,
        model: &LoadedModel,
        images: &mut [RgbImage],
        keep: bool,
        invoke: Invoke<'_, O>,
    ) -> Result<CallOutcome<O>, CallError> {
        let started = Instant::now();
        let graph_name = model.description.id.clone();
        let mut call = runtime.store(limits, Some((&graph_name, model.onnx.clone())));
        let info = model_info(&model.description, &graph_name, model.images_per_run());
        // The images move into the call's state whole and come back after it. The input tensors
        // imaging makes have their own allowance of the call's memory limit, counted over the
        // tensors still alive (they live in the host, not in the plugin's linear memory).
        let lent = images.iter_mut().map(std::mem::take).collect();
        call.store.data_mut().lend(Lent::new(lent, keep, limits.memory_bytes));
        // Instantiation and the call both run guest code: a trap in either is the plugin's.
        let result = invoke(&self.bound, &mut call.store, &info);
        // Hand the pixels back (for drawing the predictions, with `keep`).
        for (image, lent) in images.iter_mut().zip(call.store.data_mut().take_lent().into_images()) {
            *image = lent;
        }
        let value = self.outcome(limits, result, &call)?;
        let ended = Instant::now();
        let span = call.runs.span();
        if let (Some(first), Some(last)) = (span.first_started, span.last_ended) {
            crate::metrics::record_plugin_stages(&model.description.id, first - started, span.in_runs, ended - last);
        }
        Ok(CallOutcome {
            value,
            elapsed: ended - started,
            model_runs: call.runs.count(),
        })
    }

    /// Runs `call` with no model: a store with the call's limits and no graph. Blocking.
    pub fn call_without_model<O>(
        &self,
        runtime: &PluginRuntime,
        limits: &CallLimits,
        call: Call<'_, O>,
    ) -> Result<CallOutcome<O>, CallError> {
        let started = Instant::now();
        let mut store = runtime.store(limits, None);
        let result = call(&self.bound, &mut store.store);
        let value = self.outcome(limits, result, &store)?;
        Ok(CallOutcome {
            value,
            elapsed: started.elapsed(),
            model_runs: 0,
        })
    }

    /// A call's result: a trap (or the deadline) and an error the plugin returned, as call errors.
    fn outcome<O>(
        &self,
        limits: &CallLimits,
        result: wasmtime::Result<Result<O, wit::PluginError>>,
        call: &CallStore,
    ) -> Result<O, CallError> {
        result
            .map_err(|e| CallError::from_trap(self.name(), limits, e, call))?
            .map_err(|e| CallError::Plugin {
                plugin: self.name().to_string(),
                kind: match e.kind {
                    wit::ErrorKind::InvalidInput => PluginErrorKind::InvalidInput,
                    wit::ErrorKind::UnsupportedModel => PluginErrorKind::UnsupportedModel,
                    wit::ErrorKind::InferenceFailed => PluginErrorKind::InferenceFailed,
                },
                message: e.message,
            })
    }

    /// Checks a typed world's answer: one result per image, and within the output limit per
    /// image (`bytes` estimates a result's size: strings, lists and numbers).
    pub fn check_results<T>(
        &self,
        limits: &CallLimits,
        results: Vec<T>,
        images: usize,
        bytes: impl Fn(&T) -> usize,
    ) -> Result<Vec<T>, CallError> {
        if results.len() != images {
            return Err(CallError::Trap {
                plugin: self.name().to_string(),
                reason: format!("returned {} results for {images} images", results.len()),
            });
        }
        let total: usize = results.iter().map(bytes).sum();
        if total > limits.output_bytes.saturating_mul(images.max(1)) {
            return Err(CallError::Plugin {
                plugin: self.name().to_string(),
                kind: PluginErrorKind::OutputTooLarge,
                message: format!(
                    "returned about {total} bytes of results for {images} image(s), over its output limit of {} bytes per image",
                    limits.output_bytes
                ),
            });
        }
        Ok(results)
    }
}

/// Bytes a detection takes in a result (its numbers and class name), for output limits.
pub fn detection_bytes(d: &wit::Detection) -> usize {
    6 * 4 + d.class_name.len()
}

/// What the plugin is told of the model; `images_per_run` (`LoadedModel::images_per_run`)
/// stands in for a dynamic batch dimension, so that the plugin's runs stay within the host's bound.
fn model_info(d: &ModelDescription, graph: &str, images_per_run: Option<usize>) -> wit::ModelInfo {
    wit::ModelInfo {
        id: d.id.clone(),
        graph: graph.to_string(),
        task: d.task.clone(),
        class_names: d.class_names.clone(),
        input_name: d.input_name.clone(),
        input_width: d.input_width,
        input_height: d.input_height,
        max_batch: images_per_run.map_or(0, |n| u32::try_from(n).unwrap_or(0)),
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
