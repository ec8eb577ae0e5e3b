//! Where models come from and which are loaded.

pub mod bucket;
pub mod budget;
pub mod cache;
pub mod catalog;
pub mod cmd;
pub mod description;
pub mod id;
pub mod roboflow;
pub mod sources;
pub mod store;

pub use description::{ModelDescription, Resize, ScoreActivation, Task};
pub use id::{InvalidModelId, ModelId};
pub use store::{Limits, LoadedModel, ModelError, ModelStore};
