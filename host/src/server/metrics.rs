//! Prometheus metrics, served at `GET /metrics` in the text format.
//!
//! The `metrics` facade records from anywhere (the HTTP layer, the pipeline's stages, the ONNX
//! Runtime runs); the Prometheus recorder is installed once per process and rendered by our own
//! handler. Labels stay bounded: route templates (never raw paths), known methods, status codes,
//! and the ids of models that were loaded.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::AppState;
use crate::plugins::CallError;

pub const REQUESTS_TOTAL: &str = "inference_requests_total";
pub const REQUEST_SECONDS: &str = "inference_request_duration_seconds";
pub const IN_FLIGHT: &str = "inference_in_flight_requests";
pub const QUEUE_SECONDS: &str = "inference_queue_seconds";
pub const DECODE_SECONDS: &str = "inference_decode_seconds";
pub const PLUGIN_SECONDS: &str = "inference_plugin_seconds";
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

/// Latency buckets (seconds) of every `*_seconds` histogram: 0.5 ms to 30 s.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// How often histogram samples are folded into their buckets between scrapes.
const UPKEEP: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder (once); `None` if another recorder was installed first.
pub fn init() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
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
    describe_counter!(
        PLUGIN_ERRORS,
        "Plugin calls that returned an error, by plugin and error kind"
    );
}

/// A bounded label for a method: the standard ones, else `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

/// The route template a request matched (`/{dataset}/{version}`), or `unmatched`.
pub fn route_label(request: &Request) -> String {
    request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string())
}

/// Decrements the in-flight gauge however the request ends (even if it is dropped).
struct InFlight;

impl InFlight {
    fn start() -> Self {
        metrics::gauge!(IN_FLIGHT).increment(1.0);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!(IN_FLIGHT).decrement(1.0);
    }
}

/// What the handling of a request learns that its metrics are labelled with: the model it ran
/// (only once resolved, so made-up ids cannot grow the label set) and the tenant it came from.
#[derive(Default)]
struct Learned {
    model: Option<String>,
    tenant: Option<String>,
}

tokio::task_local! {
    static LEARNED: std::cell::RefCell<Learned>;
}

/// Labels the request being handled with the model it runs.
pub fn note_model(model: &str) {
    let _ = LEARNED.try_with(|l| l.borrow_mut().model = Some(model.to_string()));
}

/// Labels the request being handled with its tenant.
pub fn note_tenant(tenant: &str) {
    let _ = LEARNED.try_with(|l| l.borrow_mut().tenant = Some(tenant.to_string()));
}

/// Middleware: counts and times every request by route template, method, status, model and
/// tenant (`none` where there is none).
pub async fn track(request: Request, next: Next) -> Response {
    let route = route_label(&request);
    let method = method_label(request.method());
    let _in_flight = InFlight::start();
    let started = Instant::now();
    let (response, learned) = LEARNED
        .scope(Default::default(), async {
            let response = next.run(request).await;
            (response, LEARNED.with(|l| l.take()))
        })
        .await;
    let status = response.status().as_u16().to_string();
    let none = || "none".to_string();
    let labels = [
        ("route", route),
        ("method", method.to_string()),
        ("status", status),
        ("model", learned.model.unwrap_or_else(none)),
        ("tenant", learned.tenant.unwrap_or_else(none)),
    ];
    metrics::counter!(REQUESTS_TOTAL, &labels).increment(1);
    metrics::histogram!(REQUEST_SECONDS, &labels).record(started.elapsed().as_secs_f64());
    response
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

/// Counts a failed plugin call: traps and timeouts, or the error the plugin returned.
pub fn record_plugin_failure(error: &CallError) {
    match error {
        CallError::Timeout { plugin, .. } => {
            metrics::counter!(PLUGIN_TRAPS, "plugin" => plugin.clone(), "kind" => "timeout").increment(1)
        }
        CallError::Trap { plugin, .. } => {
            metrics::counter!(PLUGIN_TRAPS, "plugin" => plugin.clone(), "kind" => "trap").increment(1)
        }
        CallError::Plugin { plugin, kind, .. } => {
            let kind = match kind {
                crate::plugins::PluginErrorKind::InvalidInput => "invalid_input",
                crate::plugins::PluginErrorKind::UnsupportedModel => "unsupported_model",
                crate::plugins::PluginErrorKind::InferenceFailed => "inference_failed",
                crate::plugins::PluginErrorKind::OutputTooLarge => "output_too_large",
                crate::plugins::PluginErrorKind::InvalidOutput => "invalid_output",
            };
            metrics::counter!(PLUGIN_ERRORS, "plugin" => plugin.clone(), "kind" => kind).increment(1)
        }
    }
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "service",
    summary = "Prometheus metrics",
    description = "Requests by route and status, latency by stage (decode, queue, plugin, model), \
models loaded, plugin traps, requests in flight, model downloads (count, bytes, seconds), cache size, \
evictions and unloads; Prometheus text format.",
    responses(
        (status = 200, description = "The metrics.", body = String, content_type = "text/plain"),
        (status = 503, description = "Metrics are disabled (another recorder was installed).", body = String, content_type = "text/plain"),
    ),
)]
pub async fn render(State(state): State<Arc<AppState>>) -> Response {
    let Some(handle) = init() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "metrics are disabled\n").into_response();
    };
    metrics::gauge!(MODELS_LOADED).set(state.models.loaded().len() as f64);
    metrics::gauge!(CACHE_BYTES).set(state.models.cache_bytes() as f64);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        handle.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_labels_are_bounded() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
    }
}
