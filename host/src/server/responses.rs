//! Response bodies, shaped as Roboflow's server emits them (null fields omitted).

use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct ImageSize {
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Serialize)]
pub struct ObjectDetectionPrediction {
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub height: f64,
    pub confidence: f64,
    pub class: String,
    pub class_id: u32,
    pub detection_id: String,
}

#[derive(Debug, Serialize)]
pub struct ModelDescriptionEntry {
    pub model_id: String,
    pub task_type: &'static str,
    /// Null when the batch dimension is dynamic.
    pub batch_size: Option<u32>,
    pub input_height: u32,
    pub input_width: u32,
    pub vram_bytes: Option<u64>,
    pub request_aliases: Vec<String>,
    pub request_paths: Vec<String>,
}

/// `ModelsDescriptions`: Roboflow keeps the null fields here.
#[derive(Debug, Serialize)]
pub struct ModelsDescriptions {
    pub models: Vec<ModelDescriptionEntry>,
    pub total_vram_bytes: Option<u64>,
    pub gpu_memory_used: Option<u64>,
    pub gpu_memory_total: Option<u64>,
    pub torch_cuda_allocated: Option<u64>,
    pub torch_cuda_reserved: Option<u64>,
    pub torch_cuda_allocator_cache: Option<u64>,
    pub non_torch_gpu_memory: Option<u64>,
}

/// A keypoint of a pose prediction.
#[derive(Debug, Serialize)]
pub struct KeypointPrediction {
    pub x: f64,
    pub y: f64,
    pub confidence: f64,
    pub class_id: u32,
    pub class: String,
}

#[derive(Debug, Serialize)]
pub struct Point {
    pub x: f64,
    pub y: f64,
}

/// COCO RLE as `pycocotools` and supervision read it.
#[derive(Debug, Serialize)]
pub struct Rle {
    /// `[height, width]`.
    pub size: [u32; 2],
    pub counts: String,
}

/// An object-detection prediction, plus a mask (segmentation) or keypoints (pose).
#[derive(Debug, Serialize)]
pub struct Prediction {
    #[serde(flatten)]
    pub detection: ObjectDetectionPrediction,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub points: Option<Vec<Point>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rle: Option<Rle>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keypoints: Option<Vec<KeypointPrediction>>,
}

/// Object detection, instance segmentation and keypoint responses share this shape.
#[derive(Debug, Serialize)]
pub struct DetectionsResponse {
    pub inference_id: String,
    /// Seconds spent on this request's plugin call (pre-processing, model, post-processing).
    pub time: f64,
    pub image: ImageSize,
    pub predictions: Vec<Prediction>,
}

#[derive(Debug, Serialize)]
pub struct ClassPrediction {
    pub class: String,
    pub class_id: u32,
    pub confidence: f64,
}

/// Single-label classification.
#[derive(Debug, Serialize)]
pub struct ClassificationResponse {
    pub inference_id: String,
    pub time: f64,
    pub image: ImageSize,
    /// Classes at or above the confidence threshold, highest first.
    pub predictions: Vec<ClassPrediction>,
    /// The best class above the threshold, or "".
    pub top: String,
    pub confidence: f64,
}

#[derive(Debug, Serialize)]
pub struct MultiLabelScore {
    pub confidence: f64,
    pub class_id: u32,
}

/// Multi-label classification (models with `MULTICLASS`).
#[derive(Debug, Serialize)]
pub struct MultiLabelClassificationResponse {
    pub inference_id: String,
    pub time: f64,
    pub image: ImageSize,
    /// Every class's score, by class name.
    pub predictions: std::collections::BTreeMap<String, MultiLabelScore>,
    /// Classes above the confidence threshold.
    pub predicted_classes: Vec<String>,
}

/// One image's response, whatever the task.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum InferenceResponse {
    Detections(DetectionsResponse),
    Classification(ClassificationResponse),
    MultiLabel(MultiLabelClassificationResponse),
}
