//! Command-line interface: `inference server start|stop|status`.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::nn::Device;

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
        action: crate::bench::BenchAction,
    },
    /// Download, list and delete cached models.
    Models {
        #[command(subcommand)]
        action: crate::models::cmd::ModelsAction,
    },
    /// Help with the tenants file: hash API keys, validate the file.
    Tenants {
        #[command(subcommand)]
        action: crate::tenants::cmd::TenantsAction,
    },
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
    /// Directory of task plugins (`object-detection.wasm`, ...); default: `plugins/` beside the executable.
    #[arg(long, env = "INFERENCE_PLUGINS_DIR")]
    pub plugins_dir: Option<PathBuf>,
    /// Cache directory (compiled plugins, downloaded models); default: $XDG_CACHE_HOME/inference or ~/.cache/inference.
    #[arg(long, env = "INFERENCE_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Where models not in the models directory come from.
    #[command(flatten)]
    pub sources: crate::models::sources::SourceArgs,
    /// ONNX Runtime shared library; default: ORT_DYLIB_PATH, else the one beside the executable.
    #[arg(long)]
    pub ort_library: Option<PathBuf>,
    /// Where models run.
    #[arg(long, env = "INFERENCE_DEVICE", value_enum, default_value = "cpu")]
    pub device: Device,
    /// ONNX Runtime intra-op threads shared by all models (default: number of CPUs).
    #[arg(long, env = "INFERENCE_THREADS")]
    pub threads: Option<usize>,
    /// Sessions per model, i.e. how many inferences of one model may run at once (default: min(CPUs, 4)).
    #[arg(long, env = "INFERENCE_SESSIONS_PER_MODEL")]
    pub sessions_per_model: Option<usize>,
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
    /// Log format.
    #[arg(long, env = "INFERENCE_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}
