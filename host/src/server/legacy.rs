//! The legacy hosted-API route `GET|POST /{dataset}/{version}`: parameters in the query,
//! the image as `?image=<url>`, a multipart part `file`, or the raw body.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;

use super::error::ApiError;
use super::infer::{respond, Confidence, InferOptions};
use super::AppState;
use crate::input::{decode_base64, ImageSource};
use crate::pipeline;
use crate::visualize::Style;

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
    #[param(value_type = Option<super::docs::LegacyImageType>)]
    pub image_type: Option<String>,
    /// `json` (default); `image`: the picture with the predictions drawn on it (a JPEG body);
    /// `image_and_json`: the JSON with that picture as base64 `visualization`.
    #[serde(default)]
    #[param(value_type = Option<super::docs::LegacyFormat>)]
    pub format: Option<String>,
    /// Pictures: write each detection's class and confidence (default false; `true`/`false`,
    /// any case, or `1`/`0`).
    #[serde(default)]
    #[param(value_type = Option<bool>)]
    pub labels: Option<String>,
    /// Pictures: line width in pixels, 1 to 100 (default 1).
    #[serde(default)]
    #[param(minimum = 1, maximum = 100)]
    pub stroke: Option<i64>,
    /// Keypoint detection: keypoints below it are left out (default 0).
    #[serde(default)]
    pub keypoint_confidence: Option<f32>,
    /// Instance segmentation: `accurate` (default), `fast` or `tradeoff`.
    #[serde(default)]
    #[param(value_type = Option<super::docs::MaskDecodeMode>)]
    pub mask_decode_mode: Option<String>,
    /// Instance segmentation, mode `tradeoff`: 0 (accurate) to 1 (fast).
    #[serde(default)]
    #[param(minimum = 0.0, maximum = 1.0)]
    pub tradeoff_factor: Option<f32>,
    /// Instance segmentation: `polygon` (default) or `rle`.
    #[serde(default)]
    #[param(value_type = Option<super::docs::MaskFormat>)]
    pub response_mask_format: Option<String>,
}

/// Roboflow's legacy defaults differ from `/infer/*`.
const LEGACY_CONFIDENCE: f32 = 0.4;
const LEGACY_OVERLAP: f32 = 0.3;
/// The legacy route floors confidence to keep clients from asking for every candidate.
const LEGACY_MIN_CONFIDENCE: f32 = 0.01;

/// Percentages (values ≥ 1) are accepted as Roboflow's hosted API does.
fn fraction(v: f32) -> f32 {
    if v >= 1.0 {
        v / 100.0
    } else {
        v
    }
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
        (status = 200, description = "The model's task's response for the image; with `format=image`, the picture with the predictions drawn on it.",
            content(
                (super::responses::InferenceResponse = "application/json"),
                (super::docs::Jpeg = "image/jpeg"),
            )),
        super::docs::LegacyErrors,
    ),
)]
pub async fn legacy_get(
    state: State<Arc<AppState>>,
    path: Path<(String, String)>,
    query: Result<Query<LegacyQuery>, axum::extract::rejection::QueryRejection>,
    request: Request,
) -> Result<Response, ApiError> {
    legacy_infer(state, path, query, request).await
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
            (super::docs::LegacyUpload = "multipart/form-data"),
            (super::docs::RawImage = "application/octet-stream"),
        ),
    ),
    responses(
        (status = 200, description = "The model's task's response for the image; with `format=image`, the picture with the predictions drawn on it.",
            content(
                (super::responses::InferenceResponse = "application/json"),
                (super::docs::Jpeg = "image/jpeg"),
            )),
        super::docs::LegacyErrors,
    ),
)]
pub async fn legacy_post(
    state: State<Arc<AppState>>,
    path: Path<(String, String)>,
    query: Result<Query<LegacyQuery>, axum::extract::rejection::QueryRejection>,
    request: Request,
) -> Result<Response, ApiError> {
    legacy_infer(state, path, query, request).await
}

pub async fn legacy_infer(
    State(state): State<Arc<AppState>>,
    Path((dataset, version)): Path<(String, String)>,
    query: Result<Query<LegacyQuery>, axum::extract::rejection::QueryRejection>,
    request: Request,
) -> Result<Response, ApiError> {
    let Query(query) =
        query.map_err(|e| ApiError::BadRequest(format!("Invalid query parameters: {}", e.body_text())))?;
    let format = ReplyFormat::parse(query.format.as_deref())?;
    let visualize = match format {
        ReplyFormat::Json => None,
        ReplyFormat::Image | ReplyFormat::ImageAndJson => {
            let labels = query.labels.as_deref().map(parse_flag).transpose()?.unwrap_or(false);
            Some(Style::new(labels, query.stroke, "stroke").map_err(ApiError::BadRequest)?)
        }
    };
    let numpy = match query.image_type.as_deref() {
        None | Some("base64") => false,
        Some("numpy") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "image_type must be base64 or numpy, got {other:?}"
            )))
        }
    };
    let source = if let Some(url) = query.image.clone() {
        ImageSource::Url(url)
    } else {
        body_source(&state, request, numpy).await?
    };
    let confidence = match &query.confidence {
        Some(c) => fraction(c.value()?).max(LEGACY_MIN_CONFIDENCE),
        None => LEGACY_CONFIDENCE,
    };
    let options = InferOptions {
        iou_threshold: Some(query.overlap.map(fraction).unwrap_or(LEGACY_OVERLAP)),
        max_detections: query.max_detections,
        keypoint_confidence: query.keypoint_confidence,
        mask_decode_mode: query.mask_decode_mode,
        tradeoff_factor: query.tradeoff_factor,
        response_mask_format: query.response_mask_format,
        ..InferOptions::default()
    };
    // The legacy route answers with the model's own task.
    let model = pipeline::model_with_key(&state, &format!("{dataset}/{version}"), query.api_key.as_deref()).await?;
    let params = options.task_params(model.description.task, confidence)?;
    let inference_id = uuid::Uuid::new_v4().to_string();
    let mut responses = pipeline::run(&state, model, vec![source], params, inference_id, visualize).await?;
    if format == ReplyFormat::Image {
        let jpeg = responses
            .first_mut()
            .and_then(|r| r.visualization_mut().take())
            .ok_or_else(|| ApiError::Internal("no picture was drawn".into()))?;
        return Ok(([(CONTENT_TYPE, "image/jpeg")], jpeg.0).into_response());
    }
    Ok(respond(responses, false))
}

/// What the legacy route answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReplyFormat {
    Json,
    Image,
    ImageAndJson,
}

impl ReplyFormat {
    fn parse(format: Option<&str>) -> Result<Self, ApiError> {
        match format {
            None | Some("json") => Ok(Self::Json),
            Some("image") => Ok(Self::Image),
            Some("image_and_json") => Ok(Self::ImageAndJson),
            Some(other) => Err(ApiError::BadRequest(format!(
                "format must be json, image or image_and_json, got {other:?}"
            ))),
        }
    }
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
async fn body_source(state: &AppState, request: Request, numpy: bool) -> Result<ImageSource, ApiError> {
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
