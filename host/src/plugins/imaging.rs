//! The images of a call, lent to the plugin as `inference:plugins/types.image` handles, and the
//! `inference:plugins/imaging` capability every task plugin is granted: bringing them to a model's
//! input natively (the guest crate's own pre-processing, compiled for the host, so the tensor is
//! bit-identical to what the plugin would make in WebAssembly), so the pixels never cross into
//! the plugin unless it asks for a copy.

use inference_guest as guest;
use wasmtime::component::{HasData, Resource, ResourceTable};
use wasmtime_wasi_nn::wit::TensorType;
use wasmtime_wasi_nn::Tensor;

use super::wit::imaging::{InputSpec, Placement, Resampling};
use super::wit::{self, ChannelOrder, ErrorKind, LentImage, PluginError, ResizeMode};
use crate::input::RgbImage;

/// The images lent to one call, and the input tensors its imaging made.
#[derive(Default)]
pub struct Lent {
    images: Vec<RgbImage>,
    /// Whether the caller wants the pixels back after the call (to draw on them); if not, an
    /// image's pixels are freed as soon as the plugin drops its handle, so that a call waiting
    /// for its model run, or decoding outputs, holds no decoded image it no longer reads.
    keep: bool,
    /// Bytes of input tensors `model-input` may hold alive at once in this call (the call's
    /// memory limit: the tensors live in the host, outside the plugin's linear memory).
    tensor_bytes: usize,
    /// The tensors made so far, as (handle, address of their data, bytes), until the plugin
    /// drops them.
    made: Vec<(u32, usize, usize)>,
}

impl Lent {
    pub fn new(images: Vec<RgbImage>, keep: bool, tensor_bytes: usize) -> Self {
        Self {
            images,
            keep,
            tensor_bytes,
            made: Vec::new(),
        }
    }

    /// Bytes of the tensors made by imaging that are still alive. A dropped tensor's handle may
    /// be reused by another tensor: one that is not at the same address counts as dropped (and
    /// one that is still counts, which errs on the safe side).
    fn alive_bytes(&mut self, table: &ResourceTable) -> usize {
        self.made.retain(|&(rep, address, _)| {
            table
                .get(&Resource::<Tensor>::new_borrow(rep))
                .is_ok_and(|t| t.data.as_ptr() as usize == address)
        });
        self.made.iter().map(|&(_, _, bytes)| bytes).sum()
    }

    /// The images, handed back; without `keep`, those whose handles the plugin dropped have no
    /// pixels left (their sizes stay).
    pub fn into_images(self) -> Vec<RgbImage> {
        self.images
    }
}

impl Lent {
    /// One owned handle per lent image, in order, for a world's export (the plugin drops them;
    /// the pixels stay here).
    pub fn handles(&self, table: &mut ResourceTable) -> wasmtime::Result<Vec<Resource<LentImage>>> {
        (0..self.images.len())
            .map(|index| Ok(table.push(LentImage { index })?))
            .collect()
    }

    /// The lent images as WIT 0.1.0 records: their pixels move out, to be copied into the plugin;
    /// `return_records` puts them back.
    pub fn records(&mut self) -> Vec<wit::v1::Image> {
        self.images
            .iter_mut()
            .map(|i| wit::v1::Image {
                width: i.width,
                height: i.height,
                rgb: std::mem::take(&mut i.rgb),
            })
            .collect()
    }

    pub fn return_records(&mut self, records: Vec<wit::v1::Image>) {
        for (image, record) in self.images.iter_mut().zip(records) {
            image.rgb = record.rgb;
        }
    }
}

/// What the image type and imaging see of a call's state.
pub struct ImagingView<'a> {
    pub table: &'a mut ResourceTable,
    pub lent: &'a mut Lent,
}

/// Links the image type and imaging with `ImagingView` as their state.
pub struct HasImaging;

impl HasData for HasImaging {
    type Data<'a> = ImagingView<'a>;
}

impl ImagingView<'_> {
    fn lent_image(&self, handle: &Resource<LentImage>) -> wasmtime::Result<&RgbImage> {
        let index = self.table.get(handle)?.index;
        self.lent
            .images
            .get(index)
            .ok_or_else(|| wasmtime::format_err!("image handle {index} has no image"))
    }
}

impl wit::HostImage for ImagingView<'_> {
    fn width(&mut self, image: Resource<LentImage>) -> wasmtime::Result<u32> {
        Ok(self.lent_image(&image)?.width)
    }

    fn height(&mut self, image: Resource<LentImage>) -> wasmtime::Result<u32> {
        Ok(self.lent_image(&image)?.height)
    }

    fn rgb(&mut self, image: Resource<LentImage>) -> wasmtime::Result<Vec<u8>> {
        // Lowering the list into the plugin's memory is bounded by its memory limit.
        Ok(self.lent_image(&image)?.rgb.clone())
    }

    fn drop(&mut self, image: Resource<LentImage>) -> wasmtime::Result<()> {
        let index = self.table.delete(image)?.index;
        // An owned handle is the only one to its image: once dropped, nothing reads the pixels.
        if !self.lent.keep {
            if let Some(image) = self.lent.images.get_mut(index) {
                image.rgb = Vec::new();
            }
        }
        Ok(())
    }
}

impl wit::Host for ImagingView<'_> {}

impl wit::imaging::Host for ImagingView<'_> {
    fn model_input(
        &mut self,
        images: Vec<Resource<LentImage>>,
        spec: InputSpec,
    ) -> wasmtime::Result<Result<(Resource<Tensor>, Vec<Placement>), PluginError>> {
        let invalid = |message: String| PluginError {
            kind: ErrorKind::InvalidInput,
            message,
        };
        let input = match model_input(&spec) {
            Ok(input) => input,
            Err(message) => return Ok(Err(invalid(message))),
        };
        let per_image = input.values_per_image() * 4;
        let bytes = per_image.saturating_mul(images.len());
        let alive = self.lent.alive_bytes(self.table);
        if alive.saturating_add(bytes) > self.lent.tensor_bytes {
            return Ok(Err(invalid(format!(
                "model-input of {} image(s) at {}x{} needs {bytes} bytes of tensors; with the {alive} bytes of the \
                 call's tensors not yet dropped, that is over its memory limit of {} bytes",
                images.len(),
                input.width,
                input.height,
                self.lent.tensor_bytes
            ))));
        }
        let mut refs = Vec::with_capacity(images.len());
        for handle in &images {
            let image = self.lent_image(handle)?;
            match guest::ImageRef::new(image.width, image.height, &image.rgb) {
                Ok(r) => refs.push(r),
                Err(message) => return Ok(Err(invalid(message))),
            }
        }
        let fill = |out: &mut [f32]| match spec.resampling {
            Resampling::Bytes => input.batch_into(&refs, out),
            Resampling::Float if input.resize == guest::Resize::Stretch => {
                guest::rfdetr::batch_into(&input, &refs, out)
            }
            Resampling::Float => Err("float resampling is for the stretch only".to_string()),
        };
        // Written in place as the tensor's bytes (ONNX Runtime reads them where they are); a
        // buffer the allocator did not align for f32 (it does) would take a copy.
        let mut data = vec![0u8; bytes];
        let filled = match bytemuck::try_cast_slice_mut::<u8, f32>(&mut data) {
            Ok(out) => fill(out),
            Err(_) => {
                let mut out = vec![0f32; bytes / 4];
                fill(&mut out).inspect(|_| data.copy_from_slice(bytemuck::cast_slice(&out)))
            }
        };
        let transforms = match filled {
            Ok(transforms) => transforms,
            Err(message) => return Ok(Err(invalid(message))),
        };
        let address = data.as_ptr() as usize;
        let tensor = Tensor {
            dimensions: input.dims(images.len()),
            ty: TensorType::Fp32,
            data,
        };
        let placements = transforms
            .iter()
            .map(|t| Placement {
                scale_x: t.scale_x,
                scale_y: t.scale_y,
                pad_x: t.pad_x,
                pad_y: t.pad_y,
                original_width: t.orig_width,
                original_height: t.orig_height,
            })
            .collect();
        let tensor = self.table.push(tensor)?;
        self.lent.made.push((tensor.rep(), address, bytes));
        Ok(Ok((tensor, placements)))
    }
}

/// The guest crate's description of a model input, from the plugin's spec.
fn model_input(spec: &InputSpec) -> Result<guest::ModelInput, String> {
    let resize = match spec.resize {
        ResizeMode::Letterbox => guest::Resize::Letterbox { pad: spec.pad_value },
        ResizeMode::Stretch => guest::Resize::Stretch,
        ResizeMode::CenterCrop => guest::Resize::CenterCrop,
    };
    let layout = match spec.channel_order {
        ChannelOrder::Nchw => guest::Layout::Nchw,
        ChannelOrder::Nhwc => guest::Layout::Nhwc,
    };
    guest::ModelInput::new(spec.width, spec.height, resize, layout, &spec.mean, &spec.std)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::wit::imaging::Host as _;
    use crate::plugins::wit::HostImage as _;

    fn spec(resize: ResizeMode, resampling: Resampling) -> InputSpec {
        InputSpec {
            width: 8,
            height: 4,
            resize,
            pad_value: 114,
            channel_order: ChannelOrder::Nchw,
            mean: vec![0.0; 3],
            std: vec![1.0; 3],
            resampling,
        }
    }

    fn image(width: u32, height: u32, value: u8) -> RgbImage {
        RgbImage {
            width,
            height,
            rgb: vec![value; (width * height * 3) as usize],
        }
    }

    #[test]
    fn model_input_is_the_guest_crates_preprocessing_within_the_calls_memory() {
        let mut table = ResourceTable::new();
        let mut lent = Lent::new(vec![image(16, 4, 10), image(2, 4, 200)], true, 2 * 8 * 4 * 3 * 4);
        let handles = lent.handles(&mut table).unwrap();
        let mut view = ImagingView {
            table: &mut table,
            lent: &mut lent,
        };
        let borrowed = |h: &Resource<LentImage>| Resource::<LentImage>::new_borrow(h.rep());
        assert_eq!(view.width(borrowed(&handles[1])).unwrap(), 2);
        assert_eq!(view.rgb(borrowed(&handles[0])).unwrap().len(), 16 * 4 * 3);

        let both = || handles.iter().map(borrowed).collect::<Vec<_>>();
        let (tensor, placements) = view
            .model_input(both(), spec(ResizeMode::Letterbox, Resampling::Bytes))
            .unwrap()
            .unwrap();
        let kept = Resource::<Tensor>::new_borrow(tensor.rep());
        assert_eq!(view.table.get(&kept).unwrap().dimensions, vec![2, 3, 4, 8]);
        // The same as the guest crate's own pre-processing, bit for bit.
        let refs = [
            guest::ImageRef::new(16, 4, &[10; 16 * 4 * 3]).unwrap(),
            guest::ImageRef::new(2, 4, &[200; 2 * 4 * 3]).unwrap(),
        ];
        let input = super::model_input(&spec(ResizeMode::Letterbox, Resampling::Bytes)).unwrap();
        let (want, transforms) = input.batch(&refs).unwrap();
        assert_eq!(
            view.table.get(&kept).unwrap().data,
            bytemuck::cast_slice::<f32, u8>(&want)
        );
        assert_eq!(
            (placements[1].scale_x, placements[1].pad_x),
            (transforms[1].scale_x, transforms[1].pad_x)
        );
        assert_eq!((placements[1].original_width, placements[1].original_height), (2, 4));

        // While it is alive the call's memory is spent: the next tensor is refused, with the sizes.
        let refused = view
            .model_input(both(), spec(ResizeMode::Stretch, Resampling::Bytes))
            .unwrap()
            .unwrap_err();
        assert_eq!(refused.kind, ErrorKind::InvalidInput);
        assert!(
            refused.message.contains("8x4") && refused.message.contains("memory limit"),
            "{}",
            refused.message
        );
        // Once the plugin drops it (after its run), the next one fits.
        view.table.delete(tensor).unwrap();
        assert!(view
            .model_input(both(), spec(ResizeMode::Stretch, Resampling::Bytes))
            .unwrap()
            .is_ok());
    }

    #[test]
    fn a_dropped_handle_frees_its_pixels_unless_they_are_kept() {
        for keep in [false, true] {
            let mut table = ResourceTable::new();
            let mut lent = Lent::new(vec![image(4, 2, 1), image(2, 2, 2)], keep, 1 << 20);
            let mut handles = lent.handles(&mut table).unwrap();
            let mut view = ImagingView {
                table: &mut table,
                lent: &mut lent,
            };
            view.drop(handles.remove(0)).unwrap();
            let images = lent.into_images();
            // The dropped image keeps its size either way; its pixels only when kept. The image
            // whose handle is still held keeps its pixels.
            assert_eq!((images[0].width, images[0].height), (4, 2));
            assert_eq!(images[0].rgb.len(), if keep { 4 * 2 * 3 } else { 0 });
            assert_eq!(images[1].rgb, vec![2; 2 * 2 * 3]);
        }
    }

    #[test]
    fn bad_specs_are_the_plugins_errors() {
        let mut table = ResourceTable::new();
        let mut lent = Lent::new(vec![image(4, 4, 0)], true, 1 << 20);
        let handles = lent.handles(&mut table).unwrap();
        let mut view = ImagingView {
            table: &mut table,
            lent: &mut lent,
        };
        let one = || vec![Resource::<LentImage>::new_borrow(handles[0].rep())];
        let float_letterbox = view
            .model_input(one(), spec(ResizeMode::Letterbox, Resampling::Float))
            .unwrap()
            .unwrap_err();
        assert!(
            float_letterbox.message.contains("stretch only"),
            "{}",
            float_letterbox.message
        );
        let mut zero_std = spec(ResizeMode::Stretch, Resampling::Float);
        zero_std.std = vec![1.0, 0.0, 1.0];
        assert_eq!(
            view.model_input(one(), zero_std).unwrap().unwrap_err().kind,
            ErrorKind::InvalidInput
        );
        // A stretch in float is RF-DETR's.
        assert!(view
            .model_input(one(), spec(ResizeMode::Stretch, Resampling::Float))
            .unwrap()
            .is_ok());
    }
}
