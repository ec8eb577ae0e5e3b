//! Recording metrics, from any layer: the metric names, their descriptions, and one function per
//! thing measured. The Prometheus recorder is installed once per process (`init`); rendering
//! `/metrics` and the per-request HTTP metrics are the HTTP edge's (`server::metrics`). Labels stay
//! bounded: route templates (never raw paths), known methods, status codes, and the ids of models
//! that were loaded.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const REQUESTS_TOTAL: &str = "inference_requests_total";
pub const REQUEST_SECONDS: &str = "inference_request_duration_seconds";
pub const IN_FLIGHT: &str = "inference_in_flight_requests";
pub const QUEUE_SECONDS: &str = "inference_queue_seconds";
pub const DECODE_SECONDS: &str = "inference_decode_seconds";
pub const PLUGIN_SECONDS: &str = "inference_plugin_seconds";
pub const PLUGIN_STAGE_SECONDS: &str = "inference_plugin_stage_seconds";
pub const MODEL_SECONDS: &str = "inference_model_seconds";
pub const MODELS_LOADED: &str = "inference_models_loaded";
pub const PLUGIN_TRAPS: &str = "inference_plugin_traps_total";
pub const PLUGIN_ERRORS: &str = "inference_plugin_errors_total";
pub const CACHE_BYTES: &str = "inference_model_cache_bytes";
pub const DOWNLOADS_TOTAL: &str = "inference_model_downloads_total";
pub const DOWNLOAD_BYTES: &str = "inference_model_download_bytes_total";
pub const DOWNLOAD_SECONDS: &str = "inference_model_download_seconds";
pub const EVICTIONS_TOTAL: &str = "inference_model_cache_evictions_total";
pub const UNLOADS_TOTAL: &str = "inference_model_unloads_total";
pub const BATCH_IMAGES: &str = "inference_batch_images";
pub const BATCH_QUEUE_SECONDS: &str = "inference_batch_queue_seconds";
pub const BATCH_QUEUE_IMAGES: &str = "inference_batch_queue_images";
pub const RUN_SLOTS_BUSY: &str = "inference_run_slots_busy";
pub const REJECTED_TOTAL: &str = "inference_rejected_total";
pub const INFLIGHT_IMAGE_BYTES: &str = "inference_inflight_image_bytes";
pub const INFLIGHT_BODY_BYTES: &str = "inference_inflight_body_bytes";
pub const QUOTA_STORE_UP: &str = "inference_quota_store_up";
pub const QUOTA_STORE_ERRORS: &str = "inference_quota_store_errors_total";
pub const QUOTA_FALLBACKS: &str = "inference_quota_fallbacks_total";
pub const DRAINING: &str = "inference_draining";
pub const CACHE_LOCK_WAITS: &str = "inference_model_cache_lock_waits_total";

/// Latency buckets (seconds) of every `*_seconds` histogram: 0.5 ms to 30 s.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Buckets of the images-per-run histogram.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];

/// How often histogram samples are folded into their buckets between scrapes.
const UPKEEP: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder (once); `None` if another recorder was installed first.
pub fn init() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(BATCH_IMAGES.into()), BATCH_BUCKETS))
                .and_then(|b| b.install_recorder());
            match recorder {
                Ok(handle) => {
                    describe();
                    let upkeep = handle.clone();
                    let spawned = std::thread::Builder::new()
                        .name("metrics-upkeep".into())
                        .spawn(move || loop {
                            std::thread::sleep(UPKEEP);
                            upkeep.run_upkeep();
                        });
                    if let Err(e) = spawned {
                        tracing::warn!("metrics upkeep thread not started: {e}");
                    }
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!("metrics disabled: {e}");
                    None
                }
            }
        })
        .as_ref()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        REQUESTS_TOTAL,
        "HTTP requests answered, by route template, method and status"
    );
    describe_histogram!(
        REQUEST_SECONDS,
        Unit::Seconds,
        "Time to answer an HTTP request (until the response head), by route template, method and status"
    );
    describe_gauge!(IN_FLIGHT, "HTTP requests being answered now");
    describe_histogram!(
        QUEUE_SECONDS,
        Unit::Seconds,
        "Time an inference waited for a plugin call slot (--max-concurrent-calls)"
    );
    describe_histogram!(
        DECODE_SECONDS,
        Unit::Seconds,
        "Time to load a request's images (URL fetch, decoding)"
    );
    describe_histogram!(
        PLUGIN_SECONDS,
        Unit::Seconds,
        "Time of a plugin call (pre-processing, model runs, post-processing), by model and plugin"
    );
    describe_histogram!(
        PLUGIN_STAGE_SECONDS,
        Unit::Seconds,
        "Time of a plugin call's stages, by model: pre (instantiation, pixels into the guest, pre-processing, \
         input tensors out), run (its ONNX Runtime runs, waits for a batch included), post (outputs decoded, \
         results out of the guest)"
    );
    describe_histogram!(MODEL_SECONDS, Unit::Seconds, "Time of one ONNX Runtime run, by model");
    describe_gauge!(MODELS_LOADED, "Models loaded now");
    describe_counter!(
        PLUGIN_TRAPS,
        "Plugin calls that trapped (kind=trap) or ran past their time limit (kind=timeout)"
    );
    describe_gauge!(CACHE_BYTES, Unit::Bytes, "Size of the downloaded models in the cache");
    describe_counter!(
        DOWNLOADS_TOTAL,
        "Model downloads, by source kind (http, s3, gs, az, roboflow) and outcome (ok, unreachable, refused, bad, error)"
    );
    describe_counter!(
        DOWNLOAD_BYTES,
        Unit::Bytes,
        "Model bytes downloaded (verified or not), by source kind"
    );
    describe_histogram!(
        DOWNLOAD_SECONDS,
        Unit::Seconds,
        "Time of a model download (all files, verified), by source kind and outcome"
    );
    describe_counter!(
        EVICTIONS_TOTAL,
        "Cached models whose files were deleted to fit --cache-max-bytes"
    );
    describe_counter!(UNLOADS_TOTAL, "Models unloaded to fit --max-loaded-models");
    describe_histogram!(
        BATCH_IMAGES,
        "Images in one ONNX Runtime run, by model (concurrent calls are batched together)"
    );
    describe_histogram!(
        BATCH_QUEUE_SECONDS,
        Unit::Seconds,
        "Time the first input of a batched run waited for a run slot, by model"
    );
    describe_gauge!(BATCH_QUEUE_IMAGES, "Images waiting for a run of their model, by model");
    describe_gauge!(RUN_SLOTS_BUSY, "ONNX Runtime runs in flight, by model");
    describe_counter!(
        REJECTED_TOTAL,
        "Requests refused with 503 for overload, by reason (memory: the images-in-flight budget; bodies: the budget of request bodies being read; queue: the model's queue bound)"
    );
    describe_gauge!(
        INFLIGHT_BODY_BYTES,
        Unit::Bytes,
        "Memory reserved for the request bodies being read and parsed"
    );
    describe_gauge!(
        INFLIGHT_IMAGE_BYTES,
        Unit::Bytes,
        "Memory reserved for the images in flight (decoded, in plugins, as tensors)"
    );
    describe_counter!(
        PLUGIN_ERRORS,
        "Plugin calls that returned an error, by plugin and error kind"
    );
    describe_gauge!(
        QUOTA_STORE_UP,
        "1 while the shared quota store (--quota-store) answers, 0 while it is unreachable"
    );
    describe_counter!(
        QUOTA_STORE_ERRORS,
        "Exchanges with the quota store that failed or timed out"
    );
    describe_counter!(
        QUOTA_FALLBACKS,
        "Requests whose quota was decided without the unreachable quota store, by mode (fail-open: local limits; fail-closed: 503)"
    );
    describe_gauge!(
        DRAINING,
        "1 from SIGTERM until exit: /readiness answers 503 while requests in flight finish"
    );
    describe_counter!(
        CACHE_LOCK_WAITS,
        "Model downloads that waited for another process downloading the same model into the shared cache"
    );
}

pub fn set_quota_store_up(up: bool) {
    metrics::gauge!(QUOTA_STORE_UP).set(if up { 1.0 } else { 0.0 });
}

pub fn record_quota_store_error() {
    metrics::counter!(QUOTA_STORE_ERRORS).increment(1);
}

/// A request admitted by local limits (`fail-open`) or refused (`fail-closed`) while the quota
/// store was unreachable.
pub fn record_quota_fallback(mode: &'static str) {
    metrics::counter!(QUOTA_FALLBACKS, "mode" => mode).increment(1);
}

pub fn set_draining(draining: bool) {
    metrics::gauge!(DRAINING).set(if draining { 1.0 } else { 0.0 });
}

/// A download that found another process holding the model's download lock.
pub fn record_cache_lock_wait() {
    metrics::counter!(CACHE_LOCK_WAITS).increment(1);
}

pub fn record_queue(waited: Duration) {
    metrics::histogram!(QUEUE_SECONDS).record(waited.as_secs_f64());
}

pub fn record_decode(took: Duration) {
    metrics::histogram!(DECODE_SECONDS).record(took.as_secs_f64());
}

pub fn record_plugin(model: &str, plugin: &str, took: Duration) {
    metrics::histogram!(PLUGIN_SECONDS, "model" => model.to_string(), "plugin" => plugin.to_string())
        .record(took.as_secs_f64());
}

/// The stages of one plugin call that ran `model` (see `PLUGIN_STAGE_SECONDS`).
pub fn record_plugin_stages(model: &str, pre: Duration, run: Duration, post: Duration) {
    for (stage, took) in [("pre", pre), ("run", run), ("post", post)] {
        metrics::histogram!(PLUGIN_STAGE_SECONDS, "model" => model.to_string(), "stage" => stage)
            .record(took.as_secs_f64());
    }
}

/// One model download attempt from a source of `kind` (`http`, `s3`, `roboflow`...).
pub fn record_download(kind: &str, outcome: &'static str, took: Duration) {
    let labels = [("source", kind.to_string()), ("outcome", outcome.to_string())];
    metrics::counter!(DOWNLOADS_TOTAL, &labels).increment(1);
    metrics::histogram!(DOWNLOAD_SECONDS, &labels).record(took.as_secs_f64());
}

/// Bytes received from a model source of `kind`.
pub fn record_download_bytes(kind: &str, bytes: u64) {
    metrics::counter!(DOWNLOAD_BYTES, "source" => kind.to_string()).increment(bytes);
}

/// One ONNX Runtime run of `model` (recorded by the wasi-nn graph).
pub fn record_model_run(model: &str, took: Duration) {
    metrics::histogram!(MODEL_SECONDS, "model" => model.to_string()).record(took.as_secs_f64());
}

/// A plugin call that trapped (`kind` `trap`) or ran past its time limit (`timeout`).
pub fn record_plugin_trap(plugin: &str, kind: &'static str) {
    metrics::counter!(PLUGIN_TRAPS, "plugin" => plugin.to_string(), "kind" => kind).increment(1)
}

/// A plugin call that returned an error of `kind` (`invalid_input`, `unsupported_model`, ...).
pub fn record_plugin_error(plugin: &str, kind: &'static str) {
    metrics::counter!(PLUGIN_ERRORS, "plugin" => plugin.to_string(), "kind" => kind).increment(1)
}

/// One ONNX Runtime run of `images` images of `model`, after its first input waited `waited`.
pub fn record_batch(model: &str, images: usize, waited: Duration) {
    metrics::histogram!(BATCH_IMAGES, "model" => model.to_string()).record(images as f64);
    metrics::histogram!(BATCH_QUEUE_SECONDS, "model" => model.to_string()).record(waited.as_secs_f64());
}

/// The images waiting for runs of `model`, and its runs in flight.
pub fn set_batch_state(model: &str, queued_images: usize, busy_slots: usize) {
    metrics::gauge!(BATCH_QUEUE_IMAGES, "model" => model.to_string()).set(queued_images as f64);
    metrics::gauge!(RUN_SLOTS_BUSY, "model" => model.to_string()).set(busy_slots as f64);
}

/// A request refused for overload (`memory`, `bodies` or `queue`).
pub fn record_rejection(reason: &'static str) {
    metrics::counter!(REJECTED_TOTAL, "reason" => reason).increment(1);
}

pub fn set_inflight_image_bytes(bytes: u64) {
    metrics::gauge!(INFLIGHT_IMAGE_BYTES).set(bytes as f64);
}

pub fn set_inflight_body_bytes(bytes: u64) {
    metrics::gauge!(INFLIGHT_BODY_BYTES).set(bytes as f64);
}

/// A model unloaded to fit `--max-loaded-models`.
pub fn record_unload() {
    metrics::counter!(UNLOADS_TOTAL).increment(1);
}

/// A cached model's files deleted to fit `--cache-max-bytes`.
pub fn record_eviction() {
    metrics::counter!(EVICTIONS_TOTAL).increment(1);
}

/// The state gauges, set when `/metrics` is rendered.
pub fn set_state(models_loaded: usize, cache_bytes: u64) {
    metrics::gauge!(MODELS_LOADED).set(models_loaded as f64);
    metrics::gauge!(CACHE_BYTES).set(cache_bytes as f64);
}

/// What handling a request learns that its HTTP metrics are labelled with: the model it ran (only
/// once resolved, so made-up ids never become labels) and its tenant. Made by the HTTP edge per
/// request and handed down with the request's caller.
#[derive(Debug, Default)]
pub struct RequestLabels {
    model: parking_lot::Mutex<Option<String>>,
    tenant: parking_lot::Mutex<Option<String>>,
}

impl RequestLabels {
    pub fn note_model(&self, model: &str) {
        *self.model.lock() = Some(model.to_string());
    }

    pub fn note_tenant(&self, tenant: &str) {
        *self.tenant.lock() = Some(tenant.to_string());
    }

    /// The model and tenant labels (`none` where unknown).
    pub fn values(&self) -> (String, String) {
        let none = || "none".to_string();
        (
            self.model.lock().clone().unwrap_or_else(none),
            self.tenant.lock().clone().unwrap_or_else(none),
        )
    }
}
