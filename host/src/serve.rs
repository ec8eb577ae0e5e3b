//! Starting the server in the foreground: ONNX Runtime, plugins, listener, then serving
//! until SIGINT/SIGTERM, and draining (`drain`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::sync::Semaphore;

use crate::cli::ServeArgs;
use crate::input::url::UrlPolicy;
use crate::input::InputLimits;
use crate::models::cache::default_cache_dir;
use crate::models::sources::ModelSources;
use crate::models::{Limits, LoadedModels, ModelId};
use crate::nn::{self, SessionOptions};
use crate::pipeline::{Counted, MemoryBudget, Pipeline};
use crate::plugins::{CallLimits, PluginRegistry, PluginRuntime};
use crate::server::{self, AppState};
use crate::tasks;
use crate::tenants::{Gate, QuotaStore};
use crate::workflows::{RoboflowSource, RunLimits, StoredWorkflows, Workflows};

fn default_plugins_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot locate the running executable")?;
    Ok(exe
        .parent()
        .context("executable has no parent directory")?
        .join("plugins"))
}

pub async fn run(args: ServeArgs) -> Result<()> {
    let started = Instant::now();
    let gate = open_or_gated(&args)?;
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let threads = args.threads.unwrap_or(cpus).max(1);

    let library = nn::runtime::locate_library(args.ort_library.as_deref())?;
    nn::runtime::init(&library, threads)?;
    nn::runtime::check_device(args.device)?;
    tracing::info!(library = %library.display(), threads, device = ?args.device, "ONNX Runtime ready");

    let max_concurrent_calls = args.max_concurrent_calls.unwrap_or(2 * cpus).max(1);
    let call_limits = CallLimits {
        deadline: Duration::from_millis(args.plugin_timeout_ms),
        memory_bytes: args.plugin_memory_mib << 20,
        ..CallLimits::default()
    };
    let runtime = Arc::new(PluginRuntime::new(max_concurrent_calls, &call_limits)?);
    let plugins_dir = match args.plugins_dir.clone() {
        Some(dir) => dir,
        None => default_plugins_dir()?,
    };
    let cache_dir = args.cache_dir.clone().or_else(default_cache_dir);
    let model_sources = ModelSources::new(&args.sources.config(), cache_dir.as_deref())?;
    tracing::info!(sources = %model_sources.describe(), "model sources");
    let workflows = workflows_service(&args, &model_sources, cache_dir.as_deref());
    let plugins = PluginRegistry::new(
        plugins_dir.clone(),
        cache_dir.as_ref().map(|d| d.join("plugins")),
        call_limits.clone(),
        tasks::worlds().with(crate::workflows::block_world()),
    );
    plugins.scan(&runtime);

    if !args.models_dir.is_dir() {
        tracing::warn!(dir = %args.models_dir.display(), "models directory does not exist (yet)");
    }
    let options = SessionOptions {
        device: args.device,
        max_sessions: args.sessions_per_model.unwrap_or(cpus.min(4)).max(1),
        max_batch: if args.no_batching {
            1
        } else {
            args.batch_max_images as usize
        },
        max_queue_delay: Duration::from_micros(args.batch_max_delay_us),
        // A quarter of the budget for the runs of the calls in flight, shared out between them.
        run_memory: args.max_memory / 4 / max_concurrent_calls as u64,
        adaptive_threads: args.adaptive_threads,
    };
    let url_policy = UrlPolicy {
        allow_http: args.allow_http_urls,
        allow_private: args.allow_private_urls,
        allowed_hosts: args.url_allow_hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
    };
    if url_policy.allow_private {
        tracing::warn!("--allow-private-urls: URL images may be fetched from this server's own network");
    }
    let pinned = args.budgets.pinned()?;
    let limits = Limits {
        max_loaded: args.budgets.max_loaded_models.map(|n| n as usize),
        cache_max_bytes: args.budgets.cache_max_bytes,
        pinned: pinned.iter().cloned().collect(),
    };
    let pipeline = Pipeline {
        models: LoadedModels::new(args.models_dir.clone(), options)
            .with_sources(model_sources)
            .with_limits(limits),
        runtime,
        plugins,
        input_limits: InputLimits {
            max_image_pixels: args.max_image_pixels,
            max_url_bytes: args.max_url_bytes,
            url_timeout: Duration::from_millis(args.url_timeout_ms),
            max_batch: args.max_batch,
        },
        http: url_policy.clone().client().context("cannot create the HTTP client")?,
        url_policy,
        call_slots: Semaphore::new(max_concurrent_calls),
        choices: Default::default(),
        memory: MemoryBudget::new(args.max_memory / 2, Counted::Images),
        max_queue_per_model: args.max_queue_per_model,
        queues: Default::default(),
        fetch_slots: Semaphore::new(args.max_url_fetches),
    };
    let state = Arc::new(AppState {
        pipeline,
        server_id: uuid::Uuid::new_v4().simple().to_string()[..6].to_string(),
        ready: AtomicBool::new(false),
        draining: AtomicBool::new(false),
        gate,
        workflows,
        // A sixteenth of the budget: enough for 64 concurrent photo bodies (~180 KB in base64).
        bodies: server::bodies::BodyBudget::new(args.max_memory / 16, args.max_body_bytes),
    });
    crate::metrics::set_draining(false);
    if let Some(store) = state.gate.as_ref().and_then(|g| g.store.as_ref()) {
        store.monitor();
    }

    let discipline = connection_discipline(&args);
    every_trim();
    let addr = SocketAddr::new(args.target.host, args.target.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let app = server::router(state.clone(), args.max_body_bytes);
    let watched = state.clone();
    every_rescan(move || watched.pipeline.plugins.scan(&watched.pipeline.runtime));
    if let Some(gate) = state.gate.clone() {
        every_rescan(move || gate.reload_if_changed());
    }
    tokio::spawn(preload(state.clone(), pinned, args.budgets.preload_api_key.clone()));
    tracing::info!(url = %format!("http://{addr}"), models_dir = %args.models_dir.display(),
        plugins_dir = %plugins_dir.display(), startup_ms = started.elapsed().as_millis() as u64, "server ready");
    let grace = args.drain_grace;
    // Downloads still running (a preload, a request's) are dropped with the runtime: their
    // staging directories are deleted, and a `.part` is never taken for a model (no `.verified`).
    server::listen::serve(listener, app, discipline, drain(state.clone(), grace)).await;
    tracing::info!("server stopped");
    Ok(())
}

/// The workflow service: `--workflows-dir`, Roboflow's API (the one models come from) for the
/// stored workflows it lacks, and the run limits.
fn workflows_service(args: &ServeArgs, sources: &ModelSources, cache_dir: Option<&Path>) -> Workflows {
    let w = &args.workflows;
    let mut stored = StoredWorkflows::new(args.workflows_dir.clone());
    if let Some(api) = sources.roboflow_api() {
        stored = stored.with_roboflow(RoboflowSource {
            api: api.clone(),
            client: sources.client().clone(),
            cache_dir: cache_dir.map(|d| d.join("workflows")),
            offline: sources.offline(),
            ttl: w.workflow_definition_cache_ttl,
        });
    }
    Workflows::new(None).with_stored(stored).with_limits(RunLimits {
        timeout: Duration::from_millis(w.workflow_timeout_ms),
        max_images: w.workflow_max_images as usize,
        max_output_bytes: w.workflow_max_output_bytes as usize,
    })
}

/// Graceful drain, on SIGTERM (or Ctrl-C): `/readiness` answers 503 at once, while new
/// connections are still accepted for `grace`, so load balancers and Kubernetes take this
/// replica out before it stops listening; then the accept loop stops: no new connections, and the
/// requests in flight finish (bounded by `--shutdown-timeout`).
async fn drain(state: Arc<AppState>, grace: Duration) {
    shutdown_signal().await;
    state.draining.store(true, Ordering::Release);
    crate::metrics::set_draining(true);
    tracing::info!(
        grace_s = grace.as_secs_f64(),
        "draining: /readiness answers 503; still accepting connections for the grace period"
    );
    tokio::time::sleep(grace).await;
    tracing::info!("draining: no new connections; waiting for the requests in flight");
}

/// The accept loop's settings; the connection cap is kept below the open-files limit.
fn connection_discipline(args: &ServeArgs) -> server::listen::Discipline {
    let c = &args.connections;
    let fd_limit = server::listen::raise_fd_limit();
    let cap = server::listen::connection_cap(fd_limit);
    let max_connections = match c.max_connections {
        Some(n) if n as usize > cap => {
            tracing::warn!(
                asked = n,
                cap,
                fd_limit,
                "--max-connections lowered to fit the open-files limit"
            );
            cap
        }
        Some(n) => n as usize,
        None => cap,
    };
    tracing::info!(
        max_connections,
        fd_limit,
        header_read_timeout_s = c.header_read_timeout.as_secs_f64(),
        body_read_timeout_s = c.body_read_timeout.as_secs_f64(),
        "connection limits"
    );
    server::listen::Discipline {
        header_read_timeout: c.header_read_timeout,
        body_read_timeout: c.body_read_timeout,
        max_connections,
        max_body_bytes: args.max_body_bytes,
        shutdown_timeout: c.shutdown_timeout,
    }
}

/// How long a model's extra session (built under load) stays once no run uses it.
const IDLE_SESSION: Duration = Duration::from_secs(10);

/// glibc keeps memory freed at the top of its heaps and in its arenas: after a burst of large
/// requests the process stayed at its peak (801 MB, idle 70 MB). Handing it back every few
/// seconds costs a few milliseconds of one core. The sessions built under load go too, once
/// idle (each holds its weights and its arena): 30 s after a load the server is back near its
/// idle size.
fn every_trim() {
    tokio::spawn(async {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            let _ = tokio::task::spawn_blocking(|| {
                crate::nn::release_idle_sessions(IDLE_SESSION);
                crate::nn::trim_heap();
            })
            .await;
        }
    });
}

/// The tenants gate from `--tenants`; without it, serving open, which is refused on a
/// non-loopback address unless `--allow-open-access` says so.
fn open_or_gated(args: &ServeArgs) -> Result<Option<Arc<Gate>>> {
    match &args.tenants {
        Some(path) => {
            let store = match &args.quota_store {
                Some(url) => {
                    let store = QuotaStore::new(url, args.quota_store_failure)?;
                    tracing::info!(store = %store.shown, failure = store.failure.name(),
                        "tenant quotas shared through the quota store");
                    Some(store)
                }
                None => None,
            };
            let gate = Gate::load(path.clone(), args.max_body_bytes, store)?;
            tracing::info!(file = %path.display(), tenants = gate.tenants().count(),
                "multi-tenant mode: every API call needs a tenant's key (the file is re-read when it changes)");
            Ok(Some(Arc::new(gate)))
        }
        None if args.target.host.is_loopback() => {
            tracing::warn!("serving open (no --tenants): every client that can connect may use every model and plugin");
            Ok(None)
        }
        None if args.allow_open_access => {
            tracing::warn!(host = %args.target.host, "serving open (no --tenants) on a non-loopback address (--allow-open-access)");
            Ok(None)
        }
        None => anyhow::bail!(
            "refusing to serve open on {}: give --tenants <file> (API keys per tenant), or --allow-open-access to serve without keys",
            args.target.host
        ),
    }
}

/// Loads the pinned models (`--preload`), retrying failures, then declares the server ready:
/// `/readiness` answers 503 until every one is loaded.
async fn preload(state: Arc<AppState>, ids: Vec<ModelId>, api_key: Option<String>) {
    let load = |id: ModelId| {
        let (state, api_key) = (state.clone(), api_key.clone());
        async move {
            let mut delay = Duration::from_secs(1);
            loop {
                match state.pipeline.models.get_with_key(&id, api_key.as_deref()).await {
                    Ok(_) => return tracing::info!(model = %id, "model preloaded (pinned)"),
                    Err(e) => {
                        tracing::error!(model = %id, error = %e, retry_s = delay.as_secs(),
                            "preload failed: not ready until it loads");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(60));
                    }
                }
            }
        }
    };
    futures_util::future::join_all(ids.into_iter().map(load)).await;
    // A budget lowered since the last run applies now, not at the next download.
    state.pipeline.models.fit_cache(None).await;
    state.ready.store(true, Ordering::Release);
}

/// How often the plugins directory and the tenants file are checked for changes.
const RESCAN: Duration = Duration::from_secs(2);

/// Runs the blocking `check` every `RESCAN`, off the async threads (it reads the file system,
/// and compiling a changed plugin takes a while).
fn every_rescan(check: impl Fn() + Send + Sync + 'static) {
    let check = Arc::new(check);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(RESCAN);
        tick.tick().await;
        loop {
            tick.tick().await;
            let check = check.clone();
            let _ = tokio::task::spawn_blocking(move || check()).await;
        }
    });
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
