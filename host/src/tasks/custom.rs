//! Custom tasks: plugins with a task of their own, served at the route their manifest names.
//! Any images in, one JSON document out (validated here: JSON, within the output limit).

use serde::Serialize;
use utoipa::ToSchema;
use wasmtime::component::InstancePre;
use wasmtime::Store;

use super::ImageSize;
use crate::plugins::legacy::Legacy;
use crate::plugins::{wit, Bound, CallError, CallLimits, CallState, LoadedPlugin, PluginErrorKind, World};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "inference:plugins/custom-task",
        with: {
            "inference:plugins/types": crate::plugins::wit,
            "inference:plugins/imaging": crate::plugins::wit::imaging,
        },
    });
}

pub const WORLD: &str = "custom-task";

/// The custom-task world, for the plugin registry.
pub fn world() -> World {
    World {
        name: WORLD,
        routes: &[],
        block: None,
        bind,
    }
}

fn bind(pre: InstancePre<CallState>) -> anyhow::Result<Bound> {
    Legacy::or_bind(pre, "inference:plugins/custom@0.1.0", "run", |pre| {
        Ok(Box::new(bindings::CustomTaskPre::new(pre)?))
    })
}

/// Calls the plugin's `run` with the request's parameters (its JSON body without the images).
pub fn invoke(
    bound: &Bound,
    store: &mut Store<CallState>,
    model: &wit::ModelInfo,
    params: &str,
) -> wasmtime::Result<Result<String, wit::PluginError>> {
    if let Some(legacy) = bound.downcast_ref::<Legacy>() {
        return super::invoke_legacy(legacy, store, model, params);
    }
    let images = store.data_mut().image_handles()?;
    let instance = super::bound_as::<bindings::CustomTaskPre<CallState>>(bound, WORLD)?.instantiate(&mut *store)?;
    instance
        .inference_plugins_custom()
        .call_run(&mut *store, model, &images, params)
}

/// The plugin's document, checked: within its output limit, and JSON.
pub fn document(plugin: &LoadedPlugin, limits: &CallLimits, json: String) -> Result<serde_json::Value, CallError> {
    if json.len() > limits.output_bytes {
        return Err(CallError::Plugin {
            plugin: plugin.name().to_string(),
            kind: PluginErrorKind::OutputTooLarge,
            message: format!(
                "returned {} bytes, over its output limit of {} bytes",
                json.len(),
                limits.output_bytes
            ),
        });
    }
    serde_json::from_str(&json).map_err(|e| CallError::Plugin {
        plugin: plugin.name().to_string(),
        kind: PluginErrorKind::InvalidOutput,
        message: format!("returned invalid JSON: {e}"),
    })
}

/// A custom-task plugin's answer: its own JSON document as `result`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CustomResponse {
    pub inference_id: String,
    pub time: f64,
    /// The plugin that answered.
    pub plugin: String,
    /// The request's images' sizes, in order.
    pub images: Vec<ImageSize>,
    /// The plugin's own JSON document.
    #[schema(value_type = Object)]
    pub result: serde_json::Value,
}
