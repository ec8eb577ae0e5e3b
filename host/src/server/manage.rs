//! Model management (`/model/*`) and service routes (`/info`, `/healthz`, `/readiness`).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::infer::parse_json;
use super::responses::{ModelDescriptionEntry, ModelsDescriptions};
use super::AppState;
use crate::models::ModelId;
use crate::pipeline;

#[derive(Debug, Deserialize)]
pub struct ModelRequest {
    pub model_id: String,
}

fn describe(state: &AppState) -> ModelsDescriptions {
    let models = state
        .models
        .loaded()
        .into_iter()
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

pub async fn registry(State(state): State<Arc<AppState>>) -> Json<ModelsDescriptions> {
    Json(describe(&state))
}

pub async fn add(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<ModelsDescriptions>, ApiError> {
    let request: ModelRequest = parse_json(&body?)?;
    pipeline::model(&state, &request.model_id).await?;
    Ok(Json(describe(&state)))
}

pub async fn remove(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<ModelsDescriptions>, ApiError> {
    let request: ModelRequest = parse_json(&body?)?;
    let id = ModelId::parse(&request.model_id)?;
    // Unloads only: the files stay, so the model can be served again (even offline).
    state.models.remove(&id);
    Ok(Json(describe(&state)))
}

pub async fn clear(State(state): State<Arc<AppState>>) -> Json<ModelsDescriptions> {
    state.models.clear();
    Json(describe(&state))
}

pub async fn info(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(json!({
        "name": "Roboflow Inference Server",
        "version": env!("CARGO_PKG_VERSION"),
        "uuid": state.server_id,
    }))
}

pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "healthy" }))
}

pub async fn readiness(State(state): State<Arc<AppState>>) -> Response {
    if state.ready.load(Ordering::Acquire) {
        Json(json!({ "status": "ready" })).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "not ready" }))).into_response()
    }
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound("Not Found".into())
}
