//! Response bodies, shaped as Roboflow's server emits them (null fields omitted).

use serde::{Serialize, Serializer};
use utoipa::ToSchema;

/// An annotated picture (JPEG), sent as base64 as Roboflow does.
#[derive(Debug, Clone)]
pub struct Visualization(pub Vec<u8>);

impl Serialize for Visualization {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use base64::Engine as _;
        serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ImageSize {
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Serialize, ToSchema)]
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

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelDescriptionEntry {
    pub model_id: String,
    /// `object-detection`, `instance-segmentation`, `classification` or `keypoint-detection`.
    #[schema(value_type = String, example = "object-detection")]
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
#[derive(Debug, Serialize, ToSchema)]
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
#[derive(Debug, Serialize, ToSchema)]
pub struct KeypointPrediction {
    pub x: f64,
    pub y: f64,
    pub confidence: f64,
    pub class_id: u32,
    pub class: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Point {
    pub x: f64,
    pub y: f64,
}

/// COCO RLE as `pycocotools` and supervision read it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Rle {
    /// `[height, width]`.
    #[schema(value_type = Vec<u32>, min_items = 2, max_items = 2)]
    pub size: [u32; 2],
    pub counts: String,
}

/// An object-detection prediction, plus a mask (segmentation) or keypoints (pose).
#[derive(Debug, Serialize, ToSchema)]
pub struct Prediction {
    #[serde(flatten)]
    pub detection: ObjectDetectionPrediction,
    /// Instance segmentation (`response_mask_format` `polygon`): the mask outline, image pixels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub points: Option<Vec<Point>>,
    /// Instance segmentation (`response_mask_format` `rle`): the mask as COCO RLE.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rle: Option<Rle>,
    /// Keypoint detection: the instance's keypoints.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keypoints: Option<Vec<KeypointPrediction>>,
}

/// Object detection, instance segmentation and keypoint responses share this shape.
#[derive(Debug, Serialize, ToSchema)]
pub struct DetectionsResponse {
    /// Only with `visualize_predictions` (legacy route: `format=image_and_json`): the image
    /// with the predictions drawn on it, a base64 JPEG.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = Byte)]
    pub visualization: Option<Visualization>,
    pub inference_id: String,
    /// Seconds spent on this request's plugin call (pre-processing, model, post-processing).
    pub time: f64,
    pub image: ImageSize,
    pub predictions: Vec<Prediction>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ClassPrediction {
    pub class: String,
    pub class_id: u32,
    pub confidence: f64,
}

/// Single-label classification.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClassificationResponse {
    /// Only with `visualize_predictions` (legacy route: `format=image_and_json`): the image
    /// with the predictions drawn on it, a base64 JPEG.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = Byte)]
    pub visualization: Option<Visualization>,
    pub inference_id: String,
    pub time: f64,
    pub image: ImageSize,
    /// Classes at or above the confidence threshold, highest first.
    pub predictions: Vec<ClassPrediction>,
    /// The best class above the threshold, or "".
    pub top: String,
    pub confidence: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MultiLabelScore {
    pub confidence: f64,
    pub class_id: u32,
}

/// Multi-label classification (models with `MULTICLASS`).
#[derive(Debug, Serialize, ToSchema)]
pub struct MultiLabelClassificationResponse {
    /// Only with `visualize_predictions` (legacy route: `format=image_and_json`): the image
    /// with the predictions drawn on it, a base64 JPEG.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = Byte)]
    pub visualization: Option<Visualization>,
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

/// `anyOf`, not the `oneOf` a derive would give: a classification without predictions also
/// has the detections shape, so the variants are not exclusive.
impl utoipa::PartialSchema for InferenceResponse {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AnyOfBuilder, Ref};
        AnyOfBuilder::new()
            .item(Ref::from_schema_name(DetectionsResponse::name()))
            .item(Ref::from_schema_name(ClassificationResponse::name()))
            .item(Ref::from_schema_name(MultiLabelClassificationResponse::name()))
            .description(Some("One image's response, shaped by the model's task."))
            .into()
    }
}

impl ToSchema for InferenceResponse {
    fn schemas(schemas: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>)>) {
        use utoipa::PartialSchema;
        schemas.push((DetectionsResponse::name().into(), DetectionsResponse::schema()));
        <DetectionsResponse as ToSchema>::schemas(schemas);
        schemas.push((ClassificationResponse::name().into(), ClassificationResponse::schema()));
        <ClassificationResponse as ToSchema>::schemas(schemas);
        schemas.push((
            MultiLabelClassificationResponse::name().into(),
            MultiLabelClassificationResponse::schema(),
        ));
        <MultiLabelClassificationResponse as ToSchema>::schemas(schemas);
    }
}

impl InferenceResponse {
    /// The response's `visualization` field.
    pub fn visualization_mut(&mut self) -> &mut Option<Visualization> {
        match self {
            InferenceResponse::Detections(r) => &mut r.visualization,
            InferenceResponse::Classification(r) => &mut r.visualization,
            InferenceResponse::MultiLabel(r) => &mut r.visualization,
        }
    }
}

/// A custom-task plugin's answer: its own JSON document as `result`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CustomResponse {
    pub inference_id: String,
    pub time: f64,
    /// The plugin that answered.
    pub plugin: String,
    /// The request's images' sizes, in order.
    pub images: Vec<ImageSize>,
    /// The plugin's own JSON document.
    #[schema(value_type = Object)]
    pub result: serde_json::Value,
}
