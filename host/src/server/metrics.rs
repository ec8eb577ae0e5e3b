//! `GET /metrics` (the Prometheus text format) and the per-request HTTP metrics. What is recorded
//! below the HTTP edge, and the recorder itself, is `crate::metrics`'s.

use std::sync::Arc;
use std::time::Instant;

use super::AppState;
use crate::metrics::{init, RequestLabels, IN_FLIGHT, REQUESTS_TOTAL, REQUEST_SECONDS};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

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

/// Middleware: counts and times every request by route template, method, status, model and
/// tenant (`none` where there is none).
pub async fn track(mut request: Request, next: Next) -> Response {
    let route = route_label(&request);
    let method = method_label(request.method());
    let _in_flight = InFlight::start();
    let started = Instant::now();
    // Filled in while the request is handled (its tenant, its model), read when it is answered.
    let learned = Arc::new(RequestLabels::default());
    request.extensions_mut().insert(learned.clone());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let (model, tenant) = learned.values();
    let labels = [
        ("route", route),
        ("method", method.to_string()),
        ("status", status),
        ("model", model),
        ("tenant", tenant),
    ];
    metrics::counter!(REQUESTS_TOTAL, &labels).increment(1);
    metrics::histogram!(REQUEST_SECONDS, &labels).record(started.elapsed().as_secs_f64());
    response
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
    let models = &state.pipeline.models;
    crate::metrics::set_state(models.loaded().len(), models.cache_bytes());
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
