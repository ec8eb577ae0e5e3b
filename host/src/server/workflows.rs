//! Roboflow's workflow routes (workflows.md §1): run a definition (`/workflows/run`, legacy
//! `/infer/workflows`) or a stored one (`/{workspace}/workflows/{workflow_id}`, legacy
//! `/infer/workflows/{workspace}/{workflow_id}`), validate it, describe its interface, and
//! describe the blocks. Errors keep Roboflow's bodies (`error_type`, `context`, …).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::context::Ctx;
use super::error::ApiError;
use super::AppState;
use crate::pipeline::Caller;
use crate::workflows::{self, Catalog, Graph, StoredError, Wanted, WorkflowError};

/// A workflow route's failure: Roboflow's workflow error body, or one of ours.
pub enum Failure {
    Workflow(WorkflowError),
    Api(ApiError),
    /// FastAPI's 422 for a body without a required field.
    Missing(&'static str, Value),
    /// A stored workflow that cannot be had (Roboflow's status and message, passed on).
    Stored(StoredError),
}

impl From<WorkflowError> for Failure {
    fn from(e: WorkflowError) -> Self {
        Failure::Workflow(e)
    }
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Failure::Api(e)
    }
}

impl From<BytesRejection> for Failure {
    fn from(e: BytesRejection) -> Self {
        Failure::Api(e.into())
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        match self {
            Failure::Workflow(e) => {
                let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                if status.is_server_error() {
                    tracing::error!(status = e.status, error = %e, "workflow failed");
                }
                (status, Json(e.body())).into_response()
            }
            Failure::Api(e) => e.into_response(),
            Failure::Stored(e) => match e.status {
                // Through `ApiError` where it has the status: its logging and headers.
                401 => ApiError::Unauthorized(e.message).into_response(),
                403 => ApiError::Forbidden(e.message).into_response(),
                404 => ApiError::NotFound(e.message).into_response(),
                503 => ApiError::Unavailable(e.message).into_response(),
                status => {
                    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
                    if status.is_server_error() {
                        tracing::error!(status = status.as_u16(), message = %e.message, "stored workflow failed");
                    }
                    (status, Json(json!({"message": e.message}))).into_response()
                }
            },
            Failure::Missing(field, input) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                // FastAPI's `detail` as Roboflow answers it, and our `message`.
                Json(json!({
                    "message": format!("Invalid request body: `{field}` is required"),
                    "detail": [{"type": "missing", "loc": ["body", field], "msg": "Field required", "input": input}],
                })),
            )
                .into_response(),
        }
    }
}

fn body_object(body: &[u8]) -> Result<Map<String, Value>, Failure> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(ApiError::Unprocessable("Invalid request body: expected a JSON object".into()).into()),
        Err(e) => Err(ApiError::Unprocessable(format!("Invalid request body: {e}")).into()),
    }
}

fn required<'a>(body: &'a Map<String, Value>, field: &'static str) -> Result<&'a Value, Failure> {
    body.get(field)
        .ok_or_else(|| Failure::Missing(field, Value::Object(body.clone())))
}

/// `definition` compiled with the custom blocks the caller may use.
fn compile(state: &AppState, caller: &Caller, definition: &Value) -> Result<Arc<Graph>, WorkflowError> {
    state
        .workflows
        .compile(definition, &Catalog::of(&state.pipeline, caller))
}

/// Runs `definition` with the body's `inputs` and `excluded_fields`, for `caller` (with the body's
/// `api_key` already applied: `with_body_key`).
async fn run_definition(
    state: &AppState,
    caller: Caller,
    definition: &Value,
    body: &Map<String, Value>,
) -> Result<Response, Failure> {
    let inputs = match required(body, "inputs")? {
        Value::Object(o) => o.clone(),
        _ => return Err(ApiError::Unprocessable("Invalid request body: `inputs` must be an object".into()).into()),
    };
    let excluded: Vec<String> = body
        .get("excluded_fields")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    let graph = compile(state, &caller, definition)?;
    let limits = state.workflows.limits.for_caller(&caller);
    let response = workflows::run(&graph, &state.pipeline, &caller, &inputs, &excluded, &limits).await?;
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], response).into_response())
}

/// The body's `api_key`, which wins over an `Authorization: Bearer` key.
fn with_body_key(caller: Caller, body: &Map<String, Value>) -> Caller {
    caller.with_api_key(body.get("api_key").and_then(Value::as_str).map(str::to_string))
}

/// `POST /workflows/run` (and the legacy `/infer/workflows`): a definition in the body.
#[utoipa::path(
    post,
    path = "/workflows/run",
    tag = "workflows",
    summary = "Run a workflow definition",
    description = "Roboflow's `WorkflowSpecificationInferenceRequest`: `specification` (the definition), `inputs` \
        (images as `{\"type\": \"base64\", \"value\": …}` or lists of them, parameters), optional `api_key`, \
        `excluded_fields`. Answers `{\"outputs\": [one object per input image], \"profiler_trace\": []}`. Also at \
        `POST /infer/workflows`.",
    request_body(content = Object, content_type = "application/json"),
    responses(
        (status = 200, description = "The outputs, one entry per input image", body = Object),
        (status = 400, description = "The definition or an input is invalid (Roboflow's workflow error body)", body = super::error::ErrorBody),
        (status = 422, description = "The body lacks `inputs` or `specification`", body = super::error::ErrorBody),
        (status = 413, description = "The run holds more images, or answers more bytes, than its limits", body = super::error::ErrorBody),
        (status = 500, description = "A step failed (StepExecutionError)", body = super::error::ErrorBody),
        (status = 503, description = "A model is overloaded or unavailable", body = super::error::ErrorBody),
        (status = 504, description = "The run went past its deadline", body = super::error::ErrorBody),
    ),
)]
pub async fn run(
    State(state): State<Arc<AppState>>,
    Ctx(caller): Ctx,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Failure> {
    let body = body_object(&body?)?;
    let definition = required(&body, "specification")?.clone();
    run_definition(&state, with_body_key(caller, &body), &definition, &body).await
}

/// A stored workflow's definition: from `--workflows-dir`, else from Roboflow's API with the
/// caller's Roboflow key (the body's `workflow_version_id` and `use_cache` as Roboflow takes them).
async fn stored(
    state: &AppState,
    caller: &Caller,
    workspace: &str,
    workflow_id: &str,
    body: &Map<String, Value>,
) -> Result<Value, Failure> {
    let wanted = Wanted {
        workspace,
        workflow_id,
        version: body.get("workflow_version_id").and_then(Value::as_str),
        api_key: caller.roboflow_key(),
        use_cache: body.get("use_cache").and_then(Value::as_bool).unwrap_or(true),
    };
    state.workflows.stored.get(&wanted).await.map_err(Failure::Stored)
}

/// `POST /{workspace}/workflows/{workflow_id}` (and the legacy
/// `/infer/workflows/{workspace}/{workflow_id}`): a stored workflow.
#[utoipa::path(
    post,
    path = "/{workspace}/workflows/{workflow_id}",
    tag = "workflows",
    summary = "Run a stored workflow",
    description = "Roboflow's `PredefinedWorkflowInferenceRequest` (`inputs`, `api_key`, `excluded_fields`, `use_cache`, \
        `workflow_version_id`). The definition is read from `--workflows-dir`: `<dir>/<workspace>/<workflow_id>.json` \
        (the definition, `{\"specification\": …}` or Roboflow's `{\"workflow\": {\"config\": …}}`); a workflow not \
        there is fetched from Roboflow's API with the caller's Roboflow key (the request's `api_key`, or a tenant's \
        `roboflow_api_key`) and cached per key. Also at `POST /infer/workflows/{workspace}/{workflow_id}`.",
    params(
        ("workspace" = String, Path, description = "The workspace (a directory of --workflows-dir, or Roboflow's workspace)"),
        ("workflow_id" = String, Path, description = "The workflow (`<workflow_id>.json` there, or Roboflow's workflow id)"),
    ),
    request_body(content = Object, content_type = "application/json"),
    responses(
        (status = 200, description = "The outputs, one entry per input image", body = Object),
        (status = 400, description = "The definition or an input is invalid", body = super::error::ErrorBody),
        (status = 401, description = "Roboflow refused the api_key", body = super::error::ErrorBody),
        (status = 403, description = "Roboflow says the api_key may not have this workflow", body = super::error::ErrorBody),
        (status = 404, description = "No such stored workflow", body = super::error::ErrorBody),
        (status = 413, description = "The run holds more images, or answers more bytes, than its limits", body = super::error::ErrorBody),
        (status = 422, description = "The body is not a JSON object of the right shape", body = super::error::ErrorBody),
        (status = 500, description = "A step failed (StepExecutionError)", body = super::error::ErrorBody),
        (status = 502, description = "Roboflow's API gave a malformed or failed answer", body = super::error::ErrorBody),
        (status = 503, description = "A model is overloaded or unavailable, or Roboflow's API cannot be reached (and no cached copy)", body = super::error::ErrorBody),
        (status = 504, description = "The run went past its deadline, or Roboflow's API timed out", body = super::error::ErrorBody),
    ),
)]
pub async fn run_stored(
    State(state): State<Arc<AppState>>,
    Ctx(caller): Ctx,
    Path((workspace, workflow_id)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Failure> {
    let body = body_object(&body?)?;
    let caller = with_body_key(caller, &body);
    let definition = stored(&state, &caller, &workspace, &workflow_id, &body).await?;
    run_definition(&state, caller, &definition, &body).await
}

/// `POST /workflows/validate`: the bare definition in the body.
#[utoipa::path(
    post,
    path = "/workflows/validate",
    tag = "workflows",
    summary = "Validate a workflow definition",
    description = "The body is the definition itself (not wrapped). Compiles it: `{\"status\": \"ok\"}`, or the error a run would get.",
    request_body(content = Object, content_type = "application/json"),
    responses(
        (status = 200, description = "`{\"status\": \"ok\"}`", body = Object),
        (status = 400, description = "Why the definition is invalid", body = super::error::ErrorBody),
        (status = 422, description = "The body is not a JSON object of the right shape", body = super::error::ErrorBody),
    ),
)]
pub async fn validate(
    State(state): State<Arc<AppState>>,
    Ctx(caller): Ctx,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Failure> {
    let definition: Value =
        serde_json::from_slice(&body?).map_err(|e| ApiError::Unprocessable(format!("Invalid request body: {e}")))?;
    compile(&state, &caller, &definition)?;
    Ok(Json(json!({"status": "ok"})).into_response())
}

/// `POST /workflows/describe_interface`: a definition's inputs and outputs with their kinds.
#[utoipa::path(
    post,
    path = "/workflows/describe_interface",
    tag = "workflows",
    summary = "Describe a workflow's inputs and outputs",
    description = "Body `{\"specification\": …}`; answers `{inputs: {name: [kinds]}, outputs: {name: [kinds]}, typing_hints, kinds_schemas}`.",
    request_body(content = Object, content_type = "application/json"),
    responses(
        (status = 200, description = "The interface", body = Object),
        (status = 400, description = "The definition is invalid", body = super::error::ErrorBody),
        (status = 422, description = "The body is not a JSON object of the right shape", body = super::error::ErrorBody),
    ),
)]
pub async fn describe_interface(
    State(state): State<Arc<AppState>>,
    Ctx(caller): Ctx,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Failure> {
    let body = body_object(&body?)?;
    let graph = compile(&state, &caller, required(&body, "specification")?)?;
    Ok(Json(workflows::describe_interface(&graph)).into_response())
}

/// `POST /{workspace}/workflows/{workflow_id}/describe_interface`.
pub async fn describe_stored_interface(
    State(state): State<Arc<AppState>>,
    Ctx(caller): Ctx,
    Path((workspace, workflow_id)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Failure> {
    let body = body?;
    let body = if body.is_empty() {
        Map::new()
    } else {
        body_object(&body)?
    };
    let caller = with_body_key(caller, &body);
    let definition = stored(&state, &caller, &workspace, &workflow_id, &body).await?;
    let graph = compile(&state, &caller, &definition)?;
    Ok(Json(workflows::describe_interface(&graph)).into_response())
}

/// `GET`/`POST /workflows/blocks/describe`: the blocks this server runs, from their manifests.
#[utoipa::path(
    get,
    path = "/workflows/blocks/describe",
    tag = "workflows",
    summary = "Describe the workflow blocks",
    description = "Every block's type id and aliases, fields (kinds, defaults), outputs and dimensionality, \
        generated from the blocks' manifests: the built-in blocks, then the custom blocks (WebAssembly plugins, \
        `block_source` `webassembly_plugin`) the caller may use. Also `POST` (a body with \
        `dynamic_blocks_definitions` is refused: custom blocks are WebAssembly here).",
    responses((status = 200, description = "The blocks", body = Object)),
)]
pub async fn describe_blocks(
    State(state): State<Arc<AppState>>,
    Ctx(caller): Ctx,
    body: Bytes,
) -> Result<Response, Failure> {
    if !body.is_empty() {
        let body = body_object(&body)?;
        if body
            .get("dynamic_blocks_definitions")
            .is_some_and(|d| d.as_array().is_some_and(|a| !a.is_empty()))
        {
            workflows::Workflows::new(None)
                .compile(&json!({"dynamic_blocks_definitions": [{}]}), &Catalog::default())?;
        }
    }
    Ok(Json(workflows::describe_blocks(&Catalog::of(&state.pipeline, &caller))).into_response())
}

/// `GET /workflows/execution_engine/versions`.
pub async fn versions() -> Json<Value> {
    Json(json!({"versions": ["1.17.0"]}))
}
