//! Colours: one per class id, and a text colour that reads on a given background.

use image::Rgb;

/// supervision's default palette (what Roboflow's annotators use), by class id modulo its length.
const PALETTE: [[u8; 3]; 21] = [
    [0xA3, 0x51, 0xFB],
    [0xFF, 0x40, 0x40],
    [0xFF, 0xA1, 0xA0],
    [0xFF, 0x76, 0x33],
    [0xFF, 0xB6, 0x33],
    [0xD1, 0xD4, 0x35],
    [0x4C, 0xFB, 0x12],
    [0x94, 0xCF, 0x1A],
    [0x40, 0xDE, 0x8A],
    [0x1B, 0x96, 0x40],
    [0x00, 0xD6, 0xC1],
    [0x2E, 0x9C, 0xAA],
    [0x00, 0xC4, 0xFF],
    [0x36, 0x47, 0x97],
    [0x66, 0x75, 0xFF],
    [0x00, 0x19, 0xEF],
    [0x86, 0x3A, 0xFF],
    [0x53, 0x00, 0x87],
    [0xCD, 0x3A, 0xFF],
    [0xFF, 0x97, 0xCA],
    [0xFF, 0x39, 0xC9],
];

/// The colour of class `class_id`.
pub fn class_color(class_id: u32) -> Rgb<u8> {
    Rgb(PALETTE[class_id as usize % PALETTE.len()])
}

/// Relative luminance (Rec. 709 weights on sRGB values), 0..=1.
pub fn luminance(c: Rgb<u8>) -> f32 {
    let [r, g, b] = c.0.map(|v| f32::from(v) / 255.0);
    0.2126 * r + 0.7152 * g + 0.0722 * b
}

/// Black on light backgrounds, white on dark ones.
pub fn text_color_on(background: Rgb<u8>) -> Rgb<u8> {
    if luminance(background) > 0.5 {
        Rgb([0, 0, 0])
    } else {
        Rgb([255, 255, 255])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_reads_on_its_background() {
        assert_eq!(text_color_on(Rgb([255, 255, 0])), Rgb([0, 0, 0]));
        assert_eq!(text_color_on(Rgb([0, 25, 239])), Rgb([255, 255, 255]));
        // Neighbouring classes get different colours; ids wrap around the palette.
        assert_ne!(class_color(0), class_color(1));
        assert_eq!(class_color(0), class_color(PALETTE.len() as u32));
    }
}
