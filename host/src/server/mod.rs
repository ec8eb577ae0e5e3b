//! The HTTP front: shared state, routes, and serving.

pub mod available;
pub mod docs;
pub mod error;
pub mod infer;
pub mod legacy;
pub mod manage;
pub mod metrics;
mod observe;
mod page;
pub mod responses;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::Semaphore;
use tower_http::cors::CorsLayer;

use crate::input::url::UrlPolicy;
use crate::input::InputLimits;
use crate::models::ModelStore;
use crate::plugins::{PluginRegistry, PluginRuntime};

/// Everything a request handler can reach.
pub struct AppState {
    pub models: ModelStore,
    pub runtime: PluginRuntime,
    pub plugins: PluginRegistry,
    pub input_limits: InputLimits,
    /// Fetches URL images under `url_policy`.
    pub http: reqwest::Client,
    pub url_policy: UrlPolicy,
    pub server_id: String,
    pub ready: AtomicBool,
    /// Bounds concurrent plugin calls (and so the memory their images and stores hold).
    pub call_slots: Semaphore,
    /// Tenants and their keys; `None`: the server runs open.
    pub gate: Option<Arc<crate::tenants::middleware::Gate>>,
}

pub fn router(state: Arc<AppState>, max_body_bytes: usize) -> Router {
    let routes = Router::new()
        .route("/infer/object_detection", post(infer::object_detection))
        .route("/infer/instance_segmentation", post(infer::instance_segmentation))
        // The seed's guide calls the task `segmentation`.
        .route("/infer/segmentation", post(infer::segmentation))
        .route("/infer/classification", post(infer::classification))
        .route("/infer/keypoints_detection", post(infer::keypoints_detection))
        // Plugins with a task of their own, on the route their manifest names.
        .route("/infer/{route}", post(infer::custom))
        .route("/plugins", get(manage::plugins))
        .route("/model/registry", get(manage::registry))
        .route("/models", get(available::models))
        .route("/model/add", post(manage::add))
        .route("/model/remove", post(manage::remove))
        .route("/model/clear", post(manage::clear))
        .route("/info", get(manage::info))
        .route("/healthz", get(manage::healthz))
        .route("/readiness", get(manage::readiness))
        .route(
            "/{dataset}/{version}",
            get(legacy::legacy_get).post(legacy::legacy_post),
        )
        .route("/metrics", get(metrics::render))
        // `/openapi.json`, `/docs`, `/redoc`.
        .merge(docs::routes())
        // `/`: the page to try a model.
        .merge(page::routes())
        .fallback(manage::not_found)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(CorsLayer::permissive())
        // The request's `Authorization: Bearer` key, for model downloads.
        .layer(axum::middleware::from_fn(crate::models::sources::bearer_scope));
    // With tenants, every non-public route needs a tenant's key (outside the handlers, so no
    // route can forget it).
    let routes = match &state.gate {
        Some(gate) => routes.layer(axum::middleware::from_fn_with_state(
            gate.clone(),
            crate::tenants::middleware::authenticate,
        )),
        None => routes,
    };
    // Request ids, request spans (path only: a query may carry an api_key) and log lines, metrics.
    observe::instrument(routes).with_state(state)
}
