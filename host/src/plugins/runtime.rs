//! The WebAssembly runtime plugins run in: one engine for the process, a fresh store per
//! call with a memory cap and a wall-clock deadline, and only the capabilities plugins need.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use std::hash::{Hash, Hasher};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker, Resource, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, StoreLimits, StoreLimitsBuilder,
};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_nn::wit::WasiNnView;
use wasmtime_wasi_nn::{Graph, InMemoryRegistry, Registry};

use super::imaging::{HasImaging, ImagingView, Lent};
use super::wit::{self, LentImage};
use crate::nn::{CallGraph, CallRegistry, CallRuns, OnnxModel};

/// How often the epoch advances; deadlines are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Limits applied to every plugin call.
#[derive(Clone, Debug)]
pub struct CallLimits {
    pub deadline: Duration,
    pub memory_bytes: usize,
    pub max_model_runs: usize,
    /// Largest JSON document a custom-task plugin may return.
    pub output_bytes: usize,
}

impl Default for CallLimits {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(30),
            memory_bytes: 512 << 20,
            max_model_runs: 64,
            output_bytes: 1 << 20,
        }
    }
}

/// Per-call state: WASI with nothing granted, wasi-nn with no backends (so a plugin can
/// only `load-by-name` the graph registered for this call), and the store's limits.
pub struct CallState {
    wasi: WasiCtx,
    table: ResourceTable,
    nn: wasmtime_wasi_nn::wit::WasiNnCtx,
    limits: StoreLimits,
    /// The call's images, lent as `image` handles (or, to 0.1.0 components, as records).
    lent: Lent,
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

fn nn_view(state: &mut CallState) -> WasiNnView<'_> {
    WasiNnView::new(&mut state.table, &mut state.nn)
}

fn imaging_view(state: &mut CallState) -> ImagingView<'_> {
    ImagingView {
        table: &mut state.table,
        lent: &mut state.lent,
    }
}

impl CallState {
    /// Lends `lent` to the call (before it starts).
    pub fn lend(&mut self, lent: Lent) {
        self.lent = lent;
    }

    /// Takes the lent images back (after the call).
    pub fn take_lent(&mut self) -> Lent {
        std::mem::take(&mut self.lent)
    }

    /// One owned handle per lent image, in order, for a world's export.
    pub fn image_handles(&mut self) -> wasmtime::Result<Vec<Resource<LentImage>>> {
        self.lent.handles(&mut self.table)
    }

    /// The lent images as WIT 0.1.0 records (their pixels move out until `return_records`).
    pub fn image_records(&mut self) -> Vec<wit::v1::Image> {
        self.lent.records()
    }

    pub fn return_records(&mut self, records: Vec<wit::v1::Image>) {
        self.lent.return_records(records);
    }
}

/// Linear memory kept mapped between calls in each pool slot (images and tensors of a
/// typical request fit; larger ones fault in the rest).
const KEEP_RESIDENT_BYTES: usize = 8 << 20;

/// What the plugin may write to stderr per call (the rest is dropped).
const STDERR_CAPACITY: usize = 8 << 10;

/// A store for one call, with what the call leaves behind.
pub struct CallStore {
    pub store: Store<CallState>,
    /// Model runs the call started.
    pub runs: Arc<CallRuns>,
    pub stderr: MemoryOutputPipe,
}

impl CallStore {
    /// The last thing the plugin said on stderr, typically its panic message (Rust's
    /// "note: run with RUST_BACKTRACE" hint is skipped).
    pub fn last_stderr_line(&self) -> Option<String> {
        let bytes = self.stderr.contents();
        let text = String::from_utf8_lossy(&bytes);
        text.lines()
            .rev()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with("note: run with `RUST_BACKTRACE"))
            .map(|l| l.chars().take(500).collect())
    }
}

/// The process-wide engine and linker.
pub struct PluginRuntime {
    engine: Engine,
    linker: Linker<CallState>,
}

impl PluginRuntime {
    /// `max_concurrent_calls` sizes the instance pool; `limits` caps each call's memory.
    pub fn new(max_concurrent_calls: usize, limits: &CallLimits) -> Result<Self> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        // A pool of pre-mapped instance slots, with the first pages of each linear memory kept
        // resident: a fresh store per call then costs a memset instead of ~800 page faults
        // and an munmap (measured: ~3 ms per call without it).
        let slots = (max_concurrent_calls as u32).saturating_add(4).max(16);
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(slots)
            .total_core_instances(slots * 8)
            .total_memories(slots * 2)
            .total_tables(slots * 8)
            .max_memory_size(limits.memory_bytes)
            .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
            .table_keep_resident(64 << 10);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config)
            .map_err(anyhow::Error::from)
            .context("cannot create the WebAssembly engine")?;
        let mut linker = Linker::new(&engine);
        // A Rust guest's std needs wasi:io and wasi:cli; the context grants no files,
        // sockets, environment or arguments, and stdio goes nowhere.
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(anyhow::Error::from)
            .context("cannot link WASI")?;
        wasmtime_wasi_nn::wit::add_to_linker(&mut linker, nn_view)
            .map_err(anyhow::Error::from)
            .context("cannot link wasi-nn")?;
        // The call's images and the native imaging every task plugin is granted.
        wit::inference::plugins::types::add_to_linker::<_, HasImaging>(&mut linker, imaging_view)
            .map_err(anyhow::Error::from)
            .context("cannot link the image type")?;
        wit::imaging::add_to_linker::<_, HasImaging>(&mut linker, imaging_view)
            .map_err(anyhow::Error::from)
            .context("cannot link imaging")?;
        start_epoch_ticker(&engine);
        Ok(Self { engine, linker })
    }

    pub fn linker(&self) -> &Linker<CallState> {
        &self.linker
    }

    /// Compiles a component from a `.wasm` file, or loads its earlier compilation from
    /// `cache_dir` (keyed by the file's sha256 and the engine's settings): compiling the four
    /// task plugins took ~250 ms of a cold start, loading them takes a few.
    pub fn compile(&self, path: &Path, cache_dir: Option<&Path>) -> Result<Component> {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read plugin {}", path.display()))?;
        let Some(dir) = cache_dir else {
            return self.compile_bytes(&bytes, path);
        };
        let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut engine_hash);
        let key = format!("{:x}-{:016x}", Sha256::digest(&bytes), engine_hash.finish());
        let cached = dir.join(format!("{key}.cwasm"));
        if cached.is_file() {
            // SAFETY: a .cwasm is machine code. The cache directory is the operator's own (like
            // the plugins directory itself); files are named by the sha256 of their source and
            // written only by this function, and wasmtime checks the engine's settings on load.
            match unsafe { Component::deserialize_file(&self.engine, &cached) } {
                Ok(component) => return Ok(component),
                Err(e) => tracing::warn!(file = %cached.display(), "ignoring unusable compiled plugin: {e}"),
            }
        }
        let component = self.compile_bytes(&bytes, path)?;
        if let Err(e) = store_compiled(&component, dir, &cached) {
            tracing::warn!(dir = %dir.display(), "cannot cache the compiled plugin: {e:#}");
        }
        Ok(component)
    }

    fn compile_bytes(&self, bytes: &[u8], path: &Path) -> Result<Component> {
        Component::new(&self.engine, bytes)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("cannot compile plugin {}", path.display()))
    }

    /// A fresh store for one call, with `model` registered as the graph named by its first part
    /// (`None`: no graph at all, for a call without a model).
    pub fn store(&self, limits: &CallLimits, model: Option<(&str, Arc<OnnxModel>)>) -> CallStore {
        let runs = Arc::new(CallRuns::default());
        let registry = match model {
            Some((graph_name, model)) => {
                let graph: Graph = CallGraph::graph(model, runs.clone(), limits.max_model_runs);
                Registry::from(CallRegistry::new(graph_name.to_string(), graph))
            }
            None => Registry::from(InMemoryRegistry::new()),
        };
        // The plugin's stderr is kept (capped) so a panic message can explain a trap.
        let stderr = MemoryOutputPipe::new(STDERR_CAPACITY);
        let state = CallState {
            wasi: WasiCtx::builder().stderr(stderr.clone()).build(),
            table: ResourceTable::new(),
            nn: wasmtime_wasi_nn::wit::WasiNnCtx::new([], registry),
            limits: StoreLimitsBuilder::new()
                .memory_size(limits.memory_bytes)
                .instances(4)
                .tables(16)
                .memories(4)
                .trap_on_grow_failure(true)
                .build(),
            lent: Lent::default(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        let ticks = (limits.deadline.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64;
        store.set_epoch_deadline(ticks);
        CallStore { store, runs, stderr }
    }
}

/// Writes a compiled component atomically (temporary name, then rename).
fn store_compiled(component: &Component, dir: &Path, file: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let serialized = component.serialize().map_err(anyhow::Error::from)?;
    let partial = file.with_extension(format!("{}.part", std::process::id()));
    std::fs::write(&partial, serialized)?;
    std::fs::rename(&partial, file)?;
    Ok(())
}

fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("wasm-epoch".into())
        .spawn(move || loop {
            std::thread::sleep(EPOCH_TICK);
            match weak.upgrade() {
                Some(engine) => engine.increment_epoch(),
                None => return,
            }
        })
        .expect("spawning the epoch thread");
}
