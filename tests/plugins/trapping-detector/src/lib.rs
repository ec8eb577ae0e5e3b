//! A deliberately broken object-detection plugin: it panics (a WebAssembly trap) on every
//! call, so the tests can check that the host answers with a JSON error and keeps serving.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "object-detection",
    generate_all,
});

use exports::inference::plugins::detection::Guest;
use inference::plugins::types::{Detection, DetectionParams, Image, ModelInfo, PluginError};

struct Plugin;

impl Guest for Plugin {
    fn detect(
        model: ModelInfo,
        images: Vec<Image>,
        _params: DetectionParams,
    ) -> Result<Vec<Vec<Detection>>, PluginError> {
        panic!(
            "trapping-detector always panics ({} images for {})",
            images.len(),
            model.id
        );
    }
}

export!(Plugin);
