//! The model blocks (object detection, instance segmentation, keypoint detection, single- and
//! multi-label classification; v1 and v2): they run through the pipeline exactly as `/infer`
//! does (the same plugins, admission and batching), on images already decoded.

use std::sync::Arc;

use serde_json::{json, Value};

use super::kinds::*;
use super::{batch, either, Args, Check, Field, Manifest, Output, Run};
use crate::pipeline::{check_task, Caller, Error, Pipeline};
use crate::tasks::{self, Common, Task};
use crate::workflows::value::{Detection, Detections, Image, Val};

/// The task a model block runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelTask {
    ObjectDetection,
    InstanceSegmentation,
    KeypointDetection,
    Classification,
}

const IMAGES: Field = batch("images", &[IMAGE], "The image(s) to infer on");
const MODEL_ID: Field = either(
    "model_id",
    &["roboflow_model_id"],
    None,
    Check::Str,
    "Roboflow model id",
);
const CONFIDENCE: Field = either(
    "confidence",
    &["float_zero_to_one"],
    Some("0.4"),
    Check::Unit,
    "Confidence threshold",
);
const CLASS_FILTER: Field = either(
    "class_filter",
    &["list_of_values"],
    Some("null"),
    Check::StrList,
    "Only these classes",
);
const IOU: Field = either(
    "iou_threshold",
    &["float_zero_to_one"],
    Some("0.3"),
    Check::Unit,
    "NMS IoU threshold",
);
const MAX_DET: Field = either(
    "max_detections",
    &["integer"],
    Some("300"),
    Check::Int,
    "At most this many detections",
);
const AGNOSTIC: Field = either(
    "class_agnostic_nms",
    &["boolean"],
    Some("false"),
    Check::Bool,
    "NMS across classes",
);
const MAX_CAND: Field = either(
    "max_candidates",
    &["integer"],
    Some("3000"),
    Check::Int,
    "Candidates before NMS (accepted, unused)",
);
const AL: Field = either(
    "disable_active_learning",
    &["boolean"],
    Some("true"),
    Check::Bool,
    "Accepted; there is no active learning here",
);
const AL_TARGET: Field = either(
    "active_learning_target_dataset",
    &["roboflow_project"],
    Some("null"),
    Check::Any,
    "Accepted; unused",
);
const MASK_MODE: Field = either(
    "mask_decode_mode",
    &["string"],
    Some("\"accurate\""),
    Check::Any,
    "Accepted; masks are decoded accurately",
);
const TRADEOFF: Field = either(
    "tradeoff_factor",
    &["float_zero_to_one"],
    Some("0.0"),
    Check::Unit,
    "Accepted; unused",
);
const KP_CONF: Field = either(
    "keypoint_confidence",
    &["float_zero_to_one"],
    Some("0.0"),
    Check::Unit,
    "Keypoints under this confidence are dropped",
);

const DET_FIELDS: &[Field] = &[
    IMAGES,
    MODEL_ID,
    CONFIDENCE,
    CLASS_FILTER,
    IOU,
    MAX_DET,
    AGNOSTIC,
    MAX_CAND,
    AL,
    AL_TARGET,
];
const SEG_FIELDS: &[Field] = &[
    IMAGES,
    MODEL_ID,
    CONFIDENCE,
    CLASS_FILTER,
    IOU,
    MAX_DET,
    AGNOSTIC,
    MAX_CAND,
    AL,
    AL_TARGET,
    MASK_MODE,
    TRADEOFF,
];
const KP_FIELDS: &[Field] = &[
    IMAGES,
    MODEL_ID,
    CONFIDENCE,
    CLASS_FILTER,
    IOU,
    MAX_DET,
    AGNOSTIC,
    MAX_CAND,
    AL,
    AL_TARGET,
    KP_CONF,
];
const CLS_FIELDS: &[Field] = &[IMAGES, MODEL_ID, CONFIDENCE, AL, AL_TARGET];

const fn outputs_v1(kind: &'static [&'static str]) -> [Output; 2] {
    [
        Output {
            name: "inference_id",
            kinds: &["inference_id"],
        },
        Output {
            name: "predictions",
            kinds: kind,
        },
    ]
}

const fn outputs_v2(kind: &'static [&'static str]) -> [Output; 3] {
    let [a, b] = outputs_v1(kind);
    [
        a,
        b,
        Output {
            name: "model_id",
            kinds: &["roboflow_model_id"],
        },
    ]
}

const OD: &[&str] = &[OBJECT_DETECTION];
const SEG: &[&str] = &[INSTANCE_SEGMENTATION];
const KP: &[&str] = &[KEYPOINT_DETECTION];
const CLS: &[&str] = &[CLASSIFICATION];

static OD_V1: [Output; 2] = outputs_v1(OD);
static OD_V2: [Output; 3] = outputs_v2(OD);
static SEG_V1: [Output; 2] = outputs_v1(SEG);
static SEG_V2: [Output; 3] = outputs_v2(SEG);
static KP_V1: [Output; 2] = outputs_v1(KP);
static KP_V2: [Output; 3] = outputs_v2(KP);
static CLS_V1: [Output; 2] = outputs_v1(CLS);
static CLS_V2: [Output; 3] = outputs_v2(CLS);

macro_rules! model_manifest {
    ($id:expr, $aliases:expr, $name:expr, $fields:expr, $outputs:expr, $task:expr) => {
        Manifest {
            type_id: $id,
            aliases: $aliases,
            name: $name,
            description: "Runs a model of this server (or downloaded from Roboflow) on the images, as /infer does.",
            fields: $fields,
            outputs: &$outputs,
            output_offset: 0,
            reduces: None,
            run: Run::Model($task),
        }
    };
}

pub static MANIFESTS: [Manifest; 10] = [
    model_manifest!(
        "roboflow_core/roboflow_object_detection_model@v1",
        &["RoboflowObjectDetectionModel", "ObjectDetectionModel"],
        "Object Detection Model",
        DET_FIELDS,
        OD_V1,
        ModelTask::ObjectDetection
    ),
    model_manifest!(
        "roboflow_core/roboflow_object_detection_model@v2",
        &[],
        "Object Detection Model",
        DET_FIELDS,
        OD_V2,
        ModelTask::ObjectDetection
    ),
    model_manifest!(
        "roboflow_core/roboflow_instance_segmentation_model@v1",
        &["RoboflowInstanceSegmentationModel", "InstanceSegmentationModel"],
        "Instance Segmentation Model",
        SEG_FIELDS,
        SEG_V1,
        ModelTask::InstanceSegmentation
    ),
    model_manifest!(
        "roboflow_core/roboflow_instance_segmentation_model@v2",
        &[],
        "Instance Segmentation Model",
        SEG_FIELDS,
        SEG_V2,
        ModelTask::InstanceSegmentation
    ),
    model_manifest!(
        "roboflow_core/roboflow_keypoint_detection_model@v1",
        &["RoboflowKeypointDetectionModel", "KeypointsDetectionModel"],
        "Keypoint Detection Model",
        KP_FIELDS,
        KP_V1,
        ModelTask::KeypointDetection
    ),
    model_manifest!(
        "roboflow_core/roboflow_keypoint_detection_model@v2",
        &[],
        "Keypoint Detection Model",
        KP_FIELDS,
        KP_V2,
        ModelTask::KeypointDetection
    ),
    model_manifest!(
        "roboflow_core/roboflow_classification_model@v1",
        &["RoboflowClassificationModel", "ClassificationModel"],
        "Single-Label Classification Model",
        CLS_FIELDS,
        CLS_V1,
        ModelTask::Classification
    ),
    model_manifest!(
        "roboflow_core/roboflow_classification_model@v2",
        &[],
        "Single-Label Classification Model",
        CLS_FIELDS,
        CLS_V2,
        ModelTask::Classification
    ),
    model_manifest!(
        "roboflow_core/roboflow_multi_label_classification_model@v1",
        &["RoboflowMultiLabelClassificationModel", "MultiLabelClassificationModel"],
        "Multi-Label Classification Model",
        CLS_FIELDS,
        CLS_V1,
        ModelTask::Classification
    ),
    model_manifest!(
        "roboflow_core/roboflow_multi_label_classification_model@v2",
        &[],
        "Multi-Label Classification Model",
        CLS_FIELDS,
        CLS_V2,
        ModelTask::Classification
    ),
];

/// Runs the model on every item's image (one pipeline call for all items sharing a model and
/// parameters); one output list per item, in the manifest's output order.
pub async fn run(
    task: ModelTask,
    manifest: &Manifest,
    pipeline: &Pipeline,
    caller: &Caller,
    items: &[Args],
) -> Result<Vec<Vec<Val>>, Error> {
    let mut results: Vec<Option<Vec<Val>>> = (0..items.len()).map(|_| None).collect();
    // Items with the same model and parameters go in one call (and so in one batch).
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let key = item
            .values
            .iter()
            .filter(|(n, _)| *n != "images")
            .map(|(n, v)| format!("{n}={}", v.json().map(Value::to_string).unwrap_or_default()))
            .collect::<Vec<_>>()
            .join("&");
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push(i),
            None => groups.push((key, vec![i])),
        }
    }
    for (_, members) in groups {
        let first = &items[members[0]];
        let model_id = first
            .str("model_id")
            .ok_or_else(|| Error::Invalid("model_id must be a string".into()))?
            .to_string();
        let images: Vec<Arc<Image>> = members
            .iter()
            .map(|&i| items[i].image("images").cloned())
            .collect::<Result<_, _>>()
            .map_err(Error::Invalid)?;
        let common = common(first).map_err(Error::Invalid)?;
        let model = pipeline.model(caller, &model_id).await?;
        let responses = match task {
            ModelTask::ObjectDetection => {
                infer::<tasks::ObjectDetection>(pipeline, caller, model, &images, common).await?
            }
            ModelTask::InstanceSegmentation => {
                infer::<tasks::InstanceSegmentation>(pipeline, caller, model, &images, common).await?
            }
            ModelTask::KeypointDetection => {
                let mut responses = infer::<tasks::KeypointDetection>(pipeline, caller, model, &images, common).await?;
                let min = first.f64("keypoint_confidence", 0.0).map_err(Error::Invalid)?;
                for r in &mut responses {
                    drop_weak_keypoints(r, min);
                }
                responses
            }
            ModelTask::Classification => {
                infer::<tasks::Classification>(pipeline, caller, model, &images, common).await?
            }
        };
        for ((&i, response), image) in members.iter().zip(responses).zip(&images) {
            let inference_id = response.get("inference_id").cloned().unwrap_or(Value::Null);
            let predictions = match task {
                ModelTask::Classification => Val::Json(classification(response, image)),
                _ => Val::Detections(Arc::new(detections(&response, image))),
            };
            let mut out = vec![Val::Json(inference_id), predictions];
            if manifest.outputs.len() == 3 {
                out.push(Val::Json(json!(model_id)));
            }
            results[i] = Some(out);
        }
    }
    Ok(results.into_iter().map(Option::unwrap_or_default).collect())
}

/// The task options every model block shares, with Roboflow's defaults.
fn common(args: &Args) -> Result<Common, String> {
    let class_filter = match args.json("class_filter") {
        Value::Null => None,
        Value::Array(a) => Some(a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect()),
        other => return Err(format!("class_filter must be a list of class names, got {other}")),
    };
    let max_detections = match args.json("max_detections") {
        Value::Null => tasks::DEFAULT_MAX_DETECTIONS,
        v => v
            .as_u64()
            .ok_or_else(|| format!("max_detections must be a whole number, got {v}"))? as u32,
    };
    Common::new(
        args.f64("confidence", f64::from(tasks::DEFAULT_CONFIDENCE))? as f32,
        args.f64("iou_threshold", f64::from(tasks::DEFAULT_IOU))? as f32,
        args.bool("class_agnostic_nms", false),
        class_filter,
        max_detections,
    )
}

/// Runs task `T` on the images; each response as JSON (the body `/infer` would answer).
async fn infer<T: Task>(
    pipeline: &Pipeline,
    caller: &Caller,
    model: Arc<crate::models::LoadedModel>,
    images: &[Arc<Image>],
    common: Common,
) -> Result<Vec<Value>, Error> {
    check_task::<T>(&model)?;
    let params = T::params(&common, &T::Options::default()).map_err(Error::Invalid)?;
    let pixels = images.iter().map(|i| i.pixels_copy()).collect();
    let inference_id = uuid::Uuid::new_v4().to_string();
    let responses = pipeline
        .infer_decoded::<T>(caller, model, pixels, common, params, inference_id)
        .await?;
    responses
        .iter()
        .map(|r| serde_json::to_value(r).map_err(|e| Error::Internal(format!("cannot read a response: {e}"))))
        .collect()
}

fn drop_weak_keypoints(response: &mut Value, min: f64) {
    if let Some(predictions) = response.get_mut("predictions").and_then(Value::as_array_mut) {
        for p in predictions {
            if let Some(k) = p.get_mut("keypoints").and_then(Value::as_array_mut) {
                k.retain(|k| k.get("confidence").and_then(Value::as_f64).unwrap_or(0.0) >= min);
            }
        }
    }
}

/// A detection-task response as workflow detections on `image`.
pub fn detections(response: &Value, image: &Image) -> Detections {
    let size = image.size();
    let items = response
        .get("predictions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|p| {
            let f = |k: &str| p.get(k).and_then(Value::as_f64).unwrap_or(0.0);
            Detection {
                x: f("x"),
                y: f("y"),
                width: f("width"),
                height: f("height"),
                confidence: f("confidence"),
                class_id: p.get("class_id").and_then(Value::as_i64).unwrap_or(0),
                class_name: p.get("class").and_then(Value::as_str).unwrap_or_default().to_string(),
                detection_id: p
                    .get("detection_id")
                    .and_then(Value::as_str)
                    .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_string),
                parent_id: image.parent_id.clone(),
                image: size,
                parent_origin: image.parent_origin,
                root_parent_id: image.root_parent_id.clone(),
                root_origin: image.root_origin,
                points: p.get("points").and_then(Value::as_array).map(|pts| {
                    pts.iter()
                        .map(|q| {
                            (
                                q.get("x").and_then(Value::as_f64).unwrap_or(0.0),
                                q.get("y").and_then(Value::as_f64).unwrap_or(0.0),
                            )
                        })
                        .collect()
                }),
                keypoints: p.get("keypoints").and_then(Value::as_array).cloned(),
            }
        })
        .collect();
    on_image(items, image)
}

/// Detections made on `image`: an input image's keep its size for an empty set, a crop's map
/// to their root image (workflows.md §2, serialisation).
pub fn on_image(items: Vec<Detection>, image: &Image) -> Detections {
    match image.root_origin {
        None => Detections {
            items,
            image: Some(image.size()),
            root: None,
        },
        Some(origin) => Detections {
            items,
            image: None,
            root: Some((image.root_parent_id.clone(), origin)),
        },
    }
}

/// A classification response as Roboflow's workflow serialises it.
fn classification(mut response: Value, image: &Image) -> Value {
    if let Some(o) = response.as_object_mut() {
        o.remove("visualization");
        o.insert("prediction_type".into(), json!("classification"));
        o.insert("parent_id".into(), json!(image.parent_id));
        o.insert("root_parent_id".into(), json!(image.root_parent_id));
    }
    response
}
