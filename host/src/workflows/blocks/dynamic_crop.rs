//! `roboflow_core/dynamic_crop@v1`: one crop per detection (a nested dimension), its lineage
//! kept (`parent_id` = the detection's id, origins in the parent and the root image).

use std::sync::Arc;

use super::{batch, either, Check, Manifest, Output, Run};
use crate::input::RgbImage;
use crate::workflows::value::{Detection, Detections, Image, Origin, Val};

pub static MANIFEST: Manifest = Manifest {
    type_id: "roboflow_core/dynamic_crop@v1",
    aliases: &["DynamicCrop", "Crop"],
    name: "Dynamic Crop",
    description: "Crops the image to each detection's box (pixels rounded as Roboflow does).",
    fields: &[
        batch("images", &["image"], "The image to crop"),
        batch("predictions", super::kinds::DETECTIONS, "The detections to crop to"),
        either(
            "mask_opacity",
            &["float_zero_to_one"],
            Some("0.0"),
            Check::Unit,
            "Accepted; masks are not applied",
        ),
        either(
            "background_color",
            &["string", "list_of_values"],
            Some("[0, 0, 0]"),
            Check::Any,
            "Accepted; unused",
        ),
    ],
    outputs: &[
        Output {
            name: "crops",
            kinds: &["image"],
        },
        Output {
            name: "predictions",
            kinds: super::kinds::DETECTIONS,
        },
    ],
    output_offset: 1,
    reduces: None,
    run: Run::Heavy(run),
};

fn run(args: &super::Args) -> Result<Vec<Val>, String> {
    let image = args.image("images")?;
    let detections = args.detections("predictions")?;
    let (mut crops, mut predictions) = (Vec::new(), Vec::new());
    for d in &detections.items {
        let Some((crop, origin)) = crop(image, d) else { continue };
        let root_origin = image.root_origin_of(origin);
        let crop = Arc::new(Image {
            pixels: crop,
            parent_id: d.detection_id.clone(),
            parent_origin: Some(origin),
            root_parent_id: image.root_parent_id.clone(),
            root_origin: Some(root_origin),
            original: None,
        });
        let local = Detection {
            x: d.x - origin.offset_x as f64,
            y: d.y - origin.offset_y as f64,
            parent_id: crop.parent_id.clone(),
            image: crop.size(),
            parent_origin: crop.parent_origin,
            root_parent_id: crop.root_parent_id.clone(),
            root_origin: crop.root_origin,
            ..d.clone()
        };
        predictions.push(Val::Detections(Arc::new(Detections {
            items: vec![local],
            image: None,
            root: Some((crop.root_parent_id.clone(), root_origin)),
        })));
        crops.push(Val::Image(crop));
    }
    Ok(vec![Val::List(crops), Val::List(predictions)])
}

/// The detection's box cut out of `image` (rounded, clipped), and where it lies there.
pub fn crop(image: &Image, d: &Detection) -> Option<(RgbImage, Origin)> {
    let (w, h) = image.size();
    let (x0, y0, x1, y1) = d.xyxy();
    let clamp = |v: f64, max: u32| (v.round().max(0.0) as u32).min(max);
    let (x0, y0, x1, y1) = (clamp(x0, w), clamp(y0, h), clamp(x1, w), clamp(y1, h));
    if x1 <= x0 || y1 <= y0 {
        return None;
    }
    Some((
        cut(&image.pixels, x0, y0, x1 - x0, y1 - y0),
        Origin {
            offset_x: i64::from(x0),
            offset_y: i64::from(y0),
            width: w,
            height: h,
        },
    ))
}

/// The `cw`×`ch` rectangle at (`x0`, `y0`) of `pixels`.
pub fn cut(pixels: &RgbImage, x0: u32, y0: u32, cw: u32, ch: u32) -> RgbImage {
    let stride = pixels.width as usize * 3;
    let mut rgb = Vec::with_capacity(cw as usize * ch as usize * 3);
    for row in y0..y0 + ch {
        let start = row as usize * stride + x0 as usize * 3;
        rgb.extend_from_slice(&pixels.rgb[start..start + cw as usize * 3]);
    }
    RgbImage {
        width: cw,
        height: ch,
        rgb,
    }
}
