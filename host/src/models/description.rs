//! What the host and plugins know about a model: task, classes, input geometry and
//! pre-processing, derived from Roboflow's files when present and otherwise from the
//! metadata an Ultralytics ONNX export carries. A model of the RF-DETR family (see
//! [`is_rfdetr`]) gets that family's defaults instead of YOLO's where its files say nothing:
//! a stretch to the input size and ImageNet's mean and std.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use ort::tensor::TensorElementType;
use serde::Deserialize;

use crate::nn::ModelSignature;

/// Roboflow's name for the task a model was trained for, from the names model files use
/// (Ultralytics' `detect`, Roboflow's `object-detection`, ...). Other names are not tasks this
/// reading knows, and are skipped.
pub fn task_name(raw: &str) -> Option<&'static str> {
    match raw.trim().to_ascii_lowercase().replace('_', "-").as_str() {
        "detect" | "object-detection" | "detection" => Some(OBJECT_DETECTION),
        "segment" | "instance-segmentation" | "segmentation" => Some("instance-segmentation"),
        "classify" | "classification" | "single-label-classification" | "multi-label-classification" => {
            Some(CLASSIFICATION)
        }
        "pose" | "keypoint-detection" | "keypoints-detection" | "keypoints" => Some("keypoint-detection"),
        _ => None,
    }
}

const OBJECT_DETECTION: &str = "object-detection";
const INSTANCE_SEGMENTATION: &str = "instance-segmentation";
const CLASSIFICATION: &str = "classification";

/// How images are brought to the input size (mirrors the WIT `resize-mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resize {
    Letterbox,
    Stretch,
    CenterCrop,
}

/// How raw class scores become probabilities (the WIT `activation`; its `sigmoid` is for
/// plugins' own models: no model format we read asks for it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScoreActivation {
    None,
    Softmax,
}

/// Everything needed to run a model, shared by host and plugin.
#[derive(Clone, Debug)]
pub struct ModelDescription {
    pub id: String,
    /// Roboflow's task name (`object-detection`, ...; see `task_name`).
    pub task: String,
    /// The model's architecture (`yolov8n`, `rfdetr-base`, ...), when its files say: `model.toml`'s
    /// `architecture`, Roboflow's `model_type.json` `model_type`, or the ONNX metadata `model_type`.
    /// Plugins claim model families by it.
    pub architecture: Option<String>,
    /// The plugin `model.toml` pins the model to, by name.
    pub plugin: Option<String>,
    /// The graph's outputs (name, declared dims; -1 = dynamic), which plugins may claim.
    pub outputs: Vec<(String, Vec<i64>)>,
    pub class_names: Vec<String>,
    pub input_name: String,
    pub input_width: u32,
    pub input_height: u32,
    /// 0 = dynamic batch dimension.
    pub max_batch: u32,
    pub channels_last: bool,
    pub resize: Resize,
    pub pad_value: u8,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub score_activation: ScoreActivation,
    pub multi_label: bool,
    /// Keypoint names per class id.
    pub keypoint_names: Vec<Vec<String>>,
    /// Skeleton edges (pairs of keypoint ids) per class id, when the model declares them.
    pub keypoint_edges: Vec<Vec<(u32, u32)>>,
    pub metadata: Vec<(String, String)>,
}

/// Roboflow's `environment.json` (only the keys we use).
#[derive(Debug, Default, Deserialize)]
struct Environment {
    #[serde(rename = "CLASS_MAP", default)]
    class_map: Option<std::collections::BTreeMap<String, String>>,
    #[serde(rename = "PREPROCESSING", default)]
    preprocessing: Option<serde_json::Value>,
    #[serde(rename = "TYPE", default)]
    task: Option<String>,
    #[serde(rename = "MULTICLASS", default)]
    multiclass: Option<bool>,
    /// RF-DETR's input size (Roboflow writes it for its RF-DETR models).
    #[serde(rename = "RESOLUTION", default)]
    resolution: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct ResizeSettings {
    #[serde(default = "yes")]
    enabled: bool,
    width: Option<u32>,
    height: Option<u32>,
    format: Option<String>,
}

fn yes() -> bool {
    true
}

impl ModelDescription {
    /// Builds the description of the model stored in `dir` whose ONNX signature is `sig`.
    pub fn from_dir(id: &str, dir: &Path, sig: &ModelSignature) -> Result<Self> {
        let meta = |k: &str| sig.metadata.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());

        let env: Environment = match std::fs::read(dir.join("environment.json")) {
            Ok(bytes) => serde_json::from_slice(&bytes).context("environment.json is not valid")?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Environment::default(),
            Err(e) => return Err(e).context("cannot read environment.json"),
        };
        let preprocessing = match &env.preprocessing {
            // Roboflow stores PREPROCESSING either as an object or as a JSON-encoded string.
            Some(serde_json::Value::String(s)) => {
                Some(serde_json::from_str::<serde_json::Value>(s).context("PREPROCESSING is not valid JSON")?)
            }
            other => other.clone(),
        };
        let resize_settings: Option<ResizeSettings> = preprocessing
            .as_ref()
            .and_then(|p| p.get("resize"))
            .map(|r| serde_json::from_value(r.clone()))
            .transpose()
            .context("PREPROCESSING.resize is not valid")?
            .filter(|r: &ResizeSettings| r.enabled);

        let model_type = read_model_type(dir)?;
        let config = ModelConfig::read(dir)?;
        let task = [
            model_type.task.clone(),
            env.task.clone(),
            meta("task").map(str::to_string),
        ]
        .into_iter()
        .flatten()
        .find_map(|t| task_name(&t))
        .unwrap_or_else(|| task_from_outputs(sig))
        .to_string();
        let architecture = [
            config.architecture.clone(),
            model_type.architecture,
            meta("model_type").map(str::to_string),
        ]
        .into_iter()
        .flatten()
        .map(|a| a.trim().to_ascii_lowercase())
        .find(|a| !a.is_empty());
        let rfdetr = is_rfdetr(architecture.as_deref(), sig.outputs.iter().map(|o| o.name.as_str()));

        let class_names = if let Some(names) = read_class_names(dir)? {
            names
        } else if let Some(map) = &env.class_map {
            class_map_to_list(map.iter().map(|(k, v)| (k.as_str(), v.clone())))?
        } else if let Some(names) = meta("names") {
            parse_python_names(names).with_context(|| format!("cannot parse the model's `names` metadata: {names}"))?
        } else {
            Vec::new()
        };

        let input = sig.inputs.first().ok_or_else(|| anyhow!("the model has no inputs"))?;
        if input.dims.len() != 4 {
            bail!(
                "the model's input {:?} has shape {:?}; an image input [batch, 3, height, width] is expected",
                input.name,
                input.dims
            );
        }
        if !matches!(input.element, TensorElementType::Float32) {
            bail!(
                "the model's input {:?} is {:?}; float32 is expected",
                input.name,
                input.element
            );
        }
        let channels_last = input.dims[3] == 3 && input.dims[1] != 3;
        let (h_dim, w_dim) = if channels_last {
            (input.dims[1], input.dims[2])
        } else {
            (input.dims[2], input.dims[3])
        };
        let imgsz = meta("imgsz").and_then(parse_imgsz);
        let (input_height, input_width) = if h_dim > 0 && w_dim > 0 {
            (h_dim as u32, w_dim as u32)
        } else {
            // A dynamic input: Roboflow's resize settings, else the export size, else YOLO's usual.
            let from_env = resize_settings.as_ref().and_then(|r| Some((r.height?, r.width?)));
            let resolution = env
                .resolution
                .as_ref()
                .and_then(|v| v.as_u64().or_else(|| v.as_str()?.trim().parse().ok()))
                .and_then(|r| u32::try_from(r).ok())
                .map(|r| (r, r));
            from_env.or(resolution).or(imgsz).unwrap_or((640, 640))
        };
        if input_height == 0 || input_width == 0 || input_height > 8192 || input_width > 8192 {
            bail!("unusable input size {input_width}x{input_height}");
        }
        let max_batch = if input.dims[0] > 0 { input.dims[0] as u32 } else { 0 };

        let ultralytics = !rfdetr && (meta("imgsz").is_some() || meta("stride").is_some());
        let (resize, pad_value) = match resize_settings.as_ref().and_then(|r| r.format.as_deref()) {
            Some(format) => roboflow_resize(format),
            // rfdetr's predict() stretches to its square resolution.
            None if rfdetr => (Resize::Stretch, 0),
            None if task == CLASSIFICATION && ultralytics => (Resize::CenterCrop, 0),
            None if ultralytics || resize_settings.is_none() => (Resize::Letterbox, 114),
            None => (Resize::Stretch, 0),
        };

        let multi_label = env.multiclass.unwrap_or(false);
        // Ultralytics classifiers end in a softmax; Roboflow's output logits.
        // Roboflow's multi-label models report their raw outputs as scores.
        let score_activation = if ultralytics || multi_label {
            ScoreActivation::None
        } else {
            ScoreActivation::Softmax
        };
        let (keypoint_names, keypoint_edges) = match read_keypoints_metadata(dir)? {
            Some(per_class) => per_class,
            None => (
                meta("kpt_names").map(parse_kpt_names).transpose()?.unwrap_or_default(),
                Vec::new(),
            ),
        };

        Ok(Self {
            id: id.to_string(),
            task,
            architecture,
            plugin: config.plugin,
            outputs: sig.outputs.iter().map(|o| (o.name.clone(), o.dims.clone())).collect(),
            class_names,
            input_name: input.name.clone(),
            input_width,
            input_height,
            max_batch,
            channels_last,
            resize,
            pad_value,
            // RF-DETR's DINOv2 backbone is trained on ImageNet-normalised inputs; YOLO on 0..1.
            mean: if rfdetr {
                inference_guest::rfdetr::IMAGENET_MEAN
            } else {
                [0.0; 3]
            },
            std: if rfdetr {
                inference_guest::rfdetr::IMAGENET_STD
            } else {
                [1.0; 3]
            },
            score_activation,
            multi_label,
            keypoint_names,
            keypoint_edges,
            metadata: sig.metadata.clone(),
        })
    }
}

impl ModelDescription {
    /// Whether the model is of the RF-DETR family (see [`is_rfdetr`]).
    pub fn is_rfdetr(&self) -> bool {
        is_rfdetr(
            self.architecture.as_deref(),
            self.outputs.iter().map(|(name, _)| name.as_str()),
        )
    }

    /// The input geometry and pre-processing in the shared guest crate's terms (what the plugins
    /// get through the WIT's `model-info`), for native use such as the benchmark.
    pub fn input(&self) -> Result<inference_guest::ModelInput, String> {
        let resize = match self.resize {
            Resize::Letterbox => inference_guest::Resize::Letterbox { pad: self.pad_value },
            Resize::Stretch => inference_guest::Resize::Stretch,
            Resize::CenterCrop => inference_guest::Resize::CenterCrop,
        };
        let layout = if self.channels_last {
            inference_guest::Layout::Nhwc
        } else {
            inference_guest::Layout::Nchw
        };
        inference_guest::ModelInput::new(
            self.input_width,
            self.input_height,
            resize,
            layout,
            &self.mean,
            &self.std,
        )
    }
}

/// Whether a model is of the RF-DETR family: Roboflow's model type names it (`rfdetr-base`,
/// `rfdetr-seg-preview`, ...), or it has the outputs of `rfdetr`'s ONNX export, `dets` and
/// `labels` (a plain export names no model type).
pub fn is_rfdetr<'a>(architecture: Option<&str>, outputs: impl Iterator<Item = &'a str> + Clone) -> bool {
    let has = |name: &str| outputs.clone().any(|o| o == name);
    architecture.is_some_and(|a| a.starts_with("rfdetr")) || (has("dets") && has("labels"))
}

/// The task of a model whose files name none, from its outputs: a `masks` output (RF-DETR's
/// segmentation export) means instance segmentation; anything else is most likely a detector.
fn task_from_outputs(sig: &ModelSignature) -> &'static str {
    if sig.outputs.iter().any(|o| o.name == "masks") {
        INSTANCE_SEGMENTATION
    } else {
        OBJECT_DETECTION
    }
}

/// Roboflow resize formats; unknown fit modes fall back to a black letterbox as Roboflow does.
fn roboflow_resize(format: &str) -> (Resize, u8) {
    match format {
        "Stretch to" => (Resize::Stretch, 0),
        "Fit (white edges) in" => (Resize::Letterbox, 255),
        "Fit (grey edges) in" => (Resize::Letterbox, 114),
        "Fit (black edges) in" => (Resize::Letterbox, 0),
        other if other.starts_with("Fit") || other.starts_with("Fill") => {
            tracing::warn!(format = other, "unsupported resize format, using a black letterbox");
            (Resize::Letterbox, 0)
        }
        _ => (Resize::Stretch, 0),
    }
}

/// What Roboflow's `model_type.json` says: the task and the architecture.
#[derive(Default)]
struct ModelType {
    task: Option<String>,
    architecture: Option<String>,
}

/// `model_type.json` as Roboflow's cache writes it.
fn read_model_type(dir: &Path) -> Result<ModelType> {
    match std::fs::read(dir.join("model_type.json")) {
        Ok(bytes) => {
            let v: serde_json::Value = serde_json::from_slice(&bytes).context("model_type.json is not valid JSON")?;
            let text = |key: &str| v.get(key).and_then(|t| t.as_str()).map(str::to_string);
            Ok(ModelType {
                task: text("project_task_type"),
                architecture: text("model_type"),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ModelType::default()),
        Err(e) => Err(e).context("cannot read model_type.json"),
    }
}

/// `model.toml`: the model directory's own settings, for what its other files cannot say.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The model's architecture name (overrides `model_type.json` and the ONNX metadata).
    #[serde(default)]
    pub architecture: Option<String>,
    /// The plugin that serves the model, by name (overrides the choice by claims).
    #[serde(default)]
    pub plugin: Option<String>,
    /// How the model's concurrent runs are batched (overrides the server's flags).
    #[serde(default)]
    pub batching: Option<BatchingConfig>,
}

/// `[batching]` of `model.toml`.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchingConfig {
    /// `false`: every call runs on its own.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Most images in one run.
    #[serde(default)]
    pub max_images: Option<usize>,
    /// How long a run that is not full waits for more (microseconds).
    #[serde(default)]
    pub max_delay_us: Option<u64>,
}

impl ModelConfig {
    pub const FILE: &'static str = "model.toml";

    /// The directory's `model.toml`, or the defaults without one.
    pub fn read(dir: &Path) -> Result<Self> {
        match std::fs::read_to_string(dir.join(Self::FILE)) {
            Ok(text) if text.len() > 64 << 10 => bail!("{} is larger than 64 KiB", Self::FILE),
            Ok(text) => toml::from_str(&text).with_context(|| format!("{} is not valid", Self::FILE)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", Self::FILE)),
        }
    }
}

fn read_class_names(dir: &Path) -> Result<Option<Vec<String>>> {
    match std::fs::read_to_string(dir.join("class_names.txt")) {
        Ok(text) => Ok(Some(
            text.lines()
                .map(|l| l.trim_end_matches('\r').to_string())
                .filter(|l| !l.is_empty())
                .collect(),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).context("cannot read class_names.txt"),
    }
}

/// Turns `{id: name}` pairs into a list indexed by id (gaps become the id as text).
fn class_map_to_list<'a>(pairs: impl Iterator<Item = (&'a str, String)>) -> Result<Vec<String>> {
    let mut indexed: Vec<(usize, String)> = pairs
        .map(|(k, v)| {
            Ok((
                k.trim()
                    .parse::<usize>()
                    .with_context(|| format!("class id {k:?} is not a number"))?,
                v,
            ))
        })
        .collect::<Result<_>>()?;
    indexed.sort_by_key(|(i, _)| *i);
    let len = indexed.last().map_or(0, |(i, _)| i + 1);
    if len > 100_000 {
        bail!("class ids up to {len} are not plausible");
    }
    let mut names: Vec<String> = (0..len).map(|i| i.to_string()).collect();
    for (i, name) in indexed {
        names[i] = name;
    }
    Ok(names)
}

/// Parses the Python dict literal Ultralytics writes: `{0: 'person', 1: "dog's toy"}`.
pub fn parse_python_names(text: &str) -> Result<Vec<String>> {
    let body = text
        .trim()
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .ok_or_else(|| anyhow!("not a dict"))?;
    let mut pairs = Vec::new();
    let mut chars = body.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != ':')).collect();
        chars.next(); // ':'
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let quote = chars
            .next()
            .filter(|q| *q == '\'' || *q == '"')
            .ok_or_else(|| anyhow!("expected a quoted name"))?;
        let mut value = String::new();
        loop {
            match chars.next() {
                None => bail!("unterminated string"),
                Some('\\') => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some('t') => value.push('\t'),
                    Some(c) => value.push(c),
                    None => bail!("unterminated escape"),
                },
                Some(c) if c == quote => break,
                Some(c) => value.push(c),
            }
        }
        pairs.push((key.trim().to_string(), value));
    }
    class_map_to_list(pairs.iter().map(|(k, v)| (k.as_str(), v.clone())))
}

/// Keypoint names and skeleton edges per class id.
type KeypointsMetadata = (Vec<Vec<String>>, Vec<Vec<(u32, u32)>>);

/// Roboflow's `keypoints_metadata.json`: `[{"object_class_id": 0, "keypoints": {"0": "nose", ...},
/// "edges": [{"from": 0, "to": 1}, ...]}]`; `edges` is optional (pairs `[0, 1]` work too).
fn read_keypoints_metadata(dir: &Path) -> Result<Option<KeypointsMetadata>> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Edge {
        Named { from: u32, to: u32 },
        Pair([u32; 2]),
    }
    #[derive(Deserialize)]
    struct Entry {
        object_class_id: usize,
        keypoints: std::collections::BTreeMap<String, String>,
        #[serde(default)]
        edges: Vec<Edge>,
    }
    let bytes = match std::fs::read(dir.join("keypoints_metadata.json")) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).context("cannot read keypoints_metadata.json"),
    };
    let entries: Vec<Entry> = serde_json::from_slice(&bytes).context("keypoints_metadata.json is not valid")?;
    let mut names: Vec<Vec<String>> = Vec::new();
    let mut edges: Vec<Vec<(u32, u32)>> = Vec::new();
    for entry in entries {
        let class = entry.object_class_id;
        if class >= 100_000 {
            bail!("keypoints_metadata.json: class id {class} is not plausible");
        }
        if names.len() <= class {
            names.resize(class + 1, Vec::new());
            edges.resize(class + 1, Vec::new());
        }
        names[class] = class_map_to_list(entry.keypoints.iter().map(|(k, v)| (k.as_str(), v.clone())))?;
        edges[class] = entry
            .edges
            .into_iter()
            .map(|e| match e {
                Edge::Named { from, to } => (from, to),
                Edge::Pair([from, to]) => (from, to),
            })
            .collect();
    }
    Ok(Some((names, edges)))
}

/// Parses Ultralytics' `kpt_names` metadata: `{0: ['apex', 'base_cw', 'base_ccw']}`.
fn parse_kpt_names(text: &str) -> Result<Vec<Vec<String>>> {
    let body = text
        .trim()
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .ok_or_else(|| anyhow!("kpt_names is not a dict: {text}"))?;
    let mut per_class: Vec<(String, Vec<String>)> = Vec::new();
    let mut rest = body;
    while let Some(colon) = rest.find(':') {
        let key = rest[..colon].trim().trim_start_matches(',').trim().to_string();
        let open = rest[colon..]
            .find('[')
            .ok_or_else(|| anyhow!("kpt_names: expected a list"))?
            + colon;
        let close = rest[open..]
            .find(']')
            .ok_or_else(|| anyhow!("kpt_names: unterminated list"))?
            + open;
        // Reuse the dict parser on "{0: 'a', 1: 'b'}" built from the list items.
        let items = &rest[open + 1..close];
        let as_dict = format!(
            "{{{}}}",
            split_quoted(items)?
                .iter()
                .enumerate()
                .map(|(i, n)| format!("{i}: {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        per_class.push((key, parse_python_names(&as_dict)?));
        rest = &rest[close + 1..];
    }
    let lists: Vec<(usize, Vec<String>)> = per_class
        .into_iter()
        .map(|(k, v)| Ok((k.parse::<usize>().with_context(|| format!("kpt_names key {k:?}"))?, v)))
        .collect::<Result<_>>()?;
    let len = lists.iter().map(|(k, _)| k + 1).max().unwrap_or(0);
    if len > 100_000 {
        bail!("kpt_names: class ids up to {len} are not plausible");
    }
    let mut names = vec![Vec::new(); len];
    for (k, v) in lists {
        names[k] = v;
    }
    Ok(names)
}

/// Splits `'a', "b's", 'c'` into its quoted items (quotes kept).
fn split_quoted(items: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut chars = items.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' || c == '"' {
            let mut item = String::from(c);
            loop {
                match chars.next() {
                    None => bail!("unterminated string in {items}"),
                    Some('\\') => {
                        item.push('\\');
                        item.extend(chars.next());
                    }
                    Some(q) if q == c => {
                        item.push(q);
                        break;
                    }
                    Some(other) => item.push(other),
                }
            }
            out.push(item);
        }
    }
    Ok(out)
}

/// Parses `[320, 320]` or `320` into (height, width).
fn parse_imgsz(text: &str) -> Option<(u32, u32)> {
    let nums: Vec<u32> = text
        .trim_matches(|c: char| c == '[' || c == ']' || c == '(' || c == ')' || c.is_whitespace())
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().ok())
        .collect::<Option<_>>()?;
    match nums.as_slice() {
        [s] => Some((*s, *s)),
        [h, w] => Some((*h, *w)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ultralytics_names() {
        assert_eq!(
            parse_python_names("{0: 'circle', 1: 'square', 2: 'triangle'}").unwrap(),
            vec!["circle", "square", "triangle"]
        );
        assert_eq!(
            parse_python_names("{0: \"dog's toy\", 2: 'a, b'}").unwrap(),
            vec!["dog's toy", "1", "a, b"]
        );
        assert_eq!(parse_python_names("{}").unwrap(), Vec::<String>::new());
        assert!(parse_python_names("[1, 2]").is_err());
        assert!(parse_python_names("{0: 'open").is_err());
    }

    #[test]
    fn parses_keypoint_names() {
        assert_eq!(
            parse_kpt_names("{0: ['apex', 'base_cw', 'base_ccw']}").unwrap(),
            vec![vec!["apex", "base_cw", "base_ccw"]]
        );
        assert_eq!(
            parse_kpt_names("{0: ['a'], 2: [\"b's\", 'c']}").unwrap(),
            vec![vec!["a".to_string()], vec![], vec!["b's".to_string(), "c".to_string()]]
        );
        assert_eq!(parse_kpt_names("{}").unwrap(), Vec::<Vec<String>>::new());
        assert!(parse_kpt_names("[0]").is_err());
        assert!(parse_kpt_names("{0: ['open}").is_err());
    }

    #[test]
    fn parses_imgsz() {
        assert_eq!(parse_imgsz("[320, 320]"), Some((320, 320)));
        assert_eq!(parse_imgsz("[256, 320]"), Some((256, 320)));
        assert_eq!(parse_imgsz("640"), Some((640, 640)));
        assert_eq!(parse_imgsz("[a]"), None);
    }

    #[test]
    fn maps_roboflow_resize_formats() {
        assert_eq!(roboflow_resize("Stretch to"), (Resize::Stretch, 0));
        assert_eq!(roboflow_resize("Fit (grey edges) in"), (Resize::Letterbox, 114));
        assert_eq!(roboflow_resize("Fit (white edges) in"), (Resize::Letterbox, 255));
        assert_eq!(roboflow_resize("Fit within"), (Resize::Letterbox, 0));
        assert_eq!(roboflow_resize("whatever"), (Resize::Stretch, 0));
    }

    #[test]
    fn recognises_the_rfdetr_family() {
        let names = |n: &'static [&'static str]| n.iter().copied();
        assert!(is_rfdetr(Some("rfdetr-base"), names(&[])));
        assert!(is_rfdetr(Some("rfdetr-seg-preview"), names(&["output0"])));
        assert!(is_rfdetr(None, names(&["dets", "labels"])));
        assert!(is_rfdetr(None, names(&["dets", "labels", "masks"])));
        assert!(!is_rfdetr(None, names(&["dets"])));
        assert!(!is_rfdetr(Some("yolov8n"), names(&["output0", "output1"])));
    }

    #[test]
    fn parses_tasks() {
        assert_eq!(task_name("detect"), Some("object-detection"));
        assert_eq!(task_name("instance-segmentation"), Some("instance-segmentation"));
        assert_eq!(task_name("pose"), Some("keypoint-detection"));
        assert_eq!(task_name("classify"), Some("classification"));
        assert_eq!(task_name("nonsense"), None);
    }
}
