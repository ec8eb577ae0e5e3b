//! `POST /infer/<task>`: object detection, instance segmentation, classification, keypoints.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::Value;

use axum::extract::rejection::BytesRejection;

use super::error::ApiError;
use super::responses::InferenceResponse;
use super::AppState;
use crate::input::{decode_base64, ImageSource, InputError};
use crate::models::Task;
use crate::pipeline;
use crate::plugins::bindings::{classify, keypoints_api, segment, wit};
use crate::plugins::TaskParams;

/// One image declaration: `{"type": "base64" | "url" | "numpy", "value": ...}`.
#[derive(Debug, Deserialize)]
pub struct ImageDeclaration {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub value: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    Many(Vec<ImageDeclaration>),
    One(ImageDeclaration),
}

/// A confidence given as a number or as Roboflow's `"best"` / `"default"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Confidence {
    Number(f32),
    Named(String),
}

/// The body of every `/infer/<task>` route: Roboflow's request fields; each task reads its own.
#[derive(Debug, Deserialize)]
pub struct InferRequest {
    /// Required key, as in Roboflow's schema (null is allowed by the schema but useless).
    pub model_id: Option<String>,
    pub image: OneOrMany,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(flatten)]
    pub options: InferOptions,
}

/// Task parameters shared by the JSON routes and the legacy route (all optional).
#[derive(Debug, Default, Deserialize)]
pub struct InferOptions {
    #[serde(default)]
    pub confidence: Option<Confidence>,
    #[serde(default)]
    pub iou_threshold: Option<f32>,
    #[serde(default)]
    pub class_agnostic_nms: Option<bool>,
    #[serde(default)]
    pub class_filter: Option<Vec<String>>,
    #[serde(default)]
    pub max_detections: Option<u32>,
    #[serde(default)]
    pub mask_decode_mode: Option<String>,
    #[serde(default)]
    pub tradeoff_factor: Option<f32>,
    #[serde(default)]
    pub response_mask_format: Option<String>,
    #[serde(default)]
    pub keypoint_confidence: Option<f32>,
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
    let model = pipeline::model(&state, &model_id).await?;
    pipeline::check_task(&model, route_task)?;
    let inference_id = request.id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let responses = pipeline::run(&state, model, sources, params, inference_id).await?;
    Ok(respond(responses, is_list))
}

pub async fn object_detection(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    infer(state, body, Task::ObjectDetection).await
}

pub async fn instance_segmentation(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    infer(state, body, Task::InstanceSegmentation).await
}

pub async fn classification(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    infer(state, body, Task::Classification).await
}

pub async fn keypoints_detection(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    infer(state, body, Task::KeypointDetection).await
}
