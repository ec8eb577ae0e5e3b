//! Plugins: their manifests, the installed set (hot-reloaded, chosen per model), the runtime, and
//! calls (with a model, or without: workflow blocks). Which worlds exist and how each is called is registered by `crate::tasks`.

pub mod block;
pub mod call;
pub mod imaging;
pub mod legacy;
pub mod manifest;
pub mod registry;
pub mod runtime;
pub mod wit;
pub mod world;

use std::time::Duration;

pub use block::BlockSpec;
pub use call::detection_bytes;
pub use registry::{Chosen, LoadedPlugin, NoPlugin, PluginRegistry, Reason};
pub use runtime::{CallLimits, CallState, PluginRuntime};
pub use world::{Bound, World, Worlds};

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
    /// A custom-task plugin's document was over its output limit.
    OutputTooLarge,
    /// A custom-task plugin's document was not JSON.
    InvalidOutput,
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
    /// Counts the failure: traps and timeouts, or the kind of error the plugin returned.
    pub fn record(&self) {
        match self {
            CallError::Timeout { plugin, .. } => crate::metrics::record_plugin_trap(plugin, "timeout"),
            CallError::Trap { plugin, .. } => crate::metrics::record_plugin_trap(plugin, "trap"),
            CallError::Plugin { plugin, kind, .. } => crate::metrics::record_plugin_error(
                plugin,
                match kind {
                    PluginErrorKind::InvalidInput => "invalid_input",
                    PluginErrorKind::UnsupportedModel => "unsupported_model",
                    PluginErrorKind::InferenceFailed => "inference_failed",
                    PluginErrorKind::OutputTooLarge => "output_too_large",
                    PluginErrorKind::InvalidOutput => "invalid_output",
                },
            ),
        }
    }

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
