//! Models: their ids, what a model is (`description`), where models come from (`sources`: the
//! cache, the operator's `stores`, `roboflow`; downloads in `fetch`), the download `cache`, the
//! models on disk (`catalog`), the operator's `budget`s, and the models loaded now (`loaded`).

pub mod bucket;
pub mod budget;
pub mod cache;
pub mod catalog;
pub mod description;
pub mod error;
pub mod fetch;
pub mod id;
pub mod loaded;
pub mod roboflow;
pub mod sources;
pub mod stores;

pub use description::{ModelDescription, Resize, ScoreActivation};
pub use error::ModelError;
pub use id::{InvalidModelId, ModelId};
pub use loaded::{Limits, LoadedModel, LoadedModels};
