//! Building a model's batched input tensor from several images, and moving f32 data to and
//! from the little-endian bytes wasi-nn tensors carry.

use crate::detect::OutputLayout;
use crate::preprocess::{preprocess_into, ImageRef, Layout, Resize, Transform};

/// The model's input geometry and pre-processing, as the host describes it.
#[derive(Clone, Copy, Debug)]
pub struct ModelInput {
    /// Input width and height in pixels.
    pub width: u32,
    /// Input height in pixels.
    pub height: u32,
    /// How images are brought to the input size.
    pub resize: Resize,
    /// Tensor layout.
    pub layout: Layout,
    /// Per-channel mean (RGB) subtracted after scaling to 0..1.
    pub mean: [f32; 3],
    /// Per-channel standard deviation (RGB) divided by after the mean.
    pub std: [f32; 3],
}

impl ModelInput {
    /// Validates the host's description (mean/std must have three channels, std non-zero).
    pub fn new(
        width: u32,
        height: u32,
        resize: Resize,
        layout: Layout,
        mean: &[f32],
        std: &[f32],
    ) -> Result<Self, String> {
        let three = |v: &[f32], what: &str| -> Result<[f32; 3], String> {
            v.try_into()
                .map_err(|_| format!("{what} must have 3 values, got {}", v.len()))
        };
        let (mean, std) = (three(mean, "mean")?, three(std, "std")?);
        if std.iter().any(|s| *s == 0.0 || !s.is_finite()) || mean.iter().any(|m| !m.is_finite()) {
            return Err("normalisation must be finite with a non-zero std".into());
        }
        if width == 0 || height == 0 || u64::from(width) * u64::from(height) > 1 << 26 {
            return Err(format!("unusable input size {width}x{height}"));
        }
        Ok(Self {
            width,
            height,
            resize,
            layout,
            mean,
            std,
        })
    }

    /// Dimensions of a batch of `n` images.
    pub fn dims(&self, n: usize) -> Vec<u32> {
        let n = n as u32;
        match self.layout {
            Layout::Nchw => vec![n, 3, self.height, self.width],
            Layout::Nhwc => vec![n, self.height, self.width, 3],
        }
    }

    /// Values of one image's tensor.
    pub fn values_per_image(&self) -> usize {
        self.width as usize * self.height as usize * 3
    }

    /// Pre-processes `images` into one batched tensor; returns it with each image's transform.
    pub fn batch(&self, images: &[ImageRef]) -> Result<(Vec<f32>, Vec<Transform>), String> {
        let mut data = vec![0f32; self.values_per_image() * images.len()];
        let transforms = self.batch_into(images, &mut data)?;
        Ok((data, transforms))
    }

    /// `batch` into `data` (`values_per_image() * images.len()` values).
    pub fn batch_into(&self, images: &[ImageRef], data: &mut [f32]) -> Result<Vec<Transform>, String> {
        self.each_image_into(images, data, |img, out| {
            preprocess_into(
                img,
                self.resize,
                self.width,
                self.height,
                self.mean,
                self.std,
                self.layout,
                out,
            )
        })
    }

    /// Splits `data` into one tensor per image and fills each with `fill`.
    pub fn each_image_into(
        &self,
        images: &[ImageRef],
        data: &mut [f32],
        fill: impl Fn(&ImageRef, &mut [f32]) -> Result<Transform, String>,
    ) -> Result<Vec<Transform>, String> {
        let per_image = self.values_per_image();
        if data.len() != per_image * images.len() {
            return Err(format!(
                "a batch of {} images needs {} values, not {}",
                images.len(),
                per_image * images.len(),
                data.len()
            ));
        }
        images
            .iter()
            .zip(data.chunks_exact_mut(per_image))
            .map(|(img, out)| fill(img, out))
            .collect()
    }
}

/// Encodes f32 values as little-endian bytes (wasi-nn tensor data).
pub fn f32_to_le_bytes(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * 4);
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Decodes little-endian bytes into f32 values; a trailing partial value is ignored.
pub fn le_bytes_to_f32(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// The number of class scores in a detection output of `dims` when the model names none.
pub fn classes_in(dims: &[usize], layout: OutputLayout) -> usize {
    let (d1, d2) = match dims {
        [_, d1, d2] | [d1, d2] => (*d1, *d2),
        _ => return 0,
    };
    match layout {
        OutputLayout::YoloV8 => d1.saturating_sub(4),
        OutputLayout::YoloV5 => d2.saturating_sub(5),
        OutputLayout::EndToEnd => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_description() {
        assert!(ModelInput::new(320, 320, Resize::Stretch, Layout::Nchw, &[0.0; 3], &[1.0; 3]).is_ok());
        assert!(ModelInput::new(320, 320, Resize::Stretch, Layout::Nchw, &[0.0; 2], &[1.0; 3]).is_err());
        assert!(ModelInput::new(320, 320, Resize::Stretch, Layout::Nchw, &[0.0; 3], &[1.0, 0.0, 1.0]).is_err());
        assert!(ModelInput::new(0, 320, Resize::Stretch, Layout::Nchw, &[0.0; 3], &[1.0; 3]).is_err());
    }

    #[test]
    fn batches_images_in_order() {
        let input = ModelInput::new(4, 2, Resize::Stretch, Layout::Nchw, &[0.0; 3], &[1.0; 3]).unwrap();
        let black = vec![0u8; 4 * 2 * 3];
        let white = vec![255u8; 4 * 2 * 3];
        let images = [
            ImageRef::new(4, 2, &black).unwrap(),
            ImageRef::new(4, 2, &white).unwrap(),
        ];
        let (data, transforms) = input.batch(&images).unwrap();
        assert_eq!(input.dims(2), vec![2, 3, 2, 4]);
        assert_eq!(data.len(), 2 * 24);
        assert!(data[..24].iter().all(|v| *v == 0.0));
        assert!(data[24..].iter().all(|v| *v == 1.0));
        assert_eq!(transforms.len(), 2);
    }

    #[test]
    fn bytes_round_trip() {
        let values = [0.0f32, -1.5, 3.25e-7, f32::MAX];
        assert_eq!(le_bytes_to_f32(&f32_to_le_bytes(&values)), values);
    }

    #[test]
    fn counts_classes() {
        assert_eq!(classes_in(&[1, 7, 2100], OutputLayout::YoloV8), 3);
        assert_eq!(classes_in(&[1, 2100, 8], OutputLayout::YoloV5), 3);
        assert_eq!(classes_in(&[1, 300, 6], OutputLayout::EndToEnd), 0);
    }
}
