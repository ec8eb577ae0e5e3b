//! Command-line interface: `inference server start|stop|status`, `benchmark`, `models`, `infer`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::models::budget::parse_bytes;
use crate::models::sources::SourcesConfig;
use crate::models::ModelId;
use crate::nn::Device;
use crate::tenants::FailureMode;

#[derive(Debug, Parser)]
#[command(
    name = "inference",
    version,
    about = "Computer-vision inference server (Roboflow-compatible HTTP API)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process: the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run and manage the HTTP server.
    Server {
        #[command(subcommand)]
        action: ServerAction,
    },
    /// Measure speed: the raw native pipeline, or a running server over HTTP.
    Benchmark {
        #[command(subcommand)]
        action: BenchAction,
    },
    /// Download, list and delete cached models.
    Models {
        #[command(subcommand)]
        action: ModelsAction,
    },
    /// Help with the tenants file: hash API keys, validate the file.
    Tenants {
        #[command(subcommand)]
        action: TenantsAction,
    },
    /// Run a model on an image, a folder of images or an image URL through a running server:
    /// JSON on stdout, annotated pictures with --out.
    Infer(InferArgs),
}

// Parsed once per process, like `Command`.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum ServerAction {
    /// Start the server (in the background unless --foreground).
    Start {
        /// Stay attached to the terminal (for containers, service managers and tests).
        #[arg(long)]
        foreground: bool,
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// Stop a server started in the background.
    Stop {
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Tell whether a server is running.
    Status {
        #[command(flatten)]
        target: TargetArgs,
    },
}

/// Which background server `stop` and `status` address.
#[derive(Debug, Args, Clone)]
pub struct TargetArgs {
    #[arg(long, env = "INFERENCE_HOST", default_value = "127.0.0.1")]
    pub host: IpAddr,
    #[arg(long, env = "INFERENCE_PORT", default_value_t = 9001)]
    pub port: u16,
    /// Where pid and log files of background servers are kept.
    #[arg(long, env = "INFERENCE_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, Args, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Directory of models: `<project>/<version>/weights.onnx`.
    #[arg(long, env = "INFERENCE_MODELS_DIR", default_value = "models")]
    pub models_dir: PathBuf,
    /// Stored workflows: `<dir>/<workspace>/<workflow_id>.json`, run at
    /// `POST /{workspace}/workflows/{workflow_id}`.
    #[arg(long, env = "INFERENCE_WORKFLOWS_DIR")]
    pub workflows_dir: Option<PathBuf>,
    /// Directory of task plugins (`object-detection.wasm`, ...); default: `plugins/` beside the executable.
    #[arg(long, env = "INFERENCE_PLUGINS_DIR")]
    pub plugins_dir: Option<PathBuf>,
    /// Cache directory (compiled plugins, downloaded models); default: $XDG_CACHE_HOME/inference or ~/.cache/inference.
    #[arg(long, env = "INFERENCE_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Where models not in the models directory come from.
    #[command(flatten)]
    pub sources: SourceArgs,
    /// Cache and loaded-model budgets, preloaded (pinned) models.
    #[command(flatten)]
    pub budgets: BudgetArgs,
    /// Read timeouts, the connection cap, shutdown.
    #[command(flatten)]
    pub connections: ConnectionArgs,
    /// Workflow run limits, the cache of workflows fetched from Roboflow.
    #[command(flatten)]
    pub workflows: WorkflowArgs,
    /// ONNX Runtime shared library; default: ORT_DYLIB_PATH, else the one beside the executable.
    #[arg(long)]
    pub ort_library: Option<PathBuf>,
    /// Where models run.
    #[arg(long, env = "INFERENCE_DEVICE", value_enum, default_value = "cpu")]
    pub device: Device,
    /// ONNX Runtime intra-op threads shared by all models (default: number of CPUs).
    #[arg(long, env = "INFERENCE_THREADS")]
    pub threads: Option<usize>,
    /// A CPU run that starts while another run is in flight, or while other plugin calls are
    /// under way, runs on one thread of its own instead of the shared intra-op threads (a run
    /// that starts alone still uses them all). Measured on 2 cores: 4 % more images/s and 7 %
    /// less CPU per image at 16 concurrent requests. A model may then hold one shared-pool
    /// session beside --sessions-per-model single-threaded ones (extra ones go when idle).
    #[arg(long, env = "INFERENCE_ADAPTIVE_THREADS")]
    pub adaptive_threads: bool,
    /// Sessions per model, i.e. how many inferences of one model may run at once (default: min(CPUs, 4)).
    #[arg(long, env = "INFERENCE_SESSIONS_PER_MODEL")]
    pub sessions_per_model: Option<usize>,
    /// Most images in one ONNX Runtime run: concurrent requests (and the images of list
    /// requests) for one model are batched up to this (a model's `model.toml` may lower it).
    #[arg(long, env = "INFERENCE_BATCH_MAX_IMAGES", default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub batch_max_images: u64,
    /// How long a batched run that is not full waits for more images, in microseconds (only when
    /// other requests are already waiting: an idle server never waits).
    #[arg(long, env = "INFERENCE_BATCH_MAX_DELAY_US", default_value_t = 500)]
    pub batch_max_delay_us: u64,
    /// Memory budget of the server (e.g. 1GiB). Half of it bounds the images in flight (encoded,
    /// decoded and their copy in the plugin): a request that would go beyond is refused with 503
    /// and Retry-After instead of growing the server's memory. A quarter is shared out between
    /// the plugin calls in flight for their model runs (input tensors and ONNX Runtime's working
    /// memory, measured per model at load), which bounds the images in one run. A sixteenth
    /// bounds the request bodies being read (twice each Content-Length, reserved before reading).
    #[arg(long, env = "INFERENCE_MAX_MEMORY", default_value = "512MiB", value_parser = parse_bytes)]
    pub max_memory: u64,
    /// Most requests queued or running per model; beyond, 503 with Retry-After.
    #[arg(long, env = "INFERENCE_MAX_QUEUE_PER_MODEL", default_value_t = 64)]
    pub max_queue_per_model: usize,
    /// Most URL images downloaded at once (downloads happen before a call slot is taken).
    #[arg(long, env = "INFERENCE_MAX_URL_FETCHES", default_value_t = 16)]
    pub max_url_fetches: usize,
    /// Run every request's images on their own (no batching across requests).
    #[arg(long, env = "INFERENCE_NO_BATCHING")]
    pub no_batching: bool,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "INFERENCE_MAX_BODY_BYTES", default_value_t = 64 << 20)]
    pub max_body_bytes: usize,
    /// Largest image accepted, in pixels (checked from the header, before decoding).
    #[arg(long, env = "INFERENCE_MAX_IMAGE_PIXELS", default_value_t = 50_000_000)]
    pub max_image_pixels: u64,
    /// Most images in one request.
    #[arg(long, env = "INFERENCE_MAX_BATCH", default_value_t = 64)]
    pub max_batch: usize,
    /// Largest image download for URL inputs, in bytes.
    #[arg(long, env = "INFERENCE_MAX_URL_BYTES", default_value_t = 32 << 20)]
    pub max_url_bytes: usize,
    /// Time limit for URL downloads, in milliseconds.
    #[arg(long, env = "INFERENCE_URL_TIMEOUT_MS", default_value_t = 10_000)]
    pub url_timeout_ms: u64,
    /// Also fetch URL images over plain http (default: https only).
    #[arg(long, env = "INFERENCE_ALLOW_HTTP_URLS")]
    pub allow_http_urls: bool,
    /// Also fetch URL images from loopback, private and link-local addresses (default: public only).
    #[arg(long, env = "INFERENCE_ALLOW_PRIVATE_URLS")]
    pub allow_private_urls: bool,
    /// Hosts (names or IPs) URL images may come from even though they are not public (comma-separated).
    #[arg(long, env = "INFERENCE_URL_ALLOW_HOSTS", value_delimiter = ',')]
    pub url_allow_hosts: Vec<String>,
    /// Wall-clock limit of one plugin call, in milliseconds.
    #[arg(long, env = "INFERENCE_PLUGIN_TIMEOUT_MS", default_value_t = 30_000)]
    pub plugin_timeout_ms: u64,
    /// Linear-memory cap of one plugin call, in MiB.
    #[arg(long, env = "INFERENCE_PLUGIN_MEMORY_MIB", default_value_t = 512)]
    pub plugin_memory_mib: usize,
    /// Most plugin calls running at once (default: 2 × CPUs).
    #[arg(long, env = "INFERENCE_MAX_CONCURRENT_CALLS")]
    pub max_concurrent_calls: Option<usize>,
    /// Tenants file (TOML): API keys, model namespaces, plugins and limits per tenant. Without
    /// it the server runs open: anyone who can reach it may use every model and plugin.
    #[arg(long, env = "INFERENCE_TENANTS")]
    pub tenants: Option<PathBuf>,
    /// Serve open (no --tenants) on a non-loopback address anyway.
    #[arg(long, env = "INFERENCE_ALLOW_OPEN_ACCESS")]
    pub allow_open_access: bool,
    /// Keep the tenants' rate and concurrency quotas in this Redis (or Valkey), shared by every
    /// replica: `redis://[user:password@]host:port[/db]` (`rediss://` for TLS). Needs --tenants.
    /// Without it each replica enforces the quotas on its own.
    #[arg(long, env = "INFERENCE_QUOTA_STORE", requires = "tenants")]
    pub quota_store: Option<String>,
    /// While the quota store is unreachable: `fail-open` (each replica applies the tenants'
    /// limits on its own) or `fail-closed` (requests of limited tenants get 503).
    #[arg(long, env = "INFERENCE_QUOTA_STORE_FAILURE", value_enum, default_value = "fail-open")]
    pub quota_store_failure: FailureMode,
    /// On SIGTERM, seconds to keep accepting new connections while /readiness answers 503, so
    /// load balancers take this replica out first.
    #[arg(long, env = "INFERENCE_DRAIN_GRACE", default_value = "0", value_parser = parse_seconds)]
    pub drain_grace: Duration,
    /// Log format.
    #[arg(long, env = "INFERENCE_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// How client connections are treated (slow, silent and too many clients; shutdown).
#[derive(Debug, Args, Clone)]
pub struct ConnectionArgs {
    /// Seconds a client has to send a request's line and headers; also how long an idle
    /// keep-alive connection stays open.
    #[arg(long, env = "INFERENCE_HEADER_READ_TIMEOUT", default_value = "10", value_parser = parse_seconds)]
    pub header_read_timeout: Duration,
    /// Seconds a request body may send nothing before the request fails (400) and its
    /// connection closes.
    #[arg(long, env = "INFERENCE_BODY_READ_TIMEOUT", default_value = "30", value_parser = parse_seconds)]
    pub body_read_timeout: Duration,
    /// Most open client connections (default and most: half the open-files limit,
    /// less a few); beyond it the longest-idle connection is closed to make room.
    #[arg(long, env = "INFERENCE_MAX_CONNECTIONS", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: Option<u64>,
    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT (after --drain-grace);
    /// then the server exits.
    #[arg(long, env = "INFERENCE_SHUTDOWN_TIMEOUT", default_value = "10", value_parser = parse_seconds)]
    pub shutdown_timeout: Duration,
}

/// Limits of one workflow run (a tenant's `workflow_*` limits may tighten them), and how long a
/// workflow definition fetched from Roboflow is used before asking again.
#[derive(Debug, Args, Clone)]
pub struct WorkflowArgs {
    /// Wall-clock limit of a whole workflow run, in milliseconds (beyond it: 504).
    #[arg(long, env = "INFERENCE_WORKFLOW_TIMEOUT_MS", default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub workflow_timeout_ms: u64,
    /// Most images one workflow run may hold: input images plus the crops, slices and pictures
    /// its steps make (beyond it: 413).
    #[arg(long, env = "INFERENCE_WORKFLOW_MAX_IMAGES", default_value_t = 2048, value_parser = clap::value_parser!(u64).range(1..))]
    pub workflow_max_images: u64,
    /// Largest response of one workflow run, in bytes (beyond it: 413).
    #[arg(long, env = "INFERENCE_WORKFLOW_MAX_OUTPUT_BYTES", default_value_t = 64 << 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub workflow_max_output_bytes: u64,
    /// Seconds a workflow definition fetched from Roboflow's API is used before it is asked for
    /// again (Roboflow's WORKFLOWS_DEFINITION_CACHE_EXPIRY); the cached copy still serves while the
    /// API cannot be reached.
    #[arg(long, env = "WORKFLOWS_DEFINITION_CACHE_EXPIRY", default_value = "900", value_parser = parse_seconds)]
    pub workflow_definition_cache_ttl: Duration,
}

/// Seconds, fractions allowed (`2`, `0.5`).
fn parse_seconds(s: &str) -> Result<Duration, String> {
    let seconds: f64 = s.trim().parse().map_err(|_| format!("expected seconds, got {s:?}"))?;
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("expected a non-negative number of seconds, got {s:?}"))
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

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

impl SourceArgs {
    pub fn config(&self) -> SourcesConfig {
        SourcesConfig {
            model_stores: self.model_stores.clone(),
            roboflow_api_url: self.roboflow_api_url.clone(),
            no_roboflow: self.no_roboflow,
            offline: self.offline,
        }
    }
}

#[derive(Debug, Args, Clone, Default)]
pub struct BudgetArgs {
    /// Largest total size of the downloaded models in the cache (e.g. 500MB, 2GiB); beyond it the
    /// least recently used models' files are deleted (never pinned or loaded ones). Default: no limit.
    #[arg(long, env = "INFERENCE_CACHE_MAX_BYTES", value_parser = parse_bytes)]
    pub cache_max_bytes: Option<u64>,
    /// Most models loaded at once; beyond it the least recently requested unpinned model is
    /// unloaded (its files stay). Default: no limit.
    #[arg(long, env = "INFERENCE_MAX_LOADED_MODELS", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_loaded_models: Option<u64>,
    /// Models to load at start and keep (pinned): `<project>/<version>`, comma-separated.
    /// `/readiness` answers 503 until they are loaded.
    #[arg(long, env = "INFERENCE_PRELOAD", value_delimiter = ',')]
    pub preload: Vec<String>,
    /// Roboflow API key for preloading models that only Roboflow has (never logged).
    #[arg(long, env = "ROBOFLOW_API_KEY", hide_env_values = true)]
    pub preload_api_key: Option<String>,
}

impl BudgetArgs {
    /// The preloaded (pinned) model ids, validated.
    pub fn pinned(&self) -> anyhow::Result<Vec<ModelId>> {
        let mut ids = Vec::new();
        for raw in self.preload.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
            let id = ModelId::parse(raw).map_err(|e| anyhow::anyhow!("--preload: {e}"))?;
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        Ok(ids)
    }
}

#[derive(Debug, Subcommand)]
pub enum ModelsAction {
    /// Download a model into the cache: from the model stores, else from Roboflow with an api key.
    Pull {
        /// `<project>/<version>`
        id: String,
        /// Roboflow API key (never printed).
        #[arg(long, env = "ROBOFLOW_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
        #[command(flatten)]
        dirs: DirArgs,
        #[command(flatten)]
        sources: SourceArgs,
    },
    /// List the models in the models directory and in the cache, with size and task.
    List {
        #[command(flatten)]
        dirs: DirArgs,
    },
    /// Delete a model from the cache (the models directory is never touched).
    Rm {
        /// `<project>/<version>`
        id: String,
        #[command(flatten)]
        dirs: DirArgs,
    },
}

#[derive(Debug, Args, Clone)]
pub struct DirArgs {
    /// Directory of local models: `<project>/<version>/weights.onnx`.
    #[arg(long, env = "INFERENCE_MODELS_DIR", default_value = "models")]
    pub models_dir: PathBuf,
    /// Cache directory (downloaded models in `models/`); default: $XDG_CACHE_HOME/inference or ~/.cache/inference.
    #[arg(long, env = "INFERENCE_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum TenantsAction {
    /// Print the `sha256:<hex>` entry for an API key (read from stdin when not given, so the
    /// key stays out of the shell history).
    HashKey { key: Option<String> },
    /// Validate a tenants file and summarise it.
    Check { file: PathBuf },
}

#[derive(Debug, clap::Subcommand)]
pub enum BenchAction {
    /// Time the raw native pipeline in-process: base64 → image decode → letterbox → ONNX Runtime
    /// (no WASM, no HTTP), with the server's decoder and ONNX Runtime settings.
    Raw(RawArgs),
    /// Load a running server over HTTP (`/infer/<route>`) at several concurrency levels.
    Http(HttpArgs),
}

#[derive(Debug, clap::Args)]
pub struct RawArgs {
    /// ONNX weights. Its directory is read as the server reads a model's (environment.json,
    /// class_names.txt), so put it in a models directory to match a served model exactly.
    #[arg(long)]
    pub model: PathBuf,
    /// Encoded image (JPEG, PNG, ...).
    #[arg(long)]
    pub image: PathBuf,
    /// Timed images in all, shared by the threads.
    #[arg(long, default_value_t = 200)]
    pub iterations: usize,
    /// Untimed images first (at least one per thread, so every session has run once).
    #[arg(long, default_value_t = 20)]
    pub warmup: usize,
    /// ONNX Runtime intra-op threads (default: number of CPUs, as the server).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Threads running the pipeline in a loop, each with its own session.
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// Images per ONNX Runtime run (copies of --image, decoded and letterboxed each; the model
    /// must take a dynamic batch). Latency is then per run; stages and CPU per image.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Also decode the outputs and run NMS natively, as the object-detection plugin does.
    #[arg(long)]
    pub postprocess: bool,
    /// Confidence threshold for --postprocess.
    #[arg(long, default_value_t = 0.25)]
    pub confidence: f32,
    /// ONNX Runtime shared library; default: ORT_DYLIB_PATH, else the one beside the executable.
    #[arg(long)]
    pub ort_library: Option<PathBuf>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct HttpArgs {
    /// Base URL of the server.
    #[arg(long, default_value = "http://127.0.0.1:9001")]
    pub url: String,
    /// Model id, `<project>/<version>`.
    #[arg(long)]
    pub model: String,
    /// Encoded image sent (base64) in every request.
    #[arg(long)]
    pub image: PathBuf,
    /// Timed requests per concurrency level.
    #[arg(long, default_value_t = 200)]
    pub requests: usize,
    /// Concurrency levels, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    pub concurrency: Vec<usize>,
    /// Untimed requests before each level (at least one per worker, so its connection is open).
    #[arg(long, default_value_t = 10)]
    pub warmup: usize,
    /// Images per request (sent as a list).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Confidence threshold sent with each request.
    #[arg(long, default_value_t = 0.25)]
    pub confidence: f32,
    /// The task route: object_detection, instance_segmentation, classification, keypoints_detection.
    #[arg(long, default_value = "object_detection")]
    pub route: String,
    /// Extra request fields as a JSON object, e.g. '{"mask_decode_mode": "fast"}'.
    #[arg(long)]
    pub extra: Option<String>,
    /// Process id of the server (same machine): its CPU time and memory are read from /proc
    /// around each timed level.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InferArgs {
    /// An image file, a folder of images, or an http(s) URL of an image (downloaded here).
    pub input: String,
    /// The model: `<project>/<version>`.
    #[arg(long, short)]
    pub model: String,
    /// The server.
    #[arg(long, env = "INFERENCE_API_URL", default_value = "http://localhost:9001")]
    pub api_url: String,
    /// Roboflow API key, for models the server has to download (never printed).
    #[arg(long, env = "ROBOFLOW_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Minimum confidence, 0 to 1 (server default 0.4).
    #[arg(long)]
    pub confidence: Option<f32>,
    /// NMS IoU threshold, 0 to 1 (server default 0.3).
    #[arg(long)]
    pub overlap: Option<f32>,
    /// At most this many predictions per image.
    #[arg(long)]
    pub max_detections: Option<u32>,
    /// Write the annotated picture here (JPEG); for a folder, a directory that gets one picture per image.
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// Annotated pictures: write each detection's class and confidence.
    #[arg(long)]
    pub labels: bool,
    /// Annotated pictures: line width in pixels.
    #[arg(long, default_value_t = 2)]
    pub stroke: u32,
    /// Time limit of one request, in seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_ids() {
        let args = BudgetArgs {
            preload: vec!["a/1".into(), " b/2".into(), "a/1".into()],
            ..Default::default()
        };
        assert_eq!(args.pinned().unwrap().len(), 2);
        let bad = BudgetArgs {
            preload: vec!["../x".into()],
            ..Default::default()
        };
        assert!(bad.pinned().is_err());
    }
}
