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

use super::error::ApiError;
use super::infer::parse_json;
use super::responses::{ModelDescriptionEntry, ModelsDescriptions};
use super::AppState;
use crate::models::ModelId;
use crate::pipeline;
use crate::tenants;

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
    /// `healthy`, `ready` or `not ready`.
    #[schema(example = "ready")]
    pub status: &'static str,
}

fn describe(state: &AppState) -> ModelsDescriptions {
    let models = state
        .models
        .loaded()
        .into_iter()
        .filter(|(id, _)| tenants::allows_model(id))
        .map(|(id, model)| {
            let d = &model.description;
            ModelDescriptionEntry {
                model_id: id.to_string(),
                task_type: d.task.roboflow_name(),
                batch_size: (d.max_batch > 0).then_some(d.max_batch),
                input_height: d.input_height,
                input_width: d.input_width,
                vram_bytes: None,
                request_aliases: Vec::new(),
                request_paths: Vec::new(),
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
pub async fn registry(State(state): State<Arc<AppState>>) -> Json<ModelsDescriptions> {
    Json(describe(&state))
}

#[utoipa::path(
    post,
    path = "/model/add",
    tag = "models",
    summary = "Load a model",
    request_body = ModelRequest,
    responses(
        (status = 200, description = "The model is loaded; the loaded models.", body = ModelsDescriptions),
        super::docs::AddModelErrors,
    ),
)]
pub async fn add(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<ModelsDescriptions>, ApiError> {
    let request: ModelRequest = parse_json(&body?)?;
    pipeline::model_with_key(&state, &request.model_id, request.api_key.as_deref()).await?;
    Ok(Json(describe(&state)))
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
        super::docs::RemoveModelErrors,
    ),
)]
pub async fn remove(
    State(state): State<Arc<AppState>>,
    query: Result<Query<PurgeQuery>, QueryRejection>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<ModelsDescriptions>, ApiError> {
    let purge = purge_flag(query)?;
    let request: ModelRequest = parse_json(&body?)?;
    let id = ModelId::parse(&request.model_id)?;
    if !tenants::allows_model(&id) {
        return Err(tenants::hidden_model(&id));
    }
    state
        .models
        .remove(&id, purge)
        .await
        .map_err(|e| ApiError::Internal(format!("cannot delete the cached files of {id}: {e}")))?;
    Ok(Json(describe(&state)))
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
    query: Result<Query<PurgeQuery>, QueryRejection>,
) -> Result<Json<ModelsDescriptions>, ApiError> {
    let purge = purge_flag(query)?;
    let cleared = match tenants::current() {
        // A tenant clears its own models; an admin, everyone's.
        Some(t) if !t.admin => {
            let mut result = Ok(());
            for id in state.models.loaded().into_keys().filter(|id| t.may_use_model(id)) {
                result = result.and(state.models.remove(&id, purge).await.map(|_| ()));
            }
            result
        }
        _ => state.models.clear(purge).await,
    };
    cleared.map_err(|e| ApiError::Internal(format!("cannot delete cached model files: {e}")))?;
    Ok(Json(describe(&state)))
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
    Json(Status { status: "healthy" })
}

#[utoipa::path(
    get,
    path = "/readiness",
    tag = "service",
    summary = "Readiness",
    responses(
        (status = 200, description = "Ready to serve.", body = Status, example = json!({"status": "ready"})),
        (status = 503, description = "Not ready yet.", body = Status, example = json!({"status": "not ready"})),
    ),
)]
pub async fn readiness(State(state): State<Arc<AppState>>) -> Response {
    if state.ready.load(Ordering::Acquire) {
        Json(Status { status: "ready" }).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(Status { status: "not ready" })).into_response()
    }
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound("Not Found".into())
}

/// `GET /plugins`: the installed plugins and the routes they serve.
#[utoipa::path(
    get,
    path = "/plugins",
    tag = "service",
    summary = "Installed plugins",
    description = "Each plugin's name, version, world, route, description and limits, and the plugins directory.",
    responses((status = 200, description = "The installed plugins.", body = Object)),
)]
pub async fn plugins(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let tenant = tenants::current();
    let plugins: Vec<serde_json::Value> = state
        .plugins
        .list()
        .iter()
        .filter(|p| tenants::allows_plugin(&p.manifest.name))
        .map(|p| {
            json!({
                "name": p.manifest.name,
                "version": p.manifest.version,
                "world": p.manifest.world,
                "route": format!("/infer/{}", p.route),
                "description": p.manifest.description,
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
    let dir = tenant.is_none().then(|| state.plugins.dir());
    Json(json!({ "plugins_dir": dir, "plugins": plugins }))
}
