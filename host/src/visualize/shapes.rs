//! Strokes, masks and labels on an RGB canvas, rasterised by imageproc.

use std::sync::LazyLock;

use ab_glyph::{FontRef, PxScale};
use image::{GrayImage, Luma, Rgb, RgbImage};
use imageproc::drawing::{
    draw_filled_circle_mut, draw_filled_rect_mut, draw_line_segment_mut, draw_polygon_mut, draw_text_mut, text_size,
};
use imageproc::point::Point;
use imageproc::rect::Rect;

use super::palette::text_color_on;

/// DejaVu Sans, embedded in the binary.
static FONT: LazyLock<FontRef<'static>> = LazyLock::new(|| {
    FontRef::try_from_slice(dejavu::sans::regular()).expect("the embedded DejaVu Sans is a valid font")
});

/// A binary mask placed on the canvas with its top-left corner at (`x`, `y`).
pub struct Mask {
    pub x: i64,
    pub y: i64,
    pub pixels: GrayImage,
}

/// The outline of the axis-aligned box (`x0`, `y0`)–(`x1`, `y1`), `stroke` pixels wide,
/// centred on the box's edges.
pub fn stroke_box(canvas: &mut RgbImage, (x0, y0, x1, y1): (f64, f64, f64, f64), stroke: u32, color: Rgb<u8>) {
    let half = i64::from(stroke / 2);
    let (left, top) = (x0.round() as i64 - half, y0.round() as i64 - half);
    let (right, bottom) = (x1.round() as i64 - half, y1.round() as i64 - half);
    let width = (right - left).max(0) as u32 + stroke;
    let height = (bottom - top).max(0) as u32 + stroke;
    let bars = [
        (left, top, width, stroke),
        (left, bottom, width, stroke),
        (left, top, stroke, height),
        (right, top, stroke, height),
    ];
    for (x, y, w, h) in bars {
        if let Some(rect) = clipped(canvas, x, y, w, h) {
            draw_filled_rect_mut(canvas, rect, color);
        }
    }
}

/// A straight line `stroke` pixels wide with round ends.
pub fn stroke_line(canvas: &mut RgbImage, from: (f64, f64), to: (f64, f64), stroke: u32, color: Rgb<u8>) {
    let (dx, dy) = (to.0 - from.0, to.1 - from.1);
    let length = dx.hypot(dy);
    if stroke <= 1 || length < 1.0 {
        draw_line_segment_mut(
            canvas,
            (from.0 as f32, from.1 as f32),
            (to.0 as f32, to.1 as f32),
            color,
        );
    } else {
        // The line as a quadrilateral: its ends moved half a stroke along the normal.
        let (nx, ny) = (
            -dy / length * f64::from(stroke) / 2.0,
            dx / length * f64::from(stroke) / 2.0,
        );
        let corners = [
            (from.0 + nx, from.1 + ny),
            (to.0 + nx, to.1 + ny),
            (to.0 - nx, to.1 - ny),
            (from.0 - nx, from.1 - ny),
        ];
        fill_polygon(canvas, &corners, color);
    }
    let radius = (stroke / 2) as i32;
    for (x, y) in [from, to] {
        draw_filled_circle_mut(canvas, (x.round() as i32, y.round() as i32), radius, color);
    }
}

/// A filled dot of `radius` pixels.
pub fn dot(canvas: &mut RgbImage, (x, y): (f64, f64), radius: u32, color: Rgb<u8>) {
    draw_filled_circle_mut(canvas, (x.round() as i32, y.round() as i32), radius as i32, color);
}

/// The polygon `points` (image pixels) as a mask over its bounding box, clipped to the canvas;
/// `None` when it has no area there.
pub fn polygon_mask(points: &[(f64, f64)], width: u32, height: u32) -> Option<Mask> {
    let finite = points.iter().filter(|(x, y)| x.is_finite() && y.is_finite());
    let (mut x0, mut y0, mut x1, mut y1) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
    for &(x, y) in finite.clone() {
        (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
    }
    let left = x0.floor().max(0.0) as i64;
    let top = y0.floor().max(0.0) as i64;
    let right = x1.ceil().min(f64::from(width) - 1.0) as i64;
    let bottom = y1.ceil().min(f64::from(height) - 1.0) as i64;
    if right < left || bottom < top {
        return None;
    }
    let mut pixels = GrayImage::new((right - left + 1) as u32, (bottom - top + 1) as u32);
    let local: Vec<(f64, f64)> = finite.map(|&(x, y)| (x - left as f64, y - top as f64)).collect();
    fill_polygon(&mut pixels, &local, Luma([255]));
    Some(Mask {
        x: left,
        y: top,
        pixels,
    })
}

/// A mask covering the whole canvas.
pub fn full_mask(pixels: GrayImage) -> Mask {
    Mask { x: 0, y: 0, pixels }
}

/// Tints the canvas under `mask` with `color` at `alpha` (0..=1).
pub fn tint(canvas: &mut RgbImage, mask: &Mask, color: Rgb<u8>, alpha: f32) {
    let (cw, ch) = (i64::from(canvas.width()), i64::from(canvas.height()));
    for (mx, my, value) in mask.pixels.enumerate_pixels() {
        let (x, y) = (mask.x + i64::from(mx), mask.y + i64::from(my));
        if value.0[0] == 0 || !(0..cw).contains(&x) || !(0..ch).contains(&y) {
            continue;
        }
        let pixel = canvas.get_pixel_mut(x as u32, y as u32);
        for (p, c) in pixel.0.iter_mut().zip(color.0) {
            *p = (f32::from(*p) * (1.0 - alpha) + f32::from(c) * alpha).round() as u8;
        }
    }
}

/// Text size in pixels for a canvas: readable on small pictures, not huge on large ones.
pub fn text_scale(width: u32, height: u32) -> f32 {
    (width.min(height) as f32 / 32.0).clamp(11.0, 40.0)
}

/// `text` on a filled box of `background`, sitting on top of (`x`, `y`) when there is room
/// above, else just below it; the text is black or white, whichever reads on `background`.
/// Returns the box's height.
pub fn label(canvas: &mut RgbImage, text: &str, (x, y): (i64, i64), scale: f32, background: Rgb<u8>) -> i64 {
    let font = &*FONT;
    let (text_w, text_h) = text_size(PxScale::from(scale), font, text);
    let pad = (scale / 4.0).ceil() as u32;
    let (box_w, box_h) = (text_w + 2 * pad, text_h + 2 * pad);
    let top = if y - i64::from(box_h) >= 0 {
        y - i64::from(box_h)
    } else {
        y.max(0)
    };
    // Keep the label on the canvas horizontally when it fits.
    let left = x.min(i64::from(canvas.width()) - i64::from(box_w)).max(0);
    if let Some(rect) = clipped(canvas, left, top, box_w, box_h) {
        draw_filled_rect_mut(canvas, rect, background);
    }
    draw_text_mut(
        canvas,
        text_color_on(background),
        (left + i64::from(pad)) as i32,
        (top + i64::from(pad)) as i32,
        PxScale::from(scale),
        font,
        text,
    );
    i64::from(box_h)
}

/// Fills a polygon given in canvas pixels (rounded to whole pixels). Degenerate polygons
/// (fewer than three distinct corners) draw nothing.
fn fill_polygon<C>(canvas: &mut C, points: &[(f64, f64)], color: C::Pixel)
where
    C: imageproc::drawing::Canvas,
{
    let mut corners: Vec<Point<i32>> = Vec::with_capacity(points.len());
    for &(x, y) in points {
        let p = Point::new(x.round() as i32, y.round() as i32);
        if corners.last() != Some(&p) {
            corners.push(p);
        }
    }
    while corners.len() > 1 && corners.first() == corners.last() {
        corners.pop();
    }
    if corners.len() < 3 {
        return;
    }
    // imageproc's scanline fill indexes its crossings in pairs; a pathological outline must
    // cost its mask, never the request.
    let filled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        draw_polygon_mut(canvas, &corners, color);
    }));
    if filled.is_err() {
        tracing::warn!(
            corners = corners.len(),
            "a polygon could not be filled; its mask is left out"
        );
    }
}

/// The part of the `w`×`h` rectangle at (`x`, `y`) that lies on the canvas.
fn clipped(canvas: &RgbImage, x: i64, y: i64, w: u32, h: u32) -> Option<Rect> {
    let (cw, ch) = (i64::from(canvas.width()), i64::from(canvas.height()));
    let (left, top) = (x.max(0), y.max(0));
    let (right, bottom) = ((x + i64::from(w)).min(cw), (y + i64::from(h)).min(ch));
    (right > left && bottom > top)
        .then(|| Rect::at(left as i32, top as i32).of_size((right - left) as u32, (bottom - top) as u32))
}
