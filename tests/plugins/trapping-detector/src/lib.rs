//! A deliberately broken object-detection plugin: it panics (a WebAssembly trap) on every
//! call, so the tests can check that the host answers with a JSON error and keeps serving.

use guest::bindings::object_detection::exports::inference::plugins::detection::Guest;
use guest::wit::{Detection, DetectionParams, Image, ModelInfo, PluginError};
use inference_guest as guest;

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

guest::export_object_detection!(Plugin);
