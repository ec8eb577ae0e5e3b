//! The host's Rust types for the WIT's shared interfaces: `inference:plugins/types` (with the
//! `image` resource, implemented in `super::imaging`) and `inference:plugins/imaging`. Every
//! task world's bindings (in `crate::tasks`) reuse them, so a `model-info` or a `detection` is one
//! Rust type whichever plugin gets it. They serve components built against the WIT's 0.1.0 too
//! (the component model checks records and variants by their structure), whose images are the
//! records of [`v1`].

wasmtime::component::bindgen!({
    path: "../wit",
    interfaces: "
        import inference:plugins/types@0.2.0;
        import inference:plugins/imaging@0.2.0;
    ",
    with: {
        "inference:plugins/types.image": LentImage,
        "wasi:nn/tensor.tensor": wasmtime_wasi_nn::Tensor,
    },
    imports: { default: trappable },
});

pub use inference::plugins::imaging;
pub use inference::plugins::types::*;

/// An `image` handle's image: its place in the call's lent images (`super::imaging::Lent`).
pub struct LentImage {
    pub(super) index: usize,
}

/// The WIT package version (`inference:plugins@…`) the host's bindings are built from.
pub const WIT_VERSION: &str = "0.2.0";

/// What the WIT's 0.1.0 has that 0.2.0 has not.
pub mod v1 {
    /// A 0.1.0 image: the pixels, copied into the plugin.
    #[derive(wasmtime::component::ComponentType, wasmtime::component::Lift, wasmtime::component::Lower, Clone)]
    #[component(record)]
    pub struct Image {
        pub width: u32,
        pub height: u32,
        pub rgb: Vec<u8>,
    }
}
