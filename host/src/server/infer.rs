//! `POST /infer/<task>` (one handler, generic over the task) and `POST /infer/{route}` for
//! custom-task plugins; the request body shapes they share with the other routes.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::context::Ctx;
use super::error::ApiError;
use super::AppState;
use crate::input::request::{check_image_count, image_source, ImageDeclaration, OneOrMany};
use crate::pipeline::check_task;
use crate::tasks::{CommonOptions, Task};

/// The body of every `/infer/<task>` route: Roboflow's request fields, those every task shares,
/// and (in the same object) the task's own options. Unknown fields are ignored.
#[derive(Debug, Deserialize, ToSchema)]
pub struct InferRequest {
    /// `<project>/<version>`, a directory of the models directory. Required, as in Roboflow's
    /// schema (null is allowed by the schema but useless).
    #[serde(default)]
    #[schema(example = "shapes-detect/1")]
    pub model_id: Option<String>,
    /// One image, or a list of images (answered with a list, in order).
    #[schema(schema_with = one_or_many_images)]
    pub image: OneOrMany<ImageDeclaration>,
    /// Roboflow API key: a model not on this server is downloaded from Roboflow with it.
    #[serde(default)]
    pub api_key: Option<String>,
    /// Echoed as `inference_id` (default: a fresh UUID).
    #[serde(default)]
    pub id: Option<String>,
    #[serde(flatten)]
    pub common: CommonOptions,
}

/// The schema of `OneOrMany<ImageDeclaration>` (read by hand, so not derived).
fn one_or_many_images() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{ArrayBuilder, OneOfBuilder, Ref};
    let one = Ref::from_schema_name(<ImageDeclaration as ToSchema>::name());
    OneOfBuilder::new()
        .item(one.clone())
        .item(ArrayBuilder::new().items(one))
        .description(Some("One image, or a list of images (answered with a list, in order)."))
        .into()
}

/// A task's body: the shared request and the task's own options, side by side in one object.
#[derive(Deserialize)]
struct InferBody<O> {
    #[serde(flatten)]
    request: InferRequest,
    #[serde(flatten)]
    options: O,
}

/// Parses a JSON body into `T`, answering 422 with the reason when it does not fit.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::Unprocessable(format!("Invalid request body: {e}")))
}

/// One response for one image, an array for a list (in order).
pub fn respond<R: Serialize>(mut responses: Vec<R>, is_list: bool) -> Response {
    if is_list {
        Json(responses).into_response()
    } else {
        Json(responses.remove(0)).into_response()
    }
}

/// `POST /infer/<route>` of task `T` (documented in `docs::TaskPaths`).
pub async fn infer<T: Task>(
    State(state): State<Arc<AppState>>,
    Ctx(caller): Ctx,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body?;
    check_image_count(&body, state.pipeline.input_limits.max_batch)?;
    let InferBody { request, options } = parse_json::<InferBody<T::Options>>(&body)?;
    let model_id = request
        .model_id
        .ok_or_else(|| ApiError::Unprocessable("model_id is required".into()))?;
    let (declarations, is_list) = request.image.into_vec();
    let sources = declarations
        .into_iter()
        .map(image_source)
        .collect::<Result<Vec<_>, _>>()?;
    let common = request.common.resolve()?;
    let params = T::params(&common, &options).map_err(ApiError::BadRequest)?;
    let visualize = request.common.visualization().map_err(ApiError::BadRequest)?;
    let caller = caller.with_api_key(request.api_key);
    let pipeline = &state.pipeline;
    let model = pipeline.model(&caller, &model_id).await?;
    check_task::<T>(&model)?;
    let inference_id = request.id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let responses = pipeline
        .infer::<T>(&caller, model, sources, common, params, inference_id, visualize)
        .await?;
    Ok(respond(responses, is_list))
}

/// `POST /infer/{route}` for plugins with a task of their own: the body's `model_id` and
/// `image` as for the task routes; every other field is passed to the plugin as JSON.
#[utoipa::path(
    post,
    path = "/infer/{route}",
    tag = "inference",
    summary = "A plugin's own task",
    description = "Served by the custom-task plugin whose manifest names `route` (see `GET /plugins`). The body \
        carries `model_id` and `image` as for the task routes; every other field goes to the plugin as its parameters.",
    params(("route" = String, Path, description = "The route the plugin's manifest names")),
    request_body(content = Object, content_type = "application/json"),
    responses(
        (status = 200, description = "The plugin's JSON document, as `result`.", body = crate::tasks::custom::CustomResponse),
        super::schemas::InferErrors,
    ),
)]
pub async fn custom(
    State(state): State<Arc<AppState>>,
    Ctx(caller): Ctx,
    Path(route): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body?;
    check_image_count(&body, state.pipeline.input_limits.max_batch)?;
    let mut fields: serde_json::Map<String, Value> = parse_json(&body)?;
    let model_id = match fields.get("model_id") {
        Some(Value::String(id)) => id.clone(),
        _ => return Err(ApiError::Unprocessable("model_id is required".into())),
    };
    let image = fields
        .remove("image")
        .ok_or_else(|| ApiError::Unprocessable("image is required".into()))?;
    let (declarations, _) = serde_json::from_value::<OneOrMany<ImageDeclaration>>(image)
        .map_err(|e| ApiError::Unprocessable(format!("Invalid image: {e}")))?
        .into_vec();
    let sources = declarations
        .into_iter()
        .map(image_source)
        .collect::<Result<Vec<_>, _>>()?;
    let inference_id = match fields.get("id") {
        Some(Value::String(id)) => id.clone(),
        _ => uuid::Uuid::new_v4().to_string(),
    };
    let pipeline = &state.pipeline;
    if pipeline.custom_plugin(&caller, &route).is_none() {
        return Err(ApiError::NotFound(format!("no plugin serves /infer/{route}")));
    }
    // The api key is for the model download, never for the plugin.
    let api_key = match fields.remove("api_key") {
        Some(Value::String(key)) => Some(key),
        _ => None,
    };
    let caller = caller.with_api_key(api_key);
    let model = pipeline.model(&caller, &model_id).await?;
    let params = Value::Object(fields).to_string();
    let response = pipeline
        .custom(&caller, &route, model, sources, params, inference_id)
        .await?;
    Ok(Json(response).into_response())
}
