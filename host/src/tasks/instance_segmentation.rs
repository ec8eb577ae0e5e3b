//! Instance segmentation: detections with a mask each, as a polygon or as COCO RLE.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use wasmtime::component::InstancePre;
use wasmtime::Store;

use super::{Choice, Common, Detections, Meta, ObjectDetectionPrediction, Task, Visualization};
use crate::plugins::legacy::Legacy;
use crate::plugins::{wit, Bound, CallState};
use crate::visualize::{MaskShape, Scene};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "inference:plugins/instance-segmentation",
        with: {
            "inference:plugins/types": crate::plugins::wit,
            "inference:plugins/imaging": crate::plugins::wit::imaging,
        },
    });
}

use bindings::exports::inference::plugins::segment;

pub struct InstanceSegmentation;

/// How instance masks are computed.
#[derive(Clone, Copy, Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MaskDecodeMode {
    /// Upsampled to the model's input before cropping (Ultralytics' default).
    #[default]
    Accurate,
    /// Cropped and thresholded at the prototypes' resolution.
    Fast,
    /// In between, by `tradeoff_factor`.
    Tradeoff,
}

/// How instance masks are returned.
#[derive(Clone, Copy, Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MaskFormat {
    /// `points`: the mask's outline.
    #[default]
    Polygon,
    /// `rle`: COCO run-length encoding.
    Rle,
}

/// Instance segmentation's own request fields.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct InstanceSegmentationOptions {
    /// `accurate` (default), `fast` or `tradeoff`.
    #[serde(default)]
    #[schema(value_type = Option<MaskDecodeMode>)]
    pub mask_decode_mode: Option<Choice<MaskDecodeMode>>,
    /// Mode `tradeoff`: 0 (accurate) to 1 (fast).
    #[serde(default)]
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub tradeoff_factor: Option<f32>,
    /// `polygon` (default, `points`) or `rle` (COCO RLE, `rle`).
    #[serde(default)]
    #[schema(value_type = Option<MaskFormat>)]
    pub response_mask_format: Option<Choice<MaskFormat>>,
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

/// A detection and its mask.
#[derive(Debug, Serialize, ToSchema)]
pub struct InstancePrediction {
    #[serde(flatten)]
    pub detection: ObjectDetectionPrediction,
    /// With `response_mask_format` `polygon`: the mask outline, image pixels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub points: Option<Vec<Point>>,
    /// With `response_mask_format` `rle`: the mask as COCO RLE.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rle: Option<Rle>,
}

impl Task for InstanceSegmentation {
    const NAME: &'static str = "instance-segmentation";
    const WORLD: &'static str = "instance-segmentation";
    // The seed's guide calls the task `segmentation`.
    const ROUTES: &'static [&'static str] = &["instance_segmentation", "segmentation"];
    const SUMMARY: &'static str = "Instance segmentation";
    const DESCRIPTION: &'static str =
        "Boxes plus each instance's mask: `points` (polygon, default) or `rle` (`response_mask_format: rle`).";

    type Options = InstanceSegmentationOptions;
    type Params = segment::SegmentationParams;
    type Output = Vec<segment::Instance>;
    type Response = Detections<InstancePrediction>;

    fn params(common: &Common, options: &Self::Options) -> Result<Self::Params, String> {
        let mask_decode_mode = match options.mask_decode_mode.clone() {
            Some(choice) => choice.get("mask_decode_mode")?,
            None => MaskDecodeMode::default(),
        };
        let tradeoff_factor = options.tradeoff_factor.unwrap_or(0.0);
        if !(0.0..=1.0).contains(&tradeoff_factor) {
            return Err(format!(
                "tradeoff_factor must be between 0 and 1, got {tradeoff_factor}"
            ));
        }
        let mask_format = match options.response_mask_format.clone() {
            Some(choice) => choice.get("response_mask_format")?,
            None => MaskFormat::default(),
        };
        Ok(segment::SegmentationParams {
            detection: common.detection(),
            mask_decode_mode: match mask_decode_mode {
                MaskDecodeMode::Accurate => segment::MaskDecodeMode::Accurate,
                MaskDecodeMode::Fast => segment::MaskDecodeMode::Fast,
                MaskDecodeMode::Tradeoff => segment::MaskDecodeMode::Tradeoff,
            },
            tradeoff_factor,
            mask_format: match mask_format {
                MaskFormat::Polygon => segment::MaskFormat::Polygon,
                MaskFormat::Rle => segment::MaskFormat::Rle,
            },
        })
    }

    fn bind(pre: InstancePre<CallState>) -> anyhow::Result<Bound> {
        Legacy::or_bind(pre, "inference:plugins/segment@0.1.0", "segment", |pre| {
            Ok(Box::new(bindings::InstanceSegmentationPre::new(pre)?))
        })
    }

    fn invoke(
        bound: &Bound,
        store: &mut Store<CallState>,
        model: &wit::ModelInfo,
        params: &Self::Params,
    ) -> wasmtime::Result<Result<Vec<Self::Output>, wit::PluginError>> {
        if let Some(legacy) = bound.downcast_ref::<Legacy>() {
            return super::invoke_legacy(legacy, store, model, params);
        }
        let images = store.data_mut().image_handles()?;
        let instance = super::bound_as::<bindings::InstanceSegmentationPre<CallState>>(bound, Self::WORLD)?
            .instantiate(&mut *store)?;
        instance
            .inference_plugins_segment()
            .call_segment(&mut *store, model, &images, params)
    }

    fn output_bytes(output: &Self::Output) -> usize {
        output
            .iter()
            .map(|i| {
                crate::plugins::detection_bytes(&i.detection)
                    + 8 * i.points.len()
                    + i.rle.as_ref().map_or(0, |r| r.counts.len())
            })
            .sum()
    }

    fn respond(output: Self::Output, meta: &Meta<'_>) -> Self::Response {
        let predictions = output
            .into_iter()
            .map(|i| InstancePrediction {
                detection: ObjectDetectionPrediction::new(i.detection),
                points: i.rle.is_none().then(|| {
                    i.points
                        .into_iter()
                        .map(|p| Point {
                            x: f64::from(p.x),
                            y: f64::from(p.y),
                        })
                        .collect()
                }),
                rle: i.rle.map(|r| Rle {
                    size: [r.height, r.width],
                    counts: r.counts,
                }),
            })
            .collect();
        Detections::new(meta, predictions)
    }

    fn scene(response: &Self::Response) -> Scene {
        let mask = |p: &InstancePrediction| match (&p.points, &p.rle) {
            (Some(points), _) => Some(MaskShape::Polygon(points.iter().map(|q| (q.x, q.y)).collect())),
            (None, Some(rle)) => Some(MaskShape::Rle {
                width: rle.size[1],
                height: rle.size[0],
                counts: rle.counts.clone(),
            }),
            (None, None) => None,
        };
        Scene {
            objects: response
                .predictions
                .iter()
                .map(|p| p.detection.object(mask(p), Vec::new()))
                .collect(),
            corner_labels: Vec::new(),
        }
    }

    fn response_schemas(out: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>)>) {
        Detections::<InstancePrediction>::schemas(out);
    }

    fn visualization(response: &mut Self::Response) -> &mut Option<Visualization> {
        &mut response.visualization
    }
}
