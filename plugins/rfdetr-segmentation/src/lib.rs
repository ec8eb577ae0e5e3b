//! RF-DETR instance-segmentation plugin: Roboflow's DETR segmentation family (`rfdetr`'s ONNX
//! exports with a `masks` output, Roboflow's `rfdetr-seg-*` model types). Detections as the
//! detection plugin makes them; each one's mask is its query's mask logits resized straight to
//! the image and thresholded at 0, not cropped to the box (see `inference_guest::rfdetr::masks`).
//! The masks always come at the image's resolution: `mask_decode_mode` has no effect.

use inference_guest as guest;

use guest::bindings::instance_segmentation::exports::inference::plugins::segment::{
    Guest, Instance, MaskFormat, Point, Rle, SegmentationParams,
};
use guest::rfdetr::masks::{outline, MaskResizer};
use guest::wit::{ErrorKind, Image, ModelInfo, PluginError};
use guest::Protos;

use guest::glue::{error, model_input, rfdetr_detections, rfdetr_output, run_rfdetr_batches};

struct Plugin;

impl Guest for Plugin {
    fn segment(
        model: ModelInfo,
        images: Vec<Image>,
        params: SegmentationParams,
    ) -> Result<Vec<Vec<Instance>>, PluginError> {
        let input = model_input(&model)?;
        let unsupported = |e: String| error(ErrorKind::UnsupportedModel, e);
        let mut results = Vec::with_capacity(images.len());
        run_rfdetr_batches(&model, &input, images, |outputs, transforms| {
            let per_image = rfdetr_detections(&model, &params.detection, &input, &outputs, &transforms)?;
            let (dims, data) = rfdetr_output(&outputs, "masks", 2)?;
            let [.., mh, mw] = dims[..] else {
                return Err(unsupported(format!(
                    "RF-DETR masks must be [batch, queries, h, w], got {dims:?}"
                )));
            };
            for (b, (transform, detections)) in transforms.iter().zip(per_image).enumerate() {
                let masks = Protos::from_output(&data, &dims, b).map_err(unsupported)?;
                let resizer = MaskResizer::new(input.resize, input.width, input.height, transform, mw, mh)
                    .map_err(unsupported)?;
                let (w, h) = (transform.orig_width, transform.orig_height);
                let instances = detections
                    .into_iter()
                    .map(|(query, detection)| {
                        // rfdetr reports a detection whose mask is empty too (with no outline).
                        let mask = resizer.mask(&masks, query);
                        let (points, rle) = match params.mask_format {
                            MaskFormat::Polygon => (
                                mask.as_ref()
                                    .map(outline)
                                    .unwrap_or_default()
                                    .into_iter()
                                    .map(|[x, y]| Point { x, y })
                                    .collect(),
                                None,
                            ),
                            MaskFormat::Rle => {
                                let counts = match &mask {
                                    Some(m) => m.rle_counts(),
                                    None => vec![w * h],
                                };
                                (
                                    Vec::new(),
                                    Some(Rle {
                                        height: h,
                                        width: w,
                                        counts: guest::rle_to_string(&counts),
                                    }),
                                )
                            }
                        };
                        Instance { detection, points, rle }
                    })
                    .collect();
                results.push(instances);
            }
            Ok(())
        })?;
        Ok(results)
    }
}

guest::export_instance_segmentation!(Plugin);
