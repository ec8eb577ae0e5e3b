//! The HTTP edge: routes, extractors, the API's documentation, and the mapping of errors to
//! statuses. Everything below it is reached through the pipeline (and, for model management,
//! the loaded models).

pub mod auth;
pub mod available;
pub mod bodies;
pub mod context;
pub mod docs;
pub mod error;
pub mod infer;
pub mod legacy;
pub mod listen;
pub mod manage;
pub mod metrics;
mod observe;
mod page;
pub mod schemas;
pub mod workflows;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use tower_http::cors::CorsLayer;

use crate::pipeline::Pipeline;
use crate::tasks::{self, Task};
use crate::tenants::Gate;

/// Everything a request handler can reach.
pub struct AppState {
    pub pipeline: Pipeline,
    pub server_id: String,
    pub ready: AtomicBool,
    /// Set on SIGTERM: `/readiness` answers 503 while the server drains.
    pub draining: AtomicBool,
    /// Tenants and their keys; `None`: the server runs open.
    pub gate: Option<Arc<Gate>>,
    /// Workflow definitions compiled, the stored workflows, the run limits.
    pub workflows: crate::workflows::Workflows,
    /// The memory the request bodies being read may take.
    pub bodies: bodies::BodyBudget,
}

/// The body length a request announces (`Content-Length`), if it announces one.
pub(crate) fn declared_length(headers: &axum::http::HeaderMap) -> Option<u64> {
    headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
}

/// Adds each task's `/infer/<route>` routes.
struct TaskRoutes(Router<Arc<AppState>>);

impl tasks::Visitor for TaskRoutes {
    fn visit<T: Task>(&mut self) {
        for route in T::ROUTES {
            let router = std::mem::take(&mut self.0);
            self.0 = router.route(&format!("/infer/{route}"), post(infer::infer::<T>));
        }
    }
}

pub fn router(state: Arc<AppState>, max_body_bytes: usize) -> Router {
    let mut task_routes = TaskRoutes(Router::new());
    tasks::each(&mut task_routes);
    let routes = task_routes
        .0
        // Plugins with a task of their own, on the route their manifest names.
        .route("/infer/{route}", post(infer::custom))
        .route("/workflows/run", post(workflows::run))
        .route("/infer/workflows", post(workflows::run))
        .route("/{workspace}/workflows/{workflow_id}", post(workflows::run_stored))
        .route(
            "/infer/workflows/{workspace}/{workflow_id}",
            post(workflows::run_stored),
        )
        .route("/workflows/validate", post(workflows::validate))
        .route("/workflows/describe_interface", post(workflows::describe_interface))
        .route(
            "/{workspace}/workflows/{workflow_id}/describe_interface",
            post(workflows::describe_stored_interface),
        )
        .route(
            "/workflows/blocks/describe",
            get(workflows::describe_blocks).post(workflows::describe_blocks),
        )
        .route("/workflows/execution_engine/versions", get(workflows::versions))
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
        .method_not_allowed_fallback(manage::method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(CorsLayer::permissive());
    // With tenants, every non-public route needs a tenant's key (outside the handlers, so no
    // route can forget it).
    let routes = match &state.gate {
        Some(gate) => routes.layer(axum::middleware::from_fn_with_state(gate.clone(), auth::authenticate)),
        None => routes,
    };
    // Bodies are budgeted before anything reads them (the gate may, for a key in the body).
    let routes = routes.layer(axum::middleware::from_fn_with_state(state.clone(), bodies::admit));
    // Request ids, request spans (path only: a query may carry an api_key) and log lines, metrics.
    observe::instrument(routes).with_state(state)
}
