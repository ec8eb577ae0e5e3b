//! Task plugins: loading components from the plugins directory and calling them.

pub mod bindings;
pub mod runtime;
pub mod task;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::models::Task;

pub use runtime::{CallLimits, PluginRuntime};
pub use task::{TaskOutput, TaskParams, TaskPlugin};

/// A successful call and what it cost.
pub struct CallOutcome<T> {
    pub value: T,
    pub elapsed: Duration,
    pub model_runs: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginErrorKind {
    InvalidInput,
    UnsupportedModel,
    InferenceFailed,
}

/// Why a plugin call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("plugin {plugin} exceeded its time limit of {limit:?}")]
    Timeout { plugin: String, limit: Duration },
    #[error("plugin {plugin} trapped: {reason}")]
    Trap { plugin: String, reason: String },
    #[error("plugin {plugin} failed: {message}")]
    Plugin {
        plugin: String,
        kind: PluginErrorKind,
        message: String,
    },
}

impl CallError {
    pub(crate) fn from_trap(
        plugin: &str,
        limits: &CallLimits,
        error: wasmtime::Error,
        call: &runtime::CallStore,
    ) -> Self {
        if matches!(error.downcast_ref::<wasmtime::Trap>(), Some(wasmtime::Trap::Interrupt)) {
            return CallError::Timeout {
                plugin: plugin.to_string(),
                limit: limits.deadline,
            };
        }
        // The trap's root cause and the plugin's last words (a panic message) explain it;
        // the wasm backtrace goes to the debug log only.
        tracing::debug!(plugin, "plugin trap: {error:?}");
        let mut reason = match error.downcast_ref::<wasmtime::Trap>() {
            Some(trap) => trap.to_string(),
            None => error.root_cause().to_string(),
        };
        if reason.contains("growing memory") {
            reason.push_str(&format!(" (memory limit {} MiB)", limits.memory_bytes >> 20));
        }
        if let Some(line) = call.last_stderr_line() {
            reason.push_str(&format!(" ({line})"));
        }
        CallError::Trap {
            plugin: plugin.to_string(),
            reason,
        }
    }
}

/// The plugins serving each task, found as `<plugins-dir>/<task>.wasm`.
pub struct PluginSet {
    plugins: HashMap<Task, TaskPlugin>,
}

/// The file name (without `.wasm`) of each task's plugin.
pub fn file_stem(task: Task) -> &'static str {
    match task {
        Task::ObjectDetection => "object-detection",
        Task::Classification => "classification",
        Task::InstanceSegmentation => "instance-segmentation",
        Task::KeypointDetection => "keypoint-detection",
    }
}

impl PluginSet {
    /// Loads every task plugin found in `dir`; a plugin that fails to compile or does not
    /// fit its world is an error (the operator must see it at start-up).
    pub fn load(runtime: &PluginRuntime, dir: &Path, cache_dir: Option<&Path>) -> Result<Self> {
        let mut plugins = HashMap::new();
        for task in Task::ALL {
            let name = file_stem(task);
            let path = dir.join(format!("{name}.wasm"));
            if !path.is_file() {
                tracing::warn!(plugin = %path.display(), "no plugin for {}", task.roboflow_name());
                continue;
            }
            let component = runtime.compile(&path, cache_dir)?;
            let plugin = TaskPlugin::new(runtime, name.to_string(), task, &component)
                .with_context(|| format!("plugin {} does not fit the {name} world", path.display()))?;
            tracing::info!(plugin = %path.display(), "plugin loaded");
            plugins.insert(task, plugin);
        }
        Ok(Self { plugins })
    }

    pub fn get(&self, task: Task) -> Option<&TaskPlugin> {
        self.plugins.get(&task)
    }
}
