//! Stored workflows (`POST /{workspace}/workflows/{workflow_id}`): the operator's
//! `--workflows-dir` first (`<dir>/<workspace>/<workflow_id>.json`), else Roboflow's API with the
//! caller's Roboflow key, by Roboflow's protocol (`get_workflow_specification` in
//! `inference/core/roboflow_api.py`): `GET {API_BASE_URL}/{workspace}/workflows/{workflow_id}
//! ?api_key=…[&workflow_version=…]` answers `{"workflow": {"id": …, "config": "<JSON text of
//! {\"specification\": …}>"}}`; its 401/402/403/404/423 are passed on with Roboflow's messages,
//! a malformed answer is 502, no connection 503, a timeout 504.
//!
//! A fetched definition is cached per (workspace, workflow, version, sha256 of the key), so it is
//! never served to a caller with another key (a tenant not entitled to it): that caller's own key
//! asks Roboflow, as Roboflow's multi-tenant cache does. The cache is in memory and on disk
//! (`<cache>/workflows/<workspace>/<workflow_id>[@<version>].<key sha256>.json`, so restarts and
//! replicas sharing the volume keep it), fresh for `ttl` (Roboflow's
//! `WORKFLOWS_DEFINITION_CACHE_EXPIRY`, 15 min). When the API cannot be reached (no connection,
//! a timeout, a 5xx) or the server is `--offline`, the disk copy is served whatever its age, as
//! Roboflow's file cache is; when Roboflow refuses the key or says the workflow is gone, the
//! cached copies for that key are dropped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::{StatusCode, Url};
use serde_json::{json, Value};

use crate::models::fetch::{read_small, FetchError, MAX_JSON_BYTES, METADATA_TIMEOUT};
use crate::models::roboflow::{error_message, key_hash};

/// Definitions kept in memory (beyond it, expired ones go, then all).
const CACHED_DEFINITIONS: usize = 1024;

/// Roboflow's messages (`inference/core/interfaces/http/error_handlers.py`).
const UNAUTHORIZED: &str = "Unauthorized access to roboflow API - check API key and make sure the key is valid for \
    workspace you use. Visit https://docs.roboflow.com/api-reference/authentication#retrieve-an-api-key to learn how \
    to retrieve one.";
const FORBIDDEN: &str = "Unauthorized access to roboflow API - check API key and make sure the key is valid and have \
    required scopes. Visit https://docs.roboflow.com/api-reference/authentication#retrieve-an-api-key to learn how to \
    retrieve one.";
const NOT_FOUND: &str =
    "Requested Roboflow resource not found. Make sure that workspace, project or model you referred in request exists.";
const PAYMENT: &str = "Not enough credits to perform this request. Verify your workspace billing page.";
const PAUSED: &str = "Roboflow API usage is paused. Please contact your workspace administrator to re-enable api keys.";
const FAILED: &str = "Internal error. Request to Roboflow API failed.";
const NO_CONNECTION: &str = "Internal error. Could not connect to Roboflow API.";
const TIMEOUT: &str = "Timeout when attempting to connect to Roboflow API.";

/// Why a stored workflow cannot be had: the status and `message` to answer.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredError {
    pub status: u16,
    pub message: String,
}

impl StoredError {
    fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

/// Which stored workflow a request wants, and the Roboflow key it may be fetched with.
pub struct Wanted<'a> {
    pub workspace: &'a str,
    pub workflow_id: &'a str,
    /// The body's `workflow_version_id` (Roboflow's `workflow_version` query parameter).
    pub version: Option<&'a str>,
    pub api_key: Option<&'a str>,
    /// The body's `use_cache` (default true): `false` always asks Roboflow (the disk copy is still
    /// the fallback when it cannot be reached).
    pub use_cache: bool,
}

/// Where workflows fetched from Roboflow come from and are kept.
pub struct RoboflowSource {
    /// The API base, ending in `/` (`--roboflow-api-url`, the one models use).
    pub api: Url,
    pub client: reqwest::Client,
    /// `<cache>/workflows`; `None`: memory only.
    pub cache_dir: Option<PathBuf>,
    pub offline: bool,
    /// How long a fetched definition is used without asking again.
    pub ttl: Duration,
}

#[derive(Clone, Hash, PartialEq, Eq)]
struct Key {
    workspace: String,
    workflow_id: String,
    version: Option<String>,
    key_sha256: String,
}

/// The stored workflows: the directory, and Roboflow's API with its caches.
#[derive(Default)]
pub struct StoredWorkflows {
    dir: Option<PathBuf>,
    roboflow: Option<RoboflowSource>,
    memory: parking_lot::Mutex<HashMap<Key, (Instant, Arc<Value>)>>,
}

/// A name that may go into a path and a URL as one segment.
fn safe(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with('.')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The definition inside a stored workflow document.
pub fn specification_of(doc: Value) -> Result<Value, String> {
    if let Some(config) = doc.pointer("/workflow/config") {
        let config: Value = match config {
            Value::String(s) => serde_json::from_str(s).map_err(|e| format!("workflow config is not JSON: {e}"))?,
            other => other.clone(),
        };
        return Ok(config.get("specification").cloned().unwrap_or(config));
    }
    Ok(doc.get("specification").cloned().unwrap_or(doc))
}

/// The definition in Roboflow's answer: `workflow.config` (JSON text) must hold a
/// `specification` object, which gets the workflow's `id` as Roboflow sets it.
fn specification_of_answer(body: &[u8]) -> Result<Value, String> {
    let answer: Value = serde_json::from_slice(body).map_err(|e| format!("the answer is not JSON: {e}"))?;
    let workflow = answer.get("workflow").ok_or("the answer has no `workflow`")?;
    let config = match workflow.get("config").ok_or("the answer has no `workflow.config`")? {
        Value::String(text) => {
            serde_json::from_str::<Value>(text).map_err(|e| format!("`workflow.config` is not JSON: {e}"))?
        }
        _ => return Err("`workflow.config` is not a JSON text".into()),
    };
    let mut spec = config
        .get("specification")
        .cloned()
        .ok_or("`workflow.config` has no `specification`")?;
    let Some(object) = spec.as_object_mut() else {
        return Err("the `specification` is not an object".into());
    };
    if let Some(id) = workflow.get("id").filter(|id| !id.is_null()) {
        object.insert("id".into(), id.clone());
    }
    Ok(spec)
}

/// A fetch that did not give a definition.
enum Miss {
    /// No answer (connection, timeout, a 5xx): the disk copy may serve instead.
    Unreachable(StoredError),
    /// Roboflow refused the key or does not have the workflow: cached copies for the key go.
    Refused(StoredError),
    Other(StoredError),
}

impl StoredWorkflows {
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self {
            dir,
            ..Default::default()
        }
    }

    /// Also fetch workflows from Roboflow's API (with a key).
    pub fn with_roboflow(mut self, source: RoboflowSource) -> Self {
        self.roboflow = Some(source);
        self
    }

    /// The definition of a stored workflow: from the directory, else from Roboflow (cached).
    pub async fn get(&self, wanted: &Wanted<'_>) -> Result<Value, StoredError> {
        let (ws, id) = (wanted.workspace, wanted.workflow_id);
        let not_found = |why: &str| StoredError::new(404, format!("Workflow {ws}/{id} not found{why}"));
        if !safe(ws) || !safe(id) || wanted.version.is_some_and(|v| !safe(v)) {
            return Err(not_found(""));
        }
        if let Some(doc) = self.in_dir(ws, id)? {
            return Ok(doc);
        }
        let Some(source) = &self.roboflow else {
            return Err(not_found(if self.dir.is_some() {
                " in --workflows-dir (and Roboflow's API is off: --no-roboflow)"
            } else {
                ": this server has no --workflows-dir, and Roboflow's API is off (--no-roboflow)"
            }));
        };
        let Some(api_key) = wanted.api_key.filter(|k| !k.is_empty()) else {
            return Err(not_found(
                ": it is not in --workflows-dir, and fetching it from Roboflow's API needs a Roboflow api_key \
                 (the request's, or a tenant's roboflow_api_key)",
            ));
        };
        let key = Key {
            workspace: ws.into(),
            workflow_id: id.into(),
            version: wanted.version.map(str::to_string),
            key_sha256: key_hash(api_key),
        };
        let disk = source.cache_dir.as_ref().map(|d| disk_path(d, &key));
        if wanted.use_cache {
            if let Some((at, spec)) = self.memory.lock().get(&key) {
                if at.elapsed() < source.ttl {
                    return Ok((**spec).clone());
                }
            }
            if let Some((fetched_at, spec)) = disk.as_deref().and_then(|p| read_disk(p, &key)) {
                let age = Duration::from_secs(now_secs().saturating_sub(fetched_at));
                if age < source.ttl {
                    self.remember(key, &spec, Instant::now().checked_sub(age));
                    return Ok(spec);
                }
            }
        }
        let stale = |error: StoredError| match disk.as_deref().and_then(|p| read_disk(p, &key)) {
            Some((fetched_at, spec)) => {
                tracing::warn!(workspace = ws, workflow = id, age_s = now_secs().saturating_sub(fetched_at),
                    reason = %error.message, "Roboflow's API unreachable: serving the cached workflow definition");
                Ok(spec)
            }
            None => Err(error),
        };
        if source.offline {
            return stale(StoredError::new(503, NO_CONNECTION));
        }
        let started = Instant::now();
        match fetch(source, &key, api_key).await {
            Ok(spec) => {
                tracing::info!(
                    workspace = ws,
                    workflow = id,
                    ms = started.elapsed().as_millis() as u64,
                    "workflow definition fetched from Roboflow"
                );
                if let Some(path) = &disk {
                    if let Err(e) = write_disk(path, &key, &spec) {
                        tracing::warn!(path = %path.display(), "cannot cache the workflow definition on disk: {e:#}");
                    }
                }
                self.remember(key, &spec, Some(Instant::now()));
                Ok(spec)
            }
            Err(Miss::Unreachable(e)) => stale(e),
            Err(Miss::Refused(e)) => {
                self.memory.lock().remove(&key);
                if let Some(path) = &disk {
                    let _ = std::fs::remove_file(path);
                }
                Err(e)
            }
            Err(Miss::Other(e)) => Err(e),
        }
    }

    /// `<dir>/<workspace>/<workflow_id>.json`, holding the definition itself, `{"specification": …}`,
    /// or Roboflow's `{"workflow": {"config": "<json>"}}`; `None` when it is not there.
    fn in_dir(&self, ws: &str, id: &str) -> Result<Option<Value>, StoredError> {
        let Some(dir) = &self.dir else { return Ok(None) };
        let path = dir.join(ws).join(format!("{id}.json"));
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(None);
        };
        let invalid = |m: String| StoredError::new(500, format!("Internal error: {m}"));
        let doc: Value =
            serde_json::from_str(&text).map_err(|e| invalid(format!("stored workflow {ws}/{id} is not JSON: {e}")))?;
        specification_of(doc).map(Some).map_err(invalid)
    }

    fn remember(&self, key: Key, spec: &Value, at: Option<Instant>) {
        let (Some(source), Some(at)) = (&self.roboflow, at) else {
            return;
        };
        let mut memory = self.memory.lock();
        if memory.len() >= CACHED_DEFINITIONS {
            memory.retain(|_, (at, _)| at.elapsed() < source.ttl);
            if memory.len() >= CACHED_DEFINITIONS {
                memory.clear();
            }
        }
        memory.insert(key, (at, Arc::new(spec.clone())));
    }
}

/// Asks Roboflow for the definition.
async fn fetch(source: &RoboflowSource, key: &Key, api_key: &str) -> Result<Value, Miss> {
    let mut url = source.api.clone();
    url.path_segments_mut()
        .map_err(|_| {
            Miss::Other(StoredError::new(
                500,
                "Internal error: the Roboflow API URL cannot take a path",
            ))
        })?
        .pop_if_empty()
        .extend([key.workspace.as_str(), "workflows", key.workflow_id.as_str()]);
    url.query_pairs_mut().append_pair("api_key", api_key);
    if let Some(version) = &key.version {
        url.query_pairs_mut().append_pair("workflow_version", version);
    }
    let what = format!("Roboflow API: workflow {}/{}", key.workspace, key.workflow_id);
    let response = match source.client.get(url).timeout(METADATA_TIMEOUT).send().await {
        Ok(r) => r,
        Err(e) => {
            let timeout = e.is_timeout();
            tracing::warn!("{what}: {}", e.without_url());
            return Err(Miss::Unreachable(if timeout {
                StoredError::new(504, TIMEOUT)
            } else {
                StoredError::new(503, NO_CONNECTION)
            }));
        }
    };
    let status = response.status();
    if !status.is_success() {
        let body = read_small(response, 64 << 10, &what).await.unwrap_or_default();
        tracing::warn!(status = status.as_u16(), "{what}: {}", error_message(&body, api_key));
        let refused = |message| Miss::Refused(StoredError::new(status.as_u16(), message));
        return Err(match status {
            StatusCode::UNAUTHORIZED => refused(UNAUTHORIZED),
            StatusCode::FORBIDDEN => refused(FORBIDDEN),
            StatusCode::NOT_FOUND => refused(NOT_FOUND),
            StatusCode::PAYMENT_REQUIRED => Miss::Other(StoredError::new(402, PAYMENT)),
            StatusCode::LOCKED => Miss::Other(StoredError::new(423, PAUSED)),
            s if s.is_server_error() => Miss::Unreachable(StoredError::new(502, FAILED)),
            _ => Miss::Other(StoredError::new(502, FAILED)),
        });
    }
    let body = read_small(response, MAX_JSON_BYTES, &what).await.map_err(|e| {
        tracing::warn!("{what}: {e:?}");
        match e {
            FetchError::Unreachable(_) => Miss::Unreachable(StoredError::new(503, NO_CONNECTION)),
            _ => Miss::Other(StoredError::new(502, FAILED)),
        }
    })?;
    specification_of_answer(&body).map_err(|why| {
        tracing::warn!("{what}: malformed answer: {why}");
        Miss::Other(StoredError::new(502, FAILED))
    })
}

fn disk_path(dir: &Path, key: &Key) -> PathBuf {
    let version = key.version.as_ref().map(|v| format!("@{v}")).unwrap_or_default();
    dir.join(&key.workspace)
        .join(format!("{}{version}.{}.json", key.workflow_id, key.key_sha256))
}

/// The disk copy for `key`: when it was fetched (seconds since the epoch), and the definition.
fn read_disk(path: &Path, key: &Key) -> Option<(u64, Value)> {
    let record: Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    // The file name says whose it is; the record must agree.
    if record.get("api_key_sha256")?.as_str()? != key.key_sha256 {
        return None;
    }
    Some((
        record.get("fetched_at")?.as_u64()?,
        record.get("specification")?.clone(),
    ))
}

/// Writes the disk copy (to a temporary name, then renamed: readers never see half a file).
fn write_disk(path: &Path, key: &Key, spec: &Value) -> anyhow::Result<()> {
    let record = json!({
        "workspace": key.workspace,
        "workflow_id": key.workflow_id,
        "workflow_version": key.version,
        "api_key_sha256": key.key_sha256,
        "fetched_at": now_secs(),
        "specification": spec,
    });
    let parent = path.parent().expect("a file under the cache");
    std::fs::create_dir_all(parent)?;
    let tmp = parent.join(format!(".{}.part", uuid::Uuid::new_v4().simple()));
    std::fs::write(&tmp, serde_json::to_vec(&record)?)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roboflows_answer() {
        let config = json!({"specification": {"version": "1.0", "inputs": [], "steps": [], "outputs": []}});
        let body = json!({"workflow": {"id": "wf1", "name": "x", "config": config.to_string()}});
        let spec = specification_of_answer(body.to_string().as_bytes()).unwrap();
        assert_eq!(spec["id"], "wf1");
        assert_eq!(spec["version"], "1.0");
        for bad in [
            json!({"workflow": {"config": json!({"nope": 1}).to_string()}}),
            json!({"workflow": {"config": {"specification": {}}}}),
            json!({"workflow": {"config": "not json"}}),
            json!({"workflow": {"config": json!({"specification": []}).to_string()}}),
            json!({"workflow": "x"}),
            json!([]),
        ] {
            assert!(specification_of_answer(bad.to_string().as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn disk_copies_belong_to_their_key() {
        let dir = std::env::temp_dir().join(format!("wf-cache-{}", uuid::Uuid::new_v4()));
        let key = Key {
            workspace: "ws".into(),
            workflow_id: "wf".into(),
            version: Some("3".into()),
            key_sha256: key_hash("k1"),
        };
        let path = disk_path(&dir, &key);
        assert!(path.starts_with(dir.join("ws")));
        write_disk(&path, &key, &json!({"version": "1.0"})).unwrap();
        assert_eq!(read_disk(&path, &key).unwrap().1, json!({"version": "1.0"}));
        let other = Key {
            key_sha256: key_hash("k2"),
            ..key.clone()
        };
        assert!(read_disk(&path, &other).is_none());
        assert_ne!(disk_path(&dir, &other), path);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn names() {
        for ok in ["ws", "my-workspace", "wf_1.v2"] {
            assert!(safe(ok), "{ok}");
        }
        for bad in ["", ".", "..", ".hidden", "a/b", "a%2Fb", "a b", "é"] {
            assert!(!safe(bad), "{bad:?}");
        }
    }
}
