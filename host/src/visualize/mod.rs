//! Annotated pictures: a response's predictions drawn onto the decoded input image, encoded
//! as JPEG. Boxes and masks take their class's colour; labels sit on a filled box whose text
//! colour is chosen for contrast; poses get their skeleton.

mod jpeg;
mod palette;
mod shapes;
pub mod skeleton;

use anyhow::{Context, Result};
use image::GrayImage;

use crate::input::RgbImage;
use palette::class_color;
use shapes::{dot, label, polygon_mask, stroke_box, stroke_line, text_scale, tint, Mask};

/// Drawing primitives for other pictures (the workflow visualization blocks).
pub mod draw {
    pub use super::jpeg::encode as jpeg;
    pub use super::palette::class_color;
    pub use super::shapes::{label, stroke_box, stroke_line, text_scale};
}

/// Stroke widths accepted, in pixels.
pub const STROKE_RANGE: std::ops::RangeInclusive<i64> = 1..=100;

/// The JPEG format's largest side: a picture of a wider or taller image cannot be encoded.
pub const MAX_SIDE: u32 = 65_535;

/// Why a picture cannot be drawn (the client's image, not the server: a 400).
#[derive(Debug, thiserror::Error)]
#[error("cannot draw the predictions on an image of {width}x{height} px: the picture (a JPEG) takes at most {MAX_SIDE} px a side; ask without visualization")]
pub struct DrawError {
    pub width: u32,
    pub height: u32,
}

/// Checks that an image's picture can be encoded, before any work is spent on it.
pub fn check_drawable(width: u32, height: u32) -> Result<(), DrawError> {
    if width > MAX_SIDE || height > MAX_SIDE {
        return Err(DrawError { width, height });
    }
    Ok(())
}

/// Opacity of instance masks.
const MASK_ALPHA: f32 = 0.4;

/// How to draw: Roboflow's `labels` / `visualization_labels` and `stroke` /
/// `visualization_stroke_width`.
#[derive(Clone, Copy, Debug)]
pub struct Style {
    /// Write each detection's class and confidence (classification always shows its label).
    pub labels: bool,
    /// Line width in pixels.
    pub stroke: u32,
}

impl Style {
    /// Checks a requested stroke width; the error names the parameter as the client sent it.
    pub fn new(labels: bool, stroke: Option<i64>, parameter: &str) -> Result<Self, String> {
        let stroke = stroke.unwrap_or(1);
        if !STROKE_RANGE.contains(&stroke) {
            return Err(format!(
                "{parameter} must be between {} and {} pixels, got {stroke}",
                STROKE_RANGE.start(),
                STROKE_RANGE.end()
            ));
        }
        Ok(Self {
            labels,
            stroke: stroke as u32,
        })
    }
}

/// What to draw on one image, whatever the task: detected objects (with a mask or keypoints)
/// and labels written in the corner (classification).
#[derive(Debug, Default)]
pub struct Scene {
    pub objects: Vec<Object>,
    /// Written one under the other from the top-left corner.
    pub corner_labels: Vec<Label>,
}

/// A class name with its confidence, in its class's colour.
#[derive(Debug)]
pub struct Label {
    pub class: String,
    pub class_id: u32,
    pub confidence: f64,
}

/// One detected object: its box (centre and size, image pixels), label, and optional mask and
/// keypoints.
#[derive(Debug)]
pub struct Object {
    pub label: Label,
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub height: f64,
    pub mask: Option<MaskShape>,
    pub keypoints: Vec<Keypoint>,
}

#[derive(Debug)]
pub enum MaskShape {
    /// The outline, image pixels.
    Polygon(Vec<(f64, f64)>),
    /// COCO RLE (`counts` string) of a `width` x `height` mask.
    Rle { width: u32, height: u32, counts: String },
}

#[derive(Debug)]
pub struct Keypoint {
    pub class_id: u32,
    pub x: f64,
    pub y: f64,
}

/// Draws `scene` onto `image` and encodes the result as JPEG. `keypoint_edges` are the model's
/// own skeleton edges per class (may be empty).
pub fn annotate(image: RgbImage, scene: &Scene, style: Style, keypoint_edges: &[Vec<(u32, u32)>]) -> Result<Vec<u8>> {
    let (width, height) = (image.width, image.height);
    check_drawable(width, height)?;
    let mut canvas = image::RgbImage::from_raw(width, height, image.rgb).context("image buffer size")?;
    let scale = text_scale(width, height);
    draw_objects(&mut canvas, &scene.objects, style, keypoint_edges, scale);
    let mut y = 0;
    for l in &scene.corner_labels {
        y += label(&mut canvas, &label_text(l), (0, y), scale, class_color(l.class_id));
    }
    jpeg::encode(width, height, canvas.as_raw())
}

fn label_text(l: &Label) -> String {
    format!("{} {:.2}", l.class, l.confidence)
}

fn draw_objects(
    canvas: &mut image::RgbImage,
    objects: &[Object],
    style: Style,
    keypoint_edges: &[Vec<(u32, u32)>],
    scale: f32,
) {
    let (width, height) = canvas.dimensions();
    // Masks first, so that outlines and labels stay crisp on top of every tint.
    for o in objects {
        if let Some(mask) = o.mask.as_ref().and_then(|m| instance_mask(m, width, height)) {
            tint(canvas, &mask, class_color(o.label.class_id), MASK_ALPHA);
        }
    }
    for o in objects {
        let color = class_color(o.label.class_id);
        let corners = (
            o.x - o.width / 2.0,
            o.y - o.height / 2.0,
            o.x + o.width / 2.0,
            o.y + o.height / 2.0,
        );
        stroke_box(canvas, corners, style.stroke, color);
        if !o.keypoints.is_empty() {
            let at = |id: u32| o.keypoints.iter().find(|k| k.class_id == id).map(|k| (k.x, k.y));
            let count = o.keypoints.iter().map(|k| k.class_id as usize + 1).max().unwrap_or(0);
            for &(a, b) in skeleton::edges_for(keypoint_edges, o.label.class_id, count) {
                if let (Some(a), Some(b)) = (at(a), at(b)) {
                    stroke_line(canvas, a, b, style.stroke, color);
                }
            }
            for k in &o.keypoints {
                dot(canvas, (k.x, k.y), style.stroke + 2, class_color(k.class_id));
            }
        }
    }
    if style.labels {
        for o in objects {
            let anchor = (
                (o.x - o.width / 2.0).round() as i64,
                (o.y - o.height / 2.0).round() as i64,
            );
            label(
                canvas,
                &label_text(&o.label),
                anchor,
                scale,
                class_color(o.label.class_id),
            );
        }
    }
}

/// The object's mask as a canvas mask; `None` for a broken RLE or one of another size.
fn instance_mask(mask: &MaskShape, width: u32, height: u32) -> Option<Mask> {
    match mask {
        MaskShape::Polygon(outline) => polygon_mask(outline, width, height),
        MaskShape::Rle {
            width: w,
            height: h,
            counts,
        } => {
            if (*w, *h) != (width, height) {
                return None;
            }
            let counts = inference_guest::rle_from_string(counts).ok()?;
            let bits = inference_guest::rle_decode(&counts, *w as usize, *h as usize).ok()?;
            GrayImage::from_raw(*w, *h, bits).map(shapes::full_mask)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    fn object(class_id: u32, (x, y, width, height): (f64, f64, f64, f64), outline: Option<Vec<(f64, f64)>>) -> Object {
        Object {
            label: Label {
                class: format!("class{class_id}"),
                class_id,
                confidence: 0.9,
            },
            x,
            y,
            width,
            height,
            mask: outline.map(MaskShape::Polygon),
            keypoints: Vec::new(),
        }
    }

    fn grey(width: u32, height: u32, level: u8) -> RgbImage {
        RgbImage {
            width,
            height,
            rgb: vec![level; (width * height * 3) as usize],
        }
    }

    fn decode(jpeg: &[u8]) -> image::RgbImage {
        image::load_from_memory(jpeg).unwrap().into_rgb8()
    }

    fn close(a: Rgb<u8>, b: Rgb<u8>) -> bool {
        a.0.iter().zip(b.0).all(|(x, y)| x.abs_diff(y) <= 24)
    }

    fn detections(objects: Vec<Object>) -> Scene {
        Scene {
            objects,
            corner_labels: Vec::new(),
        }
    }

    #[test]
    fn box_edges_take_the_class_colour_and_masks_tint_inside() {
        let square = vec![(60.0, 30.0), (100.0, 30.0), (100.0, 70.0), (60.0, 70.0)];
        let response = detections(vec![object(1, (80.0, 50.0, 40.0, 40.0), Some(square))]);
        let style = Style {
            labels: false,
            stroke: 4,
        };
        let out = decode(&annotate(grey(200, 100, 128), &response, style, &[]).unwrap());
        assert_eq!(out.dimensions(), (200, 100));
        // On the left edge (x = 60), halfway down.
        assert!(
            close(*out.get_pixel(60, 50), class_color(1)),
            "{:?}",
            out.get_pixel(60, 50)
        );
        // Inside: grey tinted towards the class colour, not left grey.
        let inside = *out.get_pixel(80, 50);
        let expected = Rgb([0xFF, 0x40, 0x40].map(|c: u8| (128.0 * 0.6 + f32::from(c) * 0.4).round() as u8));
        assert!(close(inside, expected), "{inside:?} vs {expected:?}");
        // Far away: untouched.
        assert!(close(*out.get_pixel(10, 90), Rgb([128, 128, 128])));
    }

    #[test]
    fn labels_only_change_the_label_area() {
        let response = detections(vec![object(0, (100.0, 60.0, 60.0, 40.0), None)]);
        let draw = |labels| {
            let style = Style { labels, stroke: 2 };
            decode(&annotate(grey(200, 100, 30), &response, style, &[]).unwrap())
        };
        let (plain, labelled) = (draw(false), draw(true));
        let changed: Vec<(u32, u32)> = plain
            .enumerate_pixels()
            .filter(|(x, y, p)| !close(**p, *labelled.get_pixel(*x, *y)))
            .map(|(x, y, _)| (x, y))
            .collect();
        assert!(!changed.is_empty(), "the label drew nothing");
        // The label sits on the box's top-left corner (70, 40), above it (JPEG blocks are 8 px).
        let stray: Vec<_> = changed.iter().filter(|&&(x, y)| x < 64 || y >= 48).collect();
        assert!(stray.is_empty(), "changed outside the label: {stray:?}");
    }

    #[test]
    fn stroke_width_is_checked() {
        assert!(Style::new(true, Some(0), "stroke").is_err());
        assert!(Style::new(true, Some(101), "stroke").unwrap_err().contains("stroke"));
        assert_eq!(Style::new(false, None, "stroke").unwrap().stroke, 1);
    }

    #[test]
    fn degenerate_geometry_draws_without_panicking() {
        let line = vec![(5.0, 5.0), (5.0, 5.0), (9.0, 5.0)];
        let far = vec![(-1e9, 1e9), (f64::NAN, 3.0), (1e12, -4.0)];
        let response = detections(vec![
            object(2, (5.0, 5.0, 0.0, 0.0), Some(line)),
            object(3, (-50.0, 500.0, 10.0, 10.0), Some(far)),
        ]);
        let style = Style {
            labels: true,
            stroke: 100,
        };
        annotate(grey(200, 100, 200), &response, style, &[]).unwrap();
    }
}
