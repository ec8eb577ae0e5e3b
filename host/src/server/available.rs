//! `GET /models`: the models this server can serve without a download.

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::ApiError;
use super::AppState;
use crate::models::catalog::{self, Location};
use crate::models::ModelId;
use crate::tenants;

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
    pub route: Option<&'static str>,
    pub location: ModelLocation,
    /// Size of the model's files.
    pub bytes: u64,
    /// Whether the model is loaded now.
    pub loaded: bool,
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
pub async fn models(State(state): State<Arc<AppState>>) -> Result<Json<AvailableModels>, ApiError> {
    let tenant = tenants::current();
    let dir = state.models.models_dir().to_path_buf();
    let cache = state.models.cache().cloned();
    // Reads directories and ONNX headers: off the async threads.
    let found = tokio::task::spawn_blocking(move || catalog::on_disk(&dir, cache.as_ref()))
        .await
        .map_err(|e| ApiError::Internal(format!("listing models failed: {e}")))?;
    let loaded: HashSet<String> = state.models.loaded().keys().map(ToString::to_string).collect();
    let local: HashSet<String> = found
        .iter()
        .filter(|m| m.location == Location::ModelsDir)
        .map(|m| m.id.clone())
        .collect();
    let mut models: Vec<AvailableModel> = found
        .into_iter()
        .filter(|m| m.location == Location::ModelsDir || !local.contains(&m.id))
        // With tenants, only the request's tenant's models (a malformed directory name is no one's).
        .filter(|m| match &tenant {
            None => true,
            Some(t) => ModelId::parse(&m.id).is_ok_and(|id| t.may_use_model(&id)),
        })
        .map(|m| AvailableModel {
            route: m.known_task().map(|t| t.route()),
            loaded: loaded.contains(&m.id),
            location: match m.location {
                Location::ModelsDir => ModelLocation::ModelsDir,
                Location::Cache => ModelLocation::Cache,
            },
            bytes: m.bytes,
            task_type: m.task,
            model_id: m.id,
        })
        .collect();
    models.sort_by(|a, b| a.model_id.cmp(&b.model_id));
    Ok(Json(AvailableModels { models }))
}
