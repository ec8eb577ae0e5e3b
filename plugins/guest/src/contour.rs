//! Outlines of binary masks, as OpenCV's
//! `cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)` finds them, and
//! Ultralytics' way of joining several outlines into one polygon (`masks2segments` with
//! its default `strategy="all"`, i.e. `merge_multi_segment`), which is what
//! `results.masks.xy` holds.
//!
//! The tracer is Suzuki & Abe's border following as OpenCV implements it
//! (`icvFetchContour`): the image gets a one-pixel frame of zeros, rows are scanned top to
//! bottom for a 0 → 1 transition that starts an outer border, and each border is followed
//! counter-clockwise on screen with 8-connectivity, marking its pixels (a negative mark
//! where the pixel's right neighbour is background) so that a later scan neither restarts
//! it nor starts the outer border of a blob that sits in one of its holes.
//! `CHAIN_APPROX_SIMPLE` keeps only the pixels where the chain direction changes. Vertices
//! are pixel coordinates (pixel centres at whole numbers). OpenCV returns the outlines
//! in the reverse of the order it finds them in; so does [`find_external_contours`].

/// A vertex: `[x, y]` in pixels.
pub type Point = [i32; 2];

/// Chain codes 0..8: right, up-right, up, up-left, left, down-left, down, down-right.
const CODE_DELTAS: [[i32; 2]; 8] = [[1, 0], [1, -1], [0, -1], [-1, -1], [-1, 0], [-1, 1], [0, 1], [1, 1]];

/// Border mark: OpenCV's `nbd` (always 2 in external mode) and its right-bound form `nbd | -128`.
const MARK: i8 = 2;
const MARK_RIGHT: i8 = MARK | -128;

/// Outer outlines of the 8-connected blobs of a row-major `width x height` mask
/// (non-zero bytes are set), leaving out blobs inside holes of other blobs; in OpenCV's
/// order and with its vertices. Panics if `mask` is not `width * height` long.
pub fn find_external_contours(mask: &[u8], width: usize, height: usize) -> Vec<Vec<Point>> {
    assert_eq!(mask.len(), width * height, "mask size");
    let pw = width + 2;
    let mut img = vec![0i8; pw * (height + 2)];
    for (y, row) in mask.chunks_exact(width.max(1)).take(height).enumerate() {
        let out = &mut img[(y + 1) * pw + 1..][..width];
        for (o, &m) in out.iter_mut().zip(row) {
            *o = i8::from(m != 0);
        }
    }
    let step = pw as isize;
    let mut deltas = [0isize; 16];
    for (k, d) in deltas.iter_mut().enumerate() {
        let [dx, dy] = CODE_DELTAS[k % 8];
        *d = dx as isize + dy as isize * step;
    }

    let mut found = Vec::new();
    for y in 1..=height {
        let row = y * pw;
        // The last border pixel met on this row (its mark tells inside from outside).
        let mut lnbd = row;
        let mut prev = 0i8;
        let mut x = 1;
        while x <= width {
            let mut p = img[row + x];
            while p == prev {
                x += 1;
                if x > width {
                    break;
                }
                p = img[row + x];
            }
            if x > width {
                break;
            }
            if prev == 0 && p == 1 {
                // An outer border starts here, unless the blob lies in a hole of a traced one.
                if img[lnbd] <= 0 {
                    found.push(follow_border(&mut img, row + x, &deltas, [x as i32 - 1, y as i32 - 1]));
                    // OpenCV resumes after the start pixel with its new mark as `prev`.
                    prev = img[row + x];
                    x += 1;
                    continue;
                }
            } else if p == 0 && prev >= 1 && prev & -2 != 0 {
                // A hole border (not followed in external mode).
                lnbd = row + x - 1;
            }
            prev = p;
            if prev & -2 != 0 {
                lnbd = row + x;
            }
            x += 1;
        }
    }
    found.reverse();
    found
}

/// Follows the outer border that starts at `i0` (index in the framed image, whose pixel
/// coordinates are `origin`), marks it, and returns its `CHAIN_APPROX_SIMPLE` vertices.
fn follow_border(img: &mut [i8], i0: usize, deltas: &[isize; 16], origin: Point) -> Vec<Point> {
    let at = |i: usize, s: usize| (i as isize + deltas[s]) as usize;
    let mut points = Vec::new();
    // Look clockwise from the left neighbour for the pixel before the start on the border.
    let s_end = 4;
    let mut s = s_end;
    let mut i1;
    let mut isolated = true;
    loop {
        s = (s + 7) & 7;
        i1 = at(i0, s);
        if img[i1] != 0 {
            isolated = false;
            break;
        }
        if s == s_end {
            break;
        }
    }
    if isolated {
        img[i0] = MARK_RIGHT;
        points.push(origin);
        return points;
    }
    let mut i3 = i0;
    let mut prev_s = s ^ 4;
    let mut pt = origin;
    loop {
        // Look counter-clockwise, starting after the direction we came from.
        let s_end = s;
        let mut i4 = i3;
        while s < 15 {
            s += 1;
            i4 = at(i3, s);
            if img[i4] != 0 {
                break;
            }
        }
        s &= 7;
        // The search went past direction 0: the right neighbour is background.
        if s >= 1 && s - 1 < s_end {
            img[i3] = MARK_RIGHT;
        } else if img[i3] == 1 {
            img[i3] = MARK;
        }
        if s != prev_s {
            points.push(pt);
            prev_s = s;
        }
        pt[0] += CODE_DELTAS[s][0];
        pt[1] += CODE_DELTAS[s][1];
        if i4 == i0 && i3 == i1 {
            break;
        }
        i3 = i4;
        s = (s + 4) & 7;
    }
    points
}

/// Squared distance between two vertices.
fn dist2(a: Point, b: Point) -> i64 {
    let dx = i64::from(a[0] - b[0]);
    let dy = i64::from(a[1] - b[1]);
    dx * dx + dy * dy
}

/// Indexes of the closest pair of vertices of `a` and `b`; the first pair in row-major
/// order of the distance matrix on ties (numpy's `argmin`).
fn closest_pair(a: &[Point], b: &[Point]) -> (usize, usize) {
    let mut best = (i64::MAX, 0, 0);
    for (i, &p) in a.iter().enumerate() {
        for (j, &q) in b.iter().enumerate() {
            let d = dist2(p, q);
            if d < best.0 {
                best = (d, i, j);
            }
        }
    }
    (best.1, best.2)
}

/// Ultralytics' `merge_multi_segment` (8.4), flattened: neighbouring outlines (in the given
/// order) are joined at their closest vertices, walking out through the middle outlines on
/// a forward pass and back on a return pass, so one polygon visits every outline (the
/// joins are zero-width bridges, each vertex of a bridge repeated).
pub fn merge_multi_segment(segments: &[Vec<Point>]) -> Vec<Point> {
    merge_plan(segments).into_iter().map(|(s, v)| segments[s][v]).collect()
}

/// The vertices [`merge_multi_segment`] visits, as `(segment, vertex)` indexes, so that
/// the same walk can be applied to other vertices of the same outlines.
pub fn merge_plan(segments: &[Vec<Point>]) -> Vec<(usize, usize)> {
    let n = segments.len();
    if n == 0 {
        return Vec::new();
    }
    if n == 1 {
        // Ultralytics does not merge a single outline.
        return (0..segments[0].len()).map(|v| (0, v)).collect();
    }
    let mut links: Vec<Vec<usize>> = vec![Vec::new(); n];
    for i in 1..n {
        let (a, b) = closest_pair(&segments[i - 1], &segments[i]);
        links[i - 1].push(a);
        links[i].push(b);
    }
    // Each segment's vertex order after the forward pass: possibly reversed, rotated to
    // start at its link (numpy `roll(seg, -k)`) and closed by repeating the first vertex.
    let mut order: Vec<Vec<usize>> = Vec::with_capacity(n);
    let mut out = Vec::new();
    for (i, seg) in segments.iter().enumerate() {
        let len = seg.len();
        if len == 0 {
            order.push(Vec::new());
            continue;
        }
        let mut ix: Vec<usize> = (0..len).collect();
        let mut idx = links[i].clone();
        if idx.len() == 2 && idx[0] > idx[1] {
            // Walk a middle segment the other way, its indexes mapped into the reversed order.
            idx = vec![len - 1 - idx[0], len - 1 - idx[1]];
            ix.reverse();
        }
        let mut rolled: Vec<usize> = (0..len).map(|j| ix[(j + idx[0]) % len]).collect();
        rolled.push(rolled[0]);
        let take = if i == 0 || i == n - 1 {
            rolled.len()
        } else {
            idx[1] - idx[0] + 1
        };
        out.extend(rolled[..take].iter().map(|&v| (i, v)));
        order.push(rolled);
    }
    // Return pass through the middle segments.
    for i in (1..n.saturating_sub(1)).rev() {
        let skip = links[i][1].abs_diff(links[i][0]);
        out.extend(order[i].iter().skip(skip).map(|&v| (i, v)));
    }
    out
}

/// The polygon Ultralytics reports for a mask (`ops.masks2segments(..., strategy="all")`):
/// its single outer outline, or all outlines merged by [`merge_multi_segment`]; empty
/// when the mask is empty.
pub fn mask_outline(mask: &[u8], width: usize, height: usize) -> Vec<Point> {
    merge_multi_segment(&find_external_contours(mask, width, height))
}

/// Moves the vertices of an outer outline (as [`find_external_contours`] returns it:
/// counter-clockwise on screen) outwards by `dx` horizontally and `dy` vertically, with
/// mitred corners (at most twice the distance). Used to put outlines traced through the
/// centres of coarse pixels onto their outer edges.
pub fn offset_outline(outline: &[Point], dx: f64, dy: f64) -> Vec<[f64; 2]> {
    let n = outline.len();
    let pt = |i: usize| [f64::from(outline[i][0]), f64::from(outline[i][1])];
    (0..n)
        .map(|i| {
            let v = pt(i);
            if n < 2 {
                return v;
            }
            // Neighbouring vertices that differ from this one.
            let prev = (1..n).map(|k| pt((i + n - k) % n)).find(|p| *p != v);
            let next = (1..n).map(|k| pt((i + k) % n)).find(|p| *p != v);
            let (Some(u), Some(w)) = (prev, next) else { return v };
            let normal = |a: [f64; 2], b: [f64; 2]| {
                let (ex, ey) = (b[0] - a[0], b[1] - a[1]);
                let len = (ex * ex + ey * ey).sqrt();
                // Outward for a counter-clockwise outline with y down: (-ey, ex).
                [-ey / len, ex / len]
            };
            let (n1, n2) = (normal(u, v), normal(v, w));
            let dot = n1[0] * n2[0] + n1[1] * n2[1];
            let m = if dot < -0.999 {
                // A spike (the outline turns back): push the tip forwards.
                let len = ((v[0] - u[0]).powi(2) + (v[1] - u[1]).powi(2)).sqrt();
                [(v[0] - u[0]) / len, (v[1] - u[1]) / len]
            } else {
                let k = (1.0 / (1.0 + dot)).min(2.0);
                [(n1[0] + n2[0]) * k, (n1[1] + n2[1]) * k]
            };
            [v[0] + m[0] * dx, v[1] + m[1] * dy]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(rows: &[&str]) -> (Vec<u8>, usize, usize) {
        let h = rows.len();
        let w = rows[0].len();
        let data = rows
            .iter()
            .flat_map(|r| r.bytes().map(|b| u8::from(b == b'1')))
            .collect();
        (data, w, h)
    }

    fn contours(rows: &[&str]) -> Vec<Vec<Point>> {
        let (m, w, h) = mask(rows);
        find_external_contours(&m, w, h)
    }

    fn points(line: &str) -> Vec<Point> {
        if line == "-" {
            return Vec::new();
        }
        line.split(' ')
            .map(|p| {
                let (x, y) = p.split_once(',').unwrap();
                [x.parse().unwrap(), y.parse().unwrap()]
            })
            .collect()
    }

    /// tests/data/contours_cv2.txt (made by contours_gen.py): hand-made and random masks with
    /// cv2.findContours' outlines and Ultralytics' merged polygon.
    #[test]
    fn matches_opencv_and_ultralytics() {
        let path = format!("{}/tests/data/contours_cv2.txt", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines = text.lines();
        let mut cases = 0;
        let mut merged_cases = 0;
        while let Some(head) = lines.next() {
            let mut it = head.split(' ').skip(1).map(|v| v.parse::<usize>().unwrap());
            let (w, h) = (it.next().unwrap(), it.next().unwrap());
            let rows: Vec<&str> = (0..h).map(|_| lines.next().unwrap()).collect();
            let (m, _, _) = mask(&rows);
            let k: usize = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
            let want: Vec<Vec<Point>> = (0..k).map(|_| points(lines.next().unwrap())).collect();
            assert_eq!(lines.next(), Some("merged"));
            let want_merged = points(lines.next().unwrap());
            assert_eq!(find_external_contours(&m, w, h), want, "mask {cases}: {rows:?}");
            assert_eq!(mask_outline(&m, w, h), want_merged, "mask {cases} merged: {rows:?}");
            cases += 1;
            merged_cases += usize::from(k > 1);
        }
        assert!(
            cases >= 40 && merged_cases >= 10,
            "{cases} masks, {merged_cases} with several outlines"
        );
    }

    #[test]
    fn l_shape_two_blobs_and_holes() {
        assert_eq!(
            contours(&["1000", "1000", "1000", "1111"]),
            vec![vec![[0, 0], [0, 3], [3, 3], [1, 3], [0, 2]]]
        );
        // Found top to bottom, returned bottom first.
        let two = contours(&["110", "000", "011"]);
        assert_eq!(two, vec![vec![[1, 2], [2, 2]], vec![[0, 0], [1, 0]]]);
        // A blob inside a hole is not an external contour; the ring is.
        let ring = contours(&["11111", "10001", "10101", "10001", "11111"]);
        assert_eq!(ring, vec![vec![[0, 0], [0, 4], [4, 4], [4, 0]]]);
    }

    #[test]
    fn merges_like_ultralytics() {
        // Expected values from ultralytics 8.4.190 `merge_multi_segment`.
        // Two outlines: each rotated to its closest vertex and closed, first then second.
        let a = vec![[0, 0], [0, 2], [2, 2], [2, 0]];
        let b = vec![[5, 5], [5, 6], [4, 6]];
        let merged = merge_multi_segment(&[a.clone(), b]);
        assert_eq!(
            merged,
            vec![[2, 2], [2, 0], [0, 0], [0, 2], [2, 2], [5, 5], [5, 6], [4, 6], [5, 5]]
        );
        // Three: the middle one is walked out (reversed here) and back.
        let mid = vec![[9, 0], [5, 1], [9, 9], [5, 8]];
        let last = vec![[0, 9], [1, 9]];
        assert_eq!(
            merge_multi_segment(&[a, mid, last]),
            vec![
                [2, 2],
                [2, 0],
                [0, 0],
                [0, 2],
                [2, 2],
                [5, 1],
                [9, 9],
                [5, 8],
                [1, 9],
                [0, 9],
                [1, 9],
                [5, 8],
                [9, 0],
                [5, 1]
            ]
        );
        assert!(merge_multi_segment(&[]).is_empty());
    }

    // Expected vertices from cv2.findContours(m, RETR_EXTERNAL, CHAIN_APPROX_SIMPLE),
    // opencv-python-headless 5.0.0.

    #[test]
    fn square() {
        let c = contours(&["00000", "01110", "01110", "01110", "00000"]);
        assert_eq!(c, vec![vec![[1, 1], [1, 3], [3, 3], [3, 1]]]);
    }

    #[test]
    fn single_pixel_and_empty() {
        assert_eq!(contours(&["000", "010", "000"]), vec![vec![[1, 1]]]);
        assert!(contours(&["000", "000"]).is_empty());
        assert!(find_external_contours(&[], 0, 0).is_empty());
    }

    #[test]
    fn touching_the_border() {
        assert_eq!(contours(&["11", "11"]), vec![vec![[0, 0], [0, 1], [1, 1], [1, 0]]]);
        assert_eq!(contours(&["1"]), vec![vec![[0, 0]]]);
        assert_eq!(contours(&["111"]), vec![vec![[0, 0], [2, 0]]]);
    }
}
