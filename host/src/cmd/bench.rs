//! `inference benchmark`: measuring the raw native pipeline and a running server.
//!
//! `raw` is the floor the server is judged against: the same decoder, letterbox and ONNX
//! Runtime settings as the server, in-process, with no WASM and no HTTP. `http` is a load
//! generator for a running server. `scripts/bench` runs both and compares them.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use inference_guest::{self as guest, ImageRef};
use ort::session::Session;
use ort::value::Tensor as OrtTensor;
use serde::{Deserialize, Serialize};

use super::bench_rfdetr::RfDetr;
use crate::cli::{BenchAction, HttpArgs, RawArgs};
use crate::models::ModelDescription;
use crate::nn::{self, Device, OnnxModel, SessionOptions};

pub fn run(action: BenchAction) -> Result<()> {
    match action {
        BenchAction::Raw(args) => raw(args),
        BenchAction::Http(args) => http(args),
    }
}

// ---------------------------------------------------------------------------------------------
// Shared measurement helpers
// ---------------------------------------------------------------------------------------------

/// Latency distribution of one run, in milliseconds.
#[derive(Debug, Serialize)]
struct Latency {
    p50_ms: f64,
    p99_ms: f64,
    mean_ms: f64,
    min_ms: f64,
    max_ms: f64,
}

impl Latency {
    fn of(samples: &mut [f64]) -> Self {
        samples.sort_by(f64::total_cmp);
        let mean = if samples.is_empty() {
            0.0
        } else {
            samples.iter().sum::<f64>() / samples.len() as f64
        };
        Self {
            p50_ms: percentile(samples, 50.0),
            p99_ms: percentile(samples, 99.0),
            mean_ms: mean,
            min_ms: samples.first().copied().unwrap_or(0.0),
            max_ms: samples.last().copied().unwrap_or(0.0),
        }
    }
}

/// Nearest-rank percentile of sorted samples (0 when there are none).
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// CPU time (user + system) of this process, all threads, at microsecond resolution.
fn own_cpu_time() -> Result<Duration> {
    // SAFETY: getrusage only writes the struct it is given, which is zero-initialised POD.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return Err(std::io::Error::last_os_error()).context("getrusage failed");
        }
        usage
    };
    let tv = |t: libc::timeval| Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64);
    Ok(tv(usage.ru_utime) + tv(usage.ru_stime))
}

/// CPU time (user + system, all threads) of another process from `/proc/<pid>/stat`, at the
/// kernel's tick resolution (usually 10 ms).
fn process_cpu_time(pid: u32) -> Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    // The command name (field 2) may contain spaces; the fields after its ')' are fixed.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("{path} is malformed"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')' comes field 3 (state); utime and stime are fields 14 and 15.
    let tick = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| anyhow!("{path} has no CPU time field {}", i + 3))
    };
    let ticks = tick(11)? + tick(12)?;
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if per_second <= 0 {
        bail!("cannot read the clock tick rate");
    }
    Ok(Duration::from_secs_f64(ticks as f64 / per_second as f64))
}

/// Resident memory now and at its peak (VmRSS, VmHWM), in MiB, of `pid` or of this process.
#[derive(Clone, Copy, Debug, Serialize)]
struct Memory {
    rss_mib: f64,
    peak_rss_mib: f64,
}

fn memory(pid: Option<u32>) -> Result<Memory> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".to_string(),
    };
    let status = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let field = |name: &str| -> Result<f64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map(|kib| kib / 1024.0)
            .ok_or_else(|| anyhow!("{path} has no {name}"))
    };
    Ok(Memory {
        rss_mib: field("VmRSS:")?,
        peak_rss_mib: field("VmHWM:")?,
    })
}

/// Resets `pid`'s VmHWM to its current VmRSS, so that the next reading gives the peak of one
/// level rather than of the process's life.
fn reset_peak_memory(pid: u32) -> Result<()> {
    let path = format!("/proc/{pid}/clear_refs");
    std::fs::write(&path, "5").with_context(|| format!("cannot write {path}"))
}

// ---------------------------------------------------------------------------------------------
// raw: the native pipeline
// ---------------------------------------------------------------------------------------------

/// The server's default `--max-image-pixels`.
const MAX_IMAGE_PIXELS: u64 = 50_000_000;

/// What every pipeline thread shares.
struct RawPipeline {
    base64: String,
    input: guest::ModelInput,
    input_name: String,
    shape: Vec<i64>,
    /// Images per ONNX Runtime run (copies of the one image).
    batch: usize,
    classes: usize,
    /// Classifiers' outputs are probabilities per class: ranking them is their post-processing.
    classification: bool,
    postprocess: Option<f32>,
    /// RF-DETR models run the rfdetr-detection plugin's pipeline (`bench_rfdetr`).
    rfdetr: Option<RfDetr>,
}

/// Time spent in each stage of one image, in milliseconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
struct Stages {
    base64_ms: f64,
    decode_ms: f64,
    letterbox_ms: f64,
    run_ms: f64,
    postprocess_ms: f64,
}

impl Stages {
    fn total(&self) -> f64 {
        self.base64_ms + self.decode_ms + self.letterbox_ms + self.run_ms + self.postprocess_ms
    }

    fn add(&mut self, o: &Stages) {
        self.base64_ms += o.base64_ms;
        self.decode_ms += o.decode_ms;
        self.letterbox_ms += o.letterbox_ms;
        self.run_ms += o.run_ms;
        self.postprocess_ms += o.postprocess_ms;
    }

    fn scaled(&self, f: f64) -> Stages {
        Stages {
            base64_ms: self.base64_ms * f,
            decode_ms: self.decode_ms * f,
            letterbox_ms: self.letterbox_ms * f,
            run_ms: self.run_ms * f,
            postprocess_ms: self.postprocess_ms * f,
        }
    }
}

impl RawPipeline {
    /// One call of `batch` images through the pipeline (one ONNX Runtime run); returns the
    /// stage times of the call and the number of detections (with --postprocess) or of output
    /// values of its first image.
    fn once(&self, session: &mut Session) -> Result<(Stages, usize)> {
        let t0 = Instant::now();
        let encoded = (0..self.batch)
            .map(|_| crate::input::decode_base64(&self.base64))
            .collect::<Result<Vec<_>, _>>()?;
        let t1 = Instant::now();
        let images = encoded
            .iter()
            .map(|bytes| crate::input::decode::decode_image(bytes, MAX_IMAGE_PIXELS))
            .collect::<Result<Vec<_>, _>>()?;
        let t2 = Instant::now();
        let refs = images
            .iter()
            .map(|image| ImageRef::new(image.width, image.height, &image.rgb).map_err(|e| anyhow!(e)))
            .collect::<Result<Vec<_>>>()?;
        let (data, transforms) = match &self.rfdetr {
            Some(rfdetr) => rfdetr.batch(&self.input, &refs)?,
            None => self.input.batch(&refs).map_err(|e| anyhow!(e))?,
        };
        let t3 = Instant::now();
        let tensor = OrtTensor::from_array((self.shape.clone(), data))?;
        let outputs = session
            .run(ort::inputs![self.input_name.as_str() => tensor])
            .context("ONNX Runtime run failed")?;
        if outputs.len() == 0 {
            bail!("the model returned no outputs");
        }
        let (out_shape, out) = outputs[0].try_extract_tensor::<f32>()?;
        let t4 = Instant::now();
        let found = match self.postprocess {
            None => out.len(),
            Some(confidence) if self.rfdetr.is_some() => match &self.rfdetr {
                Some(rfdetr) => rfdetr.postprocess(&outputs, &self.input, &transforms[0], confidence)?,
                None => 0,
            },
            Some(confidence) if self.classification => {
                let mut ranked: Vec<(usize, f32)> = out.iter().copied().enumerate().collect();
                ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
                ranked.iter().filter(|(_, p)| *p >= confidence).count()
            }
            Some(confidence) => {
                let dims: Vec<usize> = out_shape.iter().map(|d| (*d).max(0) as usize).collect();
                let layout = guest::infer_layout(&dims, self.classes).map_err(|e| anyhow!(e))?;
                let classes = if self.classes > 0 {
                    self.classes
                } else {
                    guest::classes_in(&dims, layout)
                };
                let mut first = 0;
                for (index, transform) in transforms.iter().enumerate().rev() {
                    let candidates =
                        guest::decode(out, &dims, index, layout, classes, confidence).map_err(|e| anyhow!(e))?;
                    let kept = guest::nms(
                        candidates,
                        crate::tasks::DEFAULT_IOU,
                        false,
                        crate::tasks::DEFAULT_MAX_DETECTIONS as usize,
                    );
                    // Mapping back is part of the plugin's work too.
                    let boxes: Vec<[f32; 4]> = kept
                        .iter()
                        .map(|c| transform.to_original_box(c.x1, c.y1, c.x2, c.y2))
                        .collect();
                    first = boxes.len();
                }
                first
            }
        };
        let t5 = Instant::now();
        Ok((
            Stages {
                base64_ms: ms(t1 - t0),
                decode_ms: ms(t2 - t1),
                letterbox_ms: ms(t3 - t2),
                run_ms: ms(t4 - t3),
                postprocess_ms: ms(t5 - t4),
            },
            found,
        ))
    }
}

#[derive(Debug, Serialize)]
struct RawReport {
    model: String,
    image: String,
    image_size: [u32; 2],
    input_size: [u32; 2],
    ort_threads: usize,
    concurrency: usize,
    /// Images per run; latency and stages are per run.
    batch: usize,
    images: usize,
    wall_s: f64,
    images_per_s: f64,
    latency: Latency,
    cpu_ms_per_image: f64,
    stages_mean: Stages,
    outputs_per_image: usize,
    memory: Memory,
}

fn raw(args: RawArgs) -> Result<()> {
    let concurrency = args.concurrency.max(1);
    if args.iterations == 0 || args.batch == 0 {
        bail!("--iterations and --batch must be at least 1");
    }
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let threads = args.threads.unwrap_or(cpus).max(1);
    let library = nn::runtime::locate_library(args.ort_library.as_deref())?;
    nn::runtime::init(&library, threads)?;

    // The server's description of the model: input name and size, letterbox, normalisation.
    let dir = args.model.parent().unwrap_or(Path::new("."));
    let signature = OnnxModel::load(
        &args.model,
        SessionOptions {
            device: Device::Cpu,
            max_sessions: 1,
            max_batch: 1,
            max_queue_delay: Duration::ZERO,
            run_memory: 0,
            adaptive_threads: false,
        },
    )?
    .signature()
    .clone();
    let description = ModelDescription::from_dir("bench/raw", dir, &signature)?;
    let input = description.input().map_err(|e| anyhow!("unusable model input: {e}"))?;
    let encoded = std::fs::read(&args.image).with_context(|| format!("cannot read {}", args.image.display()))?;
    let pipeline = Arc::new(RawPipeline {
        base64: base64::engine::general_purpose::STANDARD.encode(&encoded),
        shape: input.dims(args.batch).into_iter().map(i64::from).collect(),
        batch: args.batch,
        input,
        input_name: description.input_name.clone(),
        classes: description.class_names.len(),
        classification: description.task == <crate::tasks::Classification as crate::tasks::Task>::NAME,
        postprocess: args.postprocess.then_some(args.confidence),
        rfdetr: RfDetr::of(&description),
    });
    let probe = crate::input::decode::decode_image(&encoded, MAX_IMAGE_PIXELS)?;

    let sessions = (0..concurrency)
        .map(|_| {
            // The server's own session, without the wasi-nn tensor copies.
            nn::graph::build_session(
                &args.model,
                &SessionOptions {
                    device: Device::Cpu,
                    max_sessions: 1,
                    max_batch: 1,
                    max_queue_delay: Duration::ZERO,
                    run_memory: 0,
                    adaptive_threads: false,
                },
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let warmup_each = args.warmup.div_ceil(concurrency).max(1);
    let next = AtomicUsize::new(0);
    let start = Barrier::new(concurrency + 1);
    let (results, wall, cpu) = std::thread::scope(|scope| -> Result<_> {
        let workers: Vec<_> = sessions
            .into_iter()
            .map(|mut session| {
                let (pipeline, next, start) = (&pipeline, &next, &start);
                scope.spawn(move || -> Result<(Vec<f64>, Stages, usize)> {
                    let mut warm = Ok(());
                    for _ in 0..warmup_each {
                        if let Err(e) = pipeline.once(&mut session) {
                            warm = Err(e);
                            break;
                        }
                    }
                    // Always reach the barrier, or the other threads would wait forever.
                    start.wait();
                    warm.context("warm-up failed")?;
                    let (mut latencies, mut sum, mut found) = (Vec::new(), Stages::default(), 0);
                    while next.fetch_add(args.batch, Ordering::Relaxed) < args.iterations {
                        let (stages, n) = pipeline.once(&mut session)?;
                        latencies.push(stages.total());
                        sum.add(&stages);
                        found = n;
                    }
                    Ok((latencies, sum, found))
                })
            })
            .collect();
        start.wait();
        let (t0, cpu0) = (Instant::now(), own_cpu_time()?);
        let results = workers
            .into_iter()
            .map(|w| w.join().map_err(|_| anyhow!("a pipeline thread panicked"))?)
            .collect::<Result<Vec<_>>>()?;
        Ok((results, t0.elapsed(), own_cpu_time()? - cpu0))
    })?;

    let mut latencies = Vec::with_capacity(args.iterations);
    let mut stages = Stages::default();
    let mut found = 0;
    for (l, s, n) in results {
        latencies.extend(l);
        stages.add(&s);
        found = found.max(n);
    }
    let images = latencies.len() * args.batch;
    let report = RawReport {
        model: args.model.display().to_string(),
        image: args.image.display().to_string(),
        image_size: [probe.width, probe.height],
        input_size: [description.input_width, description.input_height],
        ort_threads: threads,
        concurrency,
        batch: args.batch,
        images,
        wall_s: wall.as_secs_f64(),
        images_per_s: images as f64 / wall.as_secs_f64(),
        latency: Latency::of(&mut latencies),
        cpu_ms_per_image: ms(cpu) / images as f64,
        // Per image, so that batched and single runs compare stage by stage.
        stages_mean: stages.scaled(1.0 / images as f64),
        outputs_per_image: found,
        memory: memory(None)?,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_raw(&report, args.postprocess);
    }
    Ok(())
}

/// The plugin's view of the model input, built from the host's description as the
/// object-detection plugin builds it.
fn print_raw(r: &RawReport, postprocess: bool) {
    println!(
        "raw pipeline: {} on {} ({}x{} → {}x{}), ORT threads {}, concurrency {}, {} image(s) per run",
        r.model,
        r.image,
        r.image_size[0],
        r.image_size[1],
        r.input_size[0],
        r.input_size[1],
        r.ort_threads,
        r.concurrency,
        r.batch
    );
    println!(
        "  {} images in {:.2} s: {:.1} images/s, {:.2} CPU-ms per image",
        r.images, r.wall_s, r.images_per_s, r.cpu_ms_per_image
    );
    let l = &r.latency;
    println!(
        "  latency ms: p50 {:.2}  p99 {:.2}  mean {:.2}  min {:.2}  max {:.2}",
        l.p50_ms, l.p99_ms, l.mean_ms, l.min_ms, l.max_ms
    );
    let s = &r.stages_mean;
    print!(
        "  stages (mean ms per image): base64 {:.3}  decode {:.3}  letterbox {:.3}  session.run {:.3}",
        s.base64_ms, s.decode_ms, s.letterbox_ms, s.run_ms
    );
    if postprocess {
        print!(
            "  decode+NMS {:.3} ({} detections)",
            s.postprocess_ms, r.outputs_per_image
        );
    }
    println!();
    println!(
        "  memory: VmRSS {:.1} MiB, VmHWM {:.1} MiB",
        r.memory.rss_mib, r.memory.peak_rss_mib
    );
}

// ---------------------------------------------------------------------------------------------
// http: the load generator
// ---------------------------------------------------------------------------------------------

/// The parts of a detection response the load generator checks.
#[derive(Deserialize)]
struct DetectionResponse {
    time: f64,
    predictions: Vec<serde::de::IgnoredAny>,
}

/// What one request measured.
struct Sample {
    round_trip_ms: f64,
    /// The server's own `time` (model + plugin), summed over the images of the request.
    server_ms: f64,
    predictions: usize,
}

#[derive(Debug, Serialize)]
struct Level {
    concurrency: usize,
    requests: usize,
    images: usize,
    /// Failed requests other than 503s.
    errors: usize,
    first_error: Option<String>,
    /// 503 answers (overload), and how many of them lacked Retry-After.
    rejected: usize,
    rejected_without_retry_after: usize,
    /// Successful responses with no prediction at all (legitimate for an empty image).
    empty_responses: usize,
    wall_s: f64,
    images_per_s: f64,
    latency: Latency,
    /// Distribution of the server-reported `time` per request.
    server_time: Latency,
    /// Round trip minus the server's `time`, per request: HTTP, JSON, base64, image decode, queueing.
    outside_time: Latency,
    client_cpu_ms_per_image: f64,
    server_cpu_ms_per_image: Option<f64>,
    server_memory: Option<Memory>,
}

#[derive(Debug, Serialize)]
struct HttpReport {
    url: String,
    model: String,
    image: String,
    image_bytes: usize,
    request_bytes: usize,
    batch: usize,
    levels: Vec<Level>,
}

/// A 503: the server refused the request under overload (as it should, with Retry-After).
#[derive(Debug)]
struct Rejected {
    retry_after: bool,
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let with = if self.retry_after { "with" } else { "WITHOUT" };
        write!(f, "HTTP 503 {with} Retry-After")
    }
}

impl std::error::Error for Rejected {}

struct Load {
    client: reqwest::Client,
    endpoint: String,
    body: axum::body::Bytes,
    batch: usize,
}

impl Load {
    async fn one(&self) -> Result<Sample> {
        let started = Instant::now();
        let response = self
            .client
            .post(&self.endpoint)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(self.body.clone())
            .send()
            .await
            .context("request failed")?;
        let status = response.status();
        let retry_after = response.headers().contains_key(reqwest::header::RETRY_AFTER);
        let body = response.bytes().await.context("reading the response failed")?;
        let round_trip_ms = ms(started.elapsed());
        if status == reqwest::StatusCode::SERVICE_UNAVAILABLE {
            return Err(Rejected { retry_after }.into());
        }
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            bail!("HTTP {status}: {}", text.chars().take(300).collect::<String>());
        }
        let responses = if self.batch > 1 {
            serde_json::from_slice::<Vec<DetectionResponse>>(&body)
        } else {
            serde_json::from_slice::<DetectionResponse>(&body).map(|r| vec![r])
        }
        .context("the response is not a detection response with `time` and `predictions`")?;
        if responses.len() != self.batch {
            bail!("{} responses for {} images", responses.len(), self.batch);
        }
        // The server reports one `time` for the whole call, repeated in every image's response.
        let server_ms = responses.first().map_or(0.0, |r| r.time * 1000.0);
        Ok(Sample {
            round_trip_ms,
            server_ms,
            predictions: responses.iter().map(|r| r.predictions.len()).sum(),
        })
    }

    /// `count` requests from `workers` concurrent workers.
    async fn run(self: &Arc<Self>, workers: usize, count: usize) -> Vec<Result<Sample>> {
        let next = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..workers)
            .map(|_| {
                let (load, next) = (self.clone(), next.clone());
                tokio::spawn(async move {
                    let mut out = Vec::new();
                    while next.fetch_add(1, Ordering::Relaxed) < count {
                        out.push(load.one().await);
                    }
                    out
                })
            })
            .collect();
        let mut all = Vec::with_capacity(count);
        for task in tasks {
            match task.await {
                Ok(samples) => all.extend(samples),
                Err(e) => all.push(Err(anyhow!("load worker failed: {e}"))),
            }
        }
        all
    }
}

fn http(args: HttpArgs) -> Result<()> {
    if args.requests == 0 || args.batch == 0 || args.concurrency.contains(&0) {
        bail!("--requests, --batch and every --concurrency level must be at least 1");
    }
    let encoded = std::fs::read(&args.image).with_context(|| format!("cannot read {}", args.image.display()))?;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&encoded);
    let one = serde_json::json!({"type": "base64", "value": b64});
    let image = if args.batch > 1 {
        serde_json::Value::Array(vec![one; args.batch])
    } else {
        one
    };
    let mut fields = serde_json::json!({
        "model_id": args.model,
        "image": image,
        "confidence": args.confidence,
    });
    if let Some(extra) = &args.extra {
        let extra: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(extra).context("--extra must be a JSON object")?;
        fields.as_object_mut().expect("an object").extend(extra);
    }
    let body = serde_json::to_vec(&fields)?;
    let request_bytes = body.len();
    let load = Arc::new(Load {
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .context("cannot create the HTTP client")?,
        endpoint: format!("{}/infer/{}", args.url.trim_end_matches('/'), args.route),
        body: body.into(),
        batch: args.batch,
    });

    // One thread: the generator usually shares the machine with the server, so it should take
    // as little CPU as possible; async I/O keeps many requests in flight from one thread.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let mut levels = Vec::new();
    for &concurrency in &args.concurrency {
        let level = rt.block_on(measure_level(&load, &args, concurrency))?;
        if !args.json {
            print_level(&level, levels.is_empty());
        }
        levels.push(level);
    }
    let report = HttpReport {
        url: args.url.clone(),
        model: args.model.clone(),
        image: args.image.display().to_string(),
        image_bytes: encoded.len(),
        request_bytes,
        batch: args.batch,
        levels,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

async fn measure_level(load: &Arc<Load>, args: &HttpArgs, concurrency: usize) -> Result<Level> {
    if let Some(pid) = args.server_pid {
        reset_peak_memory(pid)?;
    }
    let warm = load.run(concurrency, args.warmup.max(concurrency)).await;
    let refused = |r: &Result<Sample>| r.as_ref().is_err_and(|e| e.is::<Rejected>());
    if let Some(Err(e)) = warm.into_iter().find(|r| r.is_err() && !refused(r)) {
        return Err(e.context(format!("warm-up at concurrency {concurrency} failed")));
    }
    let server_cpu0 = args.server_pid.map(process_cpu_time).transpose()?;
    let (t0, cpu0) = (Instant::now(), own_cpu_time()?);
    let results = load.run(concurrency, args.requests).await;
    let (wall, client_cpu) = (t0.elapsed(), own_cpu_time()? - cpu0);
    let server_cpu = match (args.server_pid, server_cpu0) {
        (Some(pid), Some(before)) => Some(process_cpu_time(pid)?.saturating_sub(before)),
        _ => None,
    };
    let server_memory = args.server_pid.map(|pid| memory(Some(pid))).transpose()?;

    let (mut rtt, mut server, mut outside) = (Vec::new(), Vec::new(), Vec::new());
    let (mut errors, mut first_error, mut empty) = (0, None, 0);
    let (mut rejected, mut without_retry_after) = (0, 0);
    for result in results {
        match result {
            Err(e) if e.is::<Rejected>() => {
                rejected += 1;
                without_retry_after += usize::from(!e.downcast_ref::<Rejected>().is_some_and(|r| r.retry_after));
            }
            Ok(s) => {
                rtt.push(s.round_trip_ms);
                server.push(s.server_ms);
                outside.push(s.round_trip_ms - s.server_ms);
                empty += usize::from(s.predictions == 0);
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    let images = rtt.len() * args.batch;
    let per_image = |d: Duration| (images > 0).then(|| ms(d) / images as f64);
    Ok(Level {
        concurrency,
        requests: args.requests,
        images,
        errors,
        first_error,
        rejected,
        rejected_without_retry_after: without_retry_after,
        empty_responses: empty,
        wall_s: wall.as_secs_f64(),
        images_per_s: images as f64 / wall.as_secs_f64(),
        latency: Latency::of(&mut rtt),
        server_time: Latency::of(&mut server),
        outside_time: Latency::of(&mut outside),
        client_cpu_ms_per_image: per_image(client_cpu).unwrap_or(0.0),
        server_cpu_ms_per_image: server_cpu.and_then(per_image),
        server_memory,
    })
}

fn print_level(l: &Level, header: bool) {
    if header {
        println!(
            "{:>5} {:>6} {:>6} {:>5} {:>8} {:>8} {:>9} {:>10} {:>11} {:>11} {:>11} {:>8}",
            "conc",
            "images",
            "errors",
            "503s",
            "p50 ms",
            "p99 ms",
            "images/s",
            "time p50",
            "outside p50",
            "srv CPU-ms",
            "cli CPU-ms",
            "RSS MiB"
        );
    }
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
    println!(
        "{:>5} {:>6} {:>6} {:>5} {:>8.2} {:>8.2} {:>9.1} {:>10.2} {:>11.2} {:>11} {:>11.2} {:>8}",
        l.concurrency,
        l.images,
        l.errors,
        l.rejected,
        l.latency.p50_ms,
        l.latency.p99_ms,
        l.images_per_s,
        l.server_time.p50_ms,
        l.outside_time.p50_ms,
        opt(l.server_cpu_ms_per_image),
        l.client_cpu_ms_per_image,
        opt(l.server_memory.map(|m| m.rss_mib)),
    );
    if let Some(e) = &l.first_error {
        println!("      first error: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut samples: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let l = Latency::of(&mut samples);
        assert_eq!((l.p50_ms, l.p99_ms, l.min_ms, l.max_ms), (50.0, 99.0, 1.0, 100.0));
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }

    #[test]
    fn reads_process_cpu_and_memory() {
        let pid = std::process::id();
        assert!(process_cpu_time(pid).is_ok());
        assert!(own_cpu_time().is_ok());
        let m = memory(Some(pid)).unwrap();
        assert!(m.rss_mib > 0.0 && m.peak_rss_mib >= m.rss_mib);
        assert!(process_cpu_time(u32::MAX).is_err());
    }
}
