//! `POST /infer/<task>`: object detection, instance segmentation, classification, keypoints.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

use axum::extract::rejection::BytesRejection;

use super::error::ApiError;
use super::responses::InferenceResponse;
use super::AppState;
use crate::input::{decode_base64, ImageSource, InputError};
use crate::models::Task;
use crate::pipeline;
use crate::plugins::bindings::{classify, keypoints_api, segment, wit};
use crate::plugins::TaskParams;
use crate::visualize::Style;

/// One image declaration: `{"type": "base64" | "url" | "numpy", "value": ...}`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ImageDeclaration {
    /// `base64` (an image file), `url` (fetched by the server) or `numpy` (base64 of a pickled
    /// or `.npy` H×W×3 uint8 BGR array).
    #[serde(rename = "type")]
    #[schema(value_type = super::docs::ImageType)]
    pub kind: String,
    /// The image: base64 text (a `data:` prefix is allowed) or the URL.
    #[serde(default)]
    #[schema(value_type = String, required = true)]
    pub value: Option<Value>,
}

/// One image, or a list of images (answered with a list, in order).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum OneOrMany {
    Many(Vec<ImageDeclaration>),
    One(ImageDeclaration),
}

/// A confidence given as a number or as Roboflow's `"best"` / `"default"` (or a number as text).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Confidence {
    Number(f32),
    Named(String),
}

/// The body of every `/infer/<task>` route: Roboflow's request fields; each task reads its own.
/// Unknown fields are ignored.
#[derive(Debug, Deserialize, ToSchema)]
pub struct InferRequest {
    /// Required key, as in Roboflow's schema (null is allowed by the schema but useless).
    /// `<project>/<version>`, a directory of the models directory.
    #[schema(value_type = String, required = true, example = "shapes-detect/1")]
    pub model_id: Option<String>,
    pub image: OneOrMany,
    /// Roboflow API key: a model not on this server is downloaded from Roboflow with it
    /// (`Authorization: Bearer` works too).
    #[serde(default)]
    pub api_key: Option<String>,
    /// Echoed as `inference_id` (default: a fresh UUID).
    #[serde(default)]
    pub id: Option<String>,
    #[serde(flatten)]
    pub options: InferOptions,
}

/// Task parameters shared by the JSON routes and the legacy route (all optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct InferOptions {
    /// Minimum confidence (default 0.4).
    #[serde(default)]
    pub confidence: Option<Confidence>,
    /// NMS IoU threshold (default 0.3).
    #[serde(default)]
    pub iou_threshold: Option<f32>,
    /// NMS across classes (default false).
    #[serde(default)]
    pub class_agnostic_nms: Option<bool>,
    /// Only these class names.
    #[serde(default)]
    pub class_filter: Option<Vec<String>>,
    /// At most this many predictions per image (default 300).
    #[serde(default)]
    pub max_detections: Option<u32>,
    /// Instance segmentation: `accurate` (default), `fast` or `tradeoff`.
    #[serde(default)]
    #[schema(value_type = Option<super::docs::MaskDecodeMode>)]
    pub mask_decode_mode: Option<String>,
    /// Instance segmentation, mode `tradeoff`: 0 (accurate) to 1 (fast).
    #[serde(default)]
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub tradeoff_factor: Option<f32>,
    /// Instance segmentation: `polygon` (default, `points`) or `rle` (COCO RLE, `rle`).
    #[serde(default)]
    #[schema(value_type = Option<super::docs::MaskFormat>)]
    pub response_mask_format: Option<String>,
    /// Keypoint detection: keypoints below it are left out (default 0).
    #[serde(default)]
    pub keypoint_confidence: Option<f32>,
    /// Also answer `visualization`: the image with the predictions drawn on it, a base64
    /// JPEG (default false).
    #[serde(default)]
    pub visualize_predictions: Option<bool>,
    /// Visualization: write each detection's class and confidence (default false;
    /// classification always shows its label).
    #[serde(default)]
    pub visualization_labels: Option<bool>,
    /// Visualization: line width in pixels, 1 to 100 (default 1).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100)]
    pub visualization_stroke_width: Option<i64>,
}

pub const DEFAULT_CONFIDENCE: f32 = 0.4;
pub const DEFAULT_IOU: f32 = 0.3;
pub const DEFAULT_MAX_DETECTIONS: u32 = 300;

impl Confidence {
    /// `best`/`default` mean the model's recommended threshold; we have none, so the default.
    pub fn value(&self) -> Result<f32, ApiError> {
        match self {
            Confidence::Number(v) => Ok(*v),
            Confidence::Named(s) if s == "best" || s == "default" => Ok(DEFAULT_CONFIDENCE),
            Confidence::Named(s) => s.parse().map_err(|_| {
                ApiError::Unprocessable(format!(
                    "confidence must be a number, \"best\" or \"default\", got {s:?}"
                ))
            }),
        }
    }
}

/// Parses a JSON body into `T`, answering 422 with the reason when it does not fit.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::Unprocessable(format!("Invalid request body: {e}")))
}

/// Turns an image declaration into a source of bytes.
pub fn image_source(decl: ImageDeclaration) -> Result<ImageSource, InputError> {
    let kind = decl.kind.to_ascii_lowercase();
    let text = match decl.value {
        Some(Value::String(s)) => s,
        _ => return Err(InputError::MissingValue),
    };
    match kind.as_str() {
        "base64" => Ok(ImageSource::Encoded(decode_base64(&text)?)),
        "url" => Ok(ImageSource::Url(text)),
        "numpy" => Ok(ImageSource::Numpy(decode_base64(&text)?)),
        // Server-local files and in-process objects are never accepted from clients.
        _ => Err(InputError::UnknownType(decl.kind)),
    }
}

impl InferOptions {
    /// How to draw the predictions, when `visualize_predictions` asks for it.
    pub fn visualization(&self) -> Result<Option<Style>, ApiError> {
        if !self.visualize_predictions.unwrap_or(false) {
            return Ok(None);
        }
        let labels = self.visualization_labels.unwrap_or(false);
        Style::new(labels, self.visualization_stroke_width, "visualization_stroke_width")
            .map(Some)
            .map_err(ApiError::BadRequest)
    }

    /// The plugin parameters for `task`, with Roboflow's defaults; bad values are 400s.
    pub fn task_params(&self, task: Task, confidence: f32) -> Result<TaskParams, ApiError> {
        if !confidence.is_finite() {
            return Err(ApiError::BadRequest("confidence must be a finite number".into()));
        }
        let detection = || wit::DetectionParams {
            confidence,
            iou_threshold: self.iou_threshold.unwrap_or(DEFAULT_IOU),
            class_agnostic_nms: self.class_agnostic_nms.unwrap_or(false),
            max_detections: self.max_detections.unwrap_or(DEFAULT_MAX_DETECTIONS),
            class_filter: self.class_filter.clone(),
        };
        Ok(match task {
            Task::ObjectDetection => TaskParams::Detection(detection()),
            Task::Classification => TaskParams::Classification(classify::ClassificationParams { confidence }),
            Task::KeypointDetection => TaskParams::Keypoints(keypoints_api::KeypointParams {
                detection: detection(),
                keypoint_confidence: self.keypoint_confidence.unwrap_or(0.0),
            }),
            Task::InstanceSegmentation => {
                let mask_decode_mode = match self.mask_decode_mode.as_deref().unwrap_or("accurate") {
                    "accurate" => segment::MaskDecodeMode::Accurate,
                    "fast" => segment::MaskDecodeMode::Fast,
                    "tradeoff" => segment::MaskDecodeMode::Tradeoff,
                    other => {
                        return Err(ApiError::BadRequest(format!(
                            "mask_decode_mode must be accurate, fast or tradeoff, got {other:?}"
                        )))
                    }
                };
                let tradeoff_factor = self.tradeoff_factor.unwrap_or(0.0);
                if !(0.0..=1.0).contains(&tradeoff_factor) {
                    return Err(ApiError::BadRequest(format!(
                        "tradeoff_factor must be between 0 and 1, got {tradeoff_factor}"
                    )));
                }
                let mask_format = match self.response_mask_format.as_deref().unwrap_or("polygon") {
                    "polygon" => segment::MaskFormat::Polygon,
                    "rle" => segment::MaskFormat::Rle,
                    other => {
                        return Err(ApiError::BadRequest(format!(
                            "response_mask_format must be polygon or rle, got {other:?}"
                        )))
                    }
                };
                TaskParams::Segmentation(segment::SegmentationParams {
                    detection: detection(),
                    mask_decode_mode,
                    tradeoff_factor,
                    mask_format,
                })
            }
        })
    }
}

/// One response for one image, an array for a list (in order).
pub fn respond(mut responses: Vec<InferenceResponse>, is_list: bool) -> Response {
    if is_list {
        Json(responses).into_response()
    } else {
        Json(responses.remove(0)).into_response()
    }
}

async fn infer(
    state: Arc<AppState>,
    body: Result<Bytes, BytesRejection>,
    route_task: Task,
) -> Result<Response, ApiError> {
    let request: InferRequest = parse_json(&body?)?;
    let model_id = request
        .model_id
        .ok_or_else(|| ApiError::Unprocessable("model_id is required".into()))?;
    let (declarations, is_list) = match request.image {
        OneOrMany::One(d) => (vec![d], false),
        OneOrMany::Many(list) => (list, true),
    };
    let sources = declarations
        .into_iter()
        .map(image_source)
        .collect::<Result<Vec<_>, _>>()?;
    let confidence = request
        .options
        .confidence
        .as_ref()
        .map(Confidence::value)
        .transpose()?
        .unwrap_or(DEFAULT_CONFIDENCE);
    let params = request.options.task_params(route_task, confidence)?;
    let visualize = request.options.visualization()?;
    let model = pipeline::model_with_key(&state, &model_id, request.api_key.as_deref()).await?;
    pipeline::check_task(&model, route_task)?;
    let inference_id = request.id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let responses = pipeline::run(&state, model, sources, params, inference_id, visualize).await?;
    Ok(respond(responses, is_list))
}

#[utoipa::path(
    post,
    path = "/infer/object_detection",
    tag = "inference",
    summary = "Object detection",
    description = "Boxes with class and confidence. A model of another task is refused with a 400 that names its route.",
    request_body(content = InferRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "One response for one image, a list (in order) for a list of images.", body = super::docs::DetectionsReply),
        super::docs::InferErrors,
    ),
)]
pub async fn object_detection(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    infer(state, body, Task::ObjectDetection).await
}

#[utoipa::path(
    post,
    path = "/infer/instance_segmentation",
    tag = "inference",
    summary = "Instance segmentation",
    description = "Boxes plus each instance's mask: `points` (polygon, default) or `rle` (`response_mask_format: rle`).",
    request_body(content = InferRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "One response for one image, a list (in order) for a list of images.", body = super::docs::DetectionsReply),
        super::docs::InferErrors,
    ),
)]
pub async fn instance_segmentation(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    infer(state, body, Task::InstanceSegmentation).await
}

#[utoipa::path(
    post,
    path = "/infer/segmentation",
    tag = "inference",
    summary = "Instance segmentation (alias)",
    description = "The same as `/infer/instance_segmentation`.",
    request_body(content = InferRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "One response for one image, a list (in order) for a list of images.", body = super::docs::DetectionsReply),
        super::docs::InferErrors,
    ),
)]
pub async fn segmentation(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    infer(state, body, Task::InstanceSegmentation).await
}

#[utoipa::path(
    post,
    path = "/infer/classification",
    tag = "inference",
    summary = "Classification",
    description = "Single-label models answer `predictions` (classes at or above `confidence`, best first), `top` and `confidence`; multi-label models answer each class's score by name and `predicted_classes`.",
    request_body(content = InferRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "One response for one image, a list (in order) for a list of images.", body = super::docs::ClassificationReply),
        super::docs::InferErrors,
    ),
)]
pub async fn classification(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    infer(state, body, Task::Classification).await
}

#[utoipa::path(
    post,
    path = "/infer/keypoints_detection",
    tag = "inference",
    summary = "Keypoint detection",
    description = "Boxes plus each instance's `keypoints` (those under `keypoint_confidence` are left out).",
    request_body(content = InferRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "One response for one image, a list (in order) for a list of images.", body = super::docs::DetectionsReply),
        super::docs::InferErrors,
    ),
)]
pub async fn keypoints_detection(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    infer(state, body, Task::KeypointDetection).await
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
        (status = 200, description = "The plugin's JSON document, as `result`.", body = super::responses::CustomResponse),
        super::docs::InferErrors,
    ),
)]
pub async fn custom(
    State(state): State<Arc<AppState>>,
    axum::extract::Path(route): axum::extract::Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body?;
    let mut fields: serde_json::Map<String, Value> = parse_json(&body)?;
    let model_id = match fields.get("model_id") {
        Some(Value::String(id)) => id.clone(),
        _ => return Err(ApiError::Unprocessable("model_id is required".into())),
    };
    let image = fields
        .remove("image")
        .ok_or_else(|| ApiError::Unprocessable("image is required".into()))?;
    let declarations = match serde_json::from_value::<OneOrMany>(image) {
        Ok(OneOrMany::One(d)) => vec![d],
        Ok(OneOrMany::Many(list)) => list,
        Err(e) => return Err(ApiError::Unprocessable(format!("Invalid image: {e}"))),
    };
    let sources = declarations
        .into_iter()
        .map(image_source)
        .collect::<Result<Vec<_>, _>>()?;
    let inference_id = match fields.get("id") {
        Some(Value::String(id)) => id.clone(),
        _ => uuid::Uuid::new_v4().to_string(),
    };
    if pipeline::usable(state.plugins.by_route(&route)).is_none() {
        return Err(ApiError::NotFound(format!("no plugin serves /infer/{route}")));
    }
    // The api key is for the model download, never for the plugin.
    let api_key = match fields.remove("api_key") {
        Some(Value::String(key)) => Some(key),
        _ => None,
    };
    let model = pipeline::model_with_key(&state, &model_id, api_key.as_deref()).await?;
    let params = Value::Object(fields).to_string();
    let response = pipeline::run_custom(&state, &route, model, sources, params, inference_id).await?;
    Ok(Json(response).into_response())
}
