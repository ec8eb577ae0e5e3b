//! Where models come from and which are loaded.

pub mod description;
pub mod id;
pub mod store;

pub use description::{ModelDescription, Resize, ScoreActivation, Task};
pub use id::{InvalidModelId, ModelId};
pub use store::{LoadedModel, ModelError, ModelStore};
