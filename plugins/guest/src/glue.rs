//! The WIT glue every task plugin needs, written once. Each plugin generates its own copy of
//! the WIT bindings (`wit_bindgen::generate!` at its crate root), so the glue cannot be plain
//! functions here: [`plugin_glue!`](crate::plugin_glue) expands it inside the plugin crate,
//! against that crate's `inference::plugins::types` and `wasi::nn`.

/// Defines, in the calling plugin crate (after its `wit_bindgen::generate!`):
/// `error`, `nn_error`, `model_input` (the host's model description as a [`ModelInput`](crate::ModelInput)),
/// `run_batches` (load the graph and run it batch by batch, the batch size bounded by the
/// model's), `detection` (a kept candidate as the response record, honouring the class
/// filter) and `first_output` (output 0 as float32 data with its dimensions).
// `crate::` is meant: it names the *calling* plugin's generated bindings.
#[allow(clippy::crate_in_macro_def)]
#[macro_export]
macro_rules! plugin_glue {
    () => {
        /// Images per run when the model's batch dimension is dynamic: bounds the tensor's memory.
        const DYNAMIC_BATCH_CHUNK: usize = 16;

        fn error(
            kind: crate::inference::plugins::types::ErrorKind,
            message: impl Into<String>,
        ) -> crate::inference::plugins::types::PluginError {
            crate::inference::plugins::types::PluginError {
                kind,
                message: message.into(),
            }
        }

        fn nn_error(what: &str, e: crate::wasi::nn::errors::Error) -> crate::inference::plugins::types::PluginError {
            error(
                crate::inference::plugins::types::ErrorKind::InferenceFailed,
                format!("{what}: {:?}: {}", e.code(), e.data()),
            )
        }

        /// The model's input geometry and pre-processing, as the host describes it.
        fn model_input(
            model: &crate::inference::plugins::types::ModelInfo,
        ) -> Result<$crate::ModelInput, crate::inference::plugins::types::PluginError> {
            use crate::inference::plugins::types::{ChannelOrder, ErrorKind, ResizeMode};
            $crate::ModelInput::new(
                model.input_width,
                model.input_height,
                match model.resize {
                    ResizeMode::Letterbox => $crate::Resize::Letterbox { pad: model.pad_value },
                    ResizeMode::Stretch => $crate::Resize::Stretch,
                    ResizeMode::CenterCrop => $crate::Resize::CenterCrop,
                },
                match model.channel_order {
                    ChannelOrder::Nchw => $crate::Layout::Nchw,
                    ChannelOrder::Nhwc => $crate::Layout::Nhwc,
                },
                &model.mean,
                &model.std,
            )
            .map_err(|e| error(ErrorKind::UnsupportedModel, e))
        }

        /// Views f32 data as the little-endian bytes a wasi-nn tensor carries, without copying
        /// the (megabyte-sized) input: WebAssembly is little-endian.
        fn as_le_bytes(data: &[f32]) -> &[u8] {
            // SAFETY: any f32 bit pattern is valid bytes; u8 has alignment 1; the length is in bytes.
            unsafe { std::slice::from_raw_parts(data.as_ptr().cast::<u8>(), std::mem::size_of_val(data)) }
        }

        /// Pre-processes `images` with `input`, runs the request's graph on them batch by batch
        /// and hands each batch's outputs, with its images' transforms, to `each`, in order.
        fn run_batches(
            model: &crate::inference::plugins::types::ModelInfo,
            input: &$crate::ModelInput,
            images: &[crate::inference::plugins::types::Image],
            mut each: impl FnMut(
                Vec<(String, crate::wasi::nn::tensor::Tensor)>,
                Vec<$crate::Transform>,
            ) -> Result<(), crate::inference::plugins::types::PluginError>,
        ) -> Result<(), crate::inference::plugins::types::PluginError> {
            use crate::inference::plugins::types::ErrorKind;
            use crate::wasi::nn::{graph, tensor};
            if images.is_empty() {
                return Ok(());
            }
            let graph = graph::load_by_name(&model.graph).map_err(|e| nn_error("loading the model", e))?;
            let context = graph
                .init_execution_context()
                .map_err(|e| nn_error("creating an execution context", e))?;
            let chunk = if model.max_batch == 0 {
                DYNAMIC_BATCH_CHUNK
            } else {
                model.max_batch as usize
            };
            for batch in images.chunks(chunk.max(1)) {
                let refs = batch
                    .iter()
                    .map(|i| $crate::ImageRef::new(i.width, i.height, &i.rgb))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| error(ErrorKind::InvalidInput, e))?;
                let (data, transforms) = input
                    .batch(&refs)
                    .map_err(|e| error(ErrorKind::InvalidInput, e))?;
                let tensor = tensor::Tensor::new(
                    &input.dims(refs.len()),
                    tensor::TensorType::Fp32,
                    as_le_bytes(&data),
                );
                drop(data);
                let outputs = context
                    .compute(vec![(model.input_name.clone(), tensor)])
                    .map_err(|e| nn_error("running the model", e))?;
                each(outputs, transforms)?;
            }
            Ok(())
        }

        /// One image's candidates that the request's detection parameters keep (`keep`: NMS,
        /// or ranking for end-to-end heads).
        #[allow(dead_code)] // classification has no boxes
        fn kept(
            candidates: Vec<$crate::Candidate>,
            layout: $crate::OutputLayout,
            params: &crate::inference::plugins::types::DetectionParams,
        ) -> Vec<$crate::Candidate> {
            $crate::keep(
                candidates,
                layout,
                params.iou_threshold,
                params.class_agnostic_nms,
                params.max_detections as usize,
            )
        }

        /// The response record of a kept candidate (box centre and size in original-image
        /// pixels, class named from the model), or `None` when the request's class filter
        /// leaves it out.
        #[allow(dead_code)] // classification has no boxes
        fn detection(
            model: &crate::inference::plugins::types::ModelInfo,
            params: &crate::inference::plugins::types::DetectionParams,
            transform: &$crate::Transform,
            c: &$crate::Candidate,
        ) -> Option<crate::inference::plugins::types::Detection> {
            let class_name = model
                .class_names
                .get(c.class_id as usize)
                .cloned()
                .unwrap_or_else(|| c.class_id.to_string());
            if let Some(filter) = &params.class_filter {
                if !filter.iter().any(|f| f == &class_name) {
                    return None;
                }
            }
            let [x1, y1, x2, y2] = transform.to_original_box(c.x1, c.y1, c.x2, c.y2);
            Some(crate::inference::plugins::types::Detection {
                x: (x1 + x2) / 2.0,
                y: (y1 + y2) / 2.0,
                width: x2 - x1,
                height: y2 - y1,
                confidence: c.score,
                class_id: c.class_id,
                class_name,
            })
        }

        /// Output 0 as float32 values with its dimensions.
        #[allow(dead_code)] // segmentation finds its outputs by rank instead
        fn first_output(
            outputs: &[(String, crate::wasi::nn::tensor::Tensor)],
        ) -> Result<(Vec<usize>, Vec<f32>), crate::inference::plugins::types::PluginError> {
            use crate::inference::plugins::types::ErrorKind;
            use crate::wasi::nn::tensor::TensorType;
            let (_, output) = outputs
                .first()
                .ok_or_else(|| error(ErrorKind::UnsupportedModel, "the model returned no outputs"))?;
            if output.ty() != TensorType::Fp32 {
                return Err(error(
                    ErrorKind::UnsupportedModel,
                    format!("output 0 is {:?}, float32 expected", output.ty()),
                ));
            }
            let dims = output.dimensions().iter().map(|d| *d as usize).collect();
            Ok((dims, $crate::le_bytes_to_f32(&output.data())))
        }
    };
}
