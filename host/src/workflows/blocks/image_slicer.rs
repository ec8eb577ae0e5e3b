//! `roboflow_core/image_slicer@v2`: overlapping slices of equal size (a nested dimension), for
//! SAHI with `detections_stitch`.

use std::sync::Arc;

use super::{batch, either, Check, Manifest, Output, Run};
use crate::workflows::value::{Image, Origin, Val};

pub static MANIFEST: Manifest = Manifest {
    type_id: "roboflow_core/image_slicer@v2",
    aliases: &[],
    name: "Image Slicer",
    description: "Cuts the image into overlapping slices of equal size (border slices moved inwards), deduplicated.",
    fields: &[
        batch("image", &["image"], "The image to slice"),
        either("slice_width", &["integer"], Some("640"), Check::Int, "Slice width"),
        either("slice_height", &["integer"], Some("640"), Check::Int, "Slice height"),
        either(
            "overlap_ratio_width",
            &["float_zero_to_one"],
            Some("0.2"),
            Check::Unit,
            "Horizontal overlap",
        ),
        either(
            "overlap_ratio_height",
            &["float_zero_to_one"],
            Some("0.2"),
            Check::Unit,
            "Vertical overlap",
        ),
    ],
    outputs: &[Output {
        name: "slices",
        kinds: &["image"],
    }],
    output_offset: 1,
    reduces: None,
    run: Run::Heavy(run),
};

/// The starts of slices of `size` with `overlap` over `total`, the last moved inwards so that
/// every slice has the same size (one slice when the image is smaller).
pub fn starts(total: u32, size: u32, overlap: f64) -> Vec<u32> {
    if size == 0 || total <= size {
        return vec![0];
    }
    let step = ((f64::from(size) * (1.0 - overlap)).round() as u32).max(1);
    let mut out: Vec<u32> = (0..).map(|i| i * step).take_while(|s| s + size < total).collect();
    out.push(total - size);
    out.dedup();
    out
}

fn run(args: &super::Args) -> Result<Vec<Val>, String> {
    let image = args.image("image")?;
    let (w, h) = image.size();
    let sw = (args.f64("slice_width", 640.0)? as u32).max(1);
    let sh = (args.f64("slice_height", 640.0)? as u32).max(1);
    let ow = args.f64("overlap_ratio_width", 0.2)?;
    let oh = args.f64("overlap_ratio_height", 0.2)?;
    let mut slices = Vec::new();
    for y in starts(h, sh, oh) {
        for x in starts(w, sw, ow) {
            let (cw, ch) = (sw.min(w - x), sh.min(h - y));
            let origin = Origin {
                offset_x: i64::from(x),
                offset_y: i64::from(y),
                width: w,
                height: h,
            };
            let root_origin = image.root_origin_of(origin);
            slices.push(Val::Image(Arc::new(Image {
                pixels: super::dynamic_crop::cut(&image.pixels, x, y, cw, ch),
                parent_id: uuid::Uuid::new_v4().to_string(),
                parent_origin: Some(origin),
                root_parent_id: image.root_parent_id.clone(),
                root_origin: Some(root_origin),
                original: None,
            })));
        }
    }
    Ok(vec![Val::List(slices)])
}

#[cfg(test)]
mod tests {
    #[test]
    fn slices_cover_with_equal_sizes() {
        assert_eq!(super::starts(1080, 640, 0.2), vec![0, 440]);
        assert_eq!(super::starts(300, 640, 0.2), vec![0]);
        assert_eq!(super::starts(1280, 640, 0.2), vec![0, 512, 640]);
    }
}
