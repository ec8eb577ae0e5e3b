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
use crate::server::responses::{InferenceResponse, Prediction};
use palette::class_color;
use shapes::{dot, label, polygon_mask, stroke_box, stroke_line, text_scale, tint, Mask};

/// Stroke widths accepted, in pixels.
pub const STROKE_RANGE: std::ops::RangeInclusive<i64> = 1..=100;

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

/// Draws `response`'s predictions onto `image` and encodes the result as JPEG.
/// `keypoint_edges` are the model's own skeleton edges per class (may be empty).
pub fn annotate(
    image: RgbImage,
    response: &InferenceResponse,
    style: Style,
    keypoint_edges: &[Vec<(u32, u32)>],
) -> Result<Vec<u8>> {
    let (width, height) = (image.width, image.height);
    let mut canvas = image::RgbImage::from_raw(width, height, image.rgb).context("image buffer size")?;
    let scale = text_scale(width, height);
    match response {
        InferenceResponse::Detections(d) => {
            draw_detections(&mut canvas, &d.predictions, style, keypoint_edges, scale);
        }
        InferenceResponse::Classification(c) => {
            if !c.top.is_empty() {
                let id = c.predictions.first().map_or(0, |p| p.class_id);
                let text = format!("{} {:.2}", c.top, c.confidence);
                label(&mut canvas, &text, (0, 0), scale, class_color(id));
            }
        }
        InferenceResponse::MultiLabel(m) => {
            let mut y = 0;
            for name in &m.predicted_classes {
                if let Some(score) = m.predictions.get(name) {
                    let text = format!("{name} {:.2}", score.confidence);
                    y += label(&mut canvas, &text, (0, y), scale, class_color(score.class_id));
                }
            }
        }
    }
    jpeg::encode(width, height, canvas.as_raw())
}

fn draw_detections(
    canvas: &mut image::RgbImage,
    predictions: &[Prediction],
    style: Style,
    keypoint_edges: &[Vec<(u32, u32)>],
    scale: f32,
) {
    let (width, height) = canvas.dimensions();
    // Masks first, so that outlines and labels stay crisp on top of every tint.
    for p in predictions {
        if let Some(mask) = instance_mask(p, width, height) {
            tint(canvas, &mask, class_color(p.detection.class_id), MASK_ALPHA);
        }
    }
    for p in predictions {
        let d = &p.detection;
        let color = class_color(d.class_id);
        let corners = (
            d.x - d.width / 2.0,
            d.y - d.height / 2.0,
            d.x + d.width / 2.0,
            d.y + d.height / 2.0,
        );
        stroke_box(canvas, corners, style.stroke, color);
        if let Some(keypoints) = &p.keypoints {
            let at = |id: u32| keypoints.iter().find(|k| k.class_id == id).map(|k| (k.x, k.y));
            let count = keypoints.iter().map(|k| k.class_id as usize + 1).max().unwrap_or(0);
            for &(a, b) in skeleton::edges_for(keypoint_edges, d.class_id, count) {
                if let (Some(a), Some(b)) = (at(a), at(b)) {
                    stroke_line(canvas, a, b, style.stroke, color);
                }
            }
            for k in keypoints {
                dot(canvas, (k.x, k.y), style.stroke + 2, class_color(k.class_id));
            }
        }
    }
    if style.labels {
        for p in predictions {
            let d = &p.detection;
            let text = format!("{} {:.2}", d.class, d.confidence);
            let anchor = (
                (d.x - d.width / 2.0).round() as i64,
                (d.y - d.height / 2.0).round() as i64,
            );
            label(canvas, &text, anchor, scale, class_color(d.class_id));
        }
    }
}

/// The instance's mask from its polygon or its RLE; `None` without one (or a broken RLE).
fn instance_mask(p: &Prediction, width: u32, height: u32) -> Option<Mask> {
    if let Some(points) = &p.points {
        let outline: Vec<(f64, f64)> = points.iter().map(|q| (q.x, q.y)).collect();
        return polygon_mask(&outline, width, height);
    }
    let rle = p.rle.as_ref()?;
    let [h, w] = rle.size;
    if (w, h) != (width, height) {
        return None;
    }
    let counts = inference_guest::rle_from_string(&rle.counts).ok()?;
    let bits = inference_guest::rle_decode(&counts, w as usize, h as usize).ok()?;
    GrayImage::from_raw(w, h, bits).map(shapes::full_mask)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::responses::{DetectionsResponse, ImageSize, ObjectDetectionPrediction, Point};
    use image::Rgb;

    fn prediction(class_id: u32, (x, y, w, h): (f64, f64, f64, f64), points: Option<Vec<Point>>) -> Prediction {
        Prediction {
            detection: ObjectDetectionPrediction {
                x,
                y,
                width: w,
                height: h,
                confidence: 0.9,
                class: format!("class{class_id}"),
                class_id,
                detection_id: String::new(),
            },
            points,
            rle: None,
            keypoints: None,
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

    fn detections(predictions: Vec<Prediction>) -> InferenceResponse {
        InferenceResponse::Detections(DetectionsResponse {
            visualization: None,
            inference_id: String::new(),
            time: 0.0,
            image: ImageSize {
                width: 200,
                height: 100,
            },
            predictions,
        })
    }

    #[test]
    fn box_edges_take_the_class_colour_and_masks_tint_inside() {
        let square = vec![
            Point { x: 60.0, y: 30.0 },
            Point { x: 100.0, y: 30.0 },
            Point { x: 100.0, y: 70.0 },
            Point { x: 60.0, y: 70.0 },
        ];
        let response = detections(vec![prediction(1, (80.0, 50.0, 40.0, 40.0), Some(square))]);
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
        let response = detections(vec![prediction(0, (100.0, 60.0, 60.0, 40.0), None)]);
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
        let line = vec![
            Point { x: 5.0, y: 5.0 },
            Point { x: 5.0, y: 5.0 },
            Point { x: 9.0, y: 5.0 },
        ];
        let far = vec![
            Point { x: -1e9, y: 1e9 },
            Point { x: f64::NAN, y: 3.0 },
            Point { x: 1e12, y: -4.0 },
        ];
        let response = detections(vec![
            prediction(2, (5.0, 5.0, 0.0, 0.0), Some(line)),
            prediction(3, (-50.0, 500.0, 10.0, 10.0), Some(far)),
        ]);
        let style = Style {
            labels: true,
            stroke: 100,
        };
        annotate(grey(200, 100, 200), &response, style, &[]).unwrap();
    }
}
