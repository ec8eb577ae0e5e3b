//! The host's Rust types for the WIT's shared `inference:plugins/types` interface. Every task
//! world's bindings (in `crate::tasks`) reuse them, so a `model-info` or a `detection` is one Rust
//! type whichever plugin gets it.

wasmtime::component::bindgen!({
    path: "../wit",
    interfaces: "import inference:plugins/types@0.1.0;",
});

pub use inference::plugins::types::*;
