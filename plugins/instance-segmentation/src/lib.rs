//! Instance-segmentation task plugin: resizes images into the model's input tensor, runs the
//! graph through wasi-nn, decodes YOLO segmentation outputs (v8/11 `-seg`, YOLOv5-seg,
//! end-to-end heads) with NMS, builds each detection's mask from the prototypes and returns
//! it as an outline polygon or a COCO RLE, in original-image pixels.

use inference_guest::{self as guest, MaskChannels, MaskMode, Protos};

use guest::bindings::instance_segmentation::exports::inference::plugins::segment::{
    Guest, Instance, MaskDecodeMode, MaskFormat, Point, Rle, SegmentationParams,
};
use guest::nn::tensor;
use guest::wit::{ErrorKind, Image, ModelInfo, PluginError};

use guest::glue::{detection, error, kept, model_input, run_batches, tensor_f32};

struct Plugin;

/// A model output as f32 values with its dims.
struct Output {
    dims: Vec<usize>,
    data: Vec<f32>,
}

impl Output {
    fn read(name: &str, t: &tensor::Tensor) -> Result<Self, PluginError> {
        let (dims, data) = tensor_f32(name, t)?;
        Ok(Self { dims, data })
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
        let input = model_input(&model)?;
        let resize = input.resize;
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
        let named = model.class_names.len();
        let unsupported = |e: String| error(ErrorKind::UnsupportedModel, e);

        let mut results = Vec::with_capacity(images.len());
        run_batches(&model, &input, images, |outputs, transforms| {
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
            if images_in(&dets.dims) < transforms.len() || protos.dims[0] < transforms.len() {
                return Err(unsupported(format!(
                    "outputs {:?} and {:?} hold fewer images than the {} sent",
                    dets.dims,
                    protos.dims,
                    transforms.len()
                )));
            }
            for (b, transform) in transforms.iter().enumerate() {
                let candidates = guest::decode(&dets.data, &dets.dims, b, layout, channels.classes, det.confidence)
                    .map_err(unsupported)?;
                let kept = kept(candidates, layout, det);
                let image_protos = Protos::from_output(&protos.data, &protos.dims, b).map_err(unsupported)?;
                let decoder = guest::MaskDecoder::new(image_protos, model.input_width, model.input_height, mode)
                    .map_err(|e| error(ErrorKind::InvalidInput, e))?;
                let (mw, mh) = decoder.resolution();
                let to_image =
                    guest::MaskToImage::new(resize, model.input_width, model.input_height, transform, mw, mh)
                        .map_err(unsupported)?;
                let mut instances = Vec::with_capacity(kept.len());
                for c in kept {
                    let Some(detection) = detection(&model, det, transform, &c) else {
                        continue;
                    };
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
                    instances.push(Instance { detection, points, rle });
                }
                results.push(instances);
            }
            Ok(())
        })?;
        Ok(results)
    }
}

guest::export_instance_segmentation!(Plugin);
