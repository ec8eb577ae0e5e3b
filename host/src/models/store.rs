//! The loaded set: models are read from the models directory on first use (or `/model/add`)
//! and stay loaded until removed. Concurrent first requests for one model load it once.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use tokio::sync::OnceCell;

use super::cache::ModelCache;
use super::description::ModelDescription;
use super::id::ModelId;
use super::sources::ModelSources;
use crate::nn::{OnnxModel, SessionOptions};

/// A model ready to serve.
pub struct LoadedModel {
    pub description: Arc<ModelDescription>,
    pub onnx: Arc<OnnxModel>,
}

#[derive(Clone, Debug, thiserror::Error)]
pub enum ModelError {
    #[error("Model {0} not found (no {1})")]
    NotFound(String, String),
    #[error("Model {id} cannot be loaded: {reason}")]
    Broken { id: String, reason: String },
    /// Offline, or no source could be reached: 503 with Retry-After.
    #[error("Model {id} is not available: {reason}")]
    Unavailable { id: String, reason: String },
    /// A source refused (Roboflow's 401/403/404): its status, passed through.
    #[error("Model {id}: {message}")]
    Upstream { id: String, status: u16, message: String },
    /// A malformed answer or a file that failed verification (deleted, never loaded): 502.
    #[error("Model {id} could not be downloaded: {reason}")]
    BadDownload { id: String, reason: String },
}

/// One model's single-flight cell, and the last failed load (shared with the requests that
/// waited on it, so a failing download is not retried once per queued request).
#[derive(Default)]
struct SlotInner {
    cell: OnceCell<Arc<LoadedModel>>,
    failure: Mutex<Option<Failure>>,
}

struct Failure {
    at: Instant,
    api_key: Option<String>,
    error: ModelError,
}

type Slot = Arc<SlotInner>;

pub struct ModelStore {
    root: PathBuf,
    options: SessionOptions,
    slots: Mutex<HashMap<ModelId, Slot>>,
    /// The cache and remote sources behind the models directory.
    sources: ModelSources,
}

impl ModelStore {
    pub fn new(root: PathBuf, options: SessionOptions) -> Self {
        Self {
            root,
            options,
            slots: Mutex::new(HashMap::new()),
            sources: ModelSources::none(),
        }
    }

    /// Adds the cache and remote sources, tried after the models directory.
    pub fn with_sources(mut self, sources: ModelSources) -> Self {
        self.sources = sources;
        self
    }

    /// The models directory.
    pub fn models_dir(&self) -> &Path {
        &self.root
    }

    /// The download cache, when there is one.
    pub fn cache(&self) -> Option<&ModelCache> {
        self.sources.cache()
    }

    /// `--offline`: no network call of any kind.
    pub fn offline(&self) -> bool {
        self.sources.offline()
    }

    /// Returns the model, loading it if needed. Returns whether this call loaded it.
    /// A model not on disk may be downloaded (from Roboflow with `api_key`); the download
    /// happens inside the model's single-flight slot: one per model at a time.
    pub async fn get_with_key(
        &self,
        id: &ModelId,
        api_key: Option<&str>,
    ) -> Result<(Arc<LoadedModel>, bool), ModelError> {
        let slot = self.slots.lock().entry(id.clone()).or_default().clone();
        if let Some(model) = slot.cell.get() {
            return Ok((model.clone(), false));
        }
        let waiting_since = Instant::now();
        let loaded_here = AtomicBool::new(false);
        let result = slot
            .cell
            .get_or_try_init(|| async {
                // A load (with the same key) failed while this request waited: share its answer.
                if let Some(failure) = slot.failure.lock().as_ref() {
                    if failure.at >= waiting_since && failure.api_key.as_deref() == api_key {
                        return Err(failure.error.clone());
                    }
                }
                loaded_here.store(true, Ordering::Relaxed);
                let result = self.load(id, api_key).await;
                if let Err(error) = &result {
                    *slot.failure.lock() = Some(Failure {
                        at: Instant::now(),
                        api_key: api_key.map(str::to_string),
                        error: error.clone(),
                    });
                }
                result
            })
            .await
            .cloned();
        if result.is_err() {
            // Don't keep a failed slot: a fixed file must load on the next request.
            let mut slots = self.slots.lock();
            if slots
                .get(id)
                .is_some_and(|s| Arc::ptr_eq(s, &slot) && s.cell.get().is_none())
            {
                slots.remove(id);
            }
        }
        result.map(|m| (m, loaded_here.load(Ordering::Relaxed)))
    }

    async fn load(&self, id: &ModelId, api_key: Option<&str>) -> Result<Arc<LoadedModel>, ModelError> {
        let local = self.root.join(&id.project).join(&id.version);
        let dir = if local.join("weights.onnx").is_file() {
            local
        } else {
            match self.sources.resolve(id, api_key).await? {
                Some(dir) => dir,
                None => {
                    let weights = local.join("weights.onnx");
                    return Err(ModelError::NotFound(id.to_string(), format!("{}", weights.display())));
                }
            }
        };
        let weights = dir.join("weights.onnx");
        let options = self.options.clone();
        let name = id.to_string();
        let started = Instant::now();
        let loaded = tokio::task::spawn_blocking(move || -> anyhow::Result<LoadedModel> {
            let onnx = OnnxModel::load_named(&weights, options, &name)?;
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
        self.slots.lock().remove(id).is_some_and(|s| s.cell.get().is_some())
    }

    pub fn clear(&self) {
        self.slots.lock().clear();
    }

    /// The models loaded now, by id.
    pub fn loaded(&self) -> BTreeMap<ModelId, Arc<LoadedModel>> {
        self.slots
            .lock()
            .iter()
            .filter_map(|(id, slot)| slot.cell.get().map(|m| (id.clone(), m.clone())))
            .collect()
    }
}
