//! Classification outputs: per-image score rows, their activation into probabilities,
//! and the classes ranked by probability.

/// How a model's raw class scores become probabilities.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// The scores already are probabilities (Ultralytics `-cls` exports end in a softmax).
    None,
    /// Softmax over the classes of one image.
    Softmax,
    /// Sigmoid per class (multi-label models).
    Sigmoid,
}

/// Splits a classification output of `dims` (`[B, nc]`, `[B, nc, 1, 1]`, or `[nc]` for one
/// image) holding `batch` images into one score row per image; everything after the batch
/// dimension is flattened.
pub fn class_rows<'a>(output: &'a [f32], dims: &[usize], batch: usize) -> Result<Vec<&'a [f32]>, String> {
    if batch == 0 {
        return Ok(Vec::new());
    }
    let total = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    if dims.is_empty() || total != Some(output.len()) {
        return Err(format!(
            "classification output has {} values, which does not fit its dims {dims:?}",
            output.len()
        ));
    }
    let rows_in_output = if dims.len() == 1 { 1 } else { dims[0] };
    if rows_in_output != batch {
        return Err(format!(
            "classification output {dims:?} holds {rows_in_output} images, {batch} were sent"
        ));
    }
    let per = output.len() / batch;
    if per == 0 {
        return Err(format!("classification output {dims:?} has no class scores"));
    }
    Ok(output.chunks_exact(per).collect())
}

/// Applies `activation` to one image's raw scores (softmax is computed in f64, with the
/// maximum subtracted first).
pub fn probabilities(raw: &[f32], activation: Activation) -> Vec<f32> {
    match activation {
        Activation::None => raw.to_vec(),
        Activation::Sigmoid => raw
            .iter()
            .map(|&x| (1.0 / (1.0 + (-f64::from(x)).exp())) as f32)
            .collect(),
        Activation::Softmax => {
            let max = raw.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let exps: Vec<f64> = raw.iter().map(|&x| (f64::from(x) - f64::from(max)).exp()).collect();
            let sum: f64 = exps.iter().sum();
            exps.iter().map(|e| (e / sum) as f32).collect()
        }
    }
}

/// Class indices with their probabilities, highest first; equal scores keep class order
/// and NaN scores go last.
pub fn ranked(probs: &[f32]) -> Vec<(u32, f32)> {
    let mut out: Vec<(u32, f32)> = probs.iter().enumerate().map(|(i, &p)| (i as u32, p)).collect();
    let key = |p: f32| if p.is_nan() { f32::NEG_INFINITY } else { p };
    out.sort_by(|a, b| key(b.1).total_cmp(&key(a.1)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::npy;

    #[test]
    fn splits_rows() {
        let out = [0.1, 0.2, 0.7, 0.5, 0.25, 0.25];
        assert_eq!(class_rows(&out, &[2, 3], 2).unwrap(), [&out[..3], &out[3..]]);
        assert_eq!(class_rows(&out, &[2, 3, 1, 1], 2).unwrap().len(), 2);
        assert_eq!(class_rows(&out[..3], &[3], 1).unwrap(), [&out[..3]]);
        assert!(class_rows(&out, &[2, 3], 1).is_err());
        assert!(class_rows(&out, &[3], 2).is_err());
        assert!(class_rows(&out, &[2, 4], 2).is_err());
        assert!(class_rows(&[], &[2, 0], 2).is_err());
        assert!(class_rows(&out, &[], 1).is_err());
        assert!(class_rows(&out, &[usize::MAX, 2], 1).is_err());
        assert!(class_rows(&out, &[2, 3], 0).unwrap().is_empty());
    }

    #[test]
    fn activations() {
        assert_eq!(probabilities(&[0.2, 0.8], Activation::None), [0.2, 0.8]);
        let s = probabilities(&[1.0, 2.0, 3.0], Activation::Softmax);
        let want = [0.090_030_57, 0.244_728_48, 0.665_240_94];
        for (a, b) in s.iter().zip(want) {
            assert!((a - b).abs() < 1e-7, "{s:?}");
        }
        // Large logits do not overflow.
        let s = probabilities(&[1000.0, 1000.0], Activation::Softmax);
        assert_eq!(s, [0.5, 0.5]);
        let s = probabilities(&[0.0, 100.0, -100.0, 2.0], Activation::Sigmoid);
        assert_eq!(s[..2], [0.5, 1.0]);
        assert!(s[2] < 1e-40 && (s[3] - 0.880_797_1).abs() < 1e-7, "{s:?}");
    }

    #[test]
    fn ranks_by_probability() {
        let r = ranked(&[0.1, 0.6, 0.1, f32::NAN, 0.2]);
        let ids: Vec<u32> = r.iter().map(|c| c.0).collect();
        assert_eq!(ids, [1, 4, 0, 2, 3]);
        assert_eq!(r[0], (1, 0.6));
        assert!(r[4].1.is_nan());
        assert!(ranked(&[]).is_empty());
    }

    #[test]
    fn shapes_cls_01_multi() {
        // tests/fixtures/reference/dev/shapes-cls.json, "01_multi_320x320.jpg": the softmax
        // is in the graph, so the raw output is the reference's probs.
        let out = npy::read_f32(&format!(
            "{}/../../tests/fixtures/reference/dev/tensors/01_multi_320x320.shapes-cls.output0.npy",
            env!("CARGO_MANIFEST_DIR")
        ));
        assert_eq!(out.shape, [1, 3]);
        let rows = class_rows(&out.data, &out.shape, 1).unwrap();
        let probs = probabilities(rows[0], Activation::None);
        let want = [0.006263, 0.01602, 0.977717];
        for (a, b) in probs.iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "{probs:?} vs {want:?}");
        }
        let top: Vec<u32> = ranked(&probs).iter().map(|c| c.0).collect();
        assert_eq!(top, [2, 1, 0]);
    }
}
