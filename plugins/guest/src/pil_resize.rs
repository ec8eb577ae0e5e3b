//! Bilinear resampling of interleaved u8 images, bit-exact with Pillow's
//! `Image.resize(size, Image.BILINEAR)` (libImaging `Resample.c`), which torchvision's
//! `Resize` runs on PIL images and so Ultralytics' classification pre-processing.
//!
//! Unlike OpenCV's `INTER_LINEAR`, Pillow antialiases: the triangle filter's support
//! grows with the down-scale factor, so every source pixel under a destination pixel
//! counts. The arithmetic reproduced here:
//!
//! - per axis, `scale = in / out`, `filterscale = max(scale, 1)`, `support = filterscale`;
//!   destination `i` is centred at `(i + 0.5) * scale` and reads source pixels
//!   `xmin = (int)(center - support + 0.5)` (at least 0) up to
//!   `(int)(center + support + 0.5)` (at most `in`), weighted
//!   `tri((x - center + 0.5) / filterscale)` and normalised to sum 1 (all in f64);
//! - weights become fixed point with `PRECISION_BITS = 22`: `(int)(0.5 + w * 2^22)`;
//! - the horizontal pass runs first, then the vertical pass on its u8 result, except that
//!   Pillow 13 starts with the vertical pass when the image shrinks vertically and
//!   `sh - dh > 2 * (sw - dw)` (`vertical_first`; Pillow 12 and older always start with the
//!   horizontal pass, which gives different bytes for such sizes); each sum starts at
//!   `2^21` (rounding) and is shifted right by 22 and clamped to `0..=255`;
//! - an axis whose size does not change is not resampled.

use crate::resize::Region;

/// `PRECISION_BITS` of Pillow's 8-bit resampling: 8 bits for the result, 2 for overflow.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow's `bilinear_filter` (a triangle of half-width 1).
fn triangle(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

/// Fixed-point filter taps of one axis: for each destination index, the first source
/// index and the weights of the `count` source pixels from there.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Taps {
    /// `(first source index, count)` per destination index.
    bounds: Vec<(usize, usize)>,
    /// `ksize` weights per destination index (the first `count` are used).
    weights: Vec<i32>,
    /// Weights stored per destination index.
    ksize: usize,
}

impl Taps {
    /// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for an `input -> output` resize
    /// (no box: the whole axis).
    fn new(input: u32, output: u32) -> Self {
        let scale = f64::from(input) / f64::from(output);
        let filterscale = scale.max(1.0);
        let support = filterscale; // the triangle's support is 1
        let ksize = support.ceil() as usize * 2 + 1;
        let ss = 1.0 / filterscale;
        let mut bounds = Vec::with_capacity(output as usize);
        let mut weights = vec![0i32; output as usize * ksize];
        let mut k = vec![0f64; ksize];
        for (xx, w) in weights.chunks_exact_mut(ksize).enumerate() {
            let center = (xx as f64 + 0.5) * scale;
            // C casts truncate toward zero, as `as` does.
            let xmin = ((center - support + 0.5) as i64).max(0);
            let xmax = ((center + support + 0.5) as i64).min(i64::from(input));
            let count = (xmax - xmin).clamp(0, ksize as i64) as usize;
            let mut ww = 0.0;
            for (x, slot) in k[..count].iter_mut().enumerate() {
                let v = triangle(((x as i64 + xmin) as f64 - center + 0.5) * ss);
                *slot = v;
                ww += v;
            }
            for (slot, v) in w.iter_mut().zip(&k[..count]) {
                let v = if ww != 0.0 { v / ww } else { *v };
                // The triangle is never negative, so Pillow's `0.5 + w * 2^22` branch applies.
                *slot = (0.5 + v * f64::from(1u32 << PRECISION_BITS)) as i32;
            }
            bounds.push((xmin as usize, count));
        }
        Self { bounds, weights, ksize }
    }

    /// Source range `(first, count)` and weights of destination index `i`.
    fn at(&self, i: usize) -> (usize, &[i32]) {
        let (first, count) = self.bounds[i];
        (first, &self.weights[i * self.ksize..][..count])
    }
}

/// Pillow's `clip8`: drop the fraction bits (arithmetic shift) and clamp to a byte.
#[inline]
fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// The rounding half added to every sum.
const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// Horizontal pass over one source row for destination columns `cols`, `CN` channels.
fn hpass<const CN: usize>(row: &[u8], taps: &Taps, cols: std::ops::Range<usize>, out: &mut [u8]) {
    for (xx, o) in cols.zip(out.chunks_exact_mut(CN)) {
        let (first, w) = taps.at(xx);
        let mut acc = [HALF; CN];
        for (px, &k) in row[first * CN..].chunks_exact(CN).zip(w) {
            for c in 0..CN {
                acc[c] += i32::from(px[c]) * k;
            }
        }
        for c in 0..CN {
            o[c] = clip8(acc[c]);
        }
    }
}

/// Horizontal pass for any channel count.
fn hpass_dyn(row: &[u8], cn: usize, taps: &Taps, cols: std::ops::Range<usize>, out: &mut [u8]) {
    let mut acc = vec![0i32; cn];
    for (xx, o) in cols.zip(out.chunks_exact_mut(cn)) {
        let (first, w) = taps.at(xx);
        acc.fill(HALF);
        for (px, &k) in row[first * cn..].chunks_exact(cn).zip(w) {
            for (a, &p) in acc.iter_mut().zip(px) {
                *a += i32::from(p) * k;
            }
        }
        for (o, &a) in o.iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
}

/// Produces the rows of a region of a Pillow bilinear `dw x dh` resize of an interleaved
/// u8 image, one at a time; only the region's pixels (and the source rows they need) are
/// computed, which gives the same bytes as resizing everything and cropping.
pub(crate) struct PilResampler<'a> {
    src: &'a [u8],
    sw: u32,
    sh: u32,
    cn: usize,
    dw: u32,
    dh: u32,
    region: Region,
}

impl<'a> PilResampler<'a> {
    /// `src` is `sw x sh` with `cn` channels; `region` must lie inside `dw x dh`.
    pub(crate) fn new(src: &'a [u8], (sw, sh): (u32, u32), cn: usize, (dw, dh): (u32, u32), region: Region) -> Self {
        debug_assert_eq!(src.len(), sw as usize * sh as usize * cn);
        debug_assert!(region.x + region.w <= dw && region.y + region.h <= dh);
        Self {
            src,
            sw,
            sh,
            cn,
            dw,
            dh,
            region,
        }
    }

    /// Calls `f(r, row)` for each row `r` of the region (`region.w * cn` bytes), top to bottom.
    pub(crate) fn for_each_row(self, mut f: impl FnMut(usize, &[u8])) {
        let Region { x, y, w, h } = self.region;
        let (x, y, w, h) = (x as usize, y as usize, w as usize, h as usize);
        if w == 0 || h == 0 {
            return;
        }
        let cn = self.cn;
        let stride = self.sw as usize * cn;
        let line = w * cn;
        let htaps = (self.dw != self.sw).then(|| Taps::new(self.sw, self.dw));
        let vtaps = (self.dh != self.sh).then(|| Taps::new(self.sh, self.dh));
        let hpass_into = |row: &[u8], out: &mut [u8]| match &htaps {
            Some(t) if cn == 3 => hpass::<3>(row, t, x..x + w, out),
            Some(t) => hpass_dyn(row, cn, t, x..x + w, out),
            None => out.copy_from_slice(&row[x * cn..][..line]),
        };
        let src_row = |sy: usize| &self.src[sy * stride..][..stride];
        let Some(vt) = vtaps else {
            let mut out = vec![0u8; line];
            for r in 0..h {
                hpass_into(src_row(y + r), &mut out);
                f(r, &out);
            }
            return;
        };
        let mut acc = vec![0i32; stride.max(line)];
        let mut out = vec![0u8; line];
        if vertical_first(self.sw, self.sh, self.dw, self.dh) {
            // Vertical pass over the source columns the region's horizontal taps read, one
            // output row at a time, then the horizontal pass of that row.
            let cols = match &htaps {
                Some(t) => {
                    let (first, _) = t.bounds[x];
                    let (last, count) = t.bounds[x + w - 1];
                    first * cn..(last + count) * cn
                }
                None => x * cn..(x + w) * cn,
            };
            let mut row = vec![0u8; stride];
            for r in 0..h {
                let (first, weights) = vt.at(y + r);
                vpass(
                    |i| &src_row(first + i)[cols.clone()],
                    weights,
                    &mut acc[cols.clone()],
                    &mut row[cols.clone()],
                );
                hpass_into(&row, &mut out);
                f(r, &out);
            }
            return;
        }
        // Horizontal pass of the source rows the region needs (Pillow's
        // `ybox_first..ybox_last`, restricted to the region), then the vertical pass.
        let (first_row, _) = vt.bounds[y];
        let (last, count) = vt.bounds[y + h - 1];
        let rows = first_row..last + count;
        let mut inter = vec![0u8; rows.len() * line];
        for (sy, o) in rows.zip(inter.chunks_exact_mut(line)) {
            hpass_into(src_row(sy), o);
        }
        for r in 0..h {
            let (first, weights) = vt.at(y + r);
            let at = first - first_row;
            vpass(
                |i| &inter[(at + i) * line..][..line],
                weights,
                &mut acc[..line],
                &mut out,
            );
            f(r, &out);
        }
    }
}

/// Whether Pillow 13 runs the vertical pass first: when the image loses rows, more than
/// twice as many as it loses columns (always when it gains columns). Pillow 12 and older
/// always start with the horizontal pass. Only matters when both axes are resampled. The
/// rule was found by comparing both orders with Pillow 13.0.0 on over a thousand size
/// pairs, including both sides of the boundary; `tests/data/gen_pil.py` keeps a few.
fn vertical_first(sw: u32, sh: u32, dw: u32, dh: u32) -> bool {
    dh < sh && i64::from(sh) - i64::from(dh) > 2 * (i64::from(sw) - i64::from(dw))
}

/// Vertical pass: `out = clip8(HALF + sum_i rows(i) * weights[i])`, element-wise.
fn vpass<'r>(rows: impl Fn(usize) -> &'r [u8], weights: &[i32], acc: &mut [i32], out: &mut [u8]) {
    acc.fill(HALF);
    for (i, &k) in weights.iter().enumerate() {
        for (a, &p) in acc.iter_mut().zip(rows(i)) {
            *a += i32::from(p) * k;
        }
    }
    for (o, &a) in out.iter_mut().zip(acc.iter()) {
        *o = clip8(a);
    }
}

/// Resizes an interleaved `sw x sh` image with `channels` channels to `dw x dh` exactly
/// as Pillow's `Image.resize((dw, dh), Image.BILINEAR)` does. All sizes must be non-zero
/// and `src.len()` must be `sw * sh * channels`.
pub fn resize_pil_bilinear_u8(src: &[u8], sw: u32, sh: u32, channels: usize, dw: u32, dh: u32) -> Vec<u8> {
    assert!(sw > 0 && sh > 0 && dw > 0 && dh > 0 && channels > 0, "empty resize");
    assert_eq!(src.len(), sw as usize * sh as usize * channels, "source size");
    let line = dw as usize * channels;
    let mut out = vec![0u8; line * dh as usize];
    let region = Region {
        x: 0,
        y: 0,
        w: dw,
        h: dh,
    };
    PilResampler::new(src, (sw, sh), channels, (dw, dh), region)
        .for_each_row(|r, row| out[r * line..][..line].copy_from_slice(row));
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::npy;

    fn data(name: &str) -> npy::Array<u8> {
        npy::read_u8(&format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR")))
    }

    /// The "formula" test image of `tests/data/gen_pil.py`:
    /// channel c of (x, y) is `(x*x + 3*y*y + x*y*(c+1) + 17*c) mod 256`.
    pub(crate) fn formula_image(w: u32, h: u32) -> Vec<u8> {
        let mut out = Vec::with_capacity((w * h * 3) as usize);
        for y in 0..u64::from(h) {
            for x in 0..u64::from(w) {
                for c in 0..3u64 {
                    out.push(((x * x + 3 * y * y + x * y * (c + 1) + 17 * c) % 256) as u8);
                }
            }
        }
        out
    }

    /// (differing bytes, max |diff|).
    fn compare(got: &[u8], want: &[u8]) -> (usize, u8) {
        assert_eq!(got.len(), want.len());
        got.iter().zip(want).fold((0, 0), |(n, m), (&a, &b)| {
            (n + usize::from(a != b), m.max(a.abs_diff(b)))
        })
    }

    #[test]
    fn matches_pillow_on_random_image() {
        let src = data("rand_97x61x3.npy");
        for (w, h) in [
            (40, 25),
            (23, 13),
            (120, 75),
            (97, 30),
            (50, 61),
            (5, 3),
            (320, 20),
            (90, 20),
            (80, 27),
            (80, 26),
        ] {
            let want = data(&format!("pil_97x61x3_to_{w}x{h}.npy"));
            assert_eq!(want.shape, [h as usize, w as usize, 3]);
            let got = resize_pil_bilinear_u8(&src.data, 97, 61, 3, w, h);
            assert_eq!(compare(&got, &want.data), (0, 0), "97x61 -> {w}x{h}");
        }
    }

    #[test]
    fn matches_pillow_on_strong_downscale() {
        // 400x300 -> 36x27: about 11x, 23 weights per destination pixel.
        let src = formula_image(400, 300);
        let want = data("pil_formula_400x300_to_36x27.npy");
        let got = resize_pil_bilinear_u8(&src, 400, 300, 3, 36, 27);
        assert_eq!(compare(&got, &want.data), (0, 0));
    }

    #[test]
    fn taps_follow_pillow() {
        // Same size: identity taps.
        let t = Taps::new(5, 5);
        assert_eq!(t.at(0), (0, &[1 << 22, 0][..]));
        assert_eq!(t.at(4), (4, &[1 << 22][..]));
        // 2x down: support 2, the first pixel is centred at 1.0 and reads sources 0..3 at
        // tri(-0.25), tri(0.25), tri(0.75) = 0.75, 0.75, 0.25, normalised by 1.75.
        let t = Taps::new(4, 2);
        assert_eq!(t.ksize, 5);
        assert_eq!(t.at(0), (0, &[1_797_559, 1_797_559, 599_186][..]));
        // Up-scaling keeps support 1: two taps.
        let t = Taps::new(2, 4);
        assert_eq!(t.at(1).0, 0);
        assert_eq!(t.at(1).1.len(), 2);
    }

    #[test]
    fn pass_order() {
        assert!(!vertical_first(97, 61, 40, 25));
        assert!(vertical_first(97, 61, 320, 20)); // wider and shorter
        assert!(!vertical_first(97, 61, 320, 75)); // both larger
        assert!(!vertical_first(97, 61, 80, 27)); // 34 rows vs 17 columns: not more than twice
        assert!(vertical_first(97, 61, 80, 26));
    }

    #[test]
    fn region_rows_equal_full_resize_rows() {
        let src = formula_image(53, 41);
        // Horizontal pass first, vertical first, up-scaling, one axis only.
        for (dw, dh) in [(19, 29), (50, 9), (70, 50), (53, 20), (20, 41)] {
            let full = resize_pil_bilinear_u8(&src, 53, 41, 3, dw, dh);
            let region = Region {
                x: 3,
                y: 2,
                w: dw - 7,
                h: dh - 5,
            };
            let mut rows = 0;
            PilResampler::new(&src, (53, 41), 3, (dw, dh), region).for_each_row(|r, row| {
                let at = ((region.y as usize + r) * dw as usize + region.x as usize) * 3;
                assert_eq!(row, &full[at..at + region.w as usize * 3], "{dw}x{dh} row {r}");
                rows += 1;
            });
            assert_eq!(rows, region.h as usize);
        }
        let (dw, dh) = (19, 29);
        let full = resize_pil_bilinear_u8(&src, 53, 41, 3, dw, dh);
        // Other channel counts take the generic path.
        let gray: Vec<u8> = src.iter().step_by(3).copied().collect();
        let g = resize_pil_bilinear_u8(&gray, 53, 41, 1, dw, dh);
        let c0: Vec<u8> = full.iter().step_by(3).copied().collect();
        assert_eq!(g, c0);
    }

    /// `preprocess_into` with `Resize::CenterCrop` to `s x s`, back to bytes (HWC).
    fn center_crop(rgb: &[u8], w: u32, h: u32, s: u32) -> Vec<u8> {
        let img = crate::ImageRef::new(w, h, rgb).unwrap();
        let mut out = vec![0f32; (s * s * 3) as usize];
        crate::preprocess_into(
            &img,
            crate::Resize::CenterCrop,
            s,
            s,
            [0.0; 3],
            [1.0; 3],
            crate::Layout::Nhwc,
            &mut out,
        )
        .unwrap();
        // v / 255 is exact to invert.
        out.iter().map(|v| (v * 255.0).round() as u8).collect()
    }

    #[test]
    fn center_crop_matches_torchvision_on_pil() {
        // Resize(s) + CenterCrop(s) on a PIL image, as gen_pil.py runs them.
        let src = data("rand_97x61x3.npy");
        let cases: [(&[u8], u32, u32, u32, &str); 5] = [
            (&src.data, 97, 61, 32, "pil_crop_97x61x3_s32.npy"), // 50x32, crop x 9
            (&src.data, 97, 61, 80, "pil_crop_97x61x3_s80.npy"), // up-scaled to 127x80
            (
                &formula_image(400, 300),
                400,
                300,
                64,
                "pil_crop_formula_400x300_s64.npy",
            ),
            (
                &formula_image(300, 400),
                300,
                400,
                48,
                "pil_crop_formula_300x400_s48.npy",
            ),
            // Tall: 40x133, vertical pass first.
            (
                &formula_image(120, 400),
                120,
                400,
                40,
                "pil_crop_formula_120x400_s40.npy",
            ),
        ];
        for (rgb, w, h, s, file) in cases {
            let want = data(file);
            assert_eq!(want.shape, [s as usize, s as usize, 3]);
            let got = center_crop(rgb, w, h, s);
            let (differ, max) = compare(&got, &want.data);
            eprintln!("{file}: {differ} of {} bytes differ, max diff {max}", got.len());
            assert_eq!((differ, max), (0, 0), "{file}");
        }
    }

    #[test]
    fn identity_and_constant_images() {
        let src = formula_image(7, 5);
        assert_eq!(resize_pil_bilinear_u8(&src, 7, 5, 3, 7, 5), src);
        let flat = vec![200u8; 31 * 17 * 3];
        for (w, h) in [(3, 2), (62, 34), (31, 1), (1, 17)] {
            assert!(resize_pil_bilinear_u8(&flat, 31, 17, 3, w, h).iter().all(|&v| v == 200));
        }
    }
}
