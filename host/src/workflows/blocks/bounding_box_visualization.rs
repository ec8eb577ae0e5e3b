//! `roboflow_core/bounding_box_visualization@v1`: boxes drawn on the image.

use super::visualization::{self, *};
use super::{either, Check, Manifest, Output, Run};
use crate::visualize::draw;

pub static MANIFEST: Manifest = Manifest {
    type_id: "roboflow_core/bounding_box_visualization@v1",
    aliases: &["BoundingBoxVisualization"],
    name: "Bounding Box Visualization",
    description: "Draws each detection's box.",
    fields: &[
        IMAGE,
        PREDICTIONS,
        COPY_IMAGE,
        COLOR_PALETTE,
        PALETTE_SIZE,
        CUSTOM_COLORS,
        COLOR_AXIS,
        either("thickness", &["integer"], Some("2"), Check::Int, "Line width in pixels"),
        either(
            "roundness",
            &["float_zero_to_one"],
            Some("0.0"),
            Check::Unit,
            "Accepted; corners are square",
        ),
    ],
    outputs: &[Output {
        name: "image",
        kinds: &["image"],
    }],
    output_offset: 0,
    reduces: None,
    run: Run::Heavy(run),
};

fn run(args: &super::Args) -> Result<Vec<Val>, String> {
    let thickness = args.f64("thickness", 2.0)?.clamp(1.0, 100.0) as u32;
    visualization::on_copy(args, |canvas, detections| {
        for (i, d) in detections.iter().enumerate() {
            draw::stroke_box(canvas, d.xyxy(), thickness, visualization::color(args, i, d));
        }
    })
}

use crate::workflows::value::Val;
