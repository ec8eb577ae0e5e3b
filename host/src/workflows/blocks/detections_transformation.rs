//! `roboflow_core/detections_transformation@v1`: any UQL chain over detections (sort, select,
//! offset, rename, filter).

use super::{Manifest, Output, Run};

pub static MANIFEST: Manifest = Manifest {
    type_id: "roboflow_core/detections_transformation@v1",
    aliases: &["DetectionsTransformation"],
    name: "Detections Transformation",
    description: "Applies UQL operations (SortDetections, DetectionsSelection, DetectionsOffset, DetectionsRename, DetectionsFilter) to detections.",
    fields: super::detections_filter::FIELDS,
    outputs: &[Output {
        name: "predictions",
        kinds: super::kinds::DETECTIONS,
    }],
    output_offset: 0,
    reduces: None,
    run: Run::Light(super::detections_filter::run),
};
