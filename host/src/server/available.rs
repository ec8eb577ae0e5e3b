//! `GET /models`: the models this server can serve without a download.

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::context::Ctx;
use super::error::ApiError;
use super::AppState;
use crate::models::catalog::{self, Location};
use crate::models::ModelId;
use crate::tasks;

/// Where a model's files are.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ModelLocation {
    /// The models directory.
    ModelsDir,
    /// The download cache (a verified copy).
    Cache,
}

/// One model on this server's disk.
#[derive(Debug, Serialize, ToSchema)]
pub struct AvailableModel {
    /// `<project>/<version>`.
    #[schema(example = "shapes-detect/1")]
    pub model_id: String,
    /// Roboflow's task name when the model's files give one (as in `/model/registry`).
    #[schema(example = "object-detection")]
    pub task_type: Option<String>,
    /// The route that serves the model, when its task is known.
    #[schema(example = "/infer/object_detection")]
    pub route: Option<String>,
    pub location: ModelLocation,
    /// Size of the model's files.
    pub bytes: u64,
    /// Whether the model is loaded now.
    pub loaded: bool,
    /// The plugin serving it (loaded models only: the choice needs the model's outputs).
    pub plugin: Option<String>,
}

/// `GET /models`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AvailableModels {
    pub models: Vec<AvailableModel>,
}

#[utoipa::path(
    get,
    path = "/models",
    tag = "models",
    summary = "Models on this server",
    description = "The models in the models directory and the verified ones in the download cache: \
those this server serves without a download (`inference models list` on the command line). \
A model in both places is listed once, from the models directory, the copy that is served. \
With tenants, only the models the key's tenant may use.",
    responses((status = 200, description = "The models on disk, by id.", body = AvailableModels)),
)]
pub async fn models(State(state): State<Arc<AppState>>, Ctx(caller): Ctx) -> Result<Json<AvailableModels>, ApiError> {
    let models = &state.pipeline.models;
    let dir = models.models_dir().to_path_buf();
    let cache = models.cache().cloned();
    // Reads directories and ONNX headers: off the async threads.
    let found = tokio::task::spawn_blocking(move || catalog::on_disk(&dir, cache.as_ref()))
        .await
        .map_err(|e| ApiError::Internal(format!("listing models failed: {e}")))?;
    let loaded = models.loaded();
    let local: HashSet<String> = found
        .iter()
        .filter(|m| m.location == Location::ModelsDir)
        .map(|m| m.id.clone())
        .collect();
    let mut models: Vec<AvailableModel> = found
        .into_iter()
        .filter(|m| m.location == Location::ModelsDir || !local.contains(&m.id))
        // With tenants, only the request's tenant's models (a malformed directory name is no one's).
        // With tenants, only the caller's tenant's models (a malformed directory name is no one's).
        .filter(|m| caller.tenant.is_none() || ModelId::parse(&m.id).is_ok_and(|id| caller.may_use_model(&id)))
        .map(|m| {
            let id = ModelId::parse(&m.id).ok();
            let served = id.as_ref().and_then(|id| loaded.get(id));
            AvailableModel {
                route: m.known_task().and_then(tasks::route_of),
                loaded: served.is_some(),
                plugin: served.and_then(|model| state.pipeline.task_plugin(&caller, model)),
                location: match m.location {
                    Location::ModelsDir => ModelLocation::ModelsDir,
                    Location::Cache => ModelLocation::Cache,
                },
                bytes: m.bytes,
                task_type: m.task,
                model_id: m.id,
            }
        })
        .collect();
    models.sort_by(|a, b| a.model_id.cmp(&b.model_id));
    Ok(Json(AvailableModels { models }))
}
