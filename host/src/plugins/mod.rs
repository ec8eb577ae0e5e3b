//! Task plugins: loading components from the plugins directory and calling them.

pub mod detection;
pub mod runtime;

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

pub use detection::{DetectParams, DetectionPlugin};
pub use runtime::{CallLimits, PluginRuntime};

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
    fn from_trap(plugin: &str, limits: &CallLimits, error: wasmtime::Error, call: &runtime::CallStore) -> Self {
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
        if let Some(line) = call.last_stderr_line() {
            reason.push_str(&format!(" ({line})"));
        }
        CallError::Trap {
            plugin: plugin.to_string(),
            reason,
        }
    }
}

/// The plugins serving each task.
pub struct PluginSet {
    pub detection: Option<DetectionPlugin>,
}

impl PluginSet {
    /// Loads `<dir>/object-detection.wasm` (and, later, the other task plugins).
    pub fn load(runtime: &PluginRuntime, dir: &Path) -> Result<Self> {
        let path = dir.join("object-detection.wasm");
        let detection = if path.is_file() {
            let component = runtime.compile(&path)?;
            let plugin = DetectionPlugin::new(runtime, "object-detection".into(), &component)
                .with_context(|| format!("plugin {} does not fit the object-detection world", path.display()))?;
            tracing::info!(plugin = %path.display(), "plugin loaded");
            Some(plugin)
        } else {
            tracing::warn!(dir = %dir.display(), "no object-detection.wasm plugin found; object detection is unavailable");
            None
        };
        Ok(Self { detection })
    }
}
