//! Instance-segmentation task plugin: resizes images into the model's input tensor, runs the
//! graph through wasi-nn, decodes YOLO segmentation outputs (v8/11 `-seg`, YOLOv5-seg,
//! end-to-end heads) with NMS, builds each detection's mask from the prototypes and returns
//! it as an outline polygon or a COCO RLE, in original-image pixels.

use inference_guest::{self as guest, Candidate, ImageRef, MaskChannels, MaskMode, OutputLayout, Protos};

wit_bindgen::generate!({
    path: "../../wit",
    world: "instance-segmentation",
    generate_all,
});

use exports::inference::plugins::segment::{
    Guest, Instance, MaskDecodeMode, MaskFormat, Point, Rle, SegmentationParams,
};
use inference::plugins::types::{ChannelOrder, Detection, ErrorKind, Image, ModelInfo, PluginError, ResizeMode};
use wasi::nn::{graph, tensor};

/// Images per run when the model's batch dimension is dynamic: bounds the tensor's memory.
const DYNAMIC_BATCH_CHUNK: usize = 16;

struct Plugin;

fn error(kind: ErrorKind, message: impl Into<String>) -> PluginError {
    PluginError {
        kind,
        message: message.into(),
    }
}

fn nn_error(what: &str, e: wasi::nn::errors::Error) -> PluginError {
    error(
        ErrorKind::InferenceFailed,
        format!("{what}: {:?}: {}", e.code(), e.data()),
    )
}

/// A model output as f32 values with its dims.
struct Output {
    dims: Vec<usize>,
    data: Vec<f32>,
}

impl Output {
    fn read(name: &str, t: &tensor::Tensor) -> Result<Self, PluginError> {
        if t.ty() != tensor::TensorType::Fp32 {
            return Err(error(
                ErrorKind::UnsupportedModel,
                format!("output {name} is {:?}, float32 expected", t.ty()),
            ));
        }
        Ok(Self {
            dims: t.dimensions().iter().map(|d| *d as usize).collect(),
            data: guest::le_bytes_to_f32(&t.data()),
        })
    }
}

/// The prototypes as `[B, nm, mh, mw]`: NCHW outputs as they are, NHWC ones
/// (`[B, mh, mw, nm]`, some TensorFlow exports) transposed.
fn prototypes(out: Output, nm_fits: impl Fn(usize) -> bool) -> Result<Output, PluginError> {
    let [b, d1, d2, d3] = out.dims[..] else {
        return Err(error(
            ErrorKind::UnsupportedModel,
            format!("mask prototypes must have 4 dimensions, got {:?}", out.dims),
        ));
    };
    if nm_fits(d1) || !nm_fits(d3) {
        return Ok(out);
    }
    let (h, w, c) = (d1, d2, d3);
    let per = h.saturating_mul(w).saturating_mul(c);
    if per == 0 || Some(out.data.len()) != b.checked_mul(per) {
        return Err(error(
            ErrorKind::UnsupportedModel,
            format!(
                "prototype output has {} values, dims {:?} need {}",
                out.data.len(),
                out.dims,
                b.saturating_mul(per)
            ),
        ));
    }
    let mut data = vec![0f32; out.data.len()];
    for (src, dst) in out.data.chunks_exact(per).zip(data.chunks_exact_mut(per)) {
        for (i, px) in src.chunks_exact(c).enumerate() {
            for (k, &v) in px.iter().enumerate() {
                dst[k * h * w + i] = v;
            }
        }
    }
    Ok(Output {
        dims: vec![b, c, h, w],
        data,
    })
}

impl Guest for Plugin {
    fn segment(
        model: ModelInfo,
        images: Vec<Image>,
        params: SegmentationParams,
    ) -> Result<Vec<Vec<Instance>>, PluginError> {
        let det = &params.detection;
        let resize = match model.resize {
            ResizeMode::Letterbox => guest::Resize::Letterbox { pad: model.pad_value },
            ResizeMode::Stretch => guest::Resize::Stretch,
            ResizeMode::CenterCrop => guest::Resize::CenterCrop,
        };
        let input = guest::ModelInput::new(
            model.input_width,
            model.input_height,
            resize,
            match model.channel_order {
                ChannelOrder::Nchw => guest::Layout::Nchw,
                ChannelOrder::Nhwc => guest::Layout::Nhwc,
            },
            &model.mean,
            &model.std,
        )
        .map_err(|e| error(ErrorKind::UnsupportedModel, e))?;
        let mode = match params.mask_decode_mode {
            MaskDecodeMode::Accurate => MaskMode::Accurate,
            MaskDecodeMode::Fast => MaskMode::Fast,
            MaskDecodeMode::Tradeoff => {
                let f = params.tradeoff_factor;
                if !(0.0..=1.0).contains(&f) {
                    return Err(error(
                        ErrorKind::InvalidInput,
                        format!("tradeoff factor must be between 0 and 1, got {f}"),
                    ));
                }
                MaskMode::Tradeoff(f)
            }
        };
        if images.is_empty() {
            return Ok(Vec::new());
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
        let named = model.class_names.len();
        let unsupported = |e: String| error(ErrorKind::UnsupportedModel, e);

        let mut results = Vec::with_capacity(images.len());
        for batch in images.chunks(chunk.max(1)) {
            let refs = batch
                .iter()
                .map(|i| ImageRef::new(i.width, i.height, &i.rgb))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| error(ErrorKind::InvalidInput, e))?;
            let (data, transforms) = input.batch(&refs).map_err(|e| error(ErrorKind::InvalidInput, e))?;
            let tensor = tensor::Tensor::new(&input.dims(refs.len()), tensor::TensorType::Fp32, as_le_bytes(&data));
            drop(data);
            let outputs = context
                .compute(vec![(model.input_name.clone(), tensor)])
                .map_err(|e| nn_error("running the model", e))?;
            // Detections are the 3-D output (2-D without a batch dim), prototypes the 4-D one.
            let find = |ranks: &[usize], what: &str| {
                outputs
                    .iter()
                    .find(|(_, t)| ranks.contains(&t.dimensions().len()))
                    .ok_or_else(|| {
                        let dims: Vec<Vec<u32>> = outputs.iter().map(|(_, t)| t.dimensions()).collect();
                        unsupported(format!("the model has no {what} output (outputs: {dims:?})"))
                    })
            };
            let (det_name, det_tensor) = find(&[3, 2], "detection")?;
            let (proto_name, proto_tensor) = find(&[4], "mask prototype")?;
            let dets = Output::read(det_name, det_tensor)?;
            let layout = guest::infer_layout(&dets.dims, named).map_err(unsupported)?;
            let channels_for = |nm: usize| guest::mask_channels(&dets.dims, layout, named, nm);
            let protos = prototypes(Output::read(proto_name, proto_tensor)?, |nm| channels_for(nm).is_ok())?;
            let channels: MaskChannels = channels_for(protos.dims[1]).map_err(unsupported)?;
            let images_in = |dims: &[usize]| if dims.len() == 2 { 1 } else { dims[0] };
            if images_in(&dets.dims) < refs.len() || protos.dims[0] < refs.len() {
                return Err(unsupported(format!(
                    "outputs {:?} and {:?} hold fewer images than the {} sent",
                    dets.dims,
                    protos.dims,
                    refs.len()
                )));
            }
            for (b, transform) in transforms.iter().enumerate() {
                let candidates = guest::decode(&dets.data, &dets.dims, b, layout, channels.classes, det.confidence)
                    .map_err(unsupported)?;
                let kept: Vec<Candidate> = if layout == OutputLayout::EndToEnd {
                    let mut c = candidates;
                    c.sort_by(|a, b| b.score.total_cmp(&a.score));
                    c.truncate(det.max_detections as usize);
                    c
                } else {
                    guest::nms(
                        candidates,
                        det.iou_threshold,
                        det.class_agnostic_nms,
                        det.max_detections as usize,
                    )
                };
                let image_protos = Protos::from_output(&protos.data, &protos.dims, b).map_err(unsupported)?;
                let decoder = guest::MaskDecoder::new(image_protos, model.input_width, model.input_height, mode)
                    .map_err(|e| error(ErrorKind::InvalidInput, e))?;
                let (mw, mh) = decoder.resolution();
                let to_image =
                    guest::MaskToImage::new(resize, model.input_width, model.input_height, transform, mw, mh)
                        .map_err(unsupported)?;
                let mut instances = Vec::with_capacity(kept.len());
                for c in kept {
                    let class_name = model
                        .class_names
                        .get(c.class_id as usize)
                        .cloned()
                        .unwrap_or_else(|| c.class_id.to_string());
                    if let Some(filter) = &det.class_filter {
                        if !filter.iter().any(|f| f == &class_name) {
                            continue;
                        }
                    }
                    let coefficients =
                        guest::mask_coefficients(&dets.data, &dets.dims, b, layout, channels, c.anchor as usize);
                    // Like Ultralytics, a detection whose mask is empty is dropped.
                    let Some(mask) = decoder.decode(&coefficients, [c.x1, c.y1, c.x2, c.y2]) else {
                        continue;
                    };
                    let (points, rle) = match params.mask_format {
                        MaskFormat::Polygon => (
                            to_image
                                .polygon(&mask)
                                .into_iter()
                                .map(|[x, y]| Point { x, y })
                                .collect(),
                            None,
                        ),
                        MaskFormat::Rle => (
                            Vec::new(),
                            Some(Rle {
                                height: transform.orig_height,
                                width: transform.orig_width,
                                counts: guest::rle_to_string(&to_image.rle_counts(&mask)),
                            }),
                        ),
                    };
                    let [x1, y1, x2, y2] = transform.to_original_box(c.x1, c.y1, c.x2, c.y2);
                    instances.push(Instance {
                        detection: Detection {
                            x: (x1 + x2) / 2.0,
                            y: (y1 + y2) / 2.0,
                            width: x2 - x1,
                            height: y2 - y1,
                            confidence: c.score,
                            class_id: c.class_id,
                            class_name,
                        },
                        points,
                        rle,
                    });
                }
                results.push(instances);
            }
        }
        Ok(results)
    }
}

/// Views f32 data as the little-endian bytes a wasi-nn tensor carries, without copying the
/// (megabyte-sized) input: WebAssembly is little-endian.
fn as_le_bytes(data: &[f32]) -> &[u8] {
    // SAFETY: any f32 bit pattern is valid bytes; u8 has alignment 1; the length is in bytes.
    unsafe { std::slice::from_raw_parts(data.as_ptr().cast::<u8>(), std::mem::size_of_val(data)) }
}

export!(Plugin);
