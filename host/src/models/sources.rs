//! Where a model not in the models directory comes from: the cache, then the operator's model
//! stores in order (HTTP(S) URL prefixes or S3/GCS/Azure buckets), then Roboflow's API when the
//! request carries an api_key.
//!
//! Downloads go through their own HTTP client (connect and read timeouts, size caps). The
//! sources are configured by the operator, so they are not subject to the URL-image policy.
//! Api keys are never logged: URLs that carry one are never formatted into messages.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Args;
use futures_util::{Stream, StreamExt, TryStreamExt};
use reqwest::{StatusCode, Url};
use serde::Deserialize;

use super::bucket::Bucket;
use super::cache::{safe_file_name, FileRecord, ModelCache, Staging};
use super::id::ModelId;
use super::roboflow;
use super::store::ModelError;
use crate::metrics;

/// Largest model file accepted from a source that does not declare its size.
pub const MAX_MODEL_BYTES: u64 = 4 << 30;
/// Largest JSON document (manifest, API answer, environment) accepted.
pub const MAX_JSON_BYTES: u64 = 16 << 20;
/// Time limit of metadata requests (manifest, Roboflow's `/ort`).
const METADATA_TIMEOUT: Duration = Duration::from_secs(30);
/// A download that receives nothing for this long fails.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Flags that choose the model sources (shared by `server start` and `models pull`).
#[derive(Debug, Args, Clone)]
pub struct SourceArgs {
    /// Model store, tried in order after the models directory and the cache: an http(s):// URL
    /// prefix or an s3://, gs:// or az:// bucket prefix, holding
    /// `<prefix>/<project>/<version>/manifest.json` (the files with size and sha256) and the files
    /// (repeatable). Bucket credentials come from the cloud's standard environment variables.
    #[arg(long = "model-store", env = "INFERENCE_MODEL_STORES", value_delimiter = ',')]
    pub model_stores: Vec<String>,
    /// Roboflow API, asked for models when a request carries an api_key.
    #[arg(long, env = "API_BASE_URL", default_value = "https://api.roboflow.com")]
    pub roboflow_api_url: String,
    /// Never download models from Roboflow, even for requests with an api_key.
    #[arg(long, env = "INFERENCE_NO_ROBOFLOW")]
    pub no_roboflow: bool,
    /// Make no network call for models: serve only models in the models directory and the cache.
    #[arg(long, env = "INFERENCE_OFFLINE")]
    pub offline: bool,
}

/// Download progress of one file, for `models pull`.
pub struct Progress<'a> {
    pub model: &'a ModelId,
    pub file: &'a str,
    pub done: u64,
    pub total: Option<u64>,
    pub elapsed: Duration,
    pub finished: bool,
}

pub type ProgressFn = Arc<dyn Fn(&Progress<'_>) + Send + Sync>;

/// Why a source did not deliver a model.
#[derive(Debug)]
pub enum FetchError {
    /// This source does not have the model: try the next one.
    Absent,
    /// The source could not be reached (or answered that it is unavailable): 503.
    Unreachable(String),
    /// The source refused (Roboflow's 401/403/404...): its status, passed through.
    Upstream { status: u16, message: String },
    /// A malformed answer, or a file that failed verification: 502.
    Bad(String),
    /// Our side failed (disk): 500.
    Local(String),
}

impl FetchError {
    pub fn into_model_error(self, id: &ModelId) -> ModelError {
        let id = id.to_string();
        match self {
            FetchError::Absent => ModelError::NotFound(id, "model source".into()),
            FetchError::Unreachable(reason) => ModelError::Unavailable { id, reason },
            FetchError::Upstream { status, message } => ModelError::Upstream { id, status, message },
            FetchError::Bad(reason) => ModelError::BadDownload { id, reason },
            FetchError::Local(reason) => ModelError::Broken { id, reason },
        }
    }
}

impl From<std::io::Error> for FetchError {
    fn from(e: std::io::Error) -> Self {
        FetchError::Local(format!("cache: {e}"))
    }
}

/// A network error, described without its URL (which may carry an api key or a signature).
pub fn net_error(what: &str, e: reqwest::Error) -> FetchError {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    FetchError::Unreachable(format!("{what}: {text}"))
}

/// A URL for messages and logs: scheme, host, port and path; no credentials, no query.
pub fn display_url(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

/// One of the operator's model stores.
enum Store {
    Http(Url),
    Bucket(Bucket),
}

impl Store {
    fn shown(&self) -> String {
        match self {
            Store::Http(url) => display_url(url),
            Store::Bucket(bucket) => bucket.shown().to_string(),
        }
    }
}

/// A file being fetched: its declared size (if any) and its bytes.
type Body = (
    Option<u64>,
    futures_util::stream::BoxStream<'static, Result<Bytes, FetchError>>,
);

pub struct ModelSources {
    cache: Option<ModelCache>,
    stores: Vec<Store>,
    roboflow: Option<Url>,
    offline: bool,
    client: reqwest::Client,
    progress: Option<ProgressFn>,
}

impl ModelSources {
    /// No cache, no sources: only the models directory serves.
    pub fn none() -> Self {
        Self {
            cache: None,
            stores: Vec::new(),
            roboflow: None,
            offline: false,
            client: reqwest::Client::new(),
            progress: None,
        }
    }

    pub fn new(args: &SourceArgs, cache_dir: Option<&Path>) -> anyhow::Result<Self> {
        let mut stores = Vec::new();
        for raw in args.model_stores.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
            let mut url = Url::parse(raw).with_context(|| format!("--model-store {raw:?} is not a URL"))?;
            match url.scheme() {
                "http" | "https" => {}
                scheme if Bucket::handles(scheme) => {
                    stores.push(Store::Bucket(Bucket::new(&url)?));
                    continue;
                }
                other => bail!("--model-store {raw}: unsupported scheme {other:?} (http, https, s3, gs or az)"),
            }
            if !url.path().ends_with('/') {
                let path = format!("{}/", url.path());
                url.set_path(&path);
            }
            stores.push(Store::Http(url));
        }
        let roboflow = if args.no_roboflow {
            None
        } else {
            let mut url = Url::parse(args.roboflow_api_url.trim())
                .with_context(|| format!("--roboflow-api-url {:?} is not a URL", args.roboflow_api_url))?;
            if !matches!(url.scheme(), "http" | "https") {
                bail!("--roboflow-api-url must be http(s), got {}", display_url(&url));
            }
            if !url.path().ends_with('/') {
                let path = format!("{}/", url.path());
                url.set_path(&path);
            }
            Some(url)
        };
        if cache_dir.is_none() && !args.offline && (!stores.is_empty() || roboflow.is_some()) {
            tracing::warn!("no cache directory (set --cache-dir or HOME): models will not be downloaded");
        }
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(5))
            .user_agent(concat!("inference-rs/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("cannot create the model download client")?;
        Ok(Self {
            cache: cache_dir.map(ModelCache::new),
            stores,
            roboflow,
            offline: args.offline,
            client,
            progress: None,
        })
    }

    pub fn with_progress(mut self, progress: ProgressFn) -> Self {
        self.progress = Some(progress);
        self
    }

    pub fn offline(&self) -> bool {
        self.offline
    }

    pub fn cache(&self) -> Option<&ModelCache> {
        self.cache.as_ref()
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

    /// The directory of `id` from the cache, downloading it if needed. `Ok(None)`: no source
    /// has it. Callers hold the model's single-flight slot.
    pub async fn resolve(&self, id: &ModelId, api_key: Option<&str>) -> Result<Option<PathBuf>, ModelError> {
        let Some(cache) = &self.cache else {
            return Ok(None);
        };
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
        let _lock = cache.lock(id).await.map_err(io)?;
        // Another process may have downloaded it while we waited for the lock.
        if let Some(dir) = cache.lookup(id).await.map_err(io)? {
            return Ok(Some(dir));
        }

        let mut unreachable = Vec::new();
        for store in &self.stores {
            let started = Instant::now();
            let result = self.fetch_from_store(cache, store, id).await;
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
            let result = roboflow::fetch(self, cache, api, id, key).await;
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

    /// The manifest's bytes; `Absent` when the store does not have the model.
    async fn manifest(&self, store: &Store, id: &ModelId) -> Result<Vec<u8>, FetchError> {
        let shown = store.shown();
        match store {
            Store::Http(base) => {
                let url = file_url(base, id, "manifest.json")?;
                let response = self
                    .client
                    .get(url)
                    .timeout(METADATA_TIMEOUT)
                    .send()
                    .await
                    .map_err(|e| net_error(&format!("model store {shown}"), e))?;
                let status = response.status();
                if status == StatusCode::NOT_FOUND {
                    return Err(FetchError::Absent);
                }
                if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
                    return Err(FetchError::Unreachable(format!(
                        "model store {shown} answered {status}"
                    )));
                }
                if !status.is_success() {
                    return Err(FetchError::Bad(format!(
                        "model store {shown} answered {status} for the manifest"
                    )));
                }
                read_small(response, MAX_JSON_BYTES, &format!("model store {shown}")).await
            }
            Store::Bucket(bucket) => {
                let read = async {
                    let body = bucket.open(id, "manifest.json").await?;
                    if body.size > MAX_JSON_BYTES {
                        return Err(FetchError::Bad(format!(
                            "{shown}: manifest.json is larger than {MAX_JSON_BYTES} bytes"
                        )));
                    }
                    let chunks: Vec<Bytes> = body.stream.try_collect().await?;
                    Ok(chunks.concat())
                };
                tokio::time::timeout(METADATA_TIMEOUT, read).await.map_err(|_| {
                    FetchError::Unreachable(format!("model store {shown}: no manifest within {METADATA_TIMEOUT:?}"))
                })?
            }
        }
    }

    async fn fetch_from_store(&self, cache: &ModelCache, store: &Store, id: &ModelId) -> Result<PathBuf, FetchError> {
        let shown = store.shown();
        let body = self.manifest(store, id).await?;
        let manifest =
            Manifest::parse(&body).map_err(|why| FetchError::Bad(format!("{shown}: manifest.json: {why}")))?;
        let total: u64 = manifest.files.iter().map(|f| f.size).sum();
        tracing::info!(model = %id, source = %shown, files = manifest.files.len(), bytes = total, "model download started");
        let started = Instant::now();
        let mut staging = cache.begin(id)?;
        for file in &manifest.files {
            let expected = FileRecord {
                size: file.size,
                sha256: file.sha256.to_ascii_lowercase(),
            };
            let body = match store {
                Store::Http(base) => self.get(file_url(base, id, &file.name)?, &shown, &file.name).await?,
                Store::Bucket(bucket) => {
                    // The manifest lists it: a missing object is a broken store, not an absent model.
                    let body = bucket.open(id, &file.name).await.map_err(|e| match e {
                        FetchError::Absent => FetchError::Bad(format!("{shown}: {} is listed but missing", file.name)),
                        e => e,
                    })?;
                    (Some(body.size), body.stream)
                }
            };
            self.save(&mut staging, id, &file.name, &shown, Some(&expected), file.size, body)
                .await?;
        }
        let dir = staging.commit(&shown)?;
        let secs = started.elapsed().as_secs_f64();
        tracing::info!(model = %id, source = %shown, bytes = total, ms = (secs * 1e3) as u64,
            mib_per_s = format!("{:.1}", total as f64 / (1 << 20) as f64 / secs.max(1e-6)), "model downloaded and verified");
        Ok(dir)
    }

    /// GETs `url`: its declared length and body, or why not.
    async fn get(&self, url: Url, source: &str, name: &str) -> Result<Body, FetchError> {
        let response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| net_error(&format!("{source}: {name}"), e))?;
        let status = response.status();
        if !status.is_success() {
            let why = format!("{source}: {name}: answered {status}");
            return Err(if status.is_server_error() {
                FetchError::Unreachable(why)
            } else {
                FetchError::Bad(why)
            });
        }
        let what = format!("{source}: {name}");
        let declared = response.content_length();
        let stream = response.bytes_stream().map_err(move |e| net_error(&what, e)).boxed();
        Ok((declared, stream))
    }

    /// Downloads `url` into the staging area (see `save`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn download(
        &self,
        staging: &mut Staging,
        id: &ModelId,
        name: &str,
        url: Url,
        source: &str,
        expected: Option<&FileRecord>,
        max: u64,
    ) -> Result<FileRecord, FetchError> {
        let body = self.get(url, source, name).await?;
        self.save(staging, id, name, source, expected, max, body).await
    }

    /// Streams a body into `<name>.part`, refusing more than `max` bytes; checks the result
    /// against `expected` when given. A failed file is deleted with the whole staging area.
    #[allow(clippy::too_many_arguments)]
    async fn save(
        &self,
        staging: &mut Staging,
        id: &ModelId,
        name: &str,
        source: &str,
        expected: Option<&FileRecord>,
        max: u64,
        (declared, mut stream): Body,
    ) -> Result<FileRecord, FetchError> {
        let started = Instant::now();
        if let Some(len) = declared.filter(|len| *len > max) {
            return Err(FetchError::Bad(format!(
                "{name} is {len} bytes, more than the {max} expected; deleted"
            )));
        }
        let total = expected.map(|e| e.size).or(declared);
        let mut part = staging.create(name).await?;
        let mut last_report = Instant::now();
        let mut log = ProgressLog::new(id, name, total);
        self.report(id, name, 0, total, started.elapsed(), false);
        while let Some(chunk) = next_chunk(&mut stream, source, name).await? {
            if part.size() + chunk.len() as u64 > max {
                return Err(FetchError::Bad(format!(
                    "{name} is larger than the {max} bytes expected; deleted"
                )));
            }
            part.write(&chunk).await?;
            metrics::record_download_bytes(kind_of(source), chunk.len() as u64);
            log.update(part.size(), started.elapsed());
            if last_report.elapsed() >= Duration::from_millis(200) {
                last_report = Instant::now();
                self.report(id, name, part.size(), total, started.elapsed(), false);
            }
        }
        let record = part.finish().await?;
        self.report(id, name, record.size, total, started.elapsed(), true);
        if let Some(expected) = expected {
            if record.size != expected.size {
                return Err(FetchError::Bad(format!(
                    "{name} is {} bytes, the manifest says {} (truncated or altered); deleted",
                    record.size, expected.size
                )));
            }
            if record.sha256 != expected.sha256 {
                return Err(FetchError::Bad(format!(
                    "{name} has sha256 {}, the manifest says {} (tampered or corrupt); deleted",
                    record.sha256, expected.sha256
                )));
            }
        }
        tracing::info!(model = %id, file = name, bytes = record.size, ms = started.elapsed().as_millis() as u64,
            "model file downloaded");
        staging.add(name, record.clone());
        Ok(record)
    }

    fn report(&self, model: &ModelId, file: &str, done: u64, total: Option<u64>, elapsed: Duration, finished: bool) {
        if let Some(progress) = &self.progress {
            progress(&Progress {
                model,
                file,
                done,
                total,
                elapsed,
                finished,
            });
        }
    }

    pub(crate) fn client(&self) -> &reqwest::Client {
        &self.client
    }
}

/// How files from Roboflow are labelled (messages, `.verified`, metrics).
pub const ROBOFLOW: &str = "Roboflow";

/// The metrics label of a source: its URL scheme, or `roboflow`.
fn kind_of(source: &str) -> &str {
    match source.split_once("://") {
        Some((scheme, _)) => scheme,
        None if source == ROBOFLOW => "roboflow",
        None => "other",
    }
}

/// Counts a download attempt (a source that lacks the model is not one).
fn record_outcome(source: &str, result: &Result<PathBuf, FetchError>, started: Instant) {
    let outcome = match result {
        Ok(_) => "ok",
        Err(FetchError::Absent) => return,
        Err(FetchError::Unreachable(_)) => "unreachable",
        Err(FetchError::Upstream { .. }) => "refused",
        Err(FetchError::Bad(_)) => "bad",
        Err(FetchError::Local(_)) => "error",
    };
    metrics::record_download(kind_of(source), outcome, started.elapsed());
}

/// `<store>/<project>/<version>/<name>`.
fn file_url(base: &Url, id: &ModelId, name: &str) -> Result<Url, FetchError> {
    base.join(&format!("{}/{}/{name}", id.project, id.version))
        .map_err(|e| FetchError::Local(format!("store URL: {e}")))
}

/// The next chunk of a download; a source that sends nothing for `READ_TIMEOUT` is unreachable.
async fn next_chunk(
    stream: &mut (impl Stream<Item = Result<Bytes, FetchError>> + Unpin),
    source: &str,
    name: &str,
) -> Result<Option<Bytes>, FetchError> {
    match tokio::time::timeout(READ_TIMEOUT, stream.next()).await {
        Ok(chunk) => chunk.transpose(),
        Err(_) => Err(FetchError::Unreachable(format!(
            "{source}: {name}: nothing received for {READ_TIMEOUT:?}"
        ))),
    }
}

/// Server-log progress of a download: a line at every quarter (or every few seconds when the
/// size is unknown).
struct ProgressLog<'a> {
    id: &'a ModelId,
    name: &'a str,
    total: Option<u64>,
    next_quarter: u64,
    last: Instant,
}

impl<'a> ProgressLog<'a> {
    const EVERY: Duration = Duration::from_secs(5);

    fn new(id: &'a ModelId, name: &'a str, total: Option<u64>) -> Self {
        Self {
            id,
            name,
            total,
            next_quarter: 1,
            last: Instant::now(),
        }
    }

    fn update(&mut self, done: u64, elapsed: Duration) {
        let due = match self.total.filter(|t| *t > 0) {
            Some(total) if self.next_quarter < 4 && done * 4 >= total * self.next_quarter => {
                self.next_quarter = (done * 4 / total + 1).min(4);
                true
            }
            _ => self.last.elapsed() >= Self::EVERY,
        };
        if !due {
            return;
        }
        self.last = Instant::now();
        let rate = done as f64 / elapsed.as_secs_f64().max(1e-3);
        let percent = self
            .total
            .map(|t| format!("{:.0}%", done as f64 * 100.0 / t.max(1) as f64));
        let eta_s = self
            .total
            .map(|t| (t.saturating_sub(done) as f64 / rate.max(1.0)).round() as u64);
        tracing::info!(model = %self.id, file = self.name, bytes = done, total = ?self.total,
            percent = percent.as_deref().unwrap_or("?"), mib_per_s = format!("{:.1}", rate / (1 << 20) as f64),
            eta_s = ?eta_s, "model download progress");
    }
}

/// Reads a whole (small) body, refusing more than `max` bytes.
pub async fn read_small(mut response: reqwest::Response, max: u64, what: &str) -> Result<Vec<u8>, FetchError> {
    if response.content_length().is_some_and(|len| len > max) {
        return Err(FetchError::Bad(format!("{what}: answer larger than {max} bytes")));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| net_error(what, e))? {
        if body.len() as u64 + chunk.len() as u64 > max {
            return Err(FetchError::Bad(format!("{what}: answer larger than {max} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `manifest.json` of an HTTP model store.
#[derive(Debug, Deserialize)]
struct Manifest {
    files: Vec<ManifestFile>,
}

#[derive(Debug, Deserialize)]
struct ManifestFile {
    name: String,
    size: u64,
    sha256: String,
}

impl Manifest {
    fn parse(bytes: &[u8]) -> Result<Self, String> {
        let manifest: Manifest = serde_json::from_slice(bytes).map_err(|e| format!("not valid: {e}"))?;
        if manifest.files.len() > 64 {
            return Err(format!("{} files listed; at most 64", manifest.files.len()));
        }
        let mut seen = std::collections::HashSet::new();
        for f in &manifest.files {
            if !safe_file_name(&f.name) {
                return Err(format!("file name {:?} is not a plain file name", f.name));
            }
            if !seen.insert(f.name.as_str()) {
                return Err(format!("{} is listed twice", f.name));
            }
            if f.sha256.len() != 64 || !f.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("{}: sha256 must be 64 hex digits", f.name));
            }
            if f.size > MAX_MODEL_BYTES {
                return Err(format!(
                    "{}: {} bytes is over the {MAX_MODEL_BYTES}-byte limit",
                    f.name, f.size
                ));
            }
        }
        if !seen.contains("weights.onnx") {
            return Err("it lists no weights.onnx".into());
        }
        Ok(manifest)
    }
}

/// The bearer token of `Authorization: Bearer <key>`.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty())
}

tokio::task_local! {
    static REQUEST_BEARER: Option<String>;
}

/// Middleware: makes the request's bearer key visible to `request_bearer` while it is handled.
pub async fn bearer_scope(request: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    let key = bearer(request.headers());
    REQUEST_BEARER.scope(key, next.run(request)).await
}

/// The bearer key of the request being handled (see `bearer_scope`).
pub fn request_bearer() -> Option<String> {
    REQUEST_BEARER.try_with(Clone::clone).ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests() {
        let sha = "a".repeat(64);
        let ok = format!(r#"{{"files": [{{"name": "weights.onnx", "size": 3, "sha256": "{sha}"}}]}}"#);
        assert!(Manifest::parse(ok.as_bytes()).is_ok());
        for bad in [
            r#"{"files": []}"#.to_string(),
            format!(r#"{{"files": [{{"name": "../weights.onnx", "size": 3, "sha256": "{sha}"}}]}}"#),
            r#"{"files": [{"name": "weights.onnx", "size": 3, "sha256": "abc"}]}"#.to_string(),
            format!(r#"{{"files": [{{"name": "env.json", "size": 3, "sha256": "{sha}"}}]}}"#),
        ] {
            assert!(Manifest::parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn urls_are_shown_without_secrets() {
        let url = Url::parse("https://user:pw@store.example/prefix/?token=x").unwrap();
        assert_eq!(display_url(&url), "https://store.example/prefix/");
    }

    #[test]
    fn api_key_from_header() {
        let mut headers = axum::http::HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert(axum::http::header::AUTHORIZATION, "Bearer k1".parse().unwrap());
        assert_eq!(bearer(&headers).as_deref(), Some("k1"));
        assert_eq!(request_bearer(), None);
    }
}
