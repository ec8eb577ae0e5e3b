//! A hostile object-detection plugin for the sandbox tests. The request's first
//! `class_filter` entry picks the misbehaviour, so one component covers every case:
//! `loop` spins forever, `alloc` allocates without bound, `panic` panics, `big` returns more
//! than the output limit, `flood` returns
//! millions of detections, `foreign-graph` loads a graph it was not given, `read-file` and
//! `env` look for host files and environment, `huge-input` asks the host's imaging for an input
//! tensor far over its memory limit, `hoard` keeps asking for input tensors without running them,
//! `forged-image` uses an image handle it was never given, `ok` returns one fixed detection.

use guest::bindings::object_detection::exports::inference::plugins::detection::Guest;
use guest::imaging::{self, InputSpec};
use guest::nn::graph;
use guest::wit::{ChannelOrder, Detection, DetectionParams, ErrorKind, Image, ModelInfo, PluginError, ResizeMode};
use inference_guest as guest;

struct Plugin;

/// A square letterbox input of `size` pixels.
fn spec(size: u32) -> InputSpec {
    InputSpec {
        width: size,
        height: size,
        resize: ResizeMode::Letterbox,
        pad_value: 114,
        channel_order: ChannelOrder::Nchw,
        mean: vec![0.0; 3],
        std: vec![1.0; 3],
        resampling: imaging::Resampling::Bytes,
    }
}

fn fail(message: String) -> PluginError {
    PluginError {
        kind: ErrorKind::InferenceFailed,
        message,
    }
}

fn one(class_name: &str) -> Detection {
    Detection {
        x: 1.0,
        y: 1.0,
        width: 1.0,
        height: 1.0,
        confidence: 1.0,
        class_id: 0,
        class_name: class_name.to_string(),
    }
}

impl Guest for Plugin {
    fn detect(
        model: ModelInfo,
        images: Vec<Image>,
        params: DetectionParams,
    ) -> Result<Vec<Vec<Detection>>, PluginError> {
        let mode = params
            .class_filter
            .as_ref()
            .and_then(|f| f.first())
            .cloned()
            .unwrap_or_default();
        match mode.as_str() {
            "loop" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 16 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "panic" => panic!("hostile-detector was asked to panic"),
            // Fits in its memory, but is over the output limit: refused after the call.
            "big" => Ok(images
                .iter()
                .map(|_| (0..100_000).map(|_| one("x")).collect())
                .collect()),
            "flood" => Ok(images
                .iter()
                .map(|_| (0..4_000_000).map(|_| one("x")).collect())
                .collect()),
            "foreign-graph" => match graph::load_by_name("some-other-tenant/1") {
                Ok(_) => Ok(images.iter().map(|_| vec![one("loaded a foreign graph")]).collect()),
                Err(e) => Err(fail(format!("foreign graph refused: {:?}", e.code()))),
            },
            "read-file" => match std::fs::read_to_string("/etc/passwd") {
                Ok(text) => Ok(images.iter().map(|_| vec![one(&text)]).collect()),
                Err(e) => Err(fail(format!("file read refused: {e}"))),
            },
            "env" => {
                let vars: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
                Err(fail(format!("environment has {} variables", vars.len())))
            }
            "huge-input" => {
                let borrowed: Vec<&Image> = images.iter().collect();
                imaging::model_input(&borrowed, &spec(8192)).map(|_| Vec::new())
            }
            "hoard" => {
                let borrowed: Vec<&Image> = images.iter().collect();
                let mut hoard = Vec::new();
                loop {
                    hoard.push(imaging::model_input(&borrowed, &spec(640))?);
                }
            }
            "forged-image" => {
                // SAFETY (of the test): the handle is made up on purpose; the runtime must refuse it.
                #[allow(unsafe_code)]
                let forged = unsafe { Image::from_handle(4242) };
                Ok(vec![vec![one(&format!("read a forged image {}", forged.width()))]])
            }
            _ => Ok(images.iter().map(|_| vec![one(&model.id)]).collect()),
        }
    }
}

guest::export_object_detection!(Plugin);
