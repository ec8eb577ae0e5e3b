//! ONNX Runtime set-up: finding the shared library and creating the process-wide environment.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ort::environment::GlobalThreadPoolOptions;

/// Where inference runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Device {
    Cpu,
    Cuda,
}

/// Finds the ONNX Runtime library: an explicit path, else `ORT_DYLIB_PATH`, else the
/// `libonnxruntime.so*` the set-up placed beside the executable.
pub fn locate_library(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path.to_path_buf());
    }
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().context("cannot locate the running executable")?;
    let dir = exe.parent().context("executable has no parent directory")?;
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with("libonnxruntime.so") || n == "onnxruntime.dll" || n == "libonnxruntime.dylib"
            })
        })
        .collect();
    found.sort();
    found.pop().with_context(|| {
        format!(
            "ONNX Runtime library not found beside {} (run scripts/setup, or pass --ort-library / set ORT_DYLIB_PATH)",
            exe.display()
        )
    })
}

/// Loads ONNX Runtime and creates its environment with one shared, non-spinning intra-op
/// thread pool: per-session spinning pools fight each other on small machines (see docs).
pub fn init(library: &Path, threads: usize) -> Result<()> {
    if !library.is_file() {
        bail!("ONNX Runtime library {} does not exist", library.display());
    }
    // ort panics on a library it cannot load: try it ourselves first for a clear error.
    check_loadable(library)?;
    let builder = ort::init_from(library.display().to_string());
    let pool = GlobalThreadPoolOptions::default()
        .with_intra_threads(threads)?
        .with_inter_threads(1)?
        .with_spin_control(false)?;
    let committed = builder
        .with_name("inference")
        .with_telemetry(false)
        .with_global_thread_pool(pool)
        .commit()
        .with_context(|| format!("cannot initialise ONNX Runtime from {}", library.display()))?;
    if !committed {
        tracing::warn!("ONNX Runtime environment was already initialised");
    }
    Ok(())
}

fn check_loadable(library: &Path) -> Result<()> {
    use std::ffi::{CStr, CString};
    use std::os::unix::ffi::OsStrExt;
    let path = CString::new(library.as_os_str().as_bytes()).context("library path contains a NUL byte")?;
    // SAFETY: dlopen/dlerror are called with a valid C string; the handle is deliberately kept
    // open (ort opens the same library right after, and it must stay loaded for the process).
    unsafe {
        let handle = libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
        if handle.is_null() {
            let reason = libc::dlerror();
            let reason = if reason.is_null() {
                "unknown error".into()
            } else {
                CStr::from_ptr(reason).to_string_lossy().into_owned()
            };
            bail!("cannot load ONNX Runtime from {}: {reason}", library.display());
        }
    }
    Ok(())
}

/// Fails at start-up, not at the first request, when the asked-for device cannot be used.
pub fn check_device(device: Device) -> Result<()> {
    match device {
        Device::Cpu => Ok(()),
        Device::Cuda => cuda_available(),
    }
}

/// A one-node ONNX model (y = Relu(x), float[1]) used to prove the device works at start-up.
#[cfg(feature = "cuda")]
const PROBE_MODEL: &[u8] = &[
    8, 8, 58, 55, 10, 12, 10, 1, 120, 18, 1, 121, 34, 4, 82, 101, 108, 117, 18, 5, 112, 114, 111, 98, 101, 90, 15, 10,
    1, 120, 18, 10, 10, 8, 8, 1, 18, 4, 10, 2, 8, 1, 98, 15, 10, 1, 121, 18, 10, 10, 8, 8, 1, 18, 4, 10, 2, 8, 1, 66,
    4, 10, 0, 16, 13,
];

#[cfg(feature = "cuda")]
fn cuda_available() -> Result<()> {
    use ort::execution_providers::{CUDAExecutionProvider, ExecutionProvider};
    let ep = CUDAExecutionProvider::default();
    if !ep.is_available().unwrap_or(false) {
        bail!(
            "--device cuda: this ONNX Runtime library has no CUDA execution provider (use the onnxruntime-gpu build)"
        );
    }
    // Building a session with error_on_failure proves a GPU, the driver and CUDA libraries are usable.
    let mut session = ort::session::Session::builder()?
        .with_execution_providers([ep.build().error_on_failure()])?
        .commit_from_memory(PROBE_MODEL)
        .context("--device cuda: the CUDA execution provider cannot start (GPU, driver or CUDA libraries missing?)")?;
    let x = ort::value::Tensor::from_array((vec![1i64], vec![-1.0f32]))?;
    session
        .run(ort::inputs![x])
        .context("--device cuda: a probe inference on the GPU failed")?;
    Ok(())
}

#[cfg(not(feature = "cuda"))]
fn cuda_available() -> Result<()> {
    bail!("--device cuda: this build has no CUDA support (rebuild with `--features cuda`)")
}
