//! The loaded set: models are read from the models directory on first use (or `/model/add`)
//! and stay loaded until removed. Concurrent first requests for one model load it once.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use tokio::sync::OnceCell;

use super::description::ModelDescription;
use super::id::ModelId;
use crate::nn::{OnnxModel, SessionOptions};

/// A model ready to serve.
pub struct LoadedModel {
    pub description: Arc<ModelDescription>,
    pub onnx: Arc<OnnxModel>,
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("Model {0} not found (no {1})")]
    NotFound(String, String),
    #[error("Model {id} cannot be loaded: {reason}")]
    Broken { id: String, reason: String },
}

type Slot = Arc<OnceCell<Arc<LoadedModel>>>;

pub struct ModelStore {
    root: PathBuf,
    options: SessionOptions,
    slots: Mutex<HashMap<ModelId, Slot>>,
}

impl ModelStore {
    pub fn new(root: PathBuf, options: SessionOptions) -> Self {
        Self {
            root,
            options,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// Returns the model, loading it if needed. Returns whether this call loaded it.
    pub async fn get(&self, id: &ModelId) -> Result<(Arc<LoadedModel>, bool), ModelError> {
        let slot = self.slots.lock().entry(id.clone()).or_default().clone();
        if let Some(model) = slot.get() {
            return Ok((model.clone(), false));
        }
        let mut loaded_here = false;
        let result = slot
            .get_or_try_init(|| {
                loaded_here = true;
                self.load(id)
            })
            .await
            .cloned();
        if result.is_err() {
            // Don't keep a failed slot: a fixed file must load on the next request.
            let mut slots = self.slots.lock();
            if slots
                .get(id)
                .is_some_and(|s| Arc::ptr_eq(s, &slot) && s.get().is_none())
            {
                slots.remove(id);
            }
        }
        result.map(|m| (m, loaded_here))
    }

    async fn load(&self, id: &ModelId) -> Result<Arc<LoadedModel>, ModelError> {
        let dir = self.root.join(&id.project).join(&id.version);
        let weights = dir.join("weights.onnx");
        if !weights.is_file() {
            return Err(ModelError::NotFound(id.to_string(), format!("{}", weights.display())));
        }
        let options = self.options.clone();
        let name = id.to_string();
        let started = Instant::now();
        let loaded = tokio::task::spawn_blocking(move || -> anyhow::Result<LoadedModel> {
            let onnx = OnnxModel::load(&weights, options)?;
            let description = ModelDescription::from_dir(&name, &dir, onnx.signature())?;
            Ok(LoadedModel {
                description: Arc::new(description),
                onnx,
            })
        })
        .await
        .map_err(|e| ModelError::Broken {
            id: id.to_string(),
            reason: format!("loader crashed: {e}"),
        })?
        .map_err(|e| ModelError::Broken {
            id: id.to_string(),
            reason: format!("{e:#}"),
        })?;
        tracing::info!(model = %id, task = loaded.description.task.roboflow_name(),
            input = format!("{}x{}", loaded.description.input_width, loaded.description.input_height),
            classes = loaded.description.class_names.len(),
            ms = started.elapsed().as_millis() as u64, "model loaded");
        Ok(Arc::new(loaded))
    }

    /// Unloads one model; its files stay on disk. Returns whether it was loaded.
    pub fn remove(&self, id: &ModelId) -> bool {
        self.slots.lock().remove(id).is_some_and(|s| s.get().is_some())
    }

    pub fn clear(&self) {
        self.slots.lock().clear();
    }

    /// The models loaded now, by id.
    pub fn loaded(&self) -> BTreeMap<ModelId, Arc<LoadedModel>> {
        self.slots
            .lock()
            .iter()
            .filter_map(|(id, slot)| slot.get().map(|m| (id.clone(), m.clone())))
            .collect()
    }
}
