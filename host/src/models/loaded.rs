//! The loaded set: models are read from the models directory (else the cache, else a model
//! source) on first use (or `/model/add`) and stay loaded until removed or unloaded by the
//! budgets (see `budget`). Concurrent first requests for one model load it once; loading one
//! model never holds up requests for the others (each has its own single-flight slot).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::OnceCell;

use super::cache::{CacheLock, ModelCache};
use super::description::{BatchingConfig, ModelConfig, ModelDescription};
use super::error::ModelError;
use super::id::ModelId;
use super::roboflow;
use super::sources::ModelSources;
use crate::nn::{OnnxModel, SessionOptions};

/// A model ready to serve.
pub struct LoadedModel {
    pub description: Arc<ModelDescription>,
    pub onnx: Arc<OnnxModel>,
    /// A model loaded from the cache holds its use lock: no process sharing the cache evicts
    /// its files while it is loaded here.
    _in_use: Option<CacheLock>,
    /// The sha256 of the credential that fetched it from Roboflow (`roboflow::OWNER_FILE`);
    /// `None` for a model every allowed tenant shares (models directory, operator's stores).
    pub owner: Option<String>,
}

impl LoadedModel {
    /// Most images a plugin should hand the model at once: its static batch, or for a dynamic
    /// batch the host's bound on one run (`OnnxModel::run_images`; None: no bound).
    pub fn images_per_run(&self) -> Option<usize> {
        match self.description.max_batch {
            0 => self.onnx.run_images(),
            fixed => Some(fixed as usize),
        }
    }
}

/// How long Roboflow's answer on whether a credential may have a model is trusted.
const ENTITLEMENT_TTL: Duration = Duration::from_secs(300);

/// One model's single-flight cell, and the last failed load (shared with the requests that
/// waited on it, so a failing download is not retried once per queued request).
#[derive(Default)]
struct SlotInner {
    cell: OnceCell<Arc<LoadedModel>>,
    failure: Mutex<Option<Failure>>,
    /// Last request, in ms since the store's epoch: the loaded-model LRU order.
    last_used: AtomicU64,
}

struct Failure {
    at: Instant,
    api_key: Option<String>,
    error: ModelError,
}

type Slot = Arc<SlotInner>;

pub struct LoadedModels {
    root: PathBuf,
    options: SessionOptions,
    slots: Mutex<HashMap<ModelId, Slot>>,
    /// The cache and remote sources behind the models directory.
    sources: ModelSources,
    limits: Limits,
    epoch: Instant,
    /// Roboflow's answers per (model, credential hash): whether that credential may be served a
    /// model someone else fetched, and when it was asked.
    entitlements: Mutex<HashMap<(ModelId, String), (Instant, bool)>>,
}

/// Budgets and pinned models (see `budget`).
#[derive(Default)]
pub struct Limits {
    pub max_loaded: Option<usize>,
    pub cache_max_bytes: Option<u64>,
    pub pinned: HashSet<ModelId>,
}

impl LoadedModels {
    pub fn new(root: PathBuf, options: SessionOptions) -> Self {
        Self {
            root,
            options,
            slots: Mutex::new(HashMap::new()),
            sources: ModelSources::none(),
            limits: Limits::default(),
            epoch: Instant::now(),
            entitlements: Mutex::new(HashMap::new()),
        }
    }

    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Bytes of downloaded models in the cache (0 without a cache).
    pub fn cache_bytes(&self) -> u64 {
        self.sources.cache().map_or(0, |c| c.total_bytes())
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
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

    /// The credential hash that owns `id` (loaded, else in the cache); `None`: shared.
    pub fn owner(&self, id: &ModelId) -> Option<String> {
        if let Some(model) = self.slots.lock().get(id).and_then(|s| s.cell.get().cloned()) {
            return model.owner.clone();
        }
        let local = self.root.join(&id.project).join(&id.version);
        if local.join("weights.onnx").is_file() {
            return None;
        }
        roboflow::owner_of(&self.sources.cache()?.dir(id))
    }

    /// As `entitled`, without asking Roboflow: only what is known now (for listings).
    pub fn known_entitled(&self, id: &ModelId, owner: Option<&str>, api_key: Option<&str>) -> bool {
        let Some(owner) = owner else { return true };
        let Some(key) = api_key.filter(|k| !k.is_empty()) else {
            return false;
        };
        let hash = roboflow::key_hash(key);
        hash == owner
            || self
                .entitlements
                .lock()
                .get(&(id.clone(), hash))
                .is_some_and(|(at, yes)| *yes && at.elapsed() < ENTITLEMENT_TTL)
    }

    /// Whether a caller with `api_key` may be served (or remove) a model owned by `owner`:
    /// always for a shared model or the credential that fetched it; else Roboflow is asked once
    /// per (model, credential) and its answer kept for `ENTITLEMENT_TTL`.
    pub async fn entitled(&self, id: &ModelId, owner: Option<&str>, api_key: Option<&str>) -> Result<bool, ModelError> {
        let Some(owner) = owner else { return Ok(true) };
        let Some(key) = api_key.filter(|k| !k.is_empty()) else {
            return Ok(false);
        };
        let hash = roboflow::key_hash(key);
        if hash == owner {
            return Ok(true);
        }
        let slot = (id.clone(), hash);
        if let Some((at, yes)) = self.entitlements.lock().get(&slot) {
            if at.elapsed() < ENTITLEMENT_TTL {
                return Ok(*yes);
            }
        }
        let yes = self.sources.entitled(id, Some(key)).await?;
        tracing::info!(model = %id, entitled = yes, "checked another credential's entitlement with Roboflow");
        let mut cache = self.entitlements.lock();
        cache.retain(|_, (at, _)| at.elapsed() < ENTITLEMENT_TTL);
        cache.insert(slot, (Instant::now(), yes));
        Ok(yes)
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
        slot.last_used.store(self.now_ms(), Ordering::Relaxed);
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
        let loaded_here = loaded_here.load(Ordering::Relaxed);
        if result.is_ok() && loaded_here {
            self.enforce_budgets(id).await;
        }
        result.map(|m| (m, loaded_here))
    }

    /// After `just` was loaded: unloads the least recently requested models beyond
    /// `--max-loaded-models`, then deletes the least recently used cached files beyond
    /// `--cache-max-bytes` (never pinned models, nor models loaded or loading here).
    async fn enforce_budgets(&self, just: &ModelId) {
        if let Some(max) = self.limits.max_loaded {
            let unloaded: Vec<ModelId> = {
                let mut slots = self.slots.lock();
                let mut loaded: Vec<(u64, ModelId)> = slots
                    .iter()
                    .filter(|(_, s)| s.cell.get().is_some())
                    .map(|(id, s)| (s.last_used.load(Ordering::Relaxed), id.clone()))
                    .collect();
                let excess = loaded.len().saturating_sub(max);
                loaded.sort();
                let victims: Vec<ModelId> = loaded
                    .into_iter()
                    .map(|(_, id)| id)
                    .filter(|id| id != just && !self.limits.pinned.contains(id))
                    .take(excess)
                    .collect();
                for id in &victims {
                    slots.remove(id);
                }
                victims
            };
            for id in &unloaded {
                tracing::info!(model = %id, max_loaded = max, "model unloaded (least recently used)");
                crate::metrics::record_unload();
                if let Some(cache) = self.sources.cache() {
                    cache.touch(id);
                }
            }
        }
        self.fit_cache(Some(just)).await;
    }

    /// Deletes least recently used cached models beyond `--cache-max-bytes`, keeping pinned
    /// models, models loaded or loading here, and `just`. Also run once at start-up.
    pub async fn fit_cache(&self, just: Option<&ModelId>) {
        let (Some(max), Some(cache)) = (self.limits.cache_max_bytes, self.sources.cache()) else {
            return;
        };
        let mut keep: HashSet<ModelId> = self.slots.lock().keys().cloned().collect();
        keep.extend(self.limits.pinned.iter().cloned());
        keep.extend(just.cloned());
        let cache = cache.clone();
        match tokio::task::spawn_blocking(move || cache.evict(max, &keep)).await {
            Ok(Ok(evicted)) => {
                for (id, bytes) in evicted {
                    tracing::info!(model = %id, bytes, max_bytes = max, "cached model files evicted (least recently used)");
                    crate::metrics::record_eviction();
                }
            }
            Ok(Err(e)) => tracing::warn!("cache eviction failed: {e}"),
            Err(e) => tracing::warn!("cache eviction crashed: {e}"),
        }
    }

    async fn load(&self, id: &ModelId, api_key: Option<&str>) -> Result<Arc<LoadedModel>, ModelError> {
        let local = self.root.join(&id.project).join(&id.version);
        let (dir, in_use) = if local.join("weights.onnx").is_file() {
            (local, None)
        } else {
            match self.sources.resolve_in_use(id, api_key).await? {
                Some((dir, in_use)) => (dir, Some(in_use)),
                None => {
                    let weights = local.join("weights.onnx");
                    return Err(ModelError::NotFound(id.to_string(), format!("{}", weights.display())));
                }
            }
        };
        let owner = in_use.as_ref().and_then(|_| roboflow::owner_of(&dir));
        let weights = dir.join("weights.onnx");
        let config = ModelConfig::read(&dir).map_err(|e| ModelError::Broken {
            id: id.to_string(),
            reason: format!("{e:#}"),
        })?;
        let options = batching(&self.options, config.batching);
        let name = id.to_string();
        let started = Instant::now();
        let loaded = tokio::task::spawn_blocking(move || -> anyhow::Result<LoadedModel> {
            let onnx = OnnxModel::load_named(&weights, options, &name)?;
            let description = ModelDescription::from_dir(&name, &dir, onnx.signature())?;
            let (w, h) = (description.input_width, description.input_height);
            let one = if description.channels_last {
                [1, h, w, 3]
            } else {
                [1, 3, h, w]
            };
            // A model whose measure fails still serves, with runs bounded by the batch limit only.
            match onnx.calibrate(&one) {
                Ok(Some(bytes)) => tracing::info!(model = %name, run_mib_per_image = bytes as f64 / 1048576.0,
                    images_per_run = onnx.run_images(), "measured the model's working memory"),
                Ok(None) => {}
                Err(e) => tracing::warn!(model = %name, error = %format!("{e:#}"),
                    "could not measure the model's working memory"),
            }
            Ok(LoadedModel {
                description: Arc::new(description),
                onnx,
                _in_use: in_use,
                owner,
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
        tracing::info!(model = %id, task = %loaded.description.task, architecture = ?loaded.description.architecture,
            input = format!("{}x{}", loaded.description.input_width, loaded.description.input_height),
            classes = loaded.description.class_names.len(),
            ms = started.elapsed().as_millis() as u64, "model loaded");
        Ok(Arc::new(loaded))
    }

    /// Unloads one model; with `purge`, deletes its downloaded files too (the cache only,
    /// never the models directory). Returns whether it was loaded.
    pub async fn remove(&self, id: &ModelId, purge: bool) -> std::io::Result<bool> {
        let was_loaded = self.slots.lock().remove(id).is_some_and(|s| s.cell.get().is_some());
        if purge {
            self.purge(id).await?;
        } else if let Some(cache) = self.sources.cache() {
            cache.touch(id);
        }
        Ok(was_loaded)
    }

    /// Unloads every model; with `purge`, deletes the downloaded files of the models that were loaded.
    pub async fn clear(&self, purge: bool) -> std::io::Result<()> {
        let ids: Vec<ModelId> = self.slots.lock().drain().map(|(id, _)| id).collect();
        for id in &ids {
            if purge {
                self.purge(id).await?;
            } else if let Some(cache) = self.sources.cache() {
                cache.touch(id);
            }
        }
        Ok(())
    }

    /// Deletes `id` from the download cache, waiting for a download in progress to end.
    async fn purge(&self, id: &ModelId) -> std::io::Result<()> {
        if let Some(cache) = self.sources.cache() {
            let _lock = cache.lock(id).await?;
            if cache.remove(id)? {
                tracing::info!(model = %id, "cached model files deleted (purge)");
            }
        }
        Ok(())
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

/// The session options for a model: the server's, with its `model.toml`'s batching.
fn batching(server: &SessionOptions, model: Option<BatchingConfig>) -> SessionOptions {
    let mut options = server.clone();
    if let Some(b) = model {
        if let Some(n) = b.max_images {
            options.max_batch = n.clamp(1, 256);
        }
        if let Some(us) = b.max_delay_us {
            options.max_queue_delay = std::time::Duration::from_micros(us);
        }
        if b.enabled == Some(false) {
            options.max_batch = 1;
        }
    }
    options
}
