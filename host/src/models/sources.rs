//! Where a model not in the models directory comes from, in order: the cache, then the
//! operator's model stores (`stores`), then Roboflow's API when the request carries an api_key
//! (`roboflow`). One download per model at a time, across processes (the cache's lock).
//!
//! The sources are configured by the operator, so they are not subject to the URL-image policy.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use reqwest::Url;

use super::cache::{CacheLock, ModelCache};
use super::error::ModelError;
use super::fetch::{display_url, record_outcome, FetchError, Fetcher, ProgressFn, ROBOFLOW};
use super::id::ModelId;
use super::roboflow;
use super::stores::Store;

/// How the sources are configured (the `--model-store`, `--roboflow-api-url`, `--no-roboflow`
/// and `--offline` flags).
#[derive(Clone, Debug, Default)]
pub struct SourcesConfig {
    pub model_stores: Vec<String>,
    pub roboflow_api_url: String,
    pub no_roboflow: bool,
    pub offline: bool,
}

pub struct ModelSources {
    cache: Option<ModelCache>,
    stores: Vec<Store>,
    roboflow: Option<Url>,
    offline: bool,
    fetcher: Fetcher,
}

impl ModelSources {
    /// No cache, no sources: only the models directory serves.
    pub fn none() -> Self {
        Self {
            cache: None,
            stores: Vec::new(),
            roboflow: None,
            offline: false,
            fetcher: Fetcher::new().expect("a client with no custom TLS configuration builds"),
        }
    }

    pub fn new(config: &SourcesConfig, cache_dir: Option<&Path>) -> anyhow::Result<Self> {
        let stores = config
            .model_stores
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(Store::parse)
            .collect::<anyhow::Result<Vec<_>>>()?;
        let roboflow = if config.no_roboflow {
            None
        } else {
            let mut url = Url::parse(config.roboflow_api_url.trim())
                .with_context(|| format!("--roboflow-api-url {:?} is not a URL", config.roboflow_api_url))?;
            if !matches!(url.scheme(), "http" | "https") {
                bail!("--roboflow-api-url must be http(s), got {}", display_url(&url));
            }
            if !url.path().ends_with('/') {
                let path = format!("{}/", url.path());
                url.set_path(&path);
            }
            Some(url)
        };
        if cache_dir.is_none() && !config.offline && (!stores.is_empty() || roboflow.is_some()) {
            tracing::warn!("no cache directory (set --cache-dir or HOME): models will not be downloaded");
        }
        Ok(Self {
            cache: cache_dir.map(ModelCache::new),
            stores,
            roboflow,
            offline: config.offline,
            fetcher: Fetcher::new()?,
        })
    }

    pub fn with_progress(mut self, progress: ProgressFn) -> Self {
        self.fetcher = self.fetcher.with_progress(progress);
        self
    }

    pub fn offline(&self) -> bool {
        self.offline
    }

    pub fn cache(&self) -> Option<&ModelCache> {
        self.cache.as_ref()
    }

    /// Roboflow's API base (ending in `/`), unless `--no-roboflow`.
    pub fn roboflow_api(&self) -> Option<&Url> {
        self.roboflow.as_ref()
    }

    /// The HTTP client downloads use (timeouts, redirects, user agent).
    pub fn client(&self) -> &reqwest::Client {
        self.fetcher.client()
    }

    /// One line for the start-up log.
    pub fn describe(&self) -> String {
        let mut parts = vec![match &self.cache {
            Some(c) => format!("cache {}", c.root().display()),
            None => "no cache".into(),
        }];
        if self.offline {
            parts.push("offline".into());
        } else {
            parts.extend(self.stores.iter().map(|s| format!("store {}", s.shown())));
            if let Some(rf) = &self.roboflow {
                parts.push(format!("roboflow {} (with api_key)", display_url(rf)));
            }
        }
        parts.join(", ")
    }

    /// Whether `api_key` is entitled to `id` at its source (Roboflow). `Ok(false)` when no
    /// source can say so (offline, no Roboflow, no key).
    pub async fn entitled(&self, id: &ModelId, api_key: Option<&str>) -> Result<bool, ModelError> {
        let (Some(api), Some(key)) = (&self.roboflow, api_key.filter(|k| !k.is_empty())) else {
            return Ok(false);
        };
        if self.offline {
            return Ok(false);
        }
        roboflow::entitled(&self.fetcher, api, id, key)
            .await
            .map_err(|e| e.into_model_error(id))
    }

    /// The directory of `id` from the cache, downloading it if needed. `Ok(None)`: no source
    /// has it. Callers hold the model's single-flight slot.
    pub async fn resolve(&self, id: &ModelId, api_key: Option<&str>) -> Result<Option<PathBuf>, ModelError> {
        Ok(self.resolve_in_use(id, api_key).await?.map(|(dir, _)| dir))
    }

    /// As `resolve`, with the model's use lock: while it is held, no process sharing the cache
    /// evicts the files (see `cache`).
    pub async fn resolve_in_use(
        &self,
        id: &ModelId,
        api_key: Option<&str>,
    ) -> Result<Option<(PathBuf, CacheLock)>, ModelError> {
        let Some(cache) = &self.cache else {
            return Ok(None);
        };
        let io = |e: std::io::Error| FetchError::from(e).into_model_error(id);
        let in_use = cache.in_use(id).await.map_err(io)?;
        Ok(self.resolve_cached(cache, id, api_key).await?.map(|dir| (dir, in_use)))
    }

    async fn resolve_cached(
        &self,
        cache: &ModelCache,
        id: &ModelId,
        api_key: Option<&str>,
    ) -> Result<Option<PathBuf>, ModelError> {
        let io = |e: std::io::Error| FetchError::from(e).into_model_error(id);
        let hashing = Instant::now();
        if let Some(dir) = cache.lookup(id).await.map_err(io)? {
            tracing::info!(model = %id, dir = %dir.display(), ms = hashing.elapsed().as_millis() as u64,
                "model verified in the cache (sha256)");
            return Ok(Some(dir));
        }
        if self.offline {
            return Err(ModelError::Unavailable {
                id: id.to_string(),
                reason: "offline mode (--offline): it is neither in the models directory nor in the cache".into(),
            });
        }
        let roboflow = self.roboflow.as_ref().zip(api_key.filter(|k| !k.is_empty()));
        if self.stores.is_empty() && roboflow.is_none() {
            return Ok(None);
        }
        let _lock = match cache.try_lock(id).map_err(io)? {
            Some(lock) => lock,
            None => {
                // Another process (a replica on the same cache volume) is downloading it.
                crate::metrics::record_cache_lock_wait();
                tracing::info!(model = %id, "another process is downloading this model: waiting for it");
                cache.lock(id).await.map_err(io)?
            }
        };
        // Another process may have downloaded it while we waited for the lock.
        if let Some(dir) = cache.lookup(id).await.map_err(io)? {
            tracing::info!(model = %id, "model downloaded by another process, verified in the cache");
            return Ok(Some(dir));
        }

        let mut unreachable = Vec::new();
        for store in &self.stores {
            let started = Instant::now();
            let result = store.fetch(&self.fetcher, cache, id).await;
            record_outcome(&store.shown(), &result, started);
            match result {
                Ok(dir) => return Ok(Some(dir)),
                Err(FetchError::Absent) => continue,
                Err(FetchError::Unreachable(why)) => {
                    tracing::warn!(model = %id, %why, "model store unreachable");
                    unreachable.push(why)
                }
                Err(e) => return Err(e.into_model_error(id)),
            }
        }
        if let Some((api, key)) = roboflow {
            let started = Instant::now();
            tracing::info!(model = %id, source = %display_url(api), "model download from Roboflow started");
            let result = roboflow::fetch(&self.fetcher, cache, api, id, key).await;
            record_outcome(ROBOFLOW, &result, started);
            match result {
                Ok(dir) => {
                    tracing::info!(model = %id, ms = started.elapsed().as_millis() as u64, "model downloaded from Roboflow");
                    return Ok(Some(dir));
                }
                Err(FetchError::Unreachable(why)) => unreachable.push(why),
                Err(e) => return Err(e.into_model_error(id)),
            }
        }
        if !unreachable.is_empty() {
            return Err(ModelError::Unavailable {
                id: id.to_string(),
                reason: format!("no model source could be reached ({})", unreachable.join("; ")),
            });
        }
        Ok(None)
    }
}
