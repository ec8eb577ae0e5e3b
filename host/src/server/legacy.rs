//! The legacy hosted-API route `GET|POST /{dataset}/{version}`: parameters in the query,
//! the image as `?image=<url>`, a multipart part `file`, or the raw body.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Path, Query, RawQuery, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::context::Ctx;
use super::error::ApiError;
use super::infer::respond;
use super::AppState;
use crate::input::{decode_base64, ImageSource};
use crate::models::LoadedModel;
use crate::pipeline::Caller;
use crate::tasks::{self, Choice, Common, Confidence, Task, DEFAULT_MAX_DETECTIONS};
use crate::visualize::Style;

/// How the legacy route's body image is encoded.
#[derive(Clone, Copy, Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LegacyImageType {
    /// An image file (as base64 text, a multipart part, or raw bytes).
    #[default]
    Base64,
    /// A pickled or `.npy` numpy array.
    Numpy,
}

/// What the legacy route answers with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LegacyFormat {
    /// The model's JSON response.
    #[default]
    Json,
    /// The picture with the predictions drawn on it (a JPEG body).
    Image,
    /// The JSON with that picture as base64 `visualization`.
    ImageAndJson,
}

/// The legacy route's query. The model's task's own options (e.g. `mask_decode_mode`) are read
/// from the same query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LegacyQuery {
    /// Minimum confidence (default 0.4; values ≥ 1 are percentages; at least 0.01).
    #[serde(default)]
    pub confidence: Option<Confidence>,
    /// Roboflow API key: a model not on this server is downloaded from Roboflow with it.
    #[serde(default)]
    #[param(ignore)]
    pub api_key: Option<String>,
    /// NMS IoU threshold (default 0.3; values ≥ 1 are percentages).
    #[serde(default)]
    pub overlap: Option<f32>,
    /// At most this many predictions (default 300).
    #[serde(default)]
    pub max_detections: Option<u32>,
    /// The image's URL, fetched by the server (instead of a body).
    #[serde(default)]
    pub image: Option<String>,
    /// How the body's image is encoded: `base64` (an image file, default) or `numpy`.
    #[serde(default)]
    #[param(value_type = Option<LegacyImageType>)]
    pub image_type: Option<Choice<LegacyImageType>>,
    /// `json` (default); `image`: the picture with the predictions drawn on it (a JPEG body);
    /// `image_and_json`: the JSON with that picture as base64 `visualization`.
    #[serde(default)]
    #[param(value_type = Option<LegacyFormat>)]
    pub format: Option<Choice<LegacyFormat>>,
    /// Pictures: write each detection's class and confidence (default false; `true`/`false`,
    /// any case, or `1`/`0`).
    #[serde(default)]
    #[param(value_type = Option<bool>)]
    pub labels: Option<String>,
    /// Pictures: line width in pixels, 1 to 100 (default 1).
    #[serde(default)]
    #[param(minimum = 1, maximum = 100)]
    pub stroke: Option<i64>,
}

/// Roboflow's legacy defaults differ from `/infer/*`.
const LEGACY_CONFIDENCE: f32 = 0.4;
const LEGACY_OVERLAP: f32 = 0.3;
/// The legacy route floors confidence to keep clients from asking for every candidate.
const LEGACY_MIN_CONFIDENCE: f32 = 0.01;

/// Percentages (values ≥ 1) are accepted as Roboflow's hosted API does; what is not a number
/// from 0 to 1 (or 0 to 100 %) is refused, NaN and infinities included (`f32::max` would
/// have turned a NaN confidence into the floor).
fn fraction(name: &str, v: f32) -> Result<f32, ApiError> {
    let fraction = if v >= 1.0 { v / 100.0 } else { v };
    if !(0.0..=1.0).contains(&fraction) {
        return Err(ApiError::BadRequest(format!(
            "{name} must be a number from 0 to 1 (or a percentage up to 100), got {v}"
        )));
    }
    Ok(fraction)
}

#[utoipa::path(
    get,
    path = "/{dataset}/{version}",
    tag = "legacy",
    summary = "Infer on a URL image (Roboflow's hosted-API route)",
    description = "Answers with the model's own task. The image is `?image=<url>`.",
    params(
        ("dataset" = String, Path, description = "The model's project"),
        ("version" = String, Path, description = "The model's version"),
        LegacyQuery,
        ("api_key" = Option<String>, Query, description = "Roboflow API key: a model not on this server is downloaded from Roboflow with it"),
    ),
    responses(
        // The JSON schema (the response of whichever task the model has) is filled in by `docs::TaskPaths`.
        (status = 200, description = "The model's task's response for the image; with `format=image`, the picture with the predictions drawn on it.",
            content(
                (Object = "application/json"),
                (super::schemas::Jpeg = "image/jpeg"),
            )),
        super::schemas::InferErrors,
    ),
)]
pub async fn legacy_get(
    state: State<Arc<AppState>>,
    ctx: Ctx,
    path: Path<(String, String)>,
    query: Result<Query<LegacyQuery>, axum::extract::rejection::QueryRejection>,
    raw: RawQuery,
    request: Request,
) -> Result<Response, ApiError> {
    legacy_infer(state, ctx, path, query, raw, request).await
}

#[utoipa::path(
    post,
    path = "/{dataset}/{version}",
    tag = "legacy",
    summary = "Infer on an uploaded image (Roboflow's hosted-API route)",
    description = "Answers with the model's own task. The image is the body (base64 text, a multipart part `file`, or the raw file) or `?image=<url>`.",
    params(
        ("dataset" = String, Path, description = "The model's project"),
        ("version" = String, Path, description = "The model's version"),
        LegacyQuery,
        ("api_key" = Option<String>, Query, description = "Roboflow API key: a model not on this server is downloaded from Roboflow with it"),
    ),
    request_body(
        description = "The image (not needed with `?image=<url>`).",
        content(
            (String = "text/plain"),
            (String = "application/x-www-form-urlencoded"),
            (super::schemas::LegacyUpload = "multipart/form-data"),
            (super::schemas::RawImage = "application/octet-stream"),
        ),
    ),
    responses(
        (status = 200, description = "The model's task's response for the image; with `format=image`, the picture with the predictions drawn on it.",
            content(
                (Object = "application/json"),
                (super::schemas::Jpeg = "image/jpeg"),
            )),
        super::schemas::InferErrors,
    ),
)]
pub async fn legacy_post(
    state: State<Arc<AppState>>,
    ctx: Ctx,
    path: Path<(String, String)>,
    query: Result<Query<LegacyQuery>, axum::extract::rejection::QueryRejection>,
    raw: RawQuery,
    request: Request,
) -> Result<Response, ApiError> {
    legacy_infer(state, ctx, path, query, raw, request).await
}

pub async fn legacy_infer(
    State(state): State<Arc<AppState>>,
    Ctx(caller): Ctx,
    Path((dataset, version)): Path<(String, String)>,
    query: Result<Query<LegacyQuery>, axum::extract::rejection::QueryRejection>,
    RawQuery(raw_query): RawQuery,
    request: Request,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| bad_query(e.body_text()))?;
    let format = query
        .format
        .map(|f| f.get("format"))
        .transpose()
        .map_err(ApiError::BadRequest)?
        .unwrap_or_default();
    let visualize = match format {
        LegacyFormat::Json => None,
        LegacyFormat::Image | LegacyFormat::ImageAndJson => {
            let labels = query.labels.as_deref().map(parse_flag).transpose()?.unwrap_or(false);
            Some(Style::new(labels, query.stroke, "stroke").map_err(ApiError::BadRequest)?)
        }
    };
    let image_type = query
        .image_type
        .map(|t| t.get("image_type"))
        .transpose()
        .map_err(ApiError::BadRequest)?
        .unwrap_or_default();
    let source = if let Some(url) = query.image.clone() {
        ImageSource::Url(url)
    } else {
        body_source(&state, request, image_type).await?
    };
    let confidence = match &query.confidence {
        Some(c) => fraction("confidence", c.value().map_err(ApiError::Unprocessable)?)?.max(LEGACY_MIN_CONFIDENCE),
        None => LEGACY_CONFIDENCE,
    };
    let common = Common::new(
        confidence,
        query
            .overlap
            .map(|v| fraction("overlap", v))
            .transpose()?
            .unwrap_or(LEGACY_OVERLAP),
        false,
        None,
        query.max_detections.unwrap_or(DEFAULT_MAX_DETECTIONS),
    )
    .map_err(ApiError::BadRequest)?;
    let caller = caller.with_api_key(query.api_key);
    let model = state.pipeline.model(&caller, &format!("{dataset}/{version}")).await?;
    // The legacy route answers with the model's own task.
    let task = model.description.task.clone();
    let mut dispatch = Dispatch {
        task: &task,
        run: None,
        args: Some(Args {
            state: &state,
            caller: &caller,
            model,
            source,
            common,
            raw_query: raw_query.as_deref().unwrap_or(""),
            format,
            visualize,
        }),
    };
    tasks::each(&mut dispatch);
    match dispatch.run {
        Some(run) => run.await,
        None => Err(ApiError::BadRequest(format!(
            "Model {dataset}/{version} is for {task}, which has no route of its own here"
        ))),
    }
}

/// A legacy request, ready to run with its model's task.
struct Args<'a> {
    state: &'a AppState,
    caller: &'a Caller,
    model: Arc<LoadedModel>,
    source: ImageSource,
    common: Common,
    raw_query: &'a str,
    format: LegacyFormat,
    visualize: Option<Style>,
}

/// Starts `run::<T>` for the task the model has.
struct Dispatch<'a> {
    task: &'a str,
    args: Option<Args<'a>>,
    run: Option<BoxFuture<'a, Result<Response, ApiError>>>,
}

impl<'a> tasks::Visitor for Dispatch<'a> {
    fn visit<T: Task>(&mut self) {
        if T::NAME == self.task {
            if let Some(args) = self.args.take() {
                self.run = Some(Box::pin(run::<T>(args)));
            }
        }
    }
}

async fn run<T: Task>(a: Args<'_>) -> Result<Response, ApiError> {
    // The task's own options come from the same query.
    let options: T::Options = serde_urlencoded::from_str(a.raw_query).map_err(|e| bad_query(e.to_string()))?;
    let params = T::params(&a.common, &options).map_err(ApiError::BadRequest)?;
    let inference_id = uuid::Uuid::new_v4().to_string();
    let mut responses = a
        .state
        .pipeline
        .infer::<T>(
            a.caller,
            a.model,
            vec![a.source],
            a.common,
            params,
            inference_id,
            a.visualize,
        )
        .await?;
    if a.format == LegacyFormat::Image {
        let jpeg = responses
            .first_mut()
            .and_then(|r| T::visualization(r).take())
            .ok_or_else(|| ApiError::Internal("no picture was drawn".into()))?;
        return Ok(([(CONTENT_TYPE, "image/jpeg")], jpeg.0).into_response());
    }
    Ok(respond(responses, false))
}

fn bad_query(why: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest(format!("Invalid query parameters: {why}"))
}

/// A boolean query parameter as Python clients send it (`True`, `false`, `1`, ...).
fn parse_flag(value: &str) -> Result<bool, ApiError> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(ApiError::BadRequest(format!(
            "labels must be true or false, got {value:?}"
        ))),
    }
}

/// The image in the body: multipart part `file`, else base64 text, else raw image bytes.
async fn body_source(state: &AppState, request: Request, image_type: LegacyImageType) -> Result<ImageSource, ApiError> {
    let numpy = matches!(image_type, LegacyImageType::Numpy);
    let content_type = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase);
    let Some(content_type) = content_type else {
        return Err(ApiError::BadRequest(
            "Content-Type header not provided with request.".into(),
        ));
    };
    let bytes = if content_type.starts_with("multipart/form-data") {
        let mut multipart = Multipart::from_request(request, state)
            .await
            .map_err(|e| ApiError::BadRequest(format!("Invalid multipart body: {}", e.body_text())))?;
        let mut file = None;
        while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
            if field.name() == Some("file") {
                file = Some(field.bytes().await.map_err(multipart_error)?);
                break;
            }
        }
        let file = file.ok_or_else(|| {
            ApiError::BadRequest("Expected image to be send in part named 'file' of multipart/form-data request".into())
        })?;
        // A multipart upload carries the file itself, never base64.
        return Ok(if numpy {
            ImageSource::Numpy(file.to_vec())
        } else {
            ImageSource::Encoded(file.to_vec())
        });
    } else {
        Bytes::from_request(request, state).await?
    };
    if bytes.is_empty() {
        return Err(ApiError::BadRequest(
            "Request body is empty: send the image as base64 text, a multipart part `file`, or ?image=<url>".into(),
        ));
    }
    // Base64 text is what Roboflow's clients send; raw bytes (a JPEG, a pickle) are accepted too.
    let looks_like_text = bytes.iter().all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace());
    let payload = if looks_like_text {
        decode_base64(std::str::from_utf8(&bytes).unwrap_or_default())?
    } else {
        bytes.to_vec()
    };
    Ok(if numpy {
        ImageSource::Numpy(payload)
    } else {
        ImageSource::Encoded(payload)
    })
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge("Request body is larger than the server's limit".into())
    } else {
        ApiError::BadRequest(format!("Invalid multipart body: {}", e.body_text()))
    }
}
