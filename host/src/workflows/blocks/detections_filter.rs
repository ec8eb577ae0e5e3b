//! `roboflow_core/detections_filter@v1`: keeps the detections a UQL statement holds for.

use std::sync::Arc;

use super::{batch, literal, selectors, Check, Input, Manifest, Output, Run};
use crate::workflows::uql::{self, Q};
use crate::workflows::value::Val;

pub static MANIFEST: Manifest = Manifest {
    type_id: "roboflow_core/detections_filter@v1",
    aliases: &["DetectionsFilter"],
    name: "Detections Filter",
    description: "Keeps the detections that satisfy the operations' DetectionsFilter statement.",
    fields: FIELDS,
    outputs: &[Output {
        name: "predictions",
        kinds: super::kinds::DETECTIONS,
    }],
    output_offset: 0,
    reduces: None,
    run: Run::Light(run),
};

/// Shared with `detections_transformation`.
pub const FIELDS: &[super::Field] = &[
    batch("predictions", super::kinds::DETECTIONS, "The detections"),
    literal(
        "operations",
        None,
        Check::List,
        "UQL operations (e.g. one DetectionsFilter)",
    ),
    selectors(
        "operations_parameters",
        Input::SelectorMap,
        Some("{}"),
        "Named values the operations refer to",
    ),
];

/// Applies `operations` to `predictions` with the named parameters.
pub fn run(args: &super::Args) -> Result<Vec<Val>, String> {
    let detections = args.detections("predictions")?.clone();
    let ops = args.json("operations").as_array().cloned().unwrap_or_default();
    let params = super::expression::params(args.get("operations_parameters"));
    match uql::apply(Q::Dets(detections), &ops, &params)? {
        Q::Dets(d) => Ok(vec![Val::Detections(d)]),
        Q::Det(d) => Ok(vec![Val::Detections(Arc::new(crate::workflows::value::Detections {
            items: vec![*d],
            image: None,
            root: None,
        }))]),
        _ => Err("the operations must give detections".into()),
    }
}
