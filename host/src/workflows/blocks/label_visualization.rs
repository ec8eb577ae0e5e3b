//! `roboflow_core/label_visualization@v1`: a label per detection (class, confidence, …).

use super::visualization::{self, *};
use super::{either, Check, Manifest, Output, Run};
use crate::visualize::draw;
use crate::workflows::value::{Detection, Val};

pub static MANIFEST: Manifest = Manifest {
    type_id: "roboflow_core/label_visualization@v1",
    aliases: &["LabelVisualization"],
    name: "Label Visualization",
    description: "Writes a label (class, confidence, both, index, dimensions or area) at each detection.",
    fields: &[
        IMAGE,
        PREDICTIONS,
        COPY_IMAGE,
        COLOR_PALETTE,
        PALETTE_SIZE,
        CUSTOM_COLORS,
        COLOR_AXIS,
        either(
            "text",
            &["string"],
            Some("\"Class\""),
            Check::OneOf(&[
                "Class",
                "Confidence",
                "Class and Confidence",
                "Index",
                "Dimensions",
                "Area",
                "Tracker Id",
                "Time In Zone",
            ]),
            "What the label says",
        ),
        either(
            "text_position",
            &["string"],
            Some("\"TOP_LEFT\""),
            Check::Any,
            "Accepted; labels sit at the top left",
        ),
        either(
            "text_color",
            &["string"],
            Some("\"WHITE\""),
            Check::Any,
            "Accepted; the text colour is chosen for contrast",
        ),
        either("text_scale", &["float"], Some("1.0"), Check::Number, "Text size factor"),
        either(
            "text_thickness",
            &["integer"],
            Some("1"),
            Check::Int,
            "Accepted; unused",
        ),
        either("text_padding", &["integer"], Some("10"), Check::Int, "Accepted; unused"),
        either("border_radius", &["integer"], Some("0"), Check::Int, "Accepted; unused"),
    ],
    outputs: &[Output {
        name: "image",
        kinds: &["image"],
    }],
    output_offset: 0,
    reduces: None,
    run: Run::Heavy(run),
};

fn text(kind: &str, index: usize, d: &Detection) -> String {
    match kind {
        "Confidence" => format!("{:.2}", d.confidence),
        "Class and Confidence" => format!("{} {:.2}", d.class_name, d.confidence),
        "Index" => index.to_string(),
        "Dimensions" => format!("{}x{}", d.width.round(), d.height.round()),
        "Area" => format!("{}", (d.width * d.height).round()),
        _ => d.class_name.clone(),
    }
}

fn run(args: &super::Args) -> Result<Vec<Val>, String> {
    let kind = args.str("text").unwrap_or("Class").to_string();
    let factor = args.f64("text_scale", 1.0)?.clamp(0.1, 10.0) as f32;
    visualization::on_copy(args, |canvas, detections| {
        let scale = draw::text_scale(canvas.width(), canvas.height()) * factor;
        for (i, d) in detections.iter().enumerate() {
            let (x0, y0, _, _) = d.xyxy();
            let anchor = (x0.round() as i64, y0.round() as i64);
            draw::label(
                canvas,
                &text(&kind, i, d),
                anchor,
                scale,
                visualization::color(args, i, d),
            );
        }
    })
}
