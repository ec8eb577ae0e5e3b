//! Host bindings generated from `wit/inference.wit`, one module per task world. The shared
//! `types` interface is generated once (with the object-detection world) and reused by the
//! others, so a `model-info` or `detection` is one Rust type whichever plugin gets it.

pub mod detection {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "inference:plugins/object-detection",
    });
}

pub mod classification {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "inference:plugins/classification",
        with: { "inference:plugins/types": super::detection::inference::plugins::types },
    });
}

pub mod segmentation {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "inference:plugins/instance-segmentation",
        with: { "inference:plugins/types": super::detection::inference::plugins::types },
    });
}

pub mod keypoints {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "inference:plugins/keypoint-detection",
        with: { "inference:plugins/types": super::detection::inference::plugins::types },
    });
}

pub use classification::exports::inference::plugins::classify;
pub mod custom {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "inference:plugins/custom-task",
        with: { "inference:plugins/types": super::detection::inference::plugins::types },
    });
}

/// The shared WIT types (`inference:plugins/types`).
pub use detection::inference::plugins::types as wit;
pub use keypoints::exports::inference::plugins::keypoints as keypoints_api;
pub use segmentation::exports::inference::plugins::segment;
