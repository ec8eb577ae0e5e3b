//! Bilinear resampling of interleaved u8 images, bit-exact with OpenCV 5's
//! `cv2.resize(src, (dw, dh), interpolation=cv2.INTER_LINEAR)`.
//!
//! Ultralytics letterboxes with that call, so the model input only matches the
//! reference byte for byte if we reproduce OpenCV's fixed-point arithmetic:
//!
//! - source coordinate `(d + 0.5) * (src / dst) - 0.5` (computed in f64, stored as f32),
//!   split into an integer index and a fraction `f`;
//! - weights `1 - f` and `f` rounded (half to even) to 11-bit fixed point (x 2048);
//! - horizontally, at the left edge the index is clamped to 0 with `f = 0`, at the right
//!   edge to `w - 1` with `f = 0`; vertically only the row indices are clamped;
//! - horizontal pass: `i32` sums `p0 * a0 + p1 * a1`;
//! - vertical pass as OpenCV's SIMD kernel (`VResizeLinearVec_32s8u`) computes it, which
//!   is what the shipped builds use for every pixel: both rows shifted right by 4,
//!   multiplied by the 16-bit weights keeping the high 16 bits, added, then `(v + 2) >> 2`.
//!   This is not the same as the scalar `(s0 * b0 + s1 * b1 + 2^21) >> 22`, which differs
//!   by one on about 10% of pixels.
//!
//! cv2 also has special cases: equal sizes are a copy, and an exact 2x down-scale runs
//! as INTER_AREA. The copy and the area path for 1, 3 and 4 channels (`(sum + 2) >> 2`)
//! give the same bytes as the general formula; for other channel counts the area path
//! rounds `sum / 4` half to even, which is reproduced too.

/// Weight scale of OpenCV's `INTER_RESIZE_COEF_SCALE`.
const COEF_SCALE: f32 = 2048.0;

/// One destination coordinate along an axis: two source indices and their fixed-point weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tap {
    i0: u32,
    i1: u32,
    w0: i32,
    w1: i32,
}

/// `saturate_cast<short>(v * 2048)`: `cvRound`, i.e. half to even; `v` is in `[0, 1]`.
fn fixed(v: f32) -> i32 {
    (v * COEF_SCALE).round_ties_even() as i32
}

/// Taps for destination coordinates `first..first + count` of a `src -> dst` resize.
/// `horizontal` selects OpenCV's edge handling for columns (weights moved to the edge
/// pixel) versus rows (indices clamped, weights kept).
fn axis_taps(src: u32, dst: u32, first: u32, count: u32, horizontal: bool) -> Vec<Tap> {
    // OpenCV stores inv_scale = dst / src and uses 1 / inv_scale; keep that rounding.
    let scale = 1.0 / (f64::from(dst) / f64::from(src));
    let last = i64::from(src) - 1;
    (first..first + count)
        .map(|d| {
            let pos = ((f64::from(d) + 0.5) * scale - 0.5) as f32;
            let floor = pos.floor();
            let mut frac = pos - floor;
            let mut i = floor as i64;
            if horizontal {
                if i < 0 {
                    i = 0;
                    frac = 0.0;
                }
                if i >= last {
                    i = last;
                    frac = 0.0;
                }
            }
            Tap {
                i0: i.clamp(0, last) as u32,
                i1: (i + 1).clamp(0, last) as u32,
                w0: fixed(1.0 - frac),
                w1: fixed(frac),
            }
        })
        .collect()
}

/// Horizontal pass for one source row with `CN` interleaved channels.
fn hpass<const CN: usize>(row: &[u8], taps: &[Tap], out: &mut [i32]) {
    for (t, o) in taps.iter().zip(out.chunks_exact_mut(CN)) {
        let a = &row[t.i0 as usize * CN..][..CN];
        let b = &row[t.i1 as usize * CN..][..CN];
        for c in 0..CN {
            o[c] = i32::from(a[c]) * t.w0 + i32::from(b[c]) * t.w1;
        }
    }
}

/// Horizontal pass for a channel count without a specialised copy.
fn hpass_dyn(row: &[u8], cn: usize, taps: &[Tap], out: &mut [i32]) {
    for (t, o) in taps.iter().zip(out.chunks_exact_mut(cn)) {
        let a = &row[t.i0 as usize * cn..][..cn];
        let b = &row[t.i1 as usize * cn..][..cn];
        for c in 0..cn {
            o[c] = i32::from(a[c]) * t.w0 + i32::from(b[c]) * t.w1;
        }
    }
}

/// OpenCV's SIMD vertical blend of two horizontal sums (see the module docs).
#[inline]
fn vmix(s0: i32, s1: i32, b0: i32, b1: i32) -> u8 {
    // v_pack saturates to i16; v_mul_hi keeps the high half of the 32-bit product.
    let t0 = (s0 >> 4).clamp(i32::from(i16::MIN), i32::from(i16::MAX));
    let t1 = (s1 >> 4).clamp(i32::from(i16::MIN), i32::from(i16::MAX));
    let v = ((t0 * b0) >> 16) + ((t1 * b1) >> 16);
    // v_rshr_pack_u<2>: rounding shift, saturated to u8.
    ((v + 2) >> 2).clamp(0, 255) as u8
}

/// A rectangle of the destination image: columns `x..x + w`, rows `y..y + h`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Region {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

/// Produces the rows of a region of a `dw x dh` resize of an interleaved u8 image, one at a
/// time, so callers can write them straight into a tensor without a full intermediate image.
/// A region smaller than the destination (center crop) costs only its own pixels.
pub(crate) struct Resampler<'a> {
    src: &'a [u8],
    cn: usize,
    row_len: usize,
    xt: Vec<Tap>,
    yt: Vec<Tap>,
    // Horizontal sums of two source rows; indices of the rows they hold.
    h0: Vec<i32>,
    h1: Vec<i32>,
    k0: Option<u32>,
    k1: Option<u32>,
    row: Vec<u8>,
    /// cv2's scalar INTER_AREA rounding applies (exact 2x down-scale, see the module docs).
    area_half_even: bool,
}

impl<'a> Resampler<'a> {
    /// `src` is `sw x sh` with `cn` interleaved channels; all sizes must be non-zero, the
    /// region inside `dw x dh`, and `src` at least `sw * sh * cn` long (checked by callers).
    pub(crate) fn new(src: &'a [u8], (sw, sh): (u32, u32), cn: usize, (dw, dh): (u32, u32), region: Region) -> Self {
        debug_assert!(sw > 0 && sh > 0 && dw > 0 && dh > 0 && cn > 0);
        debug_assert!(region.x + region.w <= dw && region.y + region.h <= dh);
        debug_assert!(src.len() >= sw as usize * sh as usize * cn);
        let n = region.w as usize * cn;
        Self {
            src,
            cn,
            row_len: sw as usize * cn,
            xt: axis_taps(sw, dw, region.x, region.w, true),
            yt: axis_taps(sh, dh, region.y, region.h, false),
            h0: vec![0; n],
            h1: vec![0; n],
            k0: None,
            k1: None,
            row: vec![0; n],
            area_half_even: sw == 2 * dw && sh == 2 * dh && !matches!(cn, 1 | 3 | 4),
        }
    }

    fn hrow(&self, y: u32, out: &mut [i32]) {
        let row = &self.src[y as usize * self.row_len..][..self.row_len];
        match self.cn {
            1 => hpass::<1>(row, &self.xt, out),
            3 => hpass::<3>(row, &self.xt, out),
            4 => hpass::<4>(row, &self.xt, out),
            cn => hpass_dyn(row, cn, &self.xt, out),
        }
    }

    /// Calls `f(r, row)` for each region row `r` (0-based) with its `w * cn` bytes.
    pub(crate) fn for_each_row(mut self, mut f: impl FnMut(usize, &[u8])) {
        let yt = std::mem::take(&mut self.yt);
        for (r, t) in yt.iter().enumerate() {
            // Rows advance monotonically, so the previous second row is often the new first.
            if self.k0 != Some(t.i0) {
                if self.k1 == Some(t.i0) {
                    std::mem::swap(&mut self.h0, &mut self.h1);
                    std::mem::swap(&mut self.k0, &mut self.k1);
                } else {
                    let mut h = std::mem::take(&mut self.h0);
                    self.hrow(t.i0, &mut h);
                    self.h0 = h;
                    self.k0 = Some(t.i0);
                }
            }
            if t.i1 != t.i0 && self.k1 != Some(t.i1) {
                let mut h = std::mem::take(&mut self.h1);
                self.hrow(t.i1, &mut h);
                self.h1 = h;
                self.k1 = Some(t.i1);
            }
            let s1 = if t.i1 == t.i0 { &self.h0 } else { &self.h1 };
            if self.area_half_even {
                // Both weights are 1024 in each direction: the sums hold 1024 * (a + b).
                for ((d, &a), &b) in self.row.iter_mut().zip(&self.h0).zip(s1) {
                    *d = ((a + b) as f32 / 4096.0).round_ties_even() as u8;
                }
            } else {
                for ((d, &a), &b) in self.row.iter_mut().zip(&self.h0).zip(s1) {
                    *d = vmix(a, b, t.w0, t.w1);
                }
            }
            f(r, &self.row);
        }
    }
}

/// Resizes an interleaved u8 image of `channels` channels from `sw x sh` to `dw x dh` with
/// OpenCV `INTER_LINEAR` semantics (bit-exact with `cv2.resize` of OpenCV 5).
/// Returns `dw * dh * channels` bytes, row-major.
///
/// # Panics
/// If a size or `channels` is zero, `src` is shorter than `sw * sh * channels`, or a
/// buffer size overflows `usize`.
pub fn resize_bilinear_u8(src: &[u8], sw: u32, sh: u32, channels: usize, dw: u32, dh: u32) -> Vec<u8> {
    assert!(sw > 0 && sh > 0 && dw > 0 && dh > 0, "empty image size");
    assert!(channels > 0, "zero channels");
    let need = (sw as usize)
        .checked_mul(sh as usize)
        .and_then(|n| n.checked_mul(channels))
        .expect("image size overflows usize");
    assert!(src.len() >= need, "source buffer too short");
    if (sw, sh) == (dw, dh) {
        return src[..need].to_vec();
    }
    let len = (dw as usize)
        .checked_mul(dh as usize)
        .and_then(|n| n.checked_mul(channels))
        .expect("image size overflows usize");
    let row_len = dw as usize * channels;
    let mut out = vec![0u8; len];
    let full = Region {
        x: 0,
        y: 0,
        w: dw,
        h: dh,
    };
    Resampler::new(src, (sw, sh), channels, (dw, dh), full).for_each_row(|r, row| {
        out[r * row_len..][..row_len].copy_from_slice(row);
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::npy;

    fn data(name: &str) -> npy::Array<u8> {
        npy::read_u8(&format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR")))
    }

    /// Fraction of differing bytes and the largest difference.
    fn compare(got: &[u8], want: &[u8]) -> (f64, u8) {
        assert_eq!(got.len(), want.len());
        let diff = got.iter().zip(want).filter(|(a, b)| a != b).count();
        let max = got.iter().zip(want).map(|(a, b)| a.abs_diff(*b)).max();
        (diff as f64 / got.len() as f64, max.unwrap_or(0))
    }

    #[test]
    fn matches_opencv_on_random_images() {
        let cases = [
            ("rand_97x61x3.npy", 3, None, "rand_97x61x3_to_40x25.npy"),
            ("rand_97x61x3.npy", 3, None, "rand_97x61x3_to_120x75.npy"),
            ("rand_97x61x3.npy", 3, None, "rand_97x61x3_to_48x30.npy"),
            ("rand_97x61x3.npy", 3, None, "rand_97x61x3_to_23x13.npy"),
            ("rand_97x61x3.npy", 3, None, "rand_97x61x3_to_320x20.npy"),
            ("rand_97x61x3.npy", 1, Some(1), "rand_97x61x1_to_33x77.npy"),
            ("rand_31x17x4.npy", 4, None, "rand_31x17x4_to_62x34.npy"),
            ("rand_31x17x4.npy", 4, None, "rand_31x17x4_to_50x9.npy"),
            ("rand_20x14x2.npy", 2, None, "rand_20x14x2_to_10x7.npy"),
        ];
        for (src_name, cn, plane, want_name) in cases {
            let src = data(src_name);
            let (sh, sw, scn) = (src.shape[0], src.shape[1], src.shape[2]);
            // The gray case is channel `plane` of the colour image.
            let pixels: Vec<u8> = match plane {
                Some(p) => src.data.iter().skip(p).step_by(scn).copied().collect(),
                None => src.data.clone(),
            };
            let want = data(want_name);
            let (dh, dw) = (want.shape[0], want.shape[1]);
            assert_eq!(want.shape[2], cn);
            let got = resize_bilinear_u8(&pixels, sw as u32, sh as u32, cn, dw as u32, dh as u32);
            let (frac, max) = compare(&got, &want.data);
            eprintln!("{want_name}: {:.4}% bytes differ, max diff {max}", frac * 100.0);
            assert_eq!((frac, max), (0.0, 0), "{want_name} differs from cv2.resize");
        }
    }

    #[test]
    fn scalar_vertical_rounding_would_not_match() {
        // Guards the choice of the SIMD formula: the textbook fixed-point rounding differs.
        let src = data("rand_97x61x3.npy");
        let want = data("rand_97x61x3_to_120x75.npy");
        let xt = axis_taps(97, 120, 0, 120, true);
        let yt = axis_taps(61, 75, 0, 75, false);
        let mut differ = 0;
        for (dy, ty) in yt.iter().enumerate() {
            for (dx, tx) in xt.iter().enumerate() {
                for c in 0..3 {
                    let h = |y: u32| {
                        let p = |x: u32| i32::from(src.data[(y as usize * 97 + x as usize) * 3 + c]);
                        p(tx.i0) * tx.w0 + p(tx.i1) * tx.w1
                    };
                    let v = (h(ty.i0) * ty.w0 + h(ty.i1) * ty.w1 + (1 << 21)) >> 22;
                    differ += usize::from(v as u8 != want.data[(dy * 120 + dx) * 3 + c]);
                }
            }
        }
        assert!(differ > 0);
    }

    #[test]
    fn taps_follow_half_pixel_centres_and_clamp_edges() {
        // 4x down-scale: every output samples the middle of source pixels 4d+1 and 4d+2.
        let t = axis_taps(16, 4, 0, 4, true);
        assert!(t
            .iter()
            .enumerate()
            .all(|(d, t)| t.i0 == 4 * d as u32 + 1 && t.i1 == 4 * d as u32 + 2 && (t.w0, t.w1) == (1024, 1024)));
        // Up-scale: left edge columns move all weight to column 0, right edge to the last.
        let t = axis_taps(2, 8, 0, 8, true);
        assert_eq!((t[0].i0, t[0].w0, t[0].w1), (0, 2048, 0));
        assert_eq!((t[7].i0, t[7].i1, t[7].w0, t[7].w1), (1, 1, 2048, 0));
        // Rows keep their weights but clamp the indices.
        let t = axis_taps(2, 8, 0, 8, false);
        assert_eq!((t[0].i0, t[0].i1), (0, 0));
        assert_eq!(t[0].w0 + t[0].w1, 2048);
    }

    #[test]
    fn identity_and_constant_images() {
        let src: Vec<u8> = (0..5 * 4 * 3).map(|v| v as u8).collect();
        assert_eq!(resize_bilinear_u8(&src, 5, 4, 3, 5, 4), src);
        let flat = vec![77u8; 13 * 7 * 3];
        for (dw, dh) in [(1, 1), (26, 14), (6, 3), (13, 20)] {
            assert!(resize_bilinear_u8(&flat, 13, 7, 3, dw, dh).iter().all(|&v| v == 77));
        }
    }

    #[test]
    fn region_rows_equal_full_resize_rows() {
        let src = data("rand_97x61x3.npy");
        let full = resize_bilinear_u8(&src.data, 97, 61, 3, 150, 90);
        let region = Region {
            x: 17,
            y: 9,
            w: 60,
            h: 40,
        };
        let mut rows = 0;
        Resampler::new(&src.data, (97, 61), 3, (150, 90), region).for_each_row(|r, row| {
            let start = ((r + 9) * 150 + 17) * 3;
            assert_eq!(row, &full[start..start + 60 * 3]);
            rows += 1;
        });
        assert_eq!(rows, 40);
    }
}
