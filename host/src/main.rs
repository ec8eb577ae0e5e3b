//! `inference`: a computer-vision inference server. HTTP requests are decoded here, models
//! run in ONNX Runtime, and task logic runs in sandboxed WebAssembly plugins.

mod cli;
mod cmd;
mod input;
mod metrics;
mod models;
mod nn;
mod pipeline;
mod plugins;
mod serve;
mod server;
mod tasks;
mod tenants;
mod visualize;
mod workflows;

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use cli::{Cli, Command, LogFormat, ServerAction};

fn init_logging(format: LogFormat) {
    // wasmtime-wasi-nn logs every guest-visible error at ERROR: a plugin could flood the log.
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,wasmtime_wasi_nn=off,ort=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// glibc gives each thread that allocates its own arena; with ONNX Runtime's, tokio's and the
/// blocking pool's threads that inflated peak memory by ~45 MB under load, for no speed gain.
/// One arena for all: the heaps' free space is then one pool, not two (four concurrent 8-image
/// requests on nudenet-320n peaked at 218-232 MB instead of 245-262, with no measured change in
/// images/s at 16 concurrent requests or in latency at one).
/// Its mmap threshold also rises to the largest block ever freed (up to 32 MiB), after which
/// large images and tensors come from the heaps and fragment them: four concurrent 8-image
/// requests peaked at 400-580 MB, 16 concurrent photos at 290 MB. A fixed 4 MiB threshold maps
/// such blocks on their own and unmaps them when freed (199 MB at 16 photos). ONNX Runtime's
/// activations stay in its CPU arena between runs (`nn::graph`), so the heaps' tops need not
/// be kept for them: a trim threshold of 8 MiB hands a burst's leftovers back as it ends, and
/// `every_trim` the rest every few seconds.
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before the server's threads start.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 8 << 20);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Server { action } => match action {
            ServerAction::Start {
                foreground: true,
                serve,
            } => {
                init_logging(serve.log_format);
                tune_malloc();
                tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .build()
                    .map_err(anyhow::Error::from)
                    .and_then(|rt| {
                        let result = rt.block_on(serve::run(serve));
                        // Requests still running past the shutdown timeout (and their blocking
                        // work) must not keep the process alive.
                        rt.shutdown_timeout(std::time::Duration::from_millis(500));
                        result
                    })
            }
            ServerAction::Start {
                foreground: false,
                serve,
            } => cmd::daemon::start(&serve.target),
            ServerAction::Stop { target } => cmd::daemon::stop(&target),
            ServerAction::Status { target } => match cmd::daemon::status(&target) {
                Ok(true) => Ok(()),
                Ok(false) => return ExitCode::from(3),
                Err(e) => Err(e),
            },
        },
        Command::Benchmark { action } => cmd::bench::run(action),
        Command::Models { action } => cmd::models::run(action),
        Command::Tenants { action } => cmd::tenants::run(action),
        Command::Infer(args) => match cmd::infer::run(args) {
            Ok(code) => return code,
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
