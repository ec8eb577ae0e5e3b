//! `roboflow_core/polygon_visualization@v1`: segmentation outlines drawn on the image.

use super::visualization::{self, *};
use super::{either, Check, Manifest, Output, Run};
use crate::visualize::draw;
use crate::workflows::value::Val;

pub static MANIFEST: Manifest = Manifest {
    type_id: "roboflow_core/polygon_visualization@v1",
    aliases: &["PolygonVisualization"],
    name: "Polygon Visualization",
    description: "Draws each segmentation's outline (the box when a detection has none).",
    fields: &[
        IMAGE,
        PREDICTIONS,
        COPY_IMAGE,
        COLOR_PALETTE,
        PALETTE_SIZE,
        CUSTOM_COLORS,
        COLOR_AXIS,
        either("thickness", &["integer"], Some("2"), Check::Int, "Line width in pixels"),
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
            let color = visualization::color(args, i, d);
            match &d.points {
                Some(points) if points.len() > 1 => {
                    for (a, b) in points.iter().zip(points.iter().cycle().skip(1)) {
                        draw::stroke_line(canvas, *a, *b, thickness, color);
                    }
                }
                _ => draw::stroke_box(canvas, d.xyxy(), thickness, color),
            }
        }
    })
}
