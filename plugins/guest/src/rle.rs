//! COCO run-length encoding of binary masks, as `pycocotools.mask.encode` writes it.
//!
//! The runs go down the columns (Fortran order: all of column 0 top to bottom, then
//! column 1, ...), alternate 0s and 1s and start with a run of 0s (of length 0 when the
//! first pixel is set). The compressed `counts` string (pycocotools' `rleToString`) stores
//! each run as a little-endian series of 5-bit groups, 6 bits per character offset by 48
//! ('0'), bit 5 meaning "more groups follow", the last group sign-extended from bit 4; runs
//! from the fourth on are stored as the difference to the run two places before.

/// Column-major runs of a row-major `width x height` mask (non-zero bytes are set).
/// Panics if `mask` is not `width * height` long.
pub fn rle_counts(mask: &[u8], width: usize, height: usize) -> Vec<u32> {
    assert_eq!(mask.len(), width * height, "mask size");
    let mut runs = Runs::default();
    for x in 0..width {
        for y in 0..height {
            runs.push(mask[y * width + x] != 0, 1);
        }
    }
    runs.finish()
}

/// Column-major runs of a `width x height` mask that is zero outside the rectangle
/// `x0..x0 + rw`, `y0..y0 + rh`, whose pixels `region` holds row-major (non-zero bytes
/// are set). Only the rectangle is visited: the zeros around it are added in bulk.
/// Panics if the rectangle does not fit or `region` is not `rw * rh` long.
pub fn rle_counts_region(
    width: usize,
    height: usize,
    x0: usize,
    y0: usize,
    rw: usize,
    rh: usize,
    region: &[u8],
) -> Vec<u32> {
    assert!(x0 + rw <= width && y0 + rh <= height, "region outside the mask");
    assert_eq!(region.len(), rw * rh, "region size");
    let mut runs = Runs::default();
    if rw == 0 || rh == 0 {
        runs.push(false, width * height);
        return runs.finish();
    }
    // Columns before the region and the rows above it in its first column.
    runs.push(false, x0 * height + y0);
    for x in 0..rw {
        if x > 0 {
            // Rows below the region in the previous column and above it in this one.
            runs.push(false, height - rh);
        }
        for y in 0..rh {
            runs.push(region[y * rw + x] != 0, 1);
        }
    }
    runs.push(false, (height - y0 - rh) + (width - x0 - rw) * height);
    runs.finish()
}

/// Accumulates alternating runs, starting with 0s.
#[derive(Default)]
struct Runs {
    counts: Vec<u32>,
    current: bool,
    length: usize,
}

impl Runs {
    fn push(&mut self, value: bool, n: usize) {
        if n == 0 {
            return;
        }
        if value != self.current {
            self.counts.push(self.length as u32);
            self.current = value;
            self.length = 0;
        }
        self.length += n;
    }

    fn finish(mut self) -> Vec<u32> {
        if self.length > 0 || self.counts.is_empty() {
            self.counts.push(self.length as u32);
        }
        self.counts
    }
}

/// pycocotools' compressed `counts` string for the runs.
pub fn rle_to_string(counts: &[u32]) -> String {
    let mut s = String::with_capacity(counts.len() * 2);
    for (i, &c) in counts.iter().enumerate() {
        let mut x = i64::from(c);
        if i > 2 {
            x -= i64::from(counts[i - 2]);
        }
        loop {
            let mut group = (x & 0x1f) as u8;
            x >>= 5;
            let more = if group & 0x10 != 0 { x != -1 } else { x != 0 };
            if more {
                group |= 0x20;
            }
            s.push(char::from(group + 48));
            if !more {
                break;
            }
        }
    }
    s
}

/// Parses a compressed `counts` string back into runs (pycocotools' `rleFrString`).
pub fn rle_from_string(s: &str) -> Result<Vec<u32>, String> {
    let bytes = s.as_bytes();
    let mut counts: Vec<u32> = Vec::new();
    let mut p = 0;
    while p < bytes.len() {
        let (mut x, mut k) = (0i64, 0u32);
        loop {
            let Some(&b) = bytes.get(p) else {
                return Err("RLE string ends inside a run".into());
            };
            if !(48..48 + 64).contains(&b) || k >= 12 {
                return Err(format!("bad RLE character {:?} at {p}", char::from(b)));
            }
            let c = i64::from(b - 48);
            x |= (c & 0x1f) << (5 * k);
            p += 1;
            k += 1;
            if c & 0x20 == 0 {
                if c & 0x10 != 0 {
                    x |= -1i64 << (5 * k);
                }
                break;
            }
        }
        let m = counts.len();
        if m > 2 {
            x += i64::from(counts[m - 2]);
        }
        counts.push(u32::try_from(x).map_err(|_| format!("RLE run {m} is out of range ({x})"))?);
    }
    Ok(counts)
}

/// Expands runs into a row-major `width x height` mask of 0 / 1 bytes; the runs must
/// cover exactly `width * height` pixels.
pub fn rle_decode(counts: &[u32], width: usize, height: usize) -> Result<Vec<u8>, String> {
    let total: u64 = counts.iter().map(|&c| u64::from(c)).sum();
    if total != (width * height) as u64 {
        return Err(format!("RLE covers {total} pixels, the mask has {}", width * height));
    }
    let mut mask = vec![0u8; width * height];
    let mut at = 0usize;
    for (i, &c) in counts.iter().enumerate() {
        let c = c as usize;
        if i % 2 == 1 {
            for k in at..at + c {
                // Column-major index k = x * height + y.
                mask[(k % height) * width + k / height] = 1;
            }
        }
        at += c;
    }
    Ok(mask)
}

/// Number of set pixels the runs describe.
pub fn rle_area(counts: &[u32]) -> u64 {
    counts.iter().skip(1).step_by(2).map(|&c| u64::from(c)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Row-major mask from rows of '0' / '1'.
    fn mask(rows: &[&str]) -> (Vec<u8>, usize, usize) {
        let h = rows.len();
        let w = rows[0].len();
        let data = rows
            .iter()
            .flat_map(|r| r.bytes().map(|b| u8::from(b == b'1')))
            .collect();
        (data, w, h)
    }

    // Expected strings from pycocotools 2.0 (`mask.encode(np.asfortranarray(m))['counts']`).
    #[test]
    fn matches_pycocotools() {
        let cases: &[(&[&str], &[u32], &str)] = &[
            (&["0000", "0110", "0110"], &[4, 2, 1, 2, 3], "42102"),
            (&["1100", "1000", "0001"], &[0, 2, 1, 1, 7, 1], "021O60"),
            (&["111", "111"], &[0, 6], "06"),
            (&["000", "000"], &[6], "6"),
        ];
        for &(rows, counts, string) in cases {
            let (m, w, h) = mask(rows);
            assert_eq!(rle_counts(&m, w, h), counts, "{rows:?}");
            assert_eq!(rle_to_string(counts), string, "{rows:?}");
            assert_eq!(rle_from_string(string).unwrap(), counts, "{rows:?}");
            assert_eq!(rle_decode(counts, w, h).unwrap(), m, "{rows:?}");
        }
    }

    #[test]
    fn large_runs_and_negative_deltas() {
        // pycocotools: b = zeros((300, 400)); b[10:200, 50:60] = 1; b[5:7, 300] = 1; b[:, 350] = 1.
        let (w, h) = (400, 300);
        let mut m = vec![0u8; w * h];
        for y in 10..200 {
            for x in 50..60 {
                m[y * w + x] = 1;
            }
        }
        m[5 * w + 300] = 1;
        m[6 * w + 300] = 1;
        for y in 0..h {
            m[y * w + 350] = 1;
        }
        let counts = rle_counts(&m, w, h);
        assert_eq!(rle_area(&counts), 2202);
        let s = rle_to_string(&counts);
        assert_eq!(s, "Re>n5^300000000000000000kYV2TJXWXNZ9kF");
        assert_eq!(rle_from_string(&s).unwrap(), counts);
        assert_eq!(rle_decode(&counts, w, h).unwrap(), m);
        let arbitrary = [100_000, 3, 70_000, 1, 5, 99_999, 0, 31, 32, 17];
        assert_eq!(rle_from_string(&rle_to_string(&arbitrary)).unwrap(), arbitrary);
    }

    #[test]
    fn rejects_bad_strings() {
        assert!(rle_from_string("0(").is_err()); // below '0'
        assert!(rle_from_string("3o").is_err()); // 'o' continues a run that never ends
        assert!(rle_from_string("O").is_err()); // a negative first run
        assert!(rle_decode(&[4, 2], 2, 2).is_err()); // 6 pixels for a 2 x 2 mask
    }

    #[test]
    fn region_encoding_equals_full_encoding() {
        let (w, h) = (7usize, 5usize);
        let region = [1u8, 0, 1, 1, 1, 0]; // 3 x 2 at (2, 1)
        let mut full = vec![0u8; w * h];
        for y in 0..2 {
            for x in 0..3 {
                full[(1 + y) * w + 2 + x] = region[y * 3 + x];
            }
        }
        let want = rle_counts(&full, w, h);
        assert_eq!(rle_counts_region(w, h, 2, 1, 3, 2, &region), want);
        assert_eq!(rle_area(&want), 4);
        // Touching every edge, and empty.
        let all = vec![1u8; w * h];
        assert_eq!(rle_counts_region(w, h, 0, 0, w, h, &all), vec![0, (w * h) as u32]);
        assert_eq!(rle_counts_region(w, h, 3, 3, 0, 0, &[]), vec![(w * h) as u32]);
        assert_eq!(rle_counts_region(w, h, 0, 0, 1, 1, &[0]), vec![(w * h) as u32]);
    }
}
