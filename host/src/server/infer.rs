//! `POST /infer/object_detection` (and the task routes that follow it).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::Value;

use super::error::ApiError;
use super::AppState;
use crate::input::{decode_base64, ImageSource, InputError};
use crate::pipeline;
use crate::plugins::DetectParams;

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

#[derive(Debug, Deserialize)]
pub struct ObjectDetectionRequest {
    /// Required key, as in Roboflow's schema (null is allowed by the schema but useless).
    pub model_id: Option<String>,
    pub image: OneOrMany,
    #[serde(default)]
    pub id: Option<String>,
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

pub async fn object_detection(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let request: ObjectDetectionRequest = parse_json(&body?)?;
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
    let params = DetectParams {
        confidence: request
            .confidence
            .map(|c| c.value())
            .transpose()?
            .unwrap_or(DEFAULT_CONFIDENCE),
        iou_threshold: request.iou_threshold.unwrap_or(DEFAULT_IOU),
        class_agnostic_nms: request.class_agnostic_nms.unwrap_or(false),
        max_detections: request.max_detections.unwrap_or(DEFAULT_MAX_DETECTIONS),
        class_filter: request.class_filter,
    };
    let inference_id = request.id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let mut responses = pipeline::object_detection(&state, &model_id, sources, params, inference_id).await?;
    Ok(if is_list {
        Json(responses).into_response()
    } else {
        Json(responses.remove(0)).into_response()
    })
}
