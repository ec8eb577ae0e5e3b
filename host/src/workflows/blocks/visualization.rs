//! What the visualization blocks share: the palette fields, colours, and drawing on a copy of
//! the image.

use std::sync::Arc;

use image::Rgb;

use super::{batch, either, Args, Check, Field};
use crate::input::RgbImage;
use crate::visualize::draw;
use crate::workflows::value::{Detection, Image, Val};

pub const IMAGE: Field = batch("image", &["image"], "The image to draw on");
pub const PREDICTIONS: Field = batch("predictions", super::kinds::DETECTIONS, "The detections to draw");
pub const COPY_IMAGE: Field = either(
    "copy_image",
    &["boolean"],
    Some("true"),
    Check::Bool,
    "Draw on a copy (always done here)",
);
pub const COLOR_PALETTE: Field = either(
    "color_palette",
    &["string"],
    Some("\"DEFAULT\""),
    Check::Any,
    "Palette (DEFAULT: supervision's)",
);
pub const PALETTE_SIZE: Field = either(
    "palette_size",
    &["integer"],
    Some("10"),
    Check::Int,
    "Colours in the palette",
);
pub const CUSTOM_COLORS: Field = either(
    "custom_colors",
    &["list_of_values"],
    Some("[]"),
    Check::List,
    "Custom colours (#RRGGBB)",
);
pub const COLOR_AXIS: Field = either(
    "color_axis",
    &["string"],
    Some("\"CLASS\""),
    Check::OneOf(&["INDEX", "CLASS", "TRACK"]),
    "Colour by class, index or track",
);

/// The colour of detection `index`.
pub fn color(args: &Args, index: usize, d: &Detection) -> Rgb<u8> {
    let custom: Vec<Rgb<u8>> = args
        .json("custom_colors")
        .as_array()
        .map(|a| a.iter().filter_map(|c| c.as_str().and_then(hex)).collect())
        .unwrap_or_default();
    let key = match args.str("color_axis") {
        Some("INDEX") | Some("TRACK") => index,
        _ => d.class_id.max(0) as usize,
    };
    if args.str("color_palette") == Some("CUSTOM") && !custom.is_empty() {
        return custom[key % custom.len()];
    }
    draw::class_color(key as u32)
}

fn hex(s: &str) -> Option<Rgb<u8>> {
    let s = s.strip_prefix('#')?;
    if s.len() != 6 {
        return None;
    }
    let v = u32::from_str_radix(s, 16).ok()?;
    Some(Rgb([(v >> 16) as u8, (v >> 8) as u8, v as u8]))
}

/// Draws with `paint` on a copy of the `image` field's pixels; the result keeps its lineage.
pub fn on_copy(args: &Args, paint: impl FnOnce(&mut image::RgbImage, &[Detection])) -> Result<Vec<Val>, String> {
    let image = args.image("image")?;
    let detections = args.detections("predictions")?;
    let (w, h) = image.size();
    let mut canvas =
        image::RgbImage::from_raw(w, h, image.pixels.rgb.clone()).ok_or("the image's buffer has the wrong size")?;
    paint(&mut canvas, &detections.items);
    let pixels = RgbImage {
        width: w,
        height: h,
        rgb: canvas.into_raw(),
    };
    Ok(vec![Val::Image(Arc::new(Image::derived(image, pixels)))])
}
