//! Classification: scores for each class of the whole image, single-label (the best classes
//! above the confidence) or multi-label (every class's score, and those above it).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use wasmtime::component::InstancePre;
use wasmtime::Store;

use super::{Common, ImageSize, Meta, Task, Visualization};
use crate::plugins::legacy::Legacy;
use crate::plugins::{wit, Bound, CallState};
use crate::visualize::{Label, Scene};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "inference:plugins/classification",
        with: {
            "inference:plugins/types": crate::plugins::wit,
            "inference:plugins/imaging": crate::plugins::wit::imaging,
        },
    });
}

use bindings::exports::inference::plugins::classify;

pub struct Classification;

/// Classification has no options of its own (`confidence` is shared).
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct ClassificationOptions {}

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
    pub predictions: BTreeMap<String, MultiLabelScore>,
    /// Classes above the confidence threshold.
    pub predicted_classes: Vec<String>,
}

/// One image's classification: single-label or multi-label, by the model.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum ClassificationResult {
    SingleLabel(ClassificationResponse),
    MultiLabel(MultiLabelClassificationResponse),
}

impl Task for Classification {
    const NAME: &'static str = "classification";
    const WORLD: &'static str = "classification";
    const ROUTES: &'static [&'static str] = &["classification"];
    const SUMMARY: &'static str = "Classification";
    const DESCRIPTION: &'static str = "Single-label models answer `predictions` (classes at or above `confidence`, \
best first), `top` and `confidence`; multi-label models answer each class's score by name and `predicted_classes`.";

    type Options = ClassificationOptions;
    type Params = classify::ClassificationParams;
    type Output = classify::Classification;
    type Response = ClassificationResult;

    fn params(common: &Common, _: &Self::Options) -> Result<Self::Params, String> {
        Ok(classify::ClassificationParams {
            confidence: common.confidence,
        })
    }

    fn bind(pre: InstancePre<CallState>) -> anyhow::Result<Bound> {
        Legacy::or_bind(pre, "inference:plugins/classify@0.1.0", "classify", |pre| {
            Ok(Box::new(bindings::ClassificationPre::new(pre)?))
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
        let instance =
            super::bound_as::<bindings::ClassificationPre<CallState>>(bound, Self::WORLD)?.instantiate(&mut *store)?;
        instance
            .inference_plugins_classify()
            .call_classify(&mut *store, model, &images, *params)
    }

    fn output_bytes(output: &Self::Output) -> usize {
        output.scores.iter().map(|s| 8 + s.class_name.len()).sum()
    }

    fn respond(output: Self::Output, meta: &Meta<'_>) -> Self::Response {
        let confidence = meta.common.confidence;
        if meta.model.multi_label {
            let predicted_classes = output
                .scores
                .iter()
                .filter(|s| s.confidence > confidence)
                .map(|s| s.class_name.clone())
                .collect();
            let predictions = output
                .scores
                .into_iter()
                .map(|s| {
                    let score = MultiLabelScore {
                        confidence: f64::from(s.confidence),
                        class_id: s.class_id,
                    };
                    (s.class_name, score)
                })
                .collect();
            return ClassificationResult::MultiLabel(MultiLabelClassificationResponse {
                visualization: None,
                inference_id: meta.inference_id.to_string(),
                time: meta.time,
                image: meta.image,
                predictions,
                predicted_classes,
            });
        }
        let predictions: Vec<ClassPrediction> = output
            .scores
            .into_iter()
            .filter(|s| s.confidence >= confidence)
            .map(|s| ClassPrediction {
                class: s.class_name,
                class_id: s.class_id,
                confidence: f64::from(s.confidence),
            })
            .collect();
        let (top, top_confidence) = predictions
            .first()
            .map(|p| (p.class.clone(), p.confidence))
            .unwrap_or_default();
        ClassificationResult::SingleLabel(ClassificationResponse {
            visualization: None,
            inference_id: meta.inference_id.to_string(),
            time: meta.time,
            image: meta.image,
            predictions,
            top,
            confidence: top_confidence,
        })
    }

    fn scene(response: &Self::Response) -> Scene {
        let corner_labels = match response {
            ClassificationResult::SingleLabel(c) if !c.top.is_empty() => vec![Label {
                class: c.top.clone(),
                class_id: c.predictions.first().map_or(0, |p| p.class_id),
                confidence: c.confidence,
            }],
            ClassificationResult::SingleLabel(_) => Vec::new(),
            ClassificationResult::MultiLabel(m) => m
                .predicted_classes
                .iter()
                .filter_map(|name| {
                    m.predictions.get(name).map(|score| Label {
                        class: name.clone(),
                        class_id: score.class_id,
                        confidence: score.confidence,
                    })
                })
                .collect(),
        };
        Scene {
            objects: Vec::new(),
            corner_labels,
        }
    }

    fn visualization(response: &mut Self::Response) -> &mut Option<Visualization> {
        match response {
            ClassificationResult::SingleLabel(r) => &mut r.visualization,
            ClassificationResult::MultiLabel(r) => &mut r.visualization,
        }
    }
}
