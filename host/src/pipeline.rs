//! The path of one inference request: validate → decode images → model → plugin → response.

use std::sync::Arc;
use std::time::Instant;

use futures_util::future::try_join_all;

use crate::input::{self, ImageSource, InputError, RgbImage};
use crate::models::{LoadedModel, ModelId, Task};
use crate::plugins::{CallError, DetectParams};
use crate::server::error::ApiError;
use crate::server::responses::{ImageSize, ObjectDetectionPrediction, ObjectDetectionResponse};
use crate::server::AppState;

/// Resolves a model id to a loaded model, loading it on first use.
pub async fn model(state: &AppState, raw_id: &str) -> Result<Arc<LoadedModel>, ApiError> {
    let id = ModelId::parse(raw_id)?;
    let (model, _loaded_now) = state.models.get(&id).await?;
    Ok(model)
}

/// Runs object detection on every image; one response per image, in order.
pub async fn object_detection(
    state: &Arc<AppState>,
    model_id: &str,
    sources: Vec<ImageSource>,
    params: DetectParams,
    inference_id: String,
) -> Result<Vec<ObjectDetectionResponse>, ApiError> {
    if sources.is_empty() {
        return Err(ApiError::BadRequest("no image in request".into()));
    }
    if sources.len() > state.input_limits.max_batch {
        return Err(InputError::TooManyImages {
            got: sources.len(),
            max: state.input_limits.max_batch,
        }
        .into());
    }
    let model = model(state, model_id).await?;
    if model.description.task != Task::ObjectDetection {
        return Err(ApiError::BadRequest(format!(
            "Model {model_id} is a {} model: use {}",
            model.description.task.roboflow_name(),
            model.description.task.route()
        )));
    }
    // Take the call slot before decoding, so at most that many requests hold decoded pixels.
    let _slot = state
        .call_slots
        .acquire()
        .await
        .map_err(|_| ApiError::Unavailable("server is shutting down".into()))?;
    let images: Vec<RgbImage> = try_join_all(
        sources
            .into_iter()
            .map(|s| input::load(s, &state.input_limits, &state.http)),
    )
    .await?;
    let sizes: Vec<ImageSize> = images
        .iter()
        .map(|i| ImageSize {
            width: i.width,
            height: i.height,
        })
        .collect();

    let started = Instant::now();
    let task_state = state.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let plugin = task_state
            .plugins
            .detection
            .as_ref()
            .ok_or_else(|| ApiError::Unavailable("no object-detection plugin is installed".into()))?;
        plugin
            .detect(&task_state.runtime, &task_state.call_limits, &model, images, &params)
            .map_err(ApiError::from)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("plugin thread failed: {e}")))??;
    let time = started.elapsed().as_secs_f64();
    tracing::debug!(
        model = model_id,
        images = sizes.len(),
        plugin_ms = outcome.elapsed.as_secs_f64() * 1e3,
        model_runs = outcome.model_runs,
        "object detection done"
    );
    if outcome.value.len() != sizes.len() {
        return Err(CallError::Trap {
            plugin: "object-detection".into(),
            reason: format!("returned {} results for {} images", outcome.value.len(), sizes.len()),
        }
        .into());
    }
    Ok(outcome
        .value
        .into_iter()
        .zip(sizes)
        .map(|(detections, image)| ObjectDetectionResponse {
            inference_id: inference_id.clone(),
            time,
            image,
            predictions: detections
                .into_iter()
                .map(|d| ObjectDetectionPrediction {
                    x: f64::from(d.x),
                    y: f64::from(d.y),
                    width: f64::from(d.width),
                    height: f64::from(d.height),
                    confidence: f64::from(d.confidence),
                    class: d.class_name,
                    class_id: d.class_id,
                    detection_id: uuid::Uuid::new_v4().to_string(),
                })
                .collect(),
        })
        .collect())
}
