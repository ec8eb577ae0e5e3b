//! What every plugin needs between the WIT and the maths: errors, the model's input geometry,
//! running the request's graph batch by batch through wasi-nn (its input tensors made by the
//! host's imaging, or by the plugin from a copy of the pixels), and turning kept candidates into
//! the response's detections.

use crate::imaging::{self, InputSpec, Placement, Resampling};
use crate::nn::{graph, tensor};
use crate::wit::{Detection, DetectionParams, ErrorKind, Image, ModelInfo, PluginError};
use crate::{Candidate, ImageRef, Layout, ModelInput, OutputLayout, Resize, Transform};

/// Images per run when the model's batch dimension is dynamic: bounds the tensor's memory.
const DYNAMIC_BATCH_CHUNK: usize = 16;

/// A plugin error.
pub fn error(kind: ErrorKind, message: impl Into<String>) -> PluginError {
    PluginError {
        kind,
        message: message.into(),
    }
}

/// A wasi-nn error, as the plugin's error (`what` says what was being done).
pub fn nn_error(what: &str, e: crate::nn::errors::Error) -> PluginError {
    error(
        ErrorKind::InferenceFailed,
        format!("{what}: {:?}: {}", e.code(), e.data()),
    )
}

/// The model's input geometry and pre-processing, as the host describes it.
pub fn model_input(model: &ModelInfo) -> Result<ModelInput, PluginError> {
    use crate::wit::{ChannelOrder, ResizeMode};
    ModelInput::new(
        model.input_width,
        model.input_height,
        match model.resize {
            ResizeMode::Letterbox => Resize::Letterbox { pad: model.pad_value },
            ResizeMode::Stretch => Resize::Stretch,
            ResizeMode::CenterCrop => Resize::CenterCrop,
        },
        match model.channel_order {
            ChannelOrder::Nchw => Layout::Nchw,
            ChannelOrder::Nhwc => Layout::Nhwc,
        },
        &model.mean,
        &model.std,
    )
    .map_err(|e| error(ErrorKind::UnsupportedModel, e))
}

/// A copy of an image's pixels, for pre-processing of the plugin's own (`image.rgb`).
pub struct Pixels {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// RGB, row-major, tightly packed.
    pub rgb: Vec<u8>,
}

impl Pixels {
    /// Copies `image`'s pixels out of the host.
    pub fn of(image: &Image) -> Self {
        Self {
            width: image.width(),
            height: image.height(),
            rgb: image.rgb(),
        }
    }

    /// The pixels as the pre-processing reads them.
    pub fn as_ref(&self) -> Result<ImageRef<'_>, PluginError> {
        ImageRef::new(self.width, self.height, &self.rgb).map_err(|e| error(ErrorKind::InvalidInput, e))
    }
}

/// Named output tensors of one run.
pub type Outputs = Vec<(String, tensor::Tensor)>;

/// Loads the request's graph and runs it on `images` in batches the model accepts (its batch
/// size, or a bounded chunk for a dynamic batch): `prepare` makes a batch's input tensor with its
/// images' transforms, and `each` gets the batch's outputs and transforms, in order.
fn run_chunks(
    model: &ModelInfo,
    images: Vec<Image>,
    mut prepare: impl FnMut(&[Image]) -> Result<(tensor::Tensor, Vec<Transform>), PluginError>,
    mut each: impl FnMut(Outputs, Vec<Transform>) -> Result<(), PluginError>,
) -> Result<(), PluginError> {
    if images.is_empty() {
        return Ok(());
    }
    let graph = graph::load_by_name(&model.graph).map_err(|e| nn_error("loading the model", e))?;
    let context = graph
        .init_execution_context()
        .map_err(|e| nn_error("creating an execution context", e))?;
    let chunk = if model.max_batch == 0 {
        DYNAMIC_BATCH_CHUNK
    } else {
        model.max_batch as usize
    };
    let mut images = images.into_iter();
    loop {
        let batch: Vec<Image> = images.by_ref().take(chunk.max(1)).collect();
        if batch.is_empty() {
            break;
        }
        let (tensor, transforms) = prepare(&batch)?;
        // The tensor is made: dropping the handles lets the host free the decoded pixels before
        // the run (which may wait for a batch) instead of after the whole call.
        drop(batch);
        let outputs = context
            .compute(vec![(model.input_name.clone(), tensor)])
            .map_err(|e| nn_error("running the model", e))?;
        each(outputs, transforms)?;
    }
    Ok(())
}

/// `run_chunks` with pre-processing of the plugin's own: `prepare` gets a copy of a batch's
/// pixels and makes its input tensor data (f32, the model's layout, `dims`) with its images'
/// transforms.
pub fn run_batches_with(
    model: &ModelInfo,
    images: Vec<Image>,
    dims: impl Fn(usize) -> Vec<u32>,
    mut prepare: impl FnMut(&[ImageRef<'_>]) -> Result<(Vec<f32>, Vec<Transform>), String>,
    each: impl FnMut(Outputs, Vec<Transform>) -> Result<(), PluginError>,
) -> Result<(), PluginError> {
    let tensor_of = |batch: &[Image]| {
        let pixels: Vec<Pixels> = batch.iter().map(Pixels::of).collect();
        let refs = pixels.iter().map(Pixels::as_ref).collect::<Result<Vec<_>, _>>()?;
        let (data, transforms) = prepare(&refs).map_err(|e| error(ErrorKind::InvalidInput, e))?;
        let tensor = tensor::Tensor::new(&dims(batch.len()), tensor::TensorType::Fp32, as_le_bytes(&data));
        Ok((tensor, transforms))
    };
    run_chunks(model, images, tensor_of, each)
}

/// `run_chunks` with the host's pre-processing (`imaging.model-input`: letterbox, stretch or
/// centre crop as `input` says), done natively on the pixels the host holds.
pub fn run_batches(
    model: &ModelInfo,
    input: &ModelInput,
    images: Vec<Image>,
    each: impl FnMut(Outputs, Vec<Transform>) -> Result<(), PluginError>,
) -> Result<(), PluginError> {
    let spec = input_spec(input, Resampling::Bytes)?;
    run_with_imaging(model, spec, images, each)
}

/// `run_chunks` with the host's imaging as `spec` says.
fn run_with_imaging(
    model: &ModelInfo,
    spec: InputSpec,
    images: Vec<Image>,
    each: impl FnMut(Outputs, Vec<Transform>) -> Result<(), PluginError>,
) -> Result<(), PluginError> {
    let tensor_of = |batch: &[Image]| {
        let borrowed: Vec<&Image> = batch.iter().collect();
        let (tensor, placements) = imaging::model_input(&borrowed, &spec)?;
        Ok((tensor, placements.iter().map(transform).collect()))
    };
    run_chunks(model, images, tensor_of, each)
}

/// `input` as the host's imaging takes it, resampling as `resampling` says.
pub fn input_spec(input: &ModelInput, resampling: Resampling) -> Result<InputSpec, PluginError> {
    use crate::wit::{ChannelOrder, ResizeMode};
    let (resize, pad_value) = match input.resize {
        Resize::Letterbox { pad } => (ResizeMode::Letterbox, pad),
        Resize::Stretch => (ResizeMode::Stretch, 0),
        Resize::CenterCrop => (ResizeMode::CenterCrop, 0),
        Resize::LetterboxRect { .. } => {
            return Err(error(
                ErrorKind::UnsupportedModel,
                "the host's imaging has no rect letterbox",
            ))
        }
    };
    Ok(InputSpec {
        width: input.width,
        height: input.height,
        resize,
        pad_value,
        channel_order: match input.layout {
            Layout::Nchw => ChannelOrder::Nchw,
            Layout::Nhwc => ChannelOrder::Nhwc,
        },
        mean: input.mean.to_vec(),
        std: input.std.to_vec(),
        resampling,
    })
}

/// A placement the host's imaging reports, as the transform that maps tensor pixels back.
pub fn transform(p: &Placement) -> Transform {
    Transform {
        scale_x: p.scale_x,
        scale_y: p.scale_y,
        pad_x: p.pad_x,
        pad_y: p.pad_y,
        orig_width: p.original_width,
        orig_height: p.original_height,
    }
}

/// Views f32 data as the little-endian bytes a wasi-nn tensor carries, without copying the
/// (megabyte-sized) input: WebAssembly is little-endian.
#[allow(unsafe_code)]
fn as_le_bytes(data: &[f32]) -> &[u8] {
    // SAFETY: any f32 bit pattern is valid bytes; u8 has alignment 1; the length is in bytes.
    unsafe { std::slice::from_raw_parts(data.as_ptr().cast::<u8>(), std::mem::size_of_val(data)) }
}

/// One image's candidates that the request's detection parameters keep (`keep`: NMS, or
/// ranking for end-to-end heads).
pub fn kept(candidates: Vec<Candidate>, layout: OutputLayout, params: &DetectionParams) -> Vec<Candidate> {
    crate::keep(
        candidates,
        layout,
        params.iou_threshold,
        params.class_agnostic_nms,
        params.max_detections as usize,
    )
}

/// The name at `id` in `names`, or the id as text when the model names none.
pub fn name_of(names: &[String], id: u32) -> String {
    names.get(id as usize).cloned().unwrap_or_else(|| id.to_string())
}

/// The response record of a kept candidate (box centre and size in original-image pixels,
/// class named from the model), or `None` when the request's class filter leaves it out.
pub fn detection(
    model: &ModelInfo,
    params: &DetectionParams,
    transform: &Transform,
    c: &Candidate,
) -> Option<Detection> {
    let [x1, y1, x2, y2] = transform.to_original_box(c.x1, c.y1, c.x2, c.y2);
    detection_in_image(model, params, [x1, y1, x2, y2], c)
}

/// As `detection`, for a candidate whose box is already in original-image pixels.
pub fn detection_in_image(
    model: &ModelInfo,
    params: &DetectionParams,
    [x1, y1, x2, y2]: [f32; 4],
    c: &Candidate,
) -> Option<Detection> {
    let class_name = name_of(&model.class_names, c.class_id);
    if let Some(filter) = &params.class_filter {
        if !filter.iter().any(|f| f == &class_name) {
            return None;
        }
    }
    Some(Detection {
        x: (x1 + x2) / 2.0,
        y: (y1 + y2) / 2.0,
        width: x2 - x1,
        height: y2 - y1,
        confidence: c.score,
        class_id: c.class_id,
        class_name,
    })
}

/// The output named `name` (or, without a name, output `index`) as float32 values with its
/// dimensions.
pub fn output_f32(
    outputs: &[(String, tensor::Tensor)],
    name: Option<&str>,
    index: usize,
) -> Result<(Vec<usize>, Vec<f32>), PluginError> {
    let found = match name {
        Some(name) => outputs.iter().find(|(n, _)| n == name),
        None => outputs.get(index),
    };
    let (label, output) = found.ok_or_else(|| {
        let which = name.map_or_else(|| format!("output {index}"), |n| format!("output {n:?}"));
        let names: Vec<&str> = outputs.iter().map(|(n, _)| n.as_str()).collect();
        error(
            ErrorKind::UnsupportedModel,
            format!("the model has no {which} (it has {names:?})"),
        )
    })?;
    tensor_f32(label, output)
}

/// A float32 tensor's dimensions and values (`label` names it in the error).
pub fn tensor_f32(label: &str, t: &tensor::Tensor) -> Result<(Vec<usize>, Vec<f32>), PluginError> {
    if t.ty() != tensor::TensorType::Fp32 {
        return Err(error(
            ErrorKind::UnsupportedModel,
            format!("output {label:?} is {:?}, float32 expected", t.ty()),
        ));
    }
    let dims = t.dimensions().iter().map(|d| *d as usize).collect();
    Ok((dims, crate::le_bytes_to_f32(&t.data())))
}

/// Output 0 as float32 values with its dimensions.
pub fn first_output(outputs: &[(String, tensor::Tensor)]) -> Result<(Vec<usize>, Vec<f32>), PluginError> {
    output_f32(outputs, None, 0)
}

/// RF-DETR's pre-processing ([`crate::rfdetr::batch`]: the stretch on the float image, unless the
/// model says otherwise), by the host's imaging.
pub fn run_rfdetr_batches(
    model: &ModelInfo,
    input: &ModelInput,
    images: Vec<Image>,
    each: impl FnMut(Outputs, Vec<Transform>) -> Result<(), PluginError>,
) -> Result<(), PluginError> {
    let resampling = if input.resize == Resize::Stretch {
        Resampling::Float
    } else {
        Resampling::Bytes
    };
    run_with_imaging(model, input_spec(input, resampling)?, images, each)
}

/// One image's RF-DETR detections (see [`crate::rfdetr`]) that the request keeps, best first,
/// each with its query (the row of the model's `masks`): the no-object slot and Roboflow's
/// background placeholder are never reported, the class filter applies, then the request's
/// `max_detections`. RF-DETR needs no NMS; class-agnostic NMS runs only when the request asks
/// for it (`class_agnostic_nms`), and per-class `iou_threshold` has no effect.
pub fn rfdetr_detections(
    model: &ModelInfo,
    params: &DetectionParams,
    input: &ModelInput,
    outputs: &[(String, tensor::Tensor)],
    transforms: &[Transform],
) -> Result<Vec<Vec<(usize, Detection)>>, PluginError> {
    use crate::rfdetr;
    let unsupported = |e: String| error(ErrorKind::UnsupportedModel, e);
    let (dets_dims, dets) = rfdetr_output(outputs, "dets", 0)?;
    let (labels_dims, labels) = rfdetr_output(outputs, "labels", 1)?;
    let num_select = rfdetr::num_select(&model.metadata).unwrap_or(rfdetr::DEFAULT_NUM_SELECT);
    let mut per_image = Vec::with_capacity(transforms.len());
    for (b, transform) in transforms.iter().enumerate() {
        let selected = rfdetr::decode(
            (&dets, &dets_dims),
            (&labels, &labels_dims),
            b,
            num_select,
            params.confidence,
        )
        .map_err(unsupported)?;
        let wanted = |class_id: u32| {
            params
                .class_filter
                .as_ref()
                .is_none_or(|f| f.contains(&name_of(&model.class_names, class_id)))
        };
        let mut candidates: Vec<Candidate> = selected
            .iter()
            .filter(|s| !rfdetr::is_background(&model.class_names, s.class_id) && wanted(s.class_id))
            .map(|s| {
                let [x1, y1, x2, y2] = rfdetr::to_image(s.xyxy, input.resize, input.width, input.height, transform);
                Candidate {
                    x1,
                    y1,
                    x2,
                    y2,
                    score: s.score,
                    class_id: s.class_id,
                    anchor: s.query as u32,
                }
            })
            .collect();
        let max = params.max_detections as usize;
        if params.class_agnostic_nms {
            candidates = crate::nms(candidates, params.iou_threshold, true, max);
        } else {
            candidates.truncate(max);
        }
        per_image.push(
            candidates
                .iter()
                .filter_map(|c| {
                    detection_in_image(model, params, [c.x1, c.y1, c.x2, c.y2], c).map(|d| (c.anchor as usize, d))
                })
                .collect(),
        );
    }
    Ok(per_image)
}

/// An RF-DETR output by its name in `rfdetr`'s export, else by its place in that export's order
/// (`dets`, `labels`, `masks`).
pub fn rfdetr_output(
    outputs: &[(String, tensor::Tensor)],
    name: &str,
    index: usize,
) -> Result<(Vec<usize>, Vec<f32>), PluginError> {
    if outputs.iter().any(|(n, _)| n == name) {
        output_f32(outputs, Some(name), index)
    } else {
        output_f32(outputs, None, index)
    }
}
