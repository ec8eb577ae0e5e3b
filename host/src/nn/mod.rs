//! The wasi-nn side of the host: ONNX Runtime sessions behind graphs that plugins load by name.

pub mod batch;
pub mod graph;
pub mod runtime;

pub use graph::memory::trim as trim_heap;
pub use graph::{release_idle_sessions, CallGraph, CallRegistry, CallRuns, ModelSignature, OnnxModel, SessionOptions};
pub use runtime::Device;
