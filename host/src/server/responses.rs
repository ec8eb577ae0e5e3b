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
pub struct ObjectDetectionResponse {
    pub inference_id: String,
    /// Seconds spent on this request's model call, pre- and post-processing included.
    pub time: f64,
    pub image: ImageSize,
    pub predictions: Vec<ObjectDetectionPrediction>,
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
