//! The path of one inference request: validate → decode images → model → plugin → response.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use futures_util::future::try_join_all;

use crate::input::{self, ImageSource, InputError, RgbImage};
use crate::metrics;
use crate::models::{LoadedModel, ModelError, ModelId, Task};
use crate::plugins::bindings::{classify, keypoints_api, segment, wit};
use crate::plugins::{CallError, CallOutcome, LoadedPlugin, TaskOutput, TaskParams};
use crate::server::error::ApiError;
use crate::server::metrics::note_model;
use crate::server::responses::{
    ClassPrediction, ClassificationResponse, CustomResponse, DetectionsResponse, ImageSize, InferenceResponse,
    KeypointPrediction, MultiLabelClassificationResponse, MultiLabelScore, ObjectDetectionPrediction, Point,
    Prediction, Rle, Visualization,
};
use crate::server::AppState;
use crate::tenants;
use crate::visualize::{self, Style};

/// Resolves a model id to a loaded model, loading it on first use: from the models directory,
/// else the cache, else downloaded (from Roboflow with the request's api key: `api_key` when
/// given, else the request's `Authorization: Bearer`).
pub async fn model_with_key(
    state: &AppState,
    raw_id: &str,
    api_key: Option<&str>,
) -> Result<Arc<LoadedModel>, ApiError> {
    let id = ModelId::parse(raw_id)?;
    if let Some(tenant) = tenants::current() {
        // Another tenant's model and a model that does not exist get the same answer, and the
        // tenant's key to this server is never sent upstream: its Roboflow key is configured.
        if !tenant.may_use_model(&id) {
            return Err(tenants::hidden_model(&id));
        }
        return match state.models.get_with_key(&id, tenant.roboflow_api_key.as_deref()).await {
            Ok((model, _)) => {
                note_model(&model.description.id);
                Ok(model)
            }
            Err(ModelError::NotFound(..)) => Err(tenants::hidden_model(&id)),
            Err(e) => Err(e.into()),
        };
    }
    let bearer = crate::models::sources::request_bearer();
    let api_key = api_key.filter(|k| !k.is_empty()).or(bearer.as_deref());
    let (model, _loaded_now) = state.models.get_with_key(&id, api_key).await?;
    note_model(&model.description.id);
    Ok(model)
}

/// A plugin, if the request's tenant (if any) may use it.
pub fn usable(plugin: Option<Arc<LoadedPlugin>>) -> Option<Arc<LoadedPlugin>> {
    plugin.filter(|p| tenants::allows_plugin(&p.manifest.name))
}

/// Refuses a model on another task's route, naming the right one.
pub fn check_task(model: &LoadedModel, route_task: Task) -> Result<(), ApiError> {
    let task = model.description.task;
    if task != route_task {
        return Err(ApiError::BadRequest(format!(
            "Model {} is for {}, not {}: use {}",
            model.description.id,
            task.roboflow_name(),
            route_task.roboflow_name(),
            task.route()
        )));
    }
    Ok(())
}

/// Runs `model`'s task on every image; one response per image, in order.
pub async fn run(
    state: &Arc<AppState>,
    model: Arc<LoadedModel>,
    sources: Vec<ImageSource>,
    params: TaskParams,
    inference_id: String,
    visualize: Option<Style>,
) -> Result<Vec<InferenceResponse>, ApiError> {
    let task = model.description.task;
    let plugin = usable(state.plugins.by_task(task)).ok_or_else(|| match tenants::current() {
        // A tenant is not told whether a plugin it may not use exists.
        Some(_) => ApiError::NotFound(format!("no plugin serves {}", task.route())),
        None => ApiError::Unavailable(format!("no {} plugin is installed", task.roboflow_name())),
    })?;
    let confidence = match &params {
        TaskParams::Classification(p) => p.confidence,
        _ => 0.0,
    };
    let Called {
        outcome,
        sizes,
        time,
        images,
        slot,
    } = call(state, plugin, model.clone(), sources, params, visualize.is_some()).await?;

    let multi_label = model.description.multi_label;
    let respond = |image: ImageSize, predictions: Vec<Prediction>| {
        InferenceResponse::Detections(DetectionsResponse {
            visualization: None,
            inference_id: inference_id.clone(),
            time,
            image,
            predictions,
        })
    };
    let mut responses: Vec<InferenceResponse> = match outcome.value {
        TaskOutput::Detection(per_image) => per_image
            .into_iter()
            .zip(sizes)
            .map(|(dets, image)| respond(image, dets.into_iter().map(detection).collect()))
            .collect(),
        TaskOutput::Segmentation(per_image) => per_image
            .into_iter()
            .zip(sizes)
            .map(|(instances, image)| respond(image, instances.into_iter().map(instance).collect()))
            .collect(),
        TaskOutput::Keypoints(per_image) => per_image
            .into_iter()
            .zip(sizes)
            .map(|(poses, image)| respond(image, poses.into_iter().map(pose).collect()))
            .collect(),
        TaskOutput::Classification(per_image) => per_image
            .into_iter()
            .zip(sizes)
            .map(|(result, image)| classification(result, image, confidence, multi_label, &inference_id, time))
            .collect(),
        TaskOutput::Custom(_) => {
            return Err(ApiError::Internal(format!(
                "a {task:?} plugin answered like a custom task"
            )))
        }
    };
    if let (Some(style), Some(images)) = (visualize, images) {
        responses = draw(responses, images, style, &model).await?;
    }
    // The slot bounded the decoded pixels, held until the drawing is done.
    drop(slot);
    Ok(responses)
}

/// Draws each response's predictions onto its image (on a blocking thread: drawing and
/// JPEG encoding are CPU work) and attaches the picture as `visualization`.
async fn draw(
    mut responses: Vec<InferenceResponse>,
    images: Vec<RgbImage>,
    style: Style,
    model: &LoadedModel,
) -> Result<Vec<InferenceResponse>, ApiError> {
    let edges = model.description.keypoint_edges.clone();
    tokio::task::spawn_blocking(move || {
        for (response, image) in responses.iter_mut().zip(images) {
            let jpeg = visualize::annotate(image, response, style, &edges)
                .map_err(|e| ApiError::Internal(format!("cannot draw the predictions: {e:#}")))?;
            *response.visualization_mut() = Some(Visualization(jpeg));
        }
        Ok(responses)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("drawing thread failed: {e}")))?
}

/// A plugin call's outcome and what came with it.
struct Called<'a> {
    outcome: CallOutcome<TaskOutput>,
    /// The images' sizes, in order.
    sizes: Vec<ImageSize>,
    /// Seconds the call took.
    time: f64,
    /// The decoded images, when the caller asked to keep them.
    images: Option<Vec<RgbImage>>,
    /// The call slot, held as long as the images are.
    slot: tokio::sync::SemaphorePermit<'a>,
}

/// Decodes the images and runs one plugin call on them; the decoded images are kept only
/// with `keep_images` (for drawing), else freed as soon as the plugin is done with them.
async fn call<'a>(
    state: &'a Arc<AppState>,
    plugin: Arc<LoadedPlugin>,
    model: Arc<LoadedModel>,
    sources: Vec<ImageSource>,
    params: TaskParams,
    keep_images: bool,
) -> Result<Called<'a>, ApiError> {
    if sources.is_empty() {
        return Err(ApiError::BadRequest("no image in request".into()));
    }
    if state.models.offline() && sources.iter().any(|s| matches!(s, ImageSource::Url(_))) {
        return Err(ApiError::BadRequest(
            "offline mode (--offline): URL images are not fetched".into(),
        ));
    }
    let tenant = tenants::current();
    let input_limits = match &tenant {
        Some(t) => t.input_limits(&state.input_limits),
        None => state.input_limits.clone(),
    };
    let call_limits = match &tenant {
        Some(t) => t.call_limits(&plugin.limits),
        None => plugin.limits.clone(),
    };
    if sources.len() > input_limits.max_batch {
        return Err(InputError::TooManyImages {
            got: sources.len(),
            max: input_limits.max_batch,
        }
        .into());
    }
    // Take the call slot before decoding, so at most that many requests hold decoded pixels.
    let queued = Instant::now();
    let slot = state
        .call_slots
        .acquire()
        .await
        .map_err(|_| ApiError::Unavailable("server is shutting down".into()))?;
    metrics::record_queue(queued.elapsed());
    let decoding = Instant::now();
    let images: Vec<RgbImage> = try_join_all(
        sources
            .into_iter()
            .map(|s| input::load(s, &input_limits, &state.http, &state.url_policy)),
    )
    .await?;
    metrics::record_decode(decoding.elapsed());
    let sizes: Vec<ImageSize> = images
        .iter()
        .map(|i| ImageSize {
            width: i.width,
            height: i.height,
        })
        .collect();
    let started = Instant::now();
    let task_state = state.clone();
    let call_model = model.clone();
    let plugin_name = plugin.manifest.name.clone();
    let (outcome, images) = tokio::task::spawn_blocking(move || {
        let mut images = images;
        let outcome = plugin
            .plugin
            .call(&task_state.runtime, &call_limits, &call_model, &mut images, params);
        (outcome, keep_images.then_some(images))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("plugin thread failed: {e}")))?;
    let outcome = outcome.inspect_err(CallError::record)?;
    metrics::record_plugin(&model.description.id, &plugin_name, started.elapsed());
    let time = started.elapsed().as_secs_f64();
    tracing::debug!(model = %model.description.id, images = sizes.len(), plugin_ms = outcome.elapsed.as_secs_f64() * 1e3,
        model_runs = outcome.model_runs, "plugin call done");
    Ok(Called {
        outcome,
        sizes,
        time,
        images,
        slot,
    })
}

/// Runs a custom-task plugin (found by its route) on the images with the request's own
/// parameters; its JSON document is the response's `result`.
pub async fn run_custom(
    state: &Arc<AppState>,
    route: &str,
    model: Arc<LoadedModel>,
    sources: Vec<ImageSource>,
    params_json: String,
    inference_id: String,
) -> Result<CustomResponse, ApiError> {
    let plugin = usable(state.plugins.by_route(route))
        .filter(|p| p.manifest.world.task().is_none())
        .ok_or_else(|| ApiError::NotFound(format!("no plugin serves /infer/{route}")))?;
    let name = plugin.manifest.name.clone();
    let Called {
        outcome,
        sizes: images,
        time,
        ..
    } = call(state, plugin, model, sources, TaskParams::Custom(params_json), false).await?;
    let TaskOutput::Custom(result) = outcome.value else {
        return Err(ApiError::Internal(format!("plugin {name} answered for another world")));
    };
    Ok(CustomResponse {
        inference_id,
        time,
        plugin: name,
        images,
        result,
    })
}

fn box_prediction(d: wit::Detection) -> ObjectDetectionPrediction {
    ObjectDetectionPrediction {
        x: f64::from(d.x),
        y: f64::from(d.y),
        width: f64::from(d.width),
        height: f64::from(d.height),
        confidence: f64::from(d.confidence),
        class: d.class_name,
        class_id: d.class_id,
        detection_id: uuid::Uuid::new_v4().to_string(),
    }
}

fn detection(d: wit::Detection) -> Prediction {
    Prediction {
        detection: box_prediction(d),
        points: None,
        rle: None,
        keypoints: None,
    }
}

fn instance(i: segment::Instance) -> Prediction {
    let points = i.rle.is_none().then(|| {
        i.points
            .into_iter()
            .map(|p| Point {
                x: f64::from(p.x),
                y: f64::from(p.y),
            })
            .collect()
    });
    Prediction {
        detection: box_prediction(i.detection),
        points,
        rle: i.rle.map(|r| Rle {
            size: [r.height, r.width],
            counts: r.counts,
        }),
        keypoints: None,
    }
}

fn pose(p: keypoints_api::Pose) -> Prediction {
    Prediction {
        detection: box_prediction(p.detection),
        points: None,
        rle: None,
        keypoints: Some(
            p.keypoints
                .into_iter()
                .map(|k| KeypointPrediction {
                    x: f64::from(k.x),
                    y: f64::from(k.y),
                    confidence: f64::from(k.confidence),
                    class_id: k.class_id,
                    class: k.class_name,
                })
                .collect(),
        ),
    }
}

fn classification(
    result: classify::Classification,
    image: ImageSize,
    confidence: f32,
    multi_label: bool,
    inference_id: &str,
    time: f64,
) -> InferenceResponse {
    if multi_label {
        let predicted_classes = result
            .scores
            .iter()
            .filter(|s| s.confidence > confidence)
            .map(|s| s.class_name.clone())
            .collect();
        let predictions: BTreeMap<String, MultiLabelScore> = result
            .scores
            .into_iter()
            .map(|s| {
                (
                    s.class_name,
                    MultiLabelScore {
                        confidence: f64::from(s.confidence),
                        class_id: s.class_id,
                    },
                )
            })
            .collect();
        return InferenceResponse::MultiLabel(MultiLabelClassificationResponse {
            visualization: None,
            inference_id: inference_id.to_string(),
            time,
            image,
            predictions,
            predicted_classes,
        });
    }
    let predictions: Vec<ClassPrediction> = result
        .scores
        .into_iter()
        .filter(|s| s.confidence >= confidence)
        .map(|s| ClassPrediction {
            class: s.class_name,
            class_id: s.class_id,
            confidence: f64::from(s.confidence),
        })
        .collect();
    let (top, top_confidence) = predictions
        .first()
        .map(|p| (p.class.clone(), p.confidence))
        .unwrap_or_default();
    InferenceResponse::Classification(ClassificationResponse {
        visualization: None,
        inference_id: inference_id.to_string(),
        time,
        image,
        predictions,
        top,
        confidence: top_confidence,
    })
}
