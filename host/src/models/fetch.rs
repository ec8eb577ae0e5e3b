//! Fetching model files, for every source (the HTTP and bucket stores, Roboflow): streaming a
//! body into the cache's staging area with size caps, a per-chunk read timeout, sha256
//! verification against what the source declared, progress reports, and the errors a source
//! can give (`FetchError`). Api keys are never logged: URLs that carry one are never formatted
//! into messages.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};
use reqwest::Url;

use super::cache::{FileRecord, Staging};
use super::error::ModelError;
use super::id::ModelId;
use crate::metrics;

/// Largest model file accepted from a source that does not declare its size.
pub const MAX_MODEL_BYTES: u64 = 4 << 30;
/// Largest JSON document (manifest, API answer, environment) accepted.
pub const MAX_JSON_BYTES: u64 = 16 << 20;
/// Time limit of metadata requests (manifest, Roboflow's `/ort`).
pub const METADATA_TIMEOUT: Duration = Duration::from_secs(30);
/// A download that receives nothing for this long fails.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How files from Roboflow are labelled (messages, `.verified`, metrics).
pub const ROBOFLOW: &str = "Roboflow";

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

/// A file being fetched: its declared size (if any) and its bytes.
pub type Body = (
    Option<u64>,
    futures_util::stream::BoxStream<'static, Result<Bytes, FetchError>>,
);

/// Downloads files over HTTP(S) and saves bodies (from any source) into the cache.
pub struct Fetcher {
    client: reqwest::Client,
    progress: Option<ProgressFn>,
}

impl Fetcher {
    pub fn new() -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(5))
            .user_agent(concat!("inference-rs/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("cannot create the model download client")?;
        Ok(Self { client, progress: None })
    }

    pub fn with_progress(mut self, progress: ProgressFn) -> Self {
        self.progress = Some(progress);
        self
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// GETs `url`: its declared length and body, or why not.
    pub async fn get(&self, url: Url, source: &str, name: &str) -> Result<Body, FetchError> {
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
    pub async fn download(
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
    pub async fn save(
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
}

/// The metrics label of a source: its URL scheme, or `roboflow`.
fn kind_of(source: &str) -> &str {
    match source.split_once("://") {
        Some((scheme, _)) => scheme,
        None if source == ROBOFLOW => "roboflow",
        None => "other",
    }
}

/// Counts a download attempt (a source that lacks the model is not one).
pub fn record_outcome(source: &str, result: &Result<PathBuf, FetchError>, started: Instant) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_secrets() {
        let url = Url::parse("https://user:pw@store.example/prefix/?token=x").unwrap();
        assert_eq!(display_url(&url), "https://store.example/prefix/");
    }

    #[test]
    fn sources_are_labelled_by_kind() {
        assert_eq!(kind_of("s3://bucket/x"), "s3");
        assert_eq!(kind_of(ROBOFLOW), "roboflow");
        assert_eq!(kind_of("elsewhere"), "other");
    }
}
