//! Roboflow's legacy model download protocol:
//! `GET {API_BASE_URL}/ort/{dataset}/{version}?api_key=…&device=…&nocache=true&dynamic=true`
//! answers `{"ort": {"model": <url>, "environment": <url>, "classes": [...],
//! "keypoints_metadata": ..., "type": <task>, "modelType": ...}}`; the model and environment
//! are then downloaded from their (signed) URLs. Stored as Roboflow's cache stores them:
//! `weights.onnx`, `environment.json`, `class_names.txt`, `keypoints_metadata.json`,
//! `model_type.json`. Roboflow publishes no checksums: the sha256 of the first download is
//! recorded in `.verified` and checked on every later load. `owner.json` records the sha256 of
//! the key that fetched the model (see `owner_of`).

use std::path::{Path, PathBuf};

use reqwest::{StatusCode, Url};
use serde::Deserialize;
use serde_json::Value;

use super::cache::{hex, ModelCache};
use super::fetch::{
    display_url, net_error, read_small, FetchError, Fetcher, MAX_JSON_BYTES, MAX_MODEL_BYTES, ROBOFLOW,
};
use super::id::ModelId;

#[derive(Debug, Deserialize)]
struct OrtAnswer {
    ort: Option<Ort>,
}

#[derive(Debug, Deserialize)]
struct Ort {
    model: Option<String>,
    #[serde(default)]
    environment: Option<Value>,
    #[serde(default)]
    classes: Option<Vec<Value>>,
    #[serde(default)]
    keypoints_metadata: Option<Value>,
    #[serde(rename = "type", default)]
    task: Option<String>,
    #[serde(rename = "modelType", default)]
    model_type: Option<String>,
}

/// The device id Roboflow's API is told (it tracks deployments by it).
fn device_id() -> String {
    std::env::var("INFERENCE_DEVICE_ID")
        .or_else(|_| std::env::var("DEVICE_ID"))
        .unwrap_or_else(|_| "inference-rs".to_string())
}

/// Roboflow's error text: `{"error": {"message": …}}`, `{"error": "…"}` or `{"message": …}`.
pub fn error_message(body: &[u8], api_key: &str) -> String {
    let from_json = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
        let error = v.get("error");
        error
            .and_then(|e| e.get("message"))
            .or(error)
            .or_else(|| v.get("message"))
            .and_then(|m| m.as_str().map(str::to_string))
    });
    let mut text = from_json.unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned());
    if !api_key.is_empty() {
        // An API that echoes the key must not get it into our responses or logs.
        text = text.replace(api_key, "***");
    }
    text.trim().to_string()
}

/// The file in a cached model's directory naming the credential that fetched it (see `owner_of`).
pub const OWNER_FILE: &str = "owner.json";

/// The sha256 of a credential, as recorded in `OWNER_FILE`: the key itself is never stored.
pub fn key_hash(api_key: &str) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(api_key.as_bytes()))
}

/// The credential hash recorded in a cached model's directory: `None` for a model that came
/// from the models directory or an operator's store (shared as configured).
pub fn owner_of(dir: &Path) -> Option<String> {
    let bytes = std::fs::read(dir.join(OWNER_FILE)).ok()?;
    let value: Value = serde_json::from_slice(&bytes).ok()?;
    value.get("api_key_sha256")?.as_str().map(str::to_string)
}

/// Whether `api_key` is entitled to `id`: the metadata request a fetch makes, without
/// downloading the weights. A 4xx answer (unknown key, no access, no such model) is a no.
pub async fn entitled(fetcher: &Fetcher, api: &Url, id: &ModelId, api_key: &str) -> Result<bool, FetchError> {
    match metadata(fetcher, api, id, api_key).await {
        Ok(_) => Ok(true),
        Err(FetchError::Upstream { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Roboflow's answer for `id` with `api_key`: where its files are.
async fn metadata(fetcher: &Fetcher, api: &Url, id: &ModelId, api_key: &str) -> Result<Ort, FetchError> {
    let shown = display_url(api);
    let mut url = api
        .join(&format!("ort/{}/{}", id.project, id.version))
        .map_err(|e| FetchError::Local(format!("Roboflow URL: {e}")))?;
    url.query_pairs_mut()
        .append_pair("api_key", api_key)
        .append_pair("device", &device_id())
        .append_pair("nocache", "true")
        .append_pair("dynamic", "true");
    let what = format!("Roboflow API {shown}");
    let response = fetcher
        .client()
        .get(url)
        .timeout(std::time::Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| net_error(&what, e))?;
    let status = response.status();
    if !status.is_success() {
        let body = read_small(response, 64 << 10, &what).await.unwrap_or_default();
        let message = error_message(&body, api_key);
        return Err(match status {
            StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT => {
                FetchError::Unreachable(format!("{what} answered {status}"))
            }
            s if s.is_client_error() => FetchError::Upstream {
                status: s.as_u16(),
                message: format!("the Roboflow API answered {}: {message}", s.as_u16()),
            },
            s => FetchError::Bad(format!("the Roboflow API answered {}: {message}", s.as_u16())),
        });
    }
    let body = read_small(response, MAX_JSON_BYTES, &what).await?;
    let answer: OrtAnswer = serde_json::from_slice(&body)
        .map_err(|e| FetchError::Bad(format!("the Roboflow API's answer is not valid: {e}")))?;
    answer
        .ort
        .ok_or_else(|| FetchError::Bad("the Roboflow API's answer has no `ort`".into()))
}

/// Downloads `id` from Roboflow into the cache, recording (as a hash) the key that fetched it:
/// the model is that credential's, and other tenants are served it only when Roboflow says
/// their own key may have it.
pub async fn fetch(
    fetcher: &Fetcher,
    cache: &ModelCache,
    api: &Url,
    id: &ModelId,
    api_key: &str,
) -> Result<PathBuf, FetchError> {
    let shown = display_url(api);
    let ort = metadata(fetcher, api, id, api_key).await?;
    let model_url = ort
        .model
        .as_deref()
        .ok_or_else(|| FetchError::Bad("the Roboflow API's answer has no `ort.model`".into()))?;
    let model_url = parse_file_url(model_url, "ort.model")?;

    let mut staging = cache.begin(id)?;
    fetcher
        .download(
            &mut staging,
            id,
            "weights.onnx",
            model_url,
            ROBOFLOW,
            None,
            MAX_MODEL_BYTES,
        )
        .await?;
    match ort.environment {
        Some(Value::String(env_url)) => {
            let env_url = parse_file_url(&env_url, "ort.environment")?;
            fetcher
                .download(
                    &mut staging,
                    id,
                    "environment.json",
                    env_url,
                    ROBOFLOW,
                    None,
                    MAX_JSON_BYTES,
                )
                .await?;
            let bytes = std::fs::read(staging.dir().join("environment.json.part"))?;
            if serde_json::from_slice::<Value>(&bytes).is_err() {
                return Err(FetchError::Bad("Roboflow's environment.json is not JSON".into()));
            }
        }
        // getWeights-style answers carry the environment inline.
        Some(env @ Value::Object(_)) => {
            staging
                .write_small("environment.json", env.to_string().as_bytes())
                .await?
        }
        _ => {}
    }
    if let Some(classes) = ort.classes {
        let names: Vec<String> = classes
            .iter()
            .map(|c| match c {
                Value::String(s) => s.replace(['\n', '\r'], " "),
                other => other.to_string(),
            })
            .collect();
        let mut text = names.join("\n");
        text.push('\n');
        staging.write_small("class_names.txt", text.as_bytes()).await?;
    }
    if let Some(kp) = ort.keypoints_metadata.filter(|v| !v.is_null()) {
        // Roboflow sends it as a list or as a JSON-encoded string.
        let kp = match kp {
            Value::String(s) => serde_json::from_str(&s)
                .map_err(|e| FetchError::Bad(format!("keypoints_metadata is not valid: {e}")))?,
            other => other,
        };
        staging
            .write_small("keypoints_metadata.json", kp.to_string().as_bytes())
            .await?;
    }
    if let Some(task) = ort.task {
        let mut model_type = serde_json::json!({ "project_task_type": task, "model_id": id.to_string() });
        if let Some(mt) = ort.model_type {
            model_type["model_type"] = Value::String(mt);
        }
        staging
            .write_small("model_type.json", model_type.to_string().as_bytes())
            .await?;
    }
    let owner = serde_json::json!({ "api_key_sha256": key_hash(api_key) });
    staging.write_small(OWNER_FILE, owner.to_string().as_bytes()).await?;
    Ok(staging.commit(&format!("roboflow {shown}"))?)
}

fn parse_file_url(raw: &str, field: &str) -> Result<Url, FetchError> {
    let url = Url::parse(raw).map_err(|_| FetchError::Bad(format!("the Roboflow API's `{field}` is not a URL")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(FetchError::Bad(format!("the Roboflow API's `{field}` is not http(s)")));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages() {
        assert_eq!(
            error_message(
                br#"{"error": {"message": "Unauthorized key k123", "type": "OAuthException"}}"#,
                "k123"
            ),
            "Unauthorized key ***"
        );
        assert_eq!(error_message(br#"{"error": "nope"}"#, "k"), "nope");
        assert_eq!(error_message(b"plain", "zz"), "plain");
    }
}
