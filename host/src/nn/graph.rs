//! A wasi-nn graph backed by a pool of ONNX Runtime sessions the host builds and tunes.
//!
//! wasmtime-wasi-nn's stock ONNX backend holds one session behind a mutex for the whole run
//! (concurrent requests for a model serialise), builds sessions with its own options and only
//! handles f32. This graph keeps a small pool of sessions built with our options, so
//! concurrent plugin calls run in parallel, and converts every common tensor type.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{Session, SessionInputValue};
use ort::tensor::TensorElementType;
use ort::value::{DynValue, Tensor as OrtTensor, ValueType};
use parking_lot::{Condvar, Mutex};
use wasmtime_wasi_nn::backend::{BackendError, BackendExecutionContext, BackendGraph, Id, NamedTensor};
use wasmtime_wasi_nn::wit::TensorType;
use wasmtime_wasi_nn::{ExecutionContext, Graph, Tensor};

use super::batch::{BatchSettings, Batcher};
use super::runtime::Device;

/// Declared shape and element type of a model input or output (-1 = dynamic).
#[derive(Clone, Debug)]
pub struct TensorSpec {
    pub name: String,
    pub dims: Vec<i64>,
    pub element: TensorElementType,
}

/// What a model looks like from the outside: its tensors and metadata properties.
#[derive(Clone, Debug, Default)]
pub struct ModelSignature {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    pub metadata: Vec<(String, String)>,
}

/// Options for building sessions.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    pub device: Device,
    /// The most sessions kept per model (each can run one inference at a time): its run slots
    /// (with `adaptive_threads`, one shared-pool session may exist beside them).
    pub max_sessions: usize,
    /// Images per batched run (1: concurrent calls are not batched together).
    pub max_batch: usize,
    /// How long a run that is not full may wait for more inputs (only when others wait).
    pub max_queue_delay: std::time::Duration,
    /// What the images of one run may take, in bytes, beyond their pixels: the input tensor's
    /// copies (in the plugin, lifted into the host, batched) and ONNX Runtime's working memory
    /// (0: unbounded). `calibrate` turns it into a limit on the images in one run.
    pub run_memory: u64,
    /// Whether a CPU run that starts while another run (of any model) is in flight, or while
    /// other plugin calls are under way, takes a single-threaded session instead of the shared
    /// intra-op pool (`Width`). Such a model may hold one shared-pool session beside
    /// `max_sessions` single-threaded ones.
    pub adaptive_threads: bool,
}

/// How many threads a session's runs use. The shared pool makes a lone run fastest, but when
/// runs overlap their parallel sections contend for the same cores: on 2 cores two
/// single-threaded runs at once did 5-12 % more images per second than two on the shared pool
/// (shapes-detect 151-156 vs 137-139/s, nudenet-320n 57-62 vs 55-59/s, raw pipeline).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Width {
    /// ONNX Runtime's shared intra-op pool (`nn::runtime::init`).
    Shared,
    /// One thread, the caller's: its own session options, no pool.
    One,
}

impl Width {
    fn index(self) -> usize {
        self as usize
    }
}

/// Runs of any model under way (waiting for or building a session included): the cores are
/// shared by every model, so a run that starts while another is in flight takes a
/// single-threaded session.
static RUNS_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Plugin calls with a model in progress (`CallGraph`). With more than one, runs will overlap
/// soon even when none is in flight this instant (the others are decoding or pre-processing):
/// under load a run that found the cores free would otherwise take the shared pool, and the
/// next run would contend with it.
static CALLS_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// One unit of a counter, until dropped (whichever way the work ends).
struct Counted(&'static AtomicUsize);

impl Counted {
    fn new(counter: &'static AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::AcqRel);
        Self(counter)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A model's idle sessions (oldest first) and how many exist, per `Width`.
#[derive(Default)]
struct Sessions {
    idle: [Vec<Idle>; 2],
    created: [usize; 2],
}

/// A session in the pool.
struct Idle {
    session: Session,
    /// When it was last given back.
    since: Instant,
    /// Its CPU arena still holds a run of several images' activations (`OnnxModel::run_now`).
    grown: bool,
}

/// Every loaded model, for `release_idle_sessions`.
static LOADED: Mutex<Vec<std::sync::Weak<OnnxModel>>> = Mutex::new(Vec::new());

/// Drops the CPU sessions no run has used for `idle_for`, but one shared-pool session per model
/// (kept warm for the next request). Sessions beyond the first are built under load; each holds
/// its own copy of the weights and, in its arena, its last run's activations, which would
/// otherwise stay resident after the load ends.
pub fn release_idle_sessions(idle_for: Duration) {
    let models: Vec<Arc<OnnxModel>> = {
        let mut loaded = LOADED.lock();
        loaded.retain(|m| m.strong_count() > 0);
        loaded.iter().filter_map(std::sync::Weak::upgrade).collect()
    };
    for model in models {
        model.release_idle(idle_for);
    }
}

/// A loaded ONNX model: a pool of sessions over one weights file.
pub struct OnnxModel {
    path: PathBuf,
    /// The model id its run times are recorded under.
    name: String,
    options: SessionOptions,
    signature: ModelSignature,
    sessions: Mutex<Sessions>,
    freed: Condvar,
    /// Concurrent runs gathered into one, when the model's batch dimension allows it.
    batcher: Option<Batcher>,
    /// Most images one run may hold so that `run_memory` holds (`usize::MAX` until calibrated).
    run_images: AtomicUsize,
    /// The input's dimensions `calibrate` ran on: zeros of one image of them let an idle,
    /// grown session hand its arena back (`release_idle`).
    zero_dims: OnceLock<Vec<u32>>,
}

impl OnnxModel {
    /// Builds the first session (validating the file) and reads the model's signature.
    pub fn load(path: &Path, options: SessionOptions) -> Result<Arc<Self>> {
        Self::load_named(path, options, &path.display().to_string())
    }

    /// As `load`, recording its run times (metric `inference_model_seconds`) as model `name`.
    pub fn load_named(path: &Path, options: SessionOptions, name: &str) -> Result<Arc<Self>> {
        let session = build_session(path, &options)?;
        let signature = read_signature(&session)?;
        let mut sessions = Sessions::default();
        sessions.idle[Width::Shared.index()].push(Idle {
            session,
            since: Instant::now(),
            grown: false,
        });
        sessions.created[Width::Shared.index()] = 1;
        let batcher = (options.max_batch > 1 && batchable(&signature)).then(|| {
            Batcher::new(
                name,
                BatchSettings {
                    max_batch: options.max_batch,
                    max_queue_delay: options.max_queue_delay,
                    slots: options.max_sessions,
                },
            )
        });
        let model = Arc::new(Self {
            path: path.to_path_buf(),
            name: name.to_string(),
            options,
            signature,
            sessions: Mutex::new(sessions),
            freed: Condvar::new(),
            batcher,
            run_images: AtomicUsize::new(usize::MAX),
            zero_dims: OnceLock::new(),
        });
        LOADED.lock().push(Arc::downgrade(&model));
        Ok(model)
    }

    /// Drops this model's sessions idle for `idle_for`, but one shared-pool session
    /// (`release_idle_sessions`), preferring to keep one whose arena is not grown; returns how
    /// many went.
    fn release_idle(&self, idle_for: Duration) -> usize {
        // A GPU session takes seconds to build again, and holds no host memory worth it.
        if self.options.device != Device::Cpu {
            return 0;
        }
        let released: Vec<Session> = {
            let mut sessions = self.sessions.lock();
            let mut released = Vec::new();
            for width in [Width::Shared, Width::One] {
                let w = width.index();
                let keep = usize::from(width == Width::Shared);
                // Grown ones first, each part oldest first: the one kept is the newest not grown.
                sessions.idle[w].sort_by_key(|i| (!i.grown, i.since));
                while sessions.idle[w].len() > keep && sessions.idle[w][0].since.elapsed() >= idle_for {
                    released.push(sessions.idle[w].remove(0).session);
                    sessions.created[w] -= 1;
                }
            }
            released
        };
        if !released.is_empty() {
            tracing::debug!(model = %self.name, sessions = released.len(), "released idle sessions");
        }
        self.shrink_idle_grown(idle_for);
        // `released` drops here, outside the lock: freeing a session takes a while.
        released.len()
    }

    /// The session kept idle may still hold a batch's activations (its last runs overlapped
    /// other calls): one run of a single image of zeros, shrinking, hands them back.
    fn shrink_idle_grown(&self, idle_for: Duration) {
        let Some(dims) = self.zero_dims.get() else {
            return;
        };
        let idle = {
            let mut sessions = self.sessions.lock();
            let idle = &mut sessions.idle[Width::Shared.index()];
            match idle.last() {
                Some(last) if last.grown && last.since.elapsed() >= idle_for => idle.pop(),
                _ => None,
            }
        };
        let Some(idle) = idle else {
            return;
        };
        let mut session = self.lease(idle.session, Width::Shared, true);
        let shrunk = self
            .zeros(dims, 1)
            .and_then(|values| run_session(&mut session, values, &self.signature.outputs, true));
        match shrunk {
            Ok(_) => session.grown = false,
            Err(e) => {
                tracing::warn!(model = %self.name, error = %format!("{e:#}"), "cannot shrink an idle session's arena")
            }
        }
    }

    /// Zeros as the model's one input, `images` of `dims` (batch first).
    fn zeros(&self, dims: &[u32], images: u32) -> Result<Vec<(String, SessionInputValue<'static>)>> {
        let spec = &self.signature.inputs[0];
        let ty = tensor_type(spec.element).ok_or_else(|| anyhow!("the model's input has no wasi-nn type"))?;
        let mut dimensions = dims.to_vec();
        dimensions[0] = images;
        let count: usize = dimensions.iter().map(|d| *d as usize).product();
        let tensor = Tensor {
            dimensions,
            ty,
            data: vec![0; count * element_size(ty)],
        };
        check_shape(spec, &tensor)?;
        Ok(vec![(spec.name.clone(), to_ort_value(tensor)?.into())])
    }

    /// Measures the working memory one image costs ONNX Runtime in a run of this model (what
    /// it allocates beyond the input: activations and scratch) and bounds the images per run so
    /// that, with three copies of each image's input tensor, a run fits `run_memory`. The
    /// measure: runs on zeros of `dims`
    /// (batch 1, and batch 4 when the model batches: scratch grows faster than linearly with
    /// some operators), after a first run that warms the session up, with the process's resident
    /// memory sampled meanwhile. Other work running at the same time can only make it larger,
    /// so the bound errs towards smaller runs. Returns the bytes per image, if measured.
    pub fn calibrate(&self, dims: &[u32]) -> Result<Option<u64>> {
        if self.options.device != Device::Cpu || self.signature.inputs.len() != 1 || dims.is_empty() {
            return Ok(None);
        }
        let Some(ty) = tensor_type(self.signature.inputs[0].element) else {
            return Ok(None);
        };
        let input = |images: u32| self.zeros(dims, images);
        // One measure at a time, so that two loads do not count each other's runs.
        static MEASURING: Mutex<()> = Mutex::new(());
        let _alone = MEASURING.lock();
        let mut session = self.checkout(Width::Shared)?;
        let outputs = &self.signature.outputs;
        // Every run here empties the arena when it ends, so each measure starts from none.
        let measured = (|| -> Result<Option<u64>> {
            run_session(&mut session, input(1)?, outputs, true).context("warm-up run")?;
            let mut per_image = 0;
            let sizes: &[u32] = if self.batcher.is_some() { &[1, 4] } else { &[1] };
            for &images in sizes {
                let values = input(images)?;
                let Some(bytes) = memory::peak_during(|| run_session(&mut session, values, outputs, true))? else {
                    return Ok(None);
                };
                per_image = per_image.max(bytes / u64::from(images));
            }
            Ok(Some(per_image))
        })();
        drop(session);
        let per_image = measured?;
        // Calibrated once, at load (a second call would find the same input).
        let _ = self.zero_dims.set(dims.to_vec());
        if let (Some(bytes), true) = (per_image, self.options.run_memory > 0) {
            let tensor = dims[1..].iter().map(|d| u64::from(*d)).product::<u64>() * element_size(ty) as u64;
            let images = (self.options.run_memory / (bytes + 3 * tensor).max(1)).max(1) as usize;
            self.run_images.store(images, Ordering::Relaxed);
            if let Some(b) = &self.batcher {
                b.limit_images(images);
            }
        }
        Ok(per_image)
    }

    /// Most images one run of the model should hold: the batch limit, lowered by `calibrate`
    /// to what the run memory allows (None: no bound known).
    pub fn run_images(&self) -> Option<usize> {
        let measured = self.run_images.load(Ordering::Relaxed);
        match &self.batcher {
            Some(b) => Some(b.max_images()),
            None => (measured != usize::MAX).then_some(measured),
        }
    }

    /// The most images one run takes when concurrent runs are batched (None: not batched).
    pub fn batch_limit(&self) -> Option<usize> {
        self.batcher.as_ref().map(Batcher::max_images)
    }

    pub fn signature(&self) -> &ModelSignature {
        &self.signature
    }

    /// The width of a run starting now: one thread if another run is in flight or another
    /// plugin call is under way (and the model adapts), else the shared pool. Counted in
    /// `RUNS_IN_FLIGHT` until the `Counted` drops.
    fn start_run(&self) -> (Width, Counted) {
        let running = Counted::new(&RUNS_IN_FLIGHT);
        let busy = RUNS_IN_FLIGHT.load(Ordering::Acquire) > 1 || CALLS_IN_FLIGHT.load(Ordering::Acquire) > 1;
        (
            if self.adapts() && busy {
                Width::One
            } else {
                Width::Shared
            },
            running,
        )
    }

    /// Whether the model's runs choose their `Width` (CPU only: a GPU run has no intra-op pool
    /// to contend for).
    fn adapts(&self) -> bool {
        self.options.adaptive_threads && self.options.device == Device::Cpu
    }

    /// The most sessions of `width` the model keeps: every run slot may be single-threaded, but
    /// only a run that starts alone uses the shared pool, so one such session is enough.
    fn max_sessions(&self, width: Width) -> usize {
        match width {
            Width::Shared if self.adapts() => 1,
            _ => self.options.max_sessions,
        }
    }

    /// Takes an idle session of `width`, building another one if the pool may still grow, else
    /// waits. The session goes back to the pool when the lease drops, however the run ends.
    fn checkout(&self, width: Width) -> Result<Lease<'_>> {
        let w = width.index();
        let mut sessions = self.sessions.lock();
        loop {
            // The most recently used: the oldest idle ones are the ones to release.
            if let Some(idle) = sessions.idle[w].pop() {
                return Ok(self.lease(idle.session, width, idle.grown));
            }
            if sessions.created[w] < self.max_sessions(width) {
                sessions.created[w] += 1;
                drop(sessions);
                return match build_session_of(&self.path, &self.options, width) {
                    Ok(session) => Ok(self.lease(session, width, false)),
                    Err(e) => {
                        self.sessions.lock().created[w] -= 1;
                        // A waiter may build the one this could not.
                        self.freed.notify_all();
                        Err(e)
                    }
                };
            }
            self.freed.wait(&mut sessions);
        }
    }

    fn lease(&self, session: Session, width: Width, grown: bool) -> Lease<'_> {
        Lease {
            model: self,
            width,
            session: Some(session),
            grown,
        }
    }

    fn checkin(&self, session: Session, width: Width, grown: bool) {
        self.sessions.lock().idle[width.index()].push(Idle {
            session,
            since: Instant::now(),
            grown,
        });
        // Waiters may want either width.
        self.freed.notify_all();
    }

    /// Runs the model on named inputs and returns every output, in the model's order; with
    /// batching, concurrent single-input runs of the same shape share one run (`batch`).
    pub fn run(&self, mut inputs: Vec<NamedTensor>) -> Result<Vec<NamedTensor>> {
        match &self.batcher {
            Some(batcher) if inputs.len() == 1 => {
                let input = inputs.pop().expect("one input");
                self.check_input(&input)?;
                batcher.run(input, |batched, calls| self.run_now(vec![batched], more_calls(calls)))
            }
            _ => self.run_now(inputs, more_calls(1)),
        }
    }

    fn check_input(&self, input: &NamedTensor) -> Result<()> {
        let spec = self
            .signature
            .inputs
            .iter()
            .find(|s| s.name == input.name)
            .ok_or_else(|| anyhow!("the model has no input named {:?}", input.name))?;
        check_shape(spec, &input.tensor)
    }

    /// One ONNX Runtime run, on a session of the pool; `more`: other plugin calls are under
    /// way, so more runs are likely to follow.
    fn run_now(&self, inputs: Vec<NamedTensor>, more: bool) -> Result<Vec<NamedTensor>> {
        let mut values: Vec<(String, SessionInputValue<'_>)> = Vec::with_capacity(inputs.len());
        for input in &inputs {
            self.check_input(input)?;
            values.push((input.name.clone(), ort_input(&input.tensor)?));
        }
        let (width, _in_flight) = self.start_run();
        let mut session = self.checkout(width)?;
        // ONNX Runtime's own time: after a session is free, until its outputs are converted.
        let started = Instant::now();
        // A single image's activations stay in the session's arena for the next run (on 2 cores
        // this took nudenet-320n's c=1 server time from 19.5-22.6 to 16.9-19.4 ms and its
        // resident memory from 110-114 to 91-95 MB); a batch's are handed back by the first run
        // that starts with no other plugin call under way. Shrinking after every batched run had
        // the next one fault its activations in again: ~900 page faults per image for
        // nudenet-320n at 16 clients.
        let images = inputs
            .first()
            .and_then(|i| i.tensor.dimensions.first())
            .copied()
            .unwrap_or(1);
        let cpu = self.options.device == Device::Cpu;
        let shrink = cpu && !more && (images > 1 || session.grown);
        let result = run_session(&mut session, values, &self.signature.outputs, shrink);
        session.grown = cpu && !shrink && (session.grown || images > 1);
        crate::metrics::record_model_run(&self.name, started.elapsed());
        drop(session);
        result
    }
}

/// Whether plugin calls other than the `calls` of a run starting now are under way (in any
/// model: their runs will follow).
fn more_calls(calls: usize) -> bool {
    CALLS_IN_FLIGHT.load(Ordering::Acquire) > calls
}

/// A session taken from a model's pool, given back when dropped (a panic in a run included:
/// a lost session would leave its slot taken for good).
struct Lease<'a> {
    model: &'a OnnxModel,
    width: Width,
    session: Option<Session>,
    /// Whether the session's arena holds a run of several images (goes back with it).
    grown: bool,
}

impl std::ops::Deref for Lease<'_> {
    type Target = Session;
    fn deref(&self) -> &Session {
        self.session.as_ref().expect("held until dropped")
    }
}

impl std::ops::DerefMut for Lease<'_> {
    fn deref_mut(&mut self) -> &mut Session {
        self.session.as_mut().expect("held until dropped")
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            self.model.checkin(session, self.width, self.grown);
        }
    }
}

/// One run; `shrink`: hand what the run took from the CPU arena back when it ends (only for
/// CPU sessions: ONNX Runtime refuses it where there is no CPU arena).
fn run_session(
    session: &mut Session,
    values: Vec<(String, SessionInputValue<'_>)>,
    outputs: &[TensorSpec],
    shrink: bool,
) -> Result<Vec<NamedTensor>> {
    // Run options only where they say something: a single-image run needs none.
    let shrinking = if shrink {
        let mut options = ort::session::RunOptions::new()?;
        options.add_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")?;
        Some(options)
    } else {
        None
    };
    let results = match &shrinking {
        Some(options) => session.run_with_options(values, options),
        None => session.run(values),
    }
    .context("ONNX Runtime run failed")?;
    outputs
        .iter()
        .map(|spec| {
            let value = results
                .get(&spec.name)
                .ok_or_else(|| anyhow!("output {:?} missing from the run", spec.name))?;
            Ok(NamedTensor {
                name: spec.name.clone(),
                tensor: from_ort_value(value)?,
            })
        })
        .collect()
}

/// A session for the model at `path`, with the server's settings (also the benchmark's), on
/// the shared intra-op pool.
pub fn build_session(path: &Path, options: &SessionOptions) -> Result<Session> {
    build_session_of(path, options, Width::Shared)
}

/// As `build_session`, with runs of `width`.
pub fn build_session_of(path: &Path, options: &SessionOptions, width: Width) -> Result<Session> {
    let mut builder = Session::builder()?;
    if width == Width::One {
        builder = builder
            .with_independent_thread_pool()?
            .with_intra_threads(1)?
            .with_inter_threads(1)?;
    }
    let mut builder = builder
        .with_optimization_level(GraphOptimizationLevel::Level3)?
        // One op at a time per session; parallelism comes from the intra-op threads.
        .with_parallel_execution(false)?;
    // ONNX Runtime's memory pattern (one block per run for the activations) stays on, its
    // block kept in the CPU arena below. Turning the pattern off also spared the page faults,
    // but fragmented the heaps: four 8-image requests at once on shapes-detect peaked at
    // 262-275 MB instead of 188-232.
    if options.device == Device::Cuda {
        builder = builder.with_execution_providers([cuda_provider()?])?;
    } else {
        // With ONNX Runtime's CPU arena, so that a run's block of activations (memory pattern)
        // is kept for the next run instead of being mapped and faulted in afresh each time
        // (glibc maps it: it is above `tune_malloc`'s threshold). Unbounded, the arena keeps
        // the largest tensors it ever held for the session's life (a burst of big batches
        // stayed resident): runs of more than one image shrink it when they end (`run_now`).
        builder = builder.with_execution_providers([ort::execution_providers::CPUExecutionProvider::default()
            .with_arena_allocator(true)
            .build()])?;
    }
    builder
        .commit_from_file(path)
        .with_context(|| format!("ONNX Runtime cannot load {}", path.display()))
}

#[cfg(feature = "cuda")]
fn cuda_provider() -> Result<ort::execution_providers::ExecutionProviderDispatch> {
    use ort::execution_providers::{CUDAExecutionProvider, ExecutionProvider};
    let ep = CUDAExecutionProvider::default();
    if !ep.is_available().unwrap_or(false) {
        anyhow::bail!(
            "the CUDA execution provider is not available in this ONNX Runtime library (use the onnxruntime-gpu build)"
        );
    }
    // error_on_failure: never fall back to CPU silently when --device cuda was asked for.
    Ok(ep.build().error_on_failure())
}

#[cfg(not(feature = "cuda"))]
fn cuda_provider() -> Result<ort::execution_providers::ExecutionProviderDispatch> {
    anyhow::bail!("this build has no CUDA support: rebuild with `--features cuda`")
}

/// Whether runs of the model can be batched: one input and every output with a dynamic batch
/// dimension first (so rows of several calls can be stacked and split again).
fn batchable(signature: &ModelSignature) -> bool {
    let dynamic_batch = |s: &TensorSpec| s.dims.len() >= 2 && s.dims[0] < 0;
    signature.inputs.len() == 1
        && dynamic_batch(&signature.inputs[0])
        && !signature.outputs.is_empty()
        && signature.outputs.iter().all(dynamic_batch)
}

fn read_signature(session: &Session) -> Result<ModelSignature> {
    let spec = |name: &str, ty: &ValueType| -> Result<TensorSpec> {
        match ty {
            ValueType::Tensor { ty, shape, .. } => Ok(TensorSpec {
                name: name.to_string(),
                dims: shape.iter().copied().collect(),
                element: *ty,
            }),
            other => Err(anyhow!("tensor {name:?} is not a tensor but {other:?}")),
        }
    };
    let inputs = session
        .inputs
        .iter()
        .map(|i| spec(&i.name, &i.input_type))
        .collect::<Result<_>>()?;
    let outputs = session
        .outputs
        .iter()
        .map(|o| spec(&o.name, &o.output_type))
        .collect::<Result<_>>()?;
    let meta = session.metadata()?;
    let mut metadata = Vec::new();
    for key in meta.custom_keys().unwrap_or_default() {
        if let Ok(Some(value)) = meta.custom(&key) {
            metadata.push((key, value));
        }
    }
    metadata.sort();
    Ok(ModelSignature {
        inputs,
        outputs,
        metadata,
    })
}

fn check_shape(spec: &TensorSpec, tensor: &Tensor) -> Result<()> {
    let ok = spec.dims.len() == tensor.dimensions.len()
        && spec
            .dims
            .iter()
            .zip(&tensor.dimensions)
            .all(|(want, got)| *want < 0 || *want == i64::from(*got));
    if !ok {
        return Err(anyhow!(
            "input {:?} expects shape {:?} (-1 = any), got {:?}",
            spec.name,
            spec.dims,
            tensor.dimensions
        ));
    }
    Ok(())
}

fn element_size(ty: TensorType) -> usize {
    match ty {
        TensorType::Fp16 | TensorType::Bf16 => 2,
        TensorType::Fp32 | TensorType::I32 => 4,
        TensorType::Fp64 | TensorType::I64 => 8,
        TensorType::U8 => 1,
    }
}

/// The wasi-nn type of an ONNX element type, for those this graph converts.
fn tensor_type(element: TensorElementType) -> Option<TensorType> {
    Some(match element {
        TensorElementType::Float32 => TensorType::Fp32,
        TensorElementType::Float64 => TensorType::Fp64,
        TensorElementType::Int32 => TensorType::I32,
        TensorElementType::Int64 => TensorType::I64,
        TensorElementType::Uint8 => TensorType::U8,
        _ => return None,
    })
}

/// The process's resident memory, as the kernel counts it.
pub mod memory {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::Duration;

    /// Resident bytes now (`/proc/self/statm`), where the system says.
    pub fn resident() -> Option<u64> {
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
        // SAFETY: sysconf only reads a system constant.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        Some(pages * u64::try_from(page).ok()?)
    }

    /// How much resident memory grows while `work` runs (sampled every 200 µs, and after), from
    /// a heap trimmed first so that what it allocates shows; None where it cannot be read.
    pub fn peak_during<T>(work: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<Option<u64>> {
        trim();
        let Some(before) = resident() else {
            return Ok(None);
        };
        let (done, peak) = (AtomicBool::new(false), AtomicU64::new(before));
        let result = std::thread::scope(|scope| {
            scope.spawn(|| {
                while !done.load(Ordering::Acquire) {
                    peak.fetch_max(resident().unwrap_or(0), Ordering::AcqRel);
                    std::thread::sleep(Duration::from_micros(200));
                }
            });
            let result = work();
            done.store(true, Ordering::Release);
            result
        });
        result?;
        let peak = peak.load(Ordering::Acquire).max(resident().unwrap_or(0));
        Ok(Some(peak.saturating_sub(before)))
    }

    /// Hands freed heap memory back to the system (glibc keeps it otherwise).
    pub fn trim() {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only returns free memory to the system.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

/// The tensor as an ONNX Runtime input: a view of its bytes where they can be read as the
/// element type in place (a little-endian host and aligned data, which the allocator gives), so
/// a megabyte-sized input is not copied once more; else a converted copy.
fn ort_input(tensor: &Tensor) -> Result<SessionInputValue<'_>> {
    fn view<'a, T: ort::tensor::PrimitiveTensorElementType + bytemuck::Pod + std::fmt::Debug>(
        tensor: &'a Tensor,
    ) -> Option<Result<SessionInputValue<'a>>> {
        let data: &[T] = bytemuck::try_cast_slice(&tensor.data).ok()?;
        let count: usize = tensor.dimensions.iter().map(|d| *d as usize).product();
        if !cfg!(target_endian = "little") || data.len() != count {
            return None;
        }
        let shape: Vec<i64> = tensor.dimensions.iter().map(|d| i64::from(*d)).collect();
        Some(
            ort::value::TensorRef::from_array_view((shape, data))
                .map(SessionInputValue::from)
                .map_err(anyhow::Error::from),
        )
    }
    let viewed = match tensor.ty {
        TensorType::Fp32 => view::<f32>(tensor),
        TensorType::Fp64 => view::<f64>(tensor),
        TensorType::I32 => view::<i32>(tensor),
        TensorType::I64 => view::<i64>(tensor),
        TensorType::U8 => view::<u8>(tensor),
        _ => None,
    };
    match viewed {
        Some(value) => value,
        None => Ok(to_ort_value(tensor.clone())?.into()),
    }
}

fn to_ort_value(tensor: Tensor) -> Result<DynValue> {
    let count: usize = tensor.dimensions.iter().map(|d| *d as usize).product();
    let expected = count
        .checked_mul(element_size(tensor.ty))
        .ok_or_else(|| anyhow!("tensor too large"))?;
    if tensor.data.len() != expected {
        return Err(anyhow!(
            "tensor data has {} bytes, its shape {:?} of {:?} needs {expected}",
            tensor.data.len(),
            tensor.dimensions,
            tensor.ty
        ));
    }
    let shape: Vec<i64> = tensor.dimensions.iter().map(|d| i64::from(*d)).collect();
    macro_rules! le {
        ($t:ty, $n:expr) => {
            tensor
                .data
                .chunks_exact($n)
                .map(|c| <$t>::from_le_bytes(c.try_into().expect("chunk size")))
                .collect::<Vec<$t>>()
        };
    }
    let value = match tensor.ty {
        TensorType::Fp32 => OrtTensor::from_array((shape, le!(f32, 4)))?.into_dyn(),
        TensorType::Fp64 => OrtTensor::from_array((shape, le!(f64, 8)))?.into_dyn(),
        TensorType::I32 => OrtTensor::from_array((shape, le!(i32, 4)))?.into_dyn(),
        TensorType::I64 => OrtTensor::from_array((shape, le!(i64, 8)))?.into_dyn(),
        TensorType::U8 => OrtTensor::from_array((shape, tensor.data))?.into_dyn(),
        other => return Err(anyhow!("input tensors of type {other:?} are not supported")),
    };
    Ok(value)
}

fn from_ort_value(value: &DynValue) -> Result<Tensor> {
    fn bytes<T: Copy, const N: usize>(data: &[T], f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len() * N);
        for v in data {
            out.extend_from_slice(&f(*v));
        }
        out
    }
    let element = match value.dtype() {
        ValueType::Tensor { ty, .. } => *ty,
        other => return Err(anyhow!("output is not a tensor but {other:?}")),
    };
    let (shape, ty, data) = match element {
        TensorElementType::Float32 => {
            let (s, d) = value.try_extract_tensor::<f32>()?;
            (s.clone(), TensorType::Fp32, bytes(d, f32::to_le_bytes))
        }
        TensorElementType::Float64 => {
            let (s, d) = value.try_extract_tensor::<f64>()?;
            (s.clone(), TensorType::Fp64, bytes(d, f64::to_le_bytes))
        }
        TensorElementType::Int64 => {
            let (s, d) = value.try_extract_tensor::<i64>()?;
            (s.clone(), TensorType::I64, bytes(d, i64::to_le_bytes))
        }
        TensorElementType::Int32 => {
            let (s, d) = value.try_extract_tensor::<i32>()?;
            (s.clone(), TensorType::I32, bytes(d, i32::to_le_bytes))
        }
        TensorElementType::Uint8 => {
            let (s, d) = value.try_extract_tensor::<u8>()?;
            (s.clone(), TensorType::U8, d.to_vec())
        }
        other => return Err(anyhow!("output tensors of type {other:?} are not supported")),
    };
    let dimensions = shape
        .iter()
        .map(|d| u32::try_from(*d).map_err(|_| anyhow!("output dimension {d} out of range")))
        .collect::<Result<_>>()?;
    Ok(Tensor { dimensions, ty, data })
}

/// What one plugin call did with its graph: the runs it started (capped per call), and when, so
/// the host can tell the call's time in the guest from its time in ONNX Runtime.
#[derive(Default)]
pub struct CallRuns {
    count: AtomicUsize,
    span: Mutex<RunSpan>,
}

/// When a call's model runs happened.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunSpan {
    /// When the first run was asked for: the guest's pre-processing was done.
    pub first_started: Option<Instant>,
    /// When the last run's outputs were handed to the guest.
    pub last_ended: Option<Instant>,
    /// Time inside runs, waits for a batch or a run slot included.
    pub in_runs: Duration,
}

impl CallRuns {
    /// Runs started so far.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub fn span(&self) -> RunSpan {
        *self.span.lock()
    }

    fn record(&self, started: Instant, ended: Instant) {
        let mut span = self.span.lock();
        span.first_started.get_or_insert(started);
        span.last_ended = Some(ended);
        span.in_runs += ended - started;
    }
}

/// The wasi-nn view of a model for one plugin call.
pub struct CallGraph {
    model: Arc<OnnxModel>,
    runs: Arc<CallRuns>,
    max_runs: usize,
    /// Counted in `CALLS_IN_FLIGHT` for the call's life.
    _calling: Counted,
}

impl CallGraph {
    pub fn graph(model: Arc<OnnxModel>, runs: Arc<CallRuns>, max_runs: usize) -> Graph {
        let graph: Box<dyn BackendGraph> = Box::new(Self {
            model,
            runs,
            max_runs,
            _calling: Counted::new(&CALLS_IN_FLIGHT),
        });
        graph.into()
    }
}

impl BackendGraph for CallGraph {
    fn init_execution_context(&self) -> Result<ExecutionContext, BackendError> {
        let ctx: Box<dyn BackendExecutionContext> = Box::new(CallContext {
            model: self.model.clone(),
            runs: self.runs.clone(),
            max_runs: self.max_runs,
        });
        Ok(ctx.into())
    }
}

struct CallContext {
    model: Arc<OnnxModel>,
    runs: Arc<CallRuns>,
    max_runs: usize,
}

impl BackendExecutionContext for CallContext {
    fn set_input(&mut self, _id: Id, _tensor: &Tensor) -> Result<(), BackendError> {
        Err(unsupported("set-input (use compute with named inputs)"))
    }

    fn get_output(&mut self, _id: Id) -> Result<Tensor, BackendError> {
        Err(unsupported("get-output (compute returns the outputs)"))
    }

    fn compute(&mut self, inputs: Option<Vec<NamedTensor>>) -> Result<Option<Vec<NamedTensor>>, BackendError> {
        let inputs = inputs.ok_or_else(|| unsupported("compute without inputs"))?;
        let n = self.runs.count.fetch_add(1, Ordering::Relaxed) + 1;
        if n > self.max_runs {
            return Err(BackendError::BackendAccess(wasmtime::format_err!(
                "model run limit reached: at most {} runs per call",
                self.max_runs
            )));
        }
        let started = Instant::now();
        let outputs = self.model.run(inputs);
        self.runs.record(started, Instant::now());
        outputs
            .map(Some)
            .map_err(|e| BackendError::BackendAccess(wasmtime::format_err!("{e:#}")))
    }
}

fn unsupported(what: &str) -> BackendError {
    BackendError::BackendAccess(wasmtime::format_err!("{what} is not supported by this host"))
}

/// The graphs one plugin call may load by name: exactly the request's model.
pub struct CallRegistry {
    name: String,
    graph: Graph,
}

impl CallRegistry {
    pub fn new(name: String, graph: Graph) -> Self {
        Self { name, graph }
    }
}

impl wasmtime_wasi_nn::GraphRegistry for CallRegistry {
    fn get(&self, name: &str) -> Option<&Graph> {
        (name == self.name).then_some(&self.graph)
    }
    fn get_mut(&mut self, name: &str) -> Option<&mut Graph> {
        (name == self.name).then_some(&mut self.graph)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime_wasi_nn::GraphRegistry;

    fn fixture(rel: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
    }

    /// Reads a little-endian f32 .npy (version 1) as written by numpy.save.
    fn read_f32_npy(path: &Path) -> (Vec<u32>, Vec<f32>) {
        let bytes = std::fs::read(path).unwrap();
        let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
        assert!(header.contains("'descr': '<f4'"), "{header}");
        let shape = header.split("'shape': (").nth(1).unwrap().split(')').next().unwrap();
        let dims = shape.split(',').filter_map(|d| d.trim().parse().ok()).collect();
        let data = bytes[10 + header_len..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        (dims, data)
    }

    fn init_ort() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            let lib = std::env::var_os("ORT_DYLIB_PATH")
                .map(PathBuf::from)
                .unwrap_or_else(|| fixture(".cache/ort/libonnxruntime.so.1.31.1"));
            super::super::runtime::init(&lib, 2).expect("ONNX Runtime (run scripts/setup first)");
        });
    }

    /// CPU sessions with these limits.
    fn cpu_options(
        max_sessions: usize,
        max_batch: usize,
        max_queue_delay: std::time::Duration,
        run_memory: u64,
    ) -> SessionOptions {
        SessionOptions {
            device: Device::Cpu,
            max_sessions,
            max_batch,
            max_queue_delay,
            run_memory,
            adaptive_threads: false,
        }
    }

    fn f32_tensor(dims: Vec<u32>, data: &[f32]) -> Tensor {
        Tensor {
            dimensions: dims,
            ty: TensorType::Fp32,
            data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }

    #[test]
    fn runs_the_model_like_ultralytics_did() {
        init_ort();
        let options = cpu_options(2, 8, std::time::Duration::ZERO, 0);
        let model = OnnxModel::load(&fixture("tests/fixtures/models/shapes-detect.onnx"), options).unwrap();
        let sig = model.signature();
        assert_eq!(sig.inputs[0].name, "images");
        assert_eq!(sig.inputs[0].dims, vec![-1, 3, -1, -1]);
        assert!(sig.metadata.iter().any(|(k, v)| k == "task" && v == "detect"));

        let (in_dims, input) = read_f32_npy(&fixture(
            "tests/fixtures/reference/dev/tensors/01_multi_320x320.letterbox_320x320.input.npy",
        ));
        let (out_dims, expected) = read_f32_npy(&fixture(
            "tests/fixtures/reference/dev/tensors/01_multi_320x320.shapes-detect.output0.npy",
        ));
        let outputs = model
            .run(vec![NamedTensor {
                name: "images".into(),
                tensor: f32_tensor(in_dims, &input),
            }])
            .unwrap();
        assert_eq!(outputs.len(), 1);
        assert_eq!(outputs[0].name, "output0");
        assert_eq!(outputs[0].tensor.dimensions, out_dims);
        let got: Vec<f32> = outputs[0]
            .tensor
            .data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let max_diff = got
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        // Same ONNX Runtime family, CPU provider: differences are float noise (boxes are in pixels).
        assert!(max_diff < 1e-2, "max |diff| {max_diff}");

        // Wrong shapes and names are errors, not panics.
        let bad = model.run(vec![NamedTensor {
            name: "images".into(),
            tensor: f32_tensor(vec![1, 3, 32], &[0.0; 96]),
        }]);
        assert!(bad.err().unwrap().to_string().contains("expects shape"));
        let bad = model.run(vec![NamedTensor {
            name: "nope".into(),
            tensor: f32_tensor(vec![1], &[0.0]),
        }]);
        assert!(bad.err().unwrap().to_string().contains("no input named"));
        let bad = model.run(vec![NamedTensor {
            name: "images".into(),
            tensor: Tensor {
                dimensions: vec![1, 3, 32, 32],
                ty: TensorType::Fp32,
                data: vec![0; 7],
            },
        }]);
        assert!(bad.err().unwrap().to_string().contains("bytes"));
    }

    #[test]
    fn concurrent_runs_batched_together_equal_runs_alone() {
        init_ort();
        let options = cpu_options(1, 8, std::time::Duration::from_millis(200), 0);
        let model = OnnxModel::load(&fixture("tests/fixtures/models/shapes-detect.onnx"), options).unwrap();
        assert_eq!(model.batch_limit(), Some(8));
        let (dims, image) = read_f32_npy(&fixture(
            "tests/fixtures/reference/dev/tensors/01_multi_320x320.letterbox_320x320.input.npy",
        ));
        // Six different inputs (the image, brightened), one or two images each.
        let inputs: Vec<NamedTensor> = (0..6)
            .map(|i| {
                let rows = 1 + i % 2;
                let data: Vec<f32> = (0..rows)
                    .flat_map(|r| image.iter().map(move |v| (v + 0.05 * (i + r) as f32).min(1.0)))
                    .collect();
                let mut d = dims.clone();
                d[0] = rows as u32;
                NamedTensor {
                    name: "images".into(),
                    tensor: f32_tensor(d, &data),
                }
            })
            .collect();
        let clone = |t: &NamedTensor| NamedTensor {
            name: t.name.clone(),
            tensor: Tensor {
                dimensions: t.tensor.dimensions.clone(),
                ty: t.tensor.ty,
                data: t.tensor.data.clone(),
            },
        };
        let alone: Vec<Vec<u8>> = inputs
            .iter()
            .map(|t| model.run(vec![clone(t)]).unwrap().remove(0).tensor.data)
            .collect();
        let together: Vec<Vec<u8>> = std::thread::scope(|s| {
            let handles: Vec<_> = inputs
                .iter()
                .map(|t| {
                    let (model, input) = (&model, clone(t));
                    s.spawn(move || model.run(vec![input]).unwrap().remove(0).tensor.data)
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (i, (a, b)) in alone.iter().zip(&together).enumerate() {
            let (a, b) = (le_f32(a), le_f32(b));
            assert_eq!(a.len(), b.len(), "input {i}");
            let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            // Batched and alone runs take the same kernels; allow float noise (outputs are pixels).
            assert!(diff < 1e-2, "input {i}: max |diff| {diff}");
        }
    }

    #[test]
    fn calibration_bounds_the_images_of_one_run_by_its_memory() {
        init_ort();
        let load = |run_memory: u64| {
            let options = cpu_options(1, 8, std::time::Duration::ZERO, run_memory);
            OnnxModel::load(&fixture("tests/fixtures/models/shapes-detect.onnx"), options).unwrap()
        };
        // Ample memory: the batch limit stands; the measure is what a 320x320 run allocates.
        let roomy = load(1 << 40);
        let per_image = roomy
            .calibrate(&[1, 3, 320, 320])
            .unwrap()
            .expect("resident memory is readable");
        assert!(per_image > 0);
        assert_eq!(roomy.batch_limit(), Some(8));
        // Room for about two images' tensors and working memory: runs hold at most two.
        // Its runs take as many images as fit, with three copies of each input tensor.
        let input = 3 * 320 * 320 * 4;
        let run_memory = 2 * (per_image + 3 * input) + 1;
        let tight = load(run_memory);
        let cost = tight.calibrate(&[1, 3, 320, 320]).unwrap().unwrap() + 3 * input;
        let images = tight.run_images().unwrap();
        assert!(
            images == 1 || images as u64 * cost <= run_memory,
            "{images} x {cost} bytes"
        );
        assert!(
            images == 8 || (images as u64 + 1) * cost > run_memory,
            "{images} x {cost} bytes"
        );
        assert_eq!(tight.batch_limit(), Some(images));
        // Less than one image's worth still runs one at a time.
        let starved = load(1);
        starved.calibrate(&[1, 3, 320, 320]).unwrap();
        assert_eq!(starved.batch_limit(), Some(1));
    }

    #[test]
    fn an_input_viewed_in_place_runs_like_a_copied_one() {
        init_ort();
        let (dims, input) = read_f32_npy(&fixture(
            "tests/fixtures/reference/dev/tensors/01_multi_320x320.letterbox_320x320.input.npy",
        ));
        let tensor = f32_tensor(dims, &input);
        let options = cpu_options(1, 1, std::time::Duration::ZERO, 0);
        let model = OnnxModel::load(&fixture("tests/fixtures/models/shapes-detect.onnx"), options).unwrap();
        let outputs = &model.signature().outputs;
        let mut session = model.checkout(Width::Shared).unwrap();
        let viewed = ort_input(&tensor).unwrap();
        let copied: SessionInputValue<'_> = to_ort_value(tensor.clone()).unwrap().into();
        let a = run_session(&mut session, vec![("images".into(), viewed)], outputs, false).unwrap();
        let b = run_session(&mut session, vec![("images".into(), copied)], outputs, false).unwrap();
        drop(session);
        assert_eq!(a[0].tensor.data, b[0].tensor.data);
        // Bytes that are not a whole tensor are not viewed (and fail as a copy, with the reason).
        let mut short = tensor;
        short.data.pop();
        assert!(ort_input(&short).is_err());
    }

    #[test]
    fn overlapping_runs_take_single_threaded_sessions_and_answer_the_same() {
        init_ort();
        let (dims, input) = read_f32_npy(&fixture(
            "tests/fixtures/reference/dev/tensors/01_multi_320x320.letterbox_320x320.input.npy",
        ));
        let path = fixture("tests/fixtures/models/shapes-detect.onnx");
        let shared = OnnxModel::load(&path, cpu_options(2, 1, std::time::Duration::ZERO, 0)).unwrap();
        let adaptive = OnnxModel::load(
            &path,
            SessionOptions {
                adaptive_threads: true,
                ..cpu_options(2, 1, std::time::Duration::ZERO, 0)
            },
        )
        .unwrap();
        let run = |model: &OnnxModel| {
            let input = NamedTensor {
                name: "images".into(),
                tensor: f32_tensor(dims.clone(), &input),
            };
            le_f32(&model.run(vec![input]).unwrap()[0].tensor.data)
        };
        let want = run(&shared);
        // Two plugin calls under way: the next run expects company and takes one thread.
        let _calls = [Counted::new(&CALLS_IN_FLIGHT), Counted::new(&CALLS_IN_FLIGHT)];
        let got = run(&adaptive);
        assert_eq!(
            adaptive.sessions.lock().created,
            [1, 1],
            "one shared session (from load), one single-threaded"
        );
        assert_eq!(got.len(), want.len());
        // Another thread count may sum in another order: equal to float rounding.
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
            .fold(0f32, f32::max);
        assert!(worst < 1e-4, "single-threaded run differs by {worst}");
        // A model that does not adapt keeps the shared pool whatever is in flight.
        assert_eq!(run(&shared), want);
        assert_eq!(shared.sessions.lock().created[Width::One.index()], 0);
    }

    #[test]
    fn sessions_built_under_load_are_released_once_idle() {
        init_ort();
        let model = OnnxModel::load(
            &fixture("tests/fixtures/models/shapes-detect.onnx"),
            cpu_options(2, 1, std::time::Duration::ZERO, 0),
        )
        .unwrap();
        // Two runs at once: a second session is built.
        let (a, b) = (
            model.checkout(Width::Shared).unwrap(),
            model.checkout(Width::Shared).unwrap(),
        );
        drop((a, b));
        assert_eq!(model.sessions.lock().created, [2, 0]);
        // Not idle long enough: kept.
        assert_eq!(model.release_idle(Duration::from_secs(3600)), 0);
        // Idle: all but one go, and the model still runs (and may grow again).
        assert_eq!(model.release_idle(Duration::ZERO), 1);
        assert_eq!(model.release_idle(Duration::ZERO), 0);
        assert_eq!(model.sessions.lock().created, [1, 0]);
        let (dims, input) = read_f32_npy(&fixture(
            "tests/fixtures/reference/dev/tensors/01_multi_320x320.letterbox_320x320.input.npy",
        ));
        let input = NamedTensor {
            name: "images".into(),
            tensor: f32_tensor(dims, &input),
        };
        assert!(!model.run(vec![input]).unwrap().is_empty());
    }

    #[test]
    fn a_batch_keeps_its_arena_while_more_runs_wait_and_the_kept_session_is_not_grown() {
        init_ort();
        let model = OnnxModel::load(
            &fixture("tests/fixtures/models/shapes-detect.onnx"),
            cpu_options(2, 1, std::time::Duration::ZERO, 0),
        )
        .unwrap();
        let (dims, input) = read_f32_npy(&fixture(
            "tests/fixtures/reference/dev/tensors/01_multi_320x320.letterbox_320x320.input.npy",
        ));
        let batch = |images: u32| {
            let mut d = dims.clone();
            d[0] = images;
            let values: Vec<f32> = (0..images).flat_map(|_| input.iter().copied()).collect();
            NamedTensor {
                name: "images".into(),
                tensor: f32_tensor(d, &values),
            }
        };
        let grown = |model: &OnnxModel| -> Vec<bool> {
            model.sessions.lock().idle[Width::Shared.index()]
                .iter()
                .map(|i| i.grown)
                .collect()
        };
        // A batch with more runs queued behind it keeps its activations; so does the single
        // run after it while others still wait.
        let first = model.run_now(vec![batch(2)], true).unwrap();
        assert_eq!(grown(&model), [true]);
        model.run_now(vec![batch(1)], true).unwrap();
        assert_eq!(grown(&model), [true]);
        // The first run with none behind it hands them back, a single image's run included.
        model.run_now(vec![batch(1)], false).unwrap();
        assert_eq!(grown(&model), [false]);
        // A lone batch hands its own back at once, and answers as before.
        assert_eq!(
            model.run_now(vec![batch(2)], false).unwrap()[0].tensor.data,
            first[0].tensor.data
        );
        assert_eq!(grown(&model), [false]);
        // Two sessions idle, one grown: the one released is the grown one, even if newer.
        let (a, mut b) = (
            model.checkout(Width::Shared).unwrap(),
            model.checkout(Width::Shared).unwrap(),
        );
        b.grown = true;
        drop(a);
        drop(b);
        assert_eq!(model.release_idle(Duration::ZERO), 1);
        assert_eq!(grown(&model), [false]);
        // The one session left grown, idle: a run on zeros hands the arena back (once the model
        // is calibrated, which gives those zeros their shape), and it still answers the same.
        model.run_now(vec![batch(2)], true).unwrap();
        model.release_idle(Duration::ZERO);
        assert_eq!(grown(&model), [true], "not calibrated: left as it is");
        model.calibrate(&dims).unwrap();
        assert_eq!(model.release_idle(Duration::from_secs(3600)), 0);
        assert_eq!(grown(&model), [true], "not idle long enough");
        assert_eq!(model.release_idle(Duration::ZERO), 0);
        assert_eq!(grown(&model), [false]);
        assert_eq!(
            model.run_now(vec![batch(2)], false).unwrap()[0].tensor.data,
            first[0].tensor.data
        );
    }

    fn le_f32(data: &[u8]) -> Vec<f32> {
        data.chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    #[test]
    fn a_call_sees_only_its_own_graph_and_run_budget() {
        init_ort();
        let options = cpu_options(1, 1, std::time::Duration::ZERO, 0);
        let model = OnnxModel::load(&fixture("tests/fixtures/models/shapes-detect.onnx"), options).unwrap();
        let runs = Arc::new(CallRuns::default());
        let graph = CallGraph::graph(model, runs.clone(), 1);
        let registry = CallRegistry::new("shapes/1".into(), graph);
        assert!(registry.get("shapes/1").is_some());
        assert!(registry.get("other/1").is_none());
        assert!(registry.get("").is_none());

        let mut ctx = registry.get("shapes/1").unwrap().init_execution_context().unwrap();
        let input = || {
            vec![NamedTensor {
                name: "images".into(),
                tensor: f32_tensor(vec![1, 3, 64, 64], &[0.5; 3 * 64 * 64]),
            }]
        };
        assert!(ctx.compute_with_io(input()).is_ok());
        let span = runs.span();
        let (first, last) = (span.first_started.unwrap(), span.last_ended.unwrap());
        assert!(last > first && span.in_runs == last - first, "{span:?}");
        let second = ctx.compute_with_io(input());
        assert!(second.is_err(), "the second run must exceed the budget of 1");
        assert_eq!(runs.count(), 2);
        assert_eq!(runs.span().in_runs, span.in_runs, "a refused run is not timed");
    }
}
