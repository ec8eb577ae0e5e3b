//! Model stores in object storage: `s3://bucket/prefix`, `gs://bucket/prefix`,
//! `az://container/prefix` (the `object_store` crate's clients). The layout is the HTTP
//! store's: `<prefix>/<project>/<version>/manifest.json` and the files it lists.
//!
//! Credentials, region and endpoint come from the standard environment variables of each
//! cloud (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL`,
//! `AWS_ALLOW_HTTP`; `GOOGLE_SERVICE_ACCOUNT`...; `AZURE_STORAGE_ACCOUNT_NAME`...).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::path::Path;
use object_store::{ClientConfigKey, ObjectStore, ObjectStoreScheme, RetryConfig};
use reqwest::Url;

use super::fetch::FetchError;
use super::id::ModelId;

/// Whole-request limit of one object download: generous, since a stalled transfer is caught
/// by the per-chunk read timeout of the download loop.
const REQUEST_TIMEOUT: &str = "1h";
const CONNECT_TIMEOUT: &str = "10s";
/// Wait for an object's response head (retries included).
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// An object-storage model store.
pub struct Bucket {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    /// `s3://bucket/prefix`, for messages.
    shown: String,
}

/// An object being read: its size and its bytes.
pub struct ObjectBody {
    pub size: u64,
    pub stream: BoxStream<'static, Result<Bytes, FetchError>>,
}

impl Bucket {
    /// Whether `scheme` names an object store this build knows.
    pub fn handles(scheme: &str) -> bool {
        matches!(scheme, "s3" | "s3a" | "gs" | "az" | "azure" | "abfs" | "abfss" | "adl")
    }

    pub fn new(url: &Url) -> anyhow::Result<Self> {
        let (scheme, _) = ObjectStoreScheme::parse(url).with_context(|| format!("--model-store {url}"))?;
        // The bucket (container) is the host; the prefix is the whole path. (`ObjectStoreScheme`
        // reads `az://` paths as `az://<account>/<container>/...`, which the Azure builder does not.)
        let prefix = Path::parse(url.path()).with_context(|| format!("--model-store {url}: prefix"))?;
        // A failing store answers within seconds (503 + Retry-After), not after minutes of retries.
        let retry = RetryConfig {
            max_retries: 2,
            retry_timeout: Duration::from_secs(15),
            backoff: Default::default(),
        };
        let client = [
            (ClientConfigKey::Timeout, REQUEST_TIMEOUT),
            (ClientConfigKey::ConnectTimeout, CONNECT_TIMEOUT),
        ];
        // The three builders share no trait: the same steps, spelled once.
        macro_rules! build {
            ($builder:ty, $client_key:path) => {{
                let builder = client
                    .into_iter()
                    .fold(<$builder>::from_env().with_url(url.as_str()), |b, (k, v)| {
                        b.with_config($client_key(k), v)
                    });
                Arc::new(builder.with_retry(retry).build()?) as Arc<dyn ObjectStore>
            }};
        }
        let store = match scheme {
            ObjectStoreScheme::AmazonS3 => build!(AmazonS3Builder, AmazonS3ConfigKey::Client),
            ObjectStoreScheme::GoogleCloudStorage => build!(GoogleCloudStorageBuilder, GoogleConfigKey::Client),
            ObjectStoreScheme::MicrosoftAzure => build!(MicrosoftAzureBuilder, AzureConfigKey::Client),
            other => bail!("--model-store {url}: {other:?} is not an object store"),
        };
        let mut shown = url.clone();
        shown.set_query(None);
        shown.set_fragment(None);
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
        Ok(Self {
            store,
            prefix,
            shown: shown.to_string(),
        })
    }

    pub fn shown(&self) -> &str {
        &self.shown
    }

    fn path(&self, id: &ModelId, name: &str) -> Path {
        self.prefix
            .child(id.project.as_str())
            .child(id.version.as_str())
            .child(name)
    }

    /// Opens `<prefix>/<project>/<version>/<name>`; `Absent` when there is no such object.
    pub async fn open(&self, id: &ModelId, name: &str) -> Result<ObjectBody, FetchError> {
        let what = format!("model store {}: {name}", self.shown);
        // The request's own timeout is long (a whole transfer): bound the wait for its head here.
        let result = tokio::time::timeout(HEAD_TIMEOUT, self.store.get(&self.path(id, name)))
            .await
            .map_err(|_| FetchError::Unreachable(format!("{what}: no answer within {HEAD_TIMEOUT:?}")))?
            .map_err(|e| store_error(&what, e))?;
        let size = result.meta.size;
        let stream = result.into_stream().map_err(move |e| store_error(&what, e)).boxed();
        Ok(ObjectBody { size, stream })
    }
}

/// Object-store errors as fetch errors: a missing object means the store lacks the model;
/// refused credentials are a misconfiguration (502); the rest (network, 5xx after retries)
/// means the store cannot be reached now (503).
fn store_error(what: &str, e: object_store::Error) -> FetchError {
    use object_store::Error as E;
    match e {
        E::NotFound { .. } => FetchError::Absent,
        E::PermissionDenied { source, .. } | E::Unauthenticated { source, .. } => {
            FetchError::Bad(format!("{what}: access refused: {source}"))
        }
        other => FetchError::Unreachable(format!("{what}: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_paths() {
        let bucket = Bucket::new(&Url::parse("s3://models-bucket/team/prod/?x=1").unwrap()).unwrap();
        let id = ModelId::parse("shapes/2").unwrap();
        assert_eq!(
            bucket.path(&id, "manifest.json").as_ref(),
            "team/prod/shapes/2/manifest.json"
        );
        assert_eq!(bucket.shown(), "s3://models-bucket/team/prod/");
        let root = Bucket::new(&Url::parse("s3://models-bucket").unwrap()).unwrap();
        assert_eq!(root.path(&id, "weights.onnx").as_ref(), "shapes/2/weights.onnx");
        assert!(Bucket::handles("gs") && !Bucket::handles("https"));
        // az://container/team/prod is covered by tests/test_model_store_azure.py (it needs an account).
        let url = "abfss://container@account.dfs.core.windows.net/team/prod";
        let azure = Bucket::new(&Url::parse(url).unwrap()).unwrap();
        assert_eq!(
            azure.path(&id, "weights.onnx").as_ref(),
            "team/prod/shapes/2/weights.onnx"
        );
    }
}
