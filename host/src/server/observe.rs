//! What every request goes through for operations: an `x-request-id` (the client's, else a
//! UUID) echoed on the response and carried by the request's log span, one INFO log line per
//! answered request, and the request metrics.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderName, Request};
use axum::Router;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tower_http::LatencyUnit;
use tracing::Level;

use super::context::REQUEST_ID_HEADER;
use super::{metrics, AppState};

/// The request's span: every log line of the request (its errors included) carries these.
/// The path only, never the query: legacy clients put their API key there.
fn request_span(request: &Request<Body>) -> tracing::Span {
    let request_id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str())
        .unwrap_or("unmatched");
    tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        route = %route,
        request_id = %request_id,
        tenant = tracing::field::Empty,
    )
}

/// Wraps every route (and the fallback) of `router`: call it after the last route is added.
/// Outermost first: request id, trace span and log line, response header, metrics.
pub fn instrument(router: Router<Arc<AppState>>) -> Router<Arc<AppState>> {
    crate::metrics::init();
    let header = HeaderName::from_static(REQUEST_ID_HEADER);
    router
        .layer(axum::middleware::from_fn(metrics::track))
        .layer(PropagateRequestIdLayer::new(header.clone()))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_response(
                    DefaultOnResponse::new()
                        .level(Level::INFO)
                        .latency_unit(LatencyUnit::Micros),
                )
                // Server errors are logged where they are made, with their cause.
                .on_failure(()),
        )
        .layer(SetRequestIdLayer::new(header, MakeRequestUuid))
}
