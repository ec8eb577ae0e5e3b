//! The HTTP front: shared state, routes, and serving.

pub mod error;
pub mod infer;
pub mod legacy;
pub mod manage;
pub mod responses;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::Semaphore;
use tower_http::cors::CorsLayer;
use tower_http::trace::TraceLayer;

use crate::input::url::UrlPolicy;
use crate::input::InputLimits;
use crate::models::ModelStore;
use crate::plugins::{CallLimits, PluginRuntime, PluginSet};

/// Everything a request handler can reach.
pub struct AppState {
    pub models: ModelStore,
    pub runtime: PluginRuntime,
    pub plugins: PluginSet,
    pub call_limits: CallLimits,
    pub input_limits: InputLimits,
    /// Fetches URL images under `url_policy`.
    pub http: reqwest::Client,
    pub url_policy: UrlPolicy,
    pub server_id: String,
    pub ready: AtomicBool,
    /// Bounds concurrent plugin calls (and so the memory their images and stores hold).
    pub call_slots: Semaphore,
}

pub fn router(state: Arc<AppState>, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/infer/object_detection", post(infer::object_detection))
        .route("/infer/instance_segmentation", post(infer::instance_segmentation))
        // The seed's guide calls the task `segmentation`.
        .route("/infer/segmentation", post(infer::instance_segmentation))
        .route("/infer/classification", post(infer::classification))
        .route("/infer/keypoints_detection", post(infer::keypoints_detection))
        .route("/model/registry", get(manage::registry))
        .route("/model/add", post(manage::add))
        .route("/model/remove", post(manage::remove))
        .route("/model/clear", post(manage::clear))
        .route("/info", get(manage::info))
        .route("/healthz", get(manage::healthz))
        .route("/readiness", get(manage::readiness))
        .route(
            "/{dataset}/{version}",
            get(legacy::legacy_infer).post(legacy::legacy_infer),
        )
        .fallback(manage::not_found)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(CorsLayer::permissive())
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
