//! RF-DETR instance masks, as `rfdetr`'s segmentation models give them: per query a plane of
//! mask logits `[Hm, Wm]` covering the whole network input (1/4 of it for the stock models),
//! resized with torch's bilinear `F.interpolate(align_corners=False)` **straight to the
//! original image size** and thresholded at logit 0 (sigmoid 0.5). Unlike YOLO's masks they
//! are not cropped to the box. The outline reported is the mask's largest external contour
//! (what `supervision.mask_to_polygons` gives first by area, and Roboflow's server answers).

use crate::contour::find_external_contours;
use crate::mask::{affine_taps, torch_taps, BinaryMask, Protos, Tap};
use crate::preprocess::{Resize, Transform};

/// Resamples one image's query masks to its original size.
#[derive(Clone, Debug)]
pub struct MaskResizer {
    width: usize,
    height: usize,
    xtaps: Vec<Tap>,
    ytaps: Vec<Tap>,
}

impl MaskResizer {
    /// For `mask_width x mask_height` masks of a model with `in_w x in_h` inputs, made from an
    /// image pre-processed with `resize` into `transform`. A stretched input (the family's
    /// default) resizes the masks straight to the image, exactly as `rfdetr` does; another
    /// resize maps each image pixel's centre through the input.
    pub fn new(
        resize: Resize,
        in_w: u32,
        in_h: u32,
        transform: &Transform,
        mask_width: usize,
        mask_height: usize,
    ) -> Result<Self, String> {
        let (w, h) = (transform.orig_width as usize, transform.orig_height as usize);
        if w == 0 || h == 0 || mask_width == 0 || mask_height == 0 || in_w == 0 || in_h == 0 {
            return Err("empty image or mask".into());
        }
        let (xtaps, ytaps) = match resize {
            Resize::Stretch => (torch_taps(mask_width, w), torch_taps(mask_height, h)),
            _ => {
                let (sx, sy) = (
                    mask_width as f64 / f64::from(in_w),
                    mask_height as f64 / f64::from(in_h),
                );
                (
                    affine_taps(
                        mask_width,
                        w,
                        f64::from(transform.scale_x) * sx,
                        f64::from(transform.pad_x) * sx,
                    ),
                    affine_taps(
                        mask_height,
                        h,
                        f64::from(transform.scale_y) * sy,
                        f64::from(transform.pad_y) * sy,
                    ),
                )
            }
        };
        Ok(Self {
            width: w,
            height: h,
            xtaps,
            ytaps,
        })
    }

    /// The mask of `query` at the original size (pixels whose resized logit is > 0); `None`
    /// when no pixel is set or the masks' size is not the one this resizer was made for.
    /// `masks` holds one image's `[Q, Hm, Wm]` mask logits, read from the `[B, Q, Hm, Wm]`
    /// output like YOLO's prototypes (one plane per query instead of per prototype).
    pub fn mask(&self, masks: &Protos, query: usize) -> Option<BinaryMask> {
        if query >= masks.channels || masks.width == 0 {
            return None;
        }
        if self.xtaps.iter().any(|t| t.i1 >= masks.width) || self.ytaps.iter().any(|t| t.i1 >= masks.height) {
            return None;
        }
        let plane = &masks.data[query * masks.height * masks.width..][..masks.height * masks.width];
        // Horizontal pass over every mask row, then the vertical one, in torch's order.
        let mut across = vec![0f32; masks.height * self.width];
        for (out, row) in across.chunks_exact_mut(self.width).zip(plane.chunks_exact(masks.width)) {
            for (o, t) in out.iter_mut().zip(&self.xtaps) {
                *o = row[t.i0] * t.w0 + row[t.i1] * t.w1;
            }
        }
        let mut block = vec![0u8; self.width * self.height];
        for (out, t) in block.chunks_exact_mut(self.width).zip(&self.ytaps) {
            let r0 = &across[t.i0 * self.width..][..self.width];
            let r1 = &across[t.i1 * self.width..][..self.width];
            for ((o, &a), &b) in out.iter_mut().zip(r0).zip(r1) {
                *o = u8::from(a * t.w0 + b * t.w1 > 0.0);
            }
        }
        BinaryMask::tight(self.width, self.height, 0, 0, self.width, &block)
    }
}

/// The outline of a mask in its pixels: its external contour of the largest area (the one
/// with more vertices on a tie), as OpenCV traces it.
pub fn outline(mask: &BinaryMask) -> Vec<[f32; 2]> {
    if !mask.is_consistent() || mask.data.is_empty() {
        return Vec::new();
    }
    let contours = find_external_contours(&mask.data, mask.region_width, mask.region_height);
    let area = |c: &Vec<[i32; 2]>| {
        let twice: i64 = c
            .iter()
            .zip(c.iter().cycle().skip(1))
            .map(|(a, b)| i64::from(a[0]) * i64::from(b[1]) - i64::from(b[0]) * i64::from(a[1]))
            .sum();
        twice.abs()
    };
    let Some(best) = contours.iter().max_by_key(|c| (area(c), c.len())) else {
        return Vec::new();
    };
    best.iter()
        .map(|&[x, y]| [(x as usize + mask.x0) as f32, (y as usize + mask.y0) as f32])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stretch(w: u32, h: u32) -> Transform {
        Transform {
            scale_x: 4.0 / w as f32,
            scale_y: 4.0 / h as f32,
            pad_x: 0.0,
            pad_y: 0.0,
            orig_width: w,
            orig_height: h,
        }
    }

    #[test]
    fn masks_resize_straight_to_the_image_uncropped() {
        // Two queries of 2x2 logits; query 1 is positive in its right column only.
        let data = [-1.0f32, -1.0, -1.0, -1.0, -1.0, 1.0, -1.0, 1.0];
        let masks = Protos::from_output(&data, &[1, 2, 2, 2], 0).unwrap();
        let r = MaskResizer::new(Resize::Stretch, 4, 4, &stretch(8, 6), 2, 2).unwrap();
        assert!(r.mask(&masks, 0).is_none());
        let m = r.mask(&masks, 1).unwrap();
        // Columns: torch's taps 2 -> 8 put the zero crossing between columns 3 and 4.
        assert_eq!((m.width, m.height), (8, 6));
        assert_eq!((m.x0, m.y0, m.region_width, m.region_height), (4, 0, 4, 6));
        assert_eq!(outline(&m), [[4.0, 0.0], [4.0, 5.0], [7.0, 5.0], [7.0, 0.0]]);
        assert!(r.mask(&masks, 2).is_none());
        // A resizer made for other masks refuses.
        let other = MaskResizer::new(Resize::Stretch, 4, 4, &stretch(8, 6), 3, 3).unwrap();
        assert!(other.mask(&masks, 1).is_none());
    }

    #[test]
    fn the_largest_contour_is_the_outline() {
        // A 1-pixel blob and a 2x2 one.
        let data = vec![1u8, 0, 0, 0, 0, 0, 1, 1, 0, 0, 1, 1];
        let m = BinaryMask::tight(4, 3, 0, 0, 4, &data).unwrap();
        assert_eq!(outline(&m), [[2.0, 1.0], [2.0, 2.0], [3.0, 2.0], [3.0, 1.0]]);
    }
}
