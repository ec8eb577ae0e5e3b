//! The RF-DETR family in `inference benchmark raw`: the raw native pipeline of the
//! rfdetr-detection plugin (decode, stretch on the float image, ImageNet normalisation,
//! `session.run`, top-k over queries x classes), with the plugin's own maths from the guest
//! crate, so the server can be compared with it in one `scripts/bench` run.

use anyhow::{anyhow, Result};
use inference_guest::{rfdetr, ImageRef, ModelInput, Transform};
use ort::session::SessionOutputs;

use crate::models::ModelDescription;

/// An RF-DETR model's post-processing settings.
pub struct RfDetr {
    num_select: usize,
}

impl RfDetr {
    /// `Some` for a model of the RF-DETR family (see `ModelDescription::is_rfdetr`).
    pub fn of(description: &ModelDescription) -> Option<Self> {
        description.is_rfdetr().then(|| Self {
            num_select: rfdetr::num_select(&description.metadata).unwrap_or(rfdetr::DEFAULT_NUM_SELECT),
        })
    }

    /// The input tensor of `images`, as the plugin makes it.
    pub fn batch(&self, input: &ModelInput, images: &[ImageRef]) -> Result<(Vec<f32>, Vec<Transform>)> {
        rfdetr::batch(input, images).map_err(|e| anyhow!(e))
    }

    /// The detections of the first image above `confidence`, mapped to the image as the plugin
    /// maps them (the stock `max_detections`, no NMS); returns how many.
    pub fn postprocess(
        &self,
        outputs: &SessionOutputs,
        input: &ModelInput,
        transform: &Transform,
        confidence: f32,
    ) -> Result<usize> {
        let tensor = |name: &str, index: usize| -> Result<(Vec<usize>, &[f32])> {
            let value = outputs.get(name).unwrap_or(&outputs[index]);
            let (shape, data) = value.try_extract_tensor::<f32>()?;
            Ok((shape.iter().map(|d| (*d).max(0) as usize).collect(), data))
        };
        let (dets_dims, dets) = tensor("dets", 0)?;
        let (labels_dims, labels) = tensor("labels", 1)?;
        let selected = rfdetr::decode(
            (dets, &dets_dims),
            (labels, &labels_dims),
            0,
            self.num_select,
            confidence,
        )
        .map_err(|e| anyhow!(e))?;
        let boxes: Vec<[f32; 4]> = selected
            .iter()
            .take(crate::tasks::DEFAULT_MAX_DETECTIONS as usize)
            .map(|s| rfdetr::to_image(s.xyxy, input.resize, input.width, input.height, transform))
            .collect();
        Ok(boxes.len())
    }
}
