//! The operator's model stores (`--model-store`): HTTP(S) URL prefixes and S3/GCS/Azure bucket
//! prefixes, each holding `<prefix>/<project>/<version>/manifest.json` (every file with its size
//! and sha256) and the files it lists. A store's files are verified against its manifest.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use bytes::Bytes;
use futures_util::TryStreamExt;
use reqwest::{StatusCode, Url};
use serde::Deserialize;

use super::bucket::Bucket;
use super::cache::{safe_file_name, FileRecord, ModelCache};
use super::fetch::{
    display_url, net_error, read_small, FetchError, Fetcher, MAX_JSON_BYTES, MAX_MODEL_BYTES, METADATA_TIMEOUT,
};
use super::id::ModelId;

/// One of the operator's model stores.
pub enum Store {
    Http(Url),
    Bucket(Bucket),
}

impl Store {
    /// A `--model-store` value: an http(s):// prefix or an s3://, gs:// or az:// bucket prefix.
    pub fn parse(raw: &str) -> anyhow::Result<Self> {
        let mut url = Url::parse(raw).with_context(|| format!("--model-store {raw:?} is not a URL"))?;
        match url.scheme() {
            "http" | "https" => {}
            scheme if Bucket::handles(scheme) => return Ok(Store::Bucket(Bucket::new(&url)?)),
            other => bail!("--model-store {raw}: unsupported scheme {other:?} (http, https, s3, gs or az)"),
        }
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        Ok(Store::Http(url))
    }

    /// The store for messages and logs (no credentials).
    pub fn shown(&self) -> String {
        match self {
            Store::Http(url) => display_url(url),
            Store::Bucket(bucket) => bucket.shown().to_string(),
        }
    }

    /// The manifest's bytes; `Absent` when the store does not have the model.
    async fn manifest(&self, fetcher: &Fetcher, id: &ModelId) -> Result<Vec<u8>, FetchError> {
        let shown = self.shown();
        match self {
            Store::Http(base) => {
                let url = file_url(base, id, "manifest.json")?;
                let response = fetcher
                    .client()
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

    /// Downloads `id` into the cache, every file checked against the manifest.
    pub async fn fetch(&self, fetcher: &Fetcher, cache: &ModelCache, id: &ModelId) -> Result<PathBuf, FetchError> {
        let shown = self.shown();
        let body = self.manifest(fetcher, id).await?;
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
            let body = match self {
                Store::Http(base) => fetcher.get(file_url(base, id, &file.name)?, &shown, &file.name).await?,
                Store::Bucket(bucket) => {
                    // The manifest lists it: a missing object is a broken store, not an absent model.
                    let body = bucket.open(id, &file.name).await.map_err(|e| match e {
                        FetchError::Absent => FetchError::Bad(format!("{shown}: {} is listed but missing", file.name)),
                        e => e,
                    })?;
                    (Some(body.size), body.stream)
                }
            };
            fetcher
                .save(&mut staging, id, &file.name, &shown, Some(&expected), file.size, body)
                .await?;
        }
        let dir = staging.commit(&shown)?;
        let secs = started.elapsed().as_secs_f64();
        tracing::info!(model = %id, source = %shown, bytes = total, ms = (secs * 1e3) as u64,
            mib_per_s = format!("{:.1}", total as f64 / (1 << 20) as f64 / secs.max(1e-6)), "model downloaded and verified");
        Ok(dir)
    }
}

/// `<store>/<project>/<version>/<name>`.
fn file_url(base: &Url, id: &ModelId, name: &str) -> Result<Url, FetchError> {
    base.join(&format!("{}/{}/{name}", id.project, id.version))
        .map_err(|e| FetchError::Local(format!("store URL: {e}")))
}

/// `manifest.json` of a model store.
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
    fn store_urls() {
        assert!(matches!(Store::parse("https://h/models").unwrap(), Store::Http(u) if u.path() == "/models/"));
        assert!(matches!(Store::parse("s3://bucket/p").unwrap(), Store::Bucket(_)));
        assert!(Store::parse("ftp://h/x").is_err());
    }
}
