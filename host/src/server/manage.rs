//! Model management (`/model/*`) and service routes (`/info`, `/healthz`, `/readiness`).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use super::context::Ctx;
use super::error::ApiError;
use super::infer::parse_json;
use super::AppState;
use crate::models::ModelId;
use crate::pipeline::{self, Caller};
use crate::plugins::Reason;
use crate::tasks;

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelDescriptionEntry {
    pub model_id: String,
    /// `object-detection`, `instance-segmentation`, `classification` or `keypoint-detection`.
    #[schema(example = "object-detection")]
    pub task_type: String,
    /// Null when the batch dimension is dynamic.
    pub batch_size: Option<u32>,
    pub input_height: u32,
    pub input_width: u32,
    pub vram_bytes: Option<u64>,
    pub request_aliases: Vec<String>,
    pub request_paths: Vec<String>,
    /// The model's architecture, when its files name one (plugins claim model families by it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    /// The plugin that serves the model for its task, for this caller; null when none can.
    pub plugin: Option<String>,
    /// Why that plugin: `pinned` (the model names it), `architecture` or `outputs` (the plugin
    /// claims them), `default` (no plugin claims the model).
    #[schema(value_type = Option<String>, example = "default")]
    pub plugin_reason: Option<Reason>,
}

/// `ModelsDescriptions`: Roboflow keeps the null fields here.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelsDescriptions {
    pub models: Vec<ModelDescriptionEntry>,
    pub total_vram_bytes: Option<u64>,
    pub gpu_memory_used: Option<u64>,
    pub gpu_memory_total: Option<u64>,
    pub torch_cuda_allocated: Option<u64>,
    pub torch_cuda_reserved: Option<u64>,
    pub torch_cuda_allocator_cache: Option<u64>,
    pub non_torch_gpu_memory: Option<u64>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ModelRequest {
    /// `<project>/<version>`.
    #[schema(example = "shapes-detect/1")]
    pub model_id: String,
    /// Roboflow API key: a model not on this server is downloaded from Roboflow with it.
    #[serde(default)]
    pub api_key: Option<String>,
}

/// `?purge=true` of `/model/remove` and `/model/clear`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PurgeQuery {
    /// Also delete the model's downloaded files from the cache (never the models directory's).
    #[serde(default)]
    pub purge: bool,
}

fn purge_flag(query: Result<Query<PurgeQuery>, QueryRejection>) -> Result<bool, ApiError> {
    query
        .map(|Query(q)| q.purge)
        .map_err(|e| ApiError::BadRequest(format!("Invalid query parameters: {}", e.body_text())))
}

/// `GET /info`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServerInfo {
    #[schema(example = "Roboflow Inference Server")]
    pub name: &'static str,
    pub version: &'static str,
    /// This server process's id.
    pub uuid: String,
}

/// `GET /healthz` and `GET /readiness`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Status {
    /// `healthy`, `ready`, `not ready` or `draining` (shutting down after SIGTERM).
    #[schema(example = "ready")]
    pub status: &'static str,
    /// With `--quota-store`: whether the shared quota store answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota_store: Option<QuotaStoreStatus>,
}

/// The shared quota store, as `/readiness` shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct QuotaStoreStatus {
    /// `up`, or `down` (tenant quotas then follow `failure_mode`).
    #[schema(example = "up")]
    pub state: &'static str,
    /// `fail-open` (per-replica limits while down) or `fail-closed` (503 while down).
    #[schema(example = "fail-open")]
    pub failure_mode: &'static str,
    /// The store's URL, without its password.
    pub url: String,
}

fn describe(state: &AppState, caller: &Caller) -> ModelsDescriptions {
    let pipeline = &state.pipeline;
    let models = pipeline
        .models
        .loaded()
        .into_iter()
        .filter(|(id, model)| {
            caller.may_use_model(id)
                && match &caller.tenant {
                    // A model fetched with another tenant's credentials is listed once this
                    // tenant's own are known to be entitled to it.
                    Some(t) if !t.admin => {
                        pipeline
                            .models
                            .known_entitled(id, model.owner.as_deref(), t.roboflow_api_key.as_deref())
                    }
                    _ => true,
                }
        })
        .map(|(id, model)| {
            let chosen = tasks::world_of_task(&model.description.task)
                .and_then(|world| pipeline.plugin(caller, world, &model).ok());
            let d = &model.description;
            ModelDescriptionEntry {
                model_id: id.to_string(),
                task_type: d.task.clone(),
                batch_size: (d.max_batch > 0).then_some(d.max_batch),
                input_height: d.input_height,
                input_width: d.input_width,
                vram_bytes: None,
                request_aliases: Vec::new(),
                request_paths: Vec::new(),
                architecture: d.architecture.clone(),
                plugin: chosen.as_ref().map(|c| c.plugin.name().to_string()),
                plugin_reason: chosen.map(|c| c.reason),
            }
        })
        .collect();
    ModelsDescriptions {
        models,
        total_vram_bytes: None,
        gpu_memory_used: None,
        gpu_memory_total: None,
        torch_cuda_allocated: None,
        torch_cuda_reserved: None,
        torch_cuda_allocator_cache: None,
        non_torch_gpu_memory: None,
    }
}

#[utoipa::path(
    get,
    path = "/model/registry",
    tag = "models",
    summary = "Loaded models",
    description = "Each loaded model's task, batch size and input size: the official client picks its route from it.",
    responses((status = 200, description = "The loaded models.", body = ModelsDescriptions)),
)]
pub async fn registry(State(state): State<Arc<AppState>>, Ctx(caller): Ctx) -> Json<ModelsDescriptions> {
    Json(describe(&state, &caller))
}

#[utoipa::path(
    post,
    path = "/model/add",
    tag = "models",
    summary = "Load a model",
    request_body = ModelRequest,
    responses(
        (status = 200, description = "The model is loaded; the loaded models.", body = ModelsDescriptions),
        super::schemas::AddModelErrors,
    ),
)]
pub async fn add(
    State(state): State<Arc<AppState>>,
    Ctx(caller): Ctx,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<ModelsDescriptions>, ApiError> {
    let request: ModelRequest = parse_json(&body?)?;
    let caller = caller.with_api_key(request.api_key);
    state.pipeline.model(&caller, &request.model_id).await?;
    Ok(Json(describe(&state, &caller)))
}

#[utoipa::path(
    post,
    path = "/model/remove",
    tag = "models",
    summary = "Unload a model",
    description = "Unloads: the files stay, and the model can be loaded again (even offline), unless \
`purge=true`, which also deletes its downloaded files from the cache (a models-directory model's files are never deleted).",
    params(PurgeQuery),
    request_body = ModelRequest,
    responses(
        (status = 200, description = "The loaded models.", body = ModelsDescriptions),
        super::schemas::RemoveModelErrors,
    ),
)]
pub async fn remove(
    State(state): State<Arc<AppState>>,
    Ctx(caller): Ctx,
    query: Result<Query<PurgeQuery>, QueryRejection>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<ModelsDescriptions>, ApiError> {
    let purge = purge_flag(query)?;
    let request: ModelRequest = parse_json(&body?)?;
    let id = ModelId::parse(&request.model_id)?;
    // Another tenant's model, or one fetched with another tenant's credentials that this
    // tenant's own are not entitled to: as if it did not exist.
    if !state.pipeline.may_manage(&caller, &id).await? {
        return Err(pipeline::Error::hidden_model(&id).into());
    }
    state
        .pipeline
        .models
        .remove(&id, purge)
        .await
        .map_err(|e| ApiError::Internal(format!("cannot delete the cached files of {id}: {e}")))?;
    Ok(Json(describe(&state, &caller)))
}

#[utoipa::path(
    post,
    path = "/model/clear",
    tag = "models",
    summary = "Unload every model",
    description = "Unloads every model; with `purge=true`, also deletes their downloaded files from the cache.",
    params(PurgeQuery),
    responses(
        (status = 200, description = "The loaded models (none).", body = ModelsDescriptions),
        (status = 400, description = "Invalid query parameters.", body = super::error::ErrorBody),
    ),
)]
pub async fn clear(
    State(state): State<Arc<AppState>>,
    Ctx(caller): Ctx,
    query: Result<Query<PurgeQuery>, QueryRejection>,
) -> Result<Json<ModelsDescriptions>, ApiError> {
    let purge = purge_flag(query)?;
    let models = &state.pipeline.models;
    // A tenant clears its own models; an admin (or anyone on an open server), everyone's.
    let cleared = if caller.is_operator() {
        models.clear(purge).await
    } else {
        let mut result = Ok(());
        for id in models.loaded().into_keys() {
            if state.pipeline.may_manage(&caller, &id).await? {
                result = result.and(models.remove(&id, purge).await.map(|_| ()));
            }
        }
        result
    };
    cleared.map_err(|e| ApiError::Internal(format!("cannot delete cached model files: {e}")))?;
    Ok(Json(describe(&state, &caller)))
}

#[utoipa::path(
    get,
    path = "/info",
    tag = "service",
    summary = "Server identity",
    responses((status = 200, description = "Name (Roboflow's, for clients that check it), version, process id.", body = ServerInfo)),
)]
pub async fn info(State(state): State<Arc<AppState>>) -> Json<ServerInfo> {
    Json(ServerInfo {
        name: "Roboflow Inference Server",
        version: env!("CARGO_PKG_VERSION"),
        uuid: state.server_id.clone(),
    })
}

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "service",
    summary = "Liveness",
    responses((status = 200, description = "The server is up.", body = Status, example = json!({"status": "healthy"}))),
)]
pub async fn healthz() -> Json<Status> {
    Json(Status {
        status: "healthy",
        quota_store: None,
    })
}

#[utoipa::path(
    get,
    path = "/readiness",
    tag = "service",
    summary = "Readiness",
    responses(
        (status = 200, description = "Ready to serve.", body = Status, example = json!({"status": "ready"})),
        (status = 503, description = "Not ready yet (pinned models loading), or draining after SIGTERM.", body = Status, example = json!({"status": "not ready"})),
    ),
)]
pub async fn readiness(State(state): State<Arc<AppState>>) -> Response {
    // A quota store that is down does not make the replica unready: every replica shares it,
    // and taking them all out would refuse everybody; the failure mode decides instead.
    let quota_store = state
        .gate
        .as_ref()
        .and_then(|g| g.store.as_ref())
        .map(|store| QuotaStoreStatus {
            state: if store.is_up() { "up" } else { "down" },
            failure_mode: store.failure.name(),
            url: store.shown.clone(),
        });
    let (code, status) = if state.draining.load(Ordering::Acquire) {
        (StatusCode::SERVICE_UNAVAILABLE, "draining")
    } else if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    };
    (code, Json(Status { status, quota_store })).into_response()
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound("Not Found".into())
}

/// A route asked with a method it does not have (axum's own answer has no body).
pub async fn method_not_allowed(method: axum::http::Method) -> ApiError {
    ApiError::MethodNotAllowed(format!("Method {method} is not allowed here"))
}

/// `GET /plugins`: the installed plugins and the routes they serve.
#[utoipa::path(
    get,
    path = "/plugins",
    tag = "service",
    summary = "Installed plugins",
    description = "Each plugin's name, version, world, the WIT version it was built against, route (null for a workflow block), description, the models it \
        claims, the workflow block it implements and its limits, and the plugins directory.",
    responses((status = 200, description = "The installed plugins.", body = Object)),
)]
pub async fn plugins(State(state): State<Arc<AppState>>, Ctx(caller): Ctx) -> Json<serde_json::Value> {
    let plugins: Vec<serde_json::Value> = state
        .pipeline
        .plugins
        .list()
        .iter()
        .filter(|p| caller.may_use_plugin(p.name()))
        .map(|p| {
            json!({
                "name": p.manifest.name,
                "version": p.manifest.version,
                "world": p.manifest.world,
                // The WIT package version it was built against (0.1.0 ones still run).
                "wit": p.wit_version(),
                // A workflow block serves no route: definitions use it by its block type.
                "route": p.route.as_ref().map(|r| format!("/infer/{r}")),
                "description": p.manifest.description,
                // Which models it serves: null for its world's default (and custom-task plugins).
                "models": p.manifest.models,
                "block": p.manifest.block,
                "limits": {
                    "timeout_ms": p.limits.deadline.as_millis() as u64,
                    "memory_mib": p.limits.memory_bytes >> 20,
                    "max_model_runs": p.limits.max_model_runs,
                    "output_kib": p.limits.output_bytes >> 10,
                },
            })
        })
        .collect();
    // Where plugins live on the server is the operator's business, not a tenant's.
    let dir = caller.tenant.is_none().then(|| state.pipeline.plugins.dir());
    Json(json!({ "plugins_dir": dir, "plugins": plugins }))
}
