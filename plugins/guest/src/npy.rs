//! Minimal `.npy` reader for the test fixtures (C-order `<f4` and `|u1` only).

use std::fs;

/// An n-dimensional array: its shape and its elements in C order.
pub(crate) struct Array<T> {
    pub shape: Vec<usize>,
    pub data: Vec<T>,
}

/// Parses the header; returns (dtype descr, shape, offset of the data).
fn header(bytes: &[u8], path: &str) -> (String, Vec<usize>, usize) {
    assert!(bytes.starts_with(b"\x93NUMPY"), "{path}: not an .npy file");
    let (len, start) = match bytes[6] {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        _ => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
    };
    let text = std::str::from_utf8(&bytes[start..start + len]).expect("header is ASCII");
    let field = |key: &str| -> &str {
        let at = text.find(key).unwrap_or_else(|| panic!("{path}: no {key}"));
        &text[at + key.len()..]
    };
    let descr = field("'descr':").trim_start();
    let descr = descr[1..descr[1..].find('\'').unwrap() + 1].to_string();
    assert!(
        field("'fortran_order':").trim_start().starts_with("False"),
        "{path}: Fortran order"
    );
    let shape = field("'shape':");
    let shape = &shape[shape.find('(').unwrap() + 1..shape.find(')').unwrap()];
    let shape = shape
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    (descr, shape, start + len)
}

fn read(path: &str, want: &str) -> (Vec<usize>, Vec<u8>) {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let (descr, shape, at) = header(&bytes, path);
    assert_eq!(descr, want, "{path}: dtype");
    (shape, bytes[at..].to_vec())
}

/// Reads a little-endian float32 array.
pub(crate) fn read_f32(path: &str) -> Array<f32> {
    let (shape, raw) = read(path, "<f4");
    let data = raw
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect::<Vec<_>>();
    assert_eq!(data.len(), shape.iter().product::<usize>(), "{path}: size");
    Array { shape, data }
}

/// Reads a uint8 array.
pub(crate) fn read_u8(path: &str) -> Array<u8> {
    let (shape, data) = read(path, "|u1");
    assert_eq!(data.len(), shape.iter().product::<usize>(), "{path}: size");
    Array { shape, data }
}
