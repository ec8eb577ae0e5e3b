//! Custom blocks: workflow blocks written as WebAssembly components (the `workflow-block` world
//! of `wit/inference.wit`), installed as plugins with a `[block]` in their manifest. Each gets a
//! [`Manifest`] made from that declaration, so compilation, kind checks and
//! `/workflows/blocks/describe` treat it as a built-in block; a step of it runs as one plugin call
//! for all its items, under the plugin's limits (time, memory, output size) tightened by the
//! caller's. A caller sees only the blocks of the plugins its tenant may use.
//!
//! Values cross as the WIT's `value` variant. Lineage stays with the host: a detection a block
//! returns keeps the place (crop origin, root image) of the input image or detections with its
//! `parent-id`, and an image it returns with an input image's id is derived from that image.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use anyhow::bail;
use parking_lot::Mutex;
use serde_json::{json, Value};
use wasmtime::component::InstancePre;
use wasmtime::Store;

use super::kinds::{DETECTIONS, IMAGE};
use super::{check_literal, describe, Args, Check, Field, Input, Manifest, Output, Run};
use crate::input::RgbImage;
use crate::pipeline::{Caller, Error, Pipeline};
use crate::plugins::legacy::Legacy;
use crate::plugins::{wit, BlockSpec, Bound, CallError, CallLimits, CallState, LoadedPlugin, PluginErrorKind, World};
use crate::workflows::error::WorkflowError;
use crate::workflows::serialize::serialize;
use crate::workflows::value::{Detection, Detections, Image, Origin, Val};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "inference:plugins/workflow-block",
        with: { "inference:plugins/types": crate::plugins::wit },
    });
}

use bindings::exports::inference::plugins::block::{self as wb, Value as W};

pub const WORLD: &str = "workflow-block";

/// The workflow-block world, for the plugin registry.
pub fn world() -> World {
    World {
        name: WORLD,
        routes: &[],
        block: Some(check),
        bind,
    }
}

fn bind(pre: InstancePre<CallState>) -> anyhow::Result<Bound> {
    // A block's sandbox is smaller than a task plugin's: it runs no model, so no wasi:nn.
    let component = pre.component().component_type();
    if let Some((name, _)) = component.imports(pre.engine()).find(|(n, _)| n.starts_with("wasi:nn/")) {
        bail!("a workflow block may not import {name}: blocks get values, not models (a model step runs before them)");
    }
    // A block built against the WIT's 0.1.0 has the same types under an older export name.
    Legacy::or_bind(pre, LEGACY_EXPORT, "run", |pre| {
        Ok(Box::new(bindings::WorkflowBlockPre::new(pre)?))
    })
}

/// The export of a block built against the WIT's 0.1.0.
const LEGACY_EXPORT: &str = "inference:plugins/block@0.1.0";

/// Whether a field of these kinds takes a batch value (an image, detections): a selector only.
fn takes_batch(kinds: &[String]) -> bool {
    kinds.iter().any(|k| k == IMAGE || DETECTIONS.contains(&k.as_str()))
}

/// What a constant of a field of these kinds must be (one well-known kind; otherwise anything).
fn check_of(kinds: &[String]) -> Check {
    match kinds {
        [k] => match k.as_str() {
            "integer" => Check::Int,
            "float" => Check::Number,
            "float_zero_to_one" => Check::Unit,
            "boolean" => Check::Bool,
            "string" => Check::Str,
            "list_of_values" => Check::List,
            "dictionary" => Check::Dict,
            _ => Check::Any,
        },
        _ => Check::Any,
    }
}

/// A declaration's meaning, checked when the plugin loads: batch fields are required, and
/// defaults fit their field's kind.
fn check(spec: &BlockSpec) -> anyhow::Result<()> {
    for f in &spec.fields {
        if takes_batch(&f.kinds) && !f.is_required() {
            bail!(
                "field {:?} of kinds {:?} takes a selector (an image or detections), so it is required: no default",
                f.name,
                f.kinds
            );
        }
        if let Some(d) = &f.default {
            check_literal(check_of(&f.kinds), d)
                .map_err(|e| anyhow::anyhow!("field {:?}: default {d}: {e}", f.name))?;
        }
    }
    Ok(())
}

/// A block a caller may use: its manifest and its plugin.
pub struct CustomBlock {
    pub manifest: &'static Manifest,
    pub plugin: Arc<LoadedPlugin>,
}

/// The custom blocks a caller may use, as a definition is compiled against them.
#[derive(Default)]
pub struct Catalog {
    blocks: Vec<CustomBlock>,
}

impl Catalog {
    /// The installed blocks whose plugins the caller may use.
    pub fn of(pipeline: &Pipeline, caller: &Caller) -> Self {
        let blocks = pipeline
            .plugins
            .list()
            .into_iter()
            .filter(|p| p.manifest.world == WORLD && caller.may_use_plugin(p.name()))
            .filter_map(|plugin| {
                let manifest = manifest_of(&plugin)?;
                Some(CustomBlock { manifest, plugin })
            })
            .collect();
        Self { blocks }
    }

    pub fn find(&self, type_id: &str) -> Option<&CustomBlock> {
        self.blocks.iter().find(|b| b.manifest.type_id == type_id)
    }

    pub fn blocks(&self) -> &[CustomBlock] {
        &self.blocks
    }

    /// What a compiled graph depends on: which loads of which plugins it may use.
    pub fn key(&self) -> String {
        self.blocks.iter().map(|b| format!("{} ", b.plugin.serial)).collect()
    }
}

/// The block's description for `/workflows/blocks/describe`: a built-in's, saying where it comes from.
pub fn describe_custom(block: &CustomBlock) -> Value {
    let mut d = describe(block.manifest);
    d["block_source"] = json!("webassembly_plugin");
    d["fully_qualified_block_class_name"] = json!(format!(
        "plugin:{}@{}",
        block.plugin.manifest.name, block.plugin.manifest.version
    ));
    d
}

/// The manifest of a block plugin's declaration. Manifests are `'static` (the built-ins are
/// statics), so one is made once per distinct declaration and kept: a reload with the same
/// `[block]` reuses it, and only a changed declaration costs a new one (a few hundred bytes).
fn manifest_of(plugin: &LoadedPlugin) -> Option<&'static Manifest> {
    static MADE: LazyLock<Mutex<HashMap<String, &'static Manifest>>> = LazyLock::new(Default::default);
    let spec = plugin.manifest.block.as_ref()?;
    let key = serde_json::to_string(&(&plugin.manifest.name, &plugin.manifest.description, spec)).ok()?;
    let mut made = MADE.lock();
    if let Some(m) = made.get(&key) {
        return Some(m);
    }
    let leak = |s: &str| -> &'static str { Box::leak(s.to_owned().into_boxed_str()) };
    let fields: Vec<Field> = spec
        .fields
        .iter()
        .map(|f| Field {
            name: leak(&f.name),
            input: if takes_batch(&f.kinds) {
                Input::Batch
            } else {
                Input::Either
            },
            kinds: Vec::leak(f.kinds.iter().map(|k| leak(k)).collect()),
            default: (!f.is_required()).then(|| leak(&f.default.clone().unwrap_or(Value::Null).to_string())),
            check: check_of(&f.kinds),
            description: leak(&f.description),
        })
        .collect();
    let outputs: Vec<Output> = spec
        .outputs
        .iter()
        .map(|o| Output {
            name: leak(&o.name),
            kinds: Vec::leak(o.kind.iter().map(|k| leak(k)).collect()),
        })
        .collect();
    let manifest: &'static Manifest = Box::leak(Box::new(Manifest {
        type_id: leak(&spec.type_id),
        aliases: &[],
        name: leak(spec.title.as_deref().unwrap_or(&plugin.manifest.name)),
        description: leak(&plugin.manifest.description),
        fields: Vec::leak(fields),
        outputs: Vec::leak(outputs),
        output_offset: 0,
        reduces: None,
        run: Run::Custom,
    }));
    made.insert(key, manifest);
    Some(manifest)
}

/// Where the images of an item lie, so that what a block returns keeps its place.
#[derive(Default)]
struct Lineage {
    images: Vec<Arc<Image>>,
    /// By image id (what detections carry as `parent_id`).
    places: HashMap<String, Place>,
    /// The root image of a crop's values (for detections the block returns on it).
    root: Option<(String, Origin)>,
}

#[derive(Clone)]
struct Place {
    size: (u32, u32),
    parent_origin: Option<Origin>,
    root_parent_id: String,
    root_origin: Option<Origin>,
}

/// Runs a step of a custom block on its items: one plugin call, one outputs list per item.
pub async fn run(
    plugin: Option<&Arc<LoadedPlugin>>,
    step: &str,
    type_id: &str,
    manifest: &'static Manifest,
    pipeline: &Pipeline,
    caller: &Caller,
    items: Vec<Args>,
) -> Result<Vec<Vec<Val>>, WorkflowError> {
    let Some(plugin) = plugin.cloned() else {
        return Err(WorkflowError::step(
            step,
            type_id,
            500,
            "InternalError",
            format!("block {type_id} has no plugin"),
        ));
    };
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let mut cost = 0u64;
    let mut lineages = Vec::with_capacity(items.len());
    let inputs: Vec<wb::Values> = items
        .iter()
        .map(|args| {
            let mut lineage = Lineage::default();
            let values = args
                .values
                .iter()
                .map(|(name, v)| (name.to_string(), to_wit(v, &mut lineage, &mut cost)))
                .collect();
            lineages.push(lineage);
            values
        })
        .collect();
    let max_pixels = caller.input_limits(&pipeline.input_limits).max_image_pixels;
    let declared = manifest.outputs;
    pipeline
        .call_without_model(caller, plugin, cost, move |plugin, runtime, limits| {
            let outcome =
                plugin.call_without_model(runtime, limits, Box::new(|bound, store| invoke(bound, store, &inputs)))?;
            outputs_of(plugin, limits, declared, outcome.value, &lineages, max_pixels)
        })
        .await
        .map_err(|e| failure(step, type_id, e))
}

fn invoke(
    bound: &Bound,
    store: &mut Store<CallState>,
    items: &[wb::Values],
) -> wasmtime::Result<Result<Vec<wb::Values>, wit::PluginError>> {
    if let Some(legacy) = bound.downcast_ref::<Legacy>() {
        type Run = (Result<Vec<wb::Values>, wit::PluginError>,);
        return legacy
            .call::<(&[wb::Values],), Run>(&mut *store, (items,))
            .map(|(r,)| r);
    }
    let pre = bound
        .downcast_ref::<bindings::WorkflowBlockPre<CallState>>()
        .ok_or_else(|| wasmtime::format_err!("the plugin is not bound to the {WORLD} world"))?;
    let instance = pre.instantiate(&mut *store)?;
    instance.inference_plugins_block().call_run(&mut *store, items)
}

/// A failed call as the step's error: statuses as `/infer` gives them for a plugin (504 for its
/// time limit, 400 for its `invalid-input`, 500 otherwise), in Roboflow's step-error body.
fn failure(step: &str, type_id: &str, e: Error) -> WorkflowError {
    let (status, inner) = match &e {
        Error::Plugin(CallError::Timeout { .. }) => (504, "PluginError"),
        Error::Plugin(CallError::Plugin {
            kind: PluginErrorKind::InvalidInput,
            ..
        }) => (400, "PluginError"),
        Error::Plugin(_) => (500, "PluginError"),
        Error::Overloaded(_) | Error::Unavailable(_) => (503, "ServiceUnavailable"),
        _ => (500, "InternalError"),
    };
    WorkflowError::step(step, type_id, status, inner, e.to_string())
}

fn place_of_image(i: &Image) -> Place {
    Place {
        size: i.size(),
        parent_origin: i.parent_origin,
        root_parent_id: i.root_parent_id.clone(),
        root_origin: i.root_origin,
    }
}

/// A workflow value as the WIT's, noting the lineage it carries and the bytes it copies.
fn to_wit(v: &Val, lineage: &mut Lineage, cost: &mut u64) -> W {
    match v {
        Val::Json(j) => json_to_wit(j),
        Val::Image(i) => {
            *cost += 2 * i.pixels.rgb.len() as u64;
            lineage
                .places
                .entry(i.parent_id.clone())
                .or_insert_with(|| place_of_image(i));
            if let (None, Some(origin)) = (&lineage.root, i.root_origin) {
                lineage.root = Some((i.root_parent_id.clone(), origin));
            }
            lineage.images.push(i.clone());
            W::Image(wb::BlockImage {
                parent_id: i.parent_id.clone(),
                image: wit::Pixels {
                    width: i.pixels.width,
                    height: i.pixels.height,
                    rgb: i.pixels.rgb.clone(),
                },
            })
        }
        Val::Detections(d) => {
            if lineage.root.is_none() {
                lineage.root = d.root.clone();
            }
            let size = d.image.or_else(|| d.items.first().map(|i| i.image)).unwrap_or((0, 0));
            W::Detections(wb::Detections {
                image_width: size.0,
                image_height: size.1,
                items: d
                    .items
                    .iter()
                    .map(|det| {
                        lineage.places.entry(det.parent_id.clone()).or_insert_with(|| Place {
                            size: det.image,
                            parent_origin: det.parent_origin,
                            root_parent_id: det.root_parent_id.clone(),
                            root_origin: det.root_origin,
                        });
                        detection_to_wit(det)
                    })
                    .collect(),
            })
        }
        // Lists and dicts of values (not given to custom blocks' fields today): as JSON.
        Val::List(_) | Val::Dict(_) => W::Json(serialize(v, true).to_string()),
    }
}

fn json_to_wit(v: &Value) -> W {
    match v {
        Value::Null => W::Null,
        Value::Bool(b) => W::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => W::Integer(i),
            None => W::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => W::Text(s.clone()),
        other => W::Json(other.to_string()),
    }
}

fn detection_to_wit(d: &Detection) -> wb::BlockDetection {
    wb::BlockDetection {
        x: d.x,
        y: d.y,
        width: d.width,
        height: d.height,
        confidence: d.confidence,
        class_id: d.class_id,
        class_name: d.class_name.clone(),
        detection_id: d.detection_id.clone(),
        parent_id: d.parent_id.clone(),
        points: d
            .points
            .as_ref()
            .map(|p| p.iter().map(|&(x, y)| wb::Point { x, y }).collect()),
        keypoints: d.keypoints.as_ref().map(|k| {
            k.iter()
                .map(|k| {
                    let f = |key: &str| k.get(key).and_then(Value::as_f64).unwrap_or(0.0);
                    wb::Keypoint {
                        x: f("x"),
                        y: f("y"),
                        confidence: f("confidence"),
                        class_id: k.get("class_id").and_then(Value::as_i64).unwrap_or(0),
                        class_name: k.get("class").and_then(Value::as_str).unwrap_or_default().to_string(),
                    }
                })
                .collect()
        }),
    }
}

/// About how many bytes a value takes (images aside: the image size limit bounds them).
fn value_bytes(v: &W) -> usize {
    match v {
        W::Null | W::Boolean(_) | W::Integer(_) | W::Float(_) => 8,
        W::Text(s) | W::Json(s) => s.len(),
        W::Image(i) => i.parent_id.len() + 16,
        W::Detections(d) => {
            8 + d
                .items
                .iter()
                .map(|x| {
                    56 + x.class_name.len()
                        + x.detection_id.len()
                        + x.parent_id.len()
                        + x.points.as_ref().map_or(0, |p| 16 * p.len())
                        + x.keypoints
                            .as_ref()
                            .map_or(0, |k| k.iter().map(|k| 32 + k.class_name.len()).sum())
                })
                .sum::<usize>()
        }
    }
}

/// The block's answer checked (one outputs list per item, within its output limit, each output
/// declared and of its kind) and turned into workflow values.
fn outputs_of(
    plugin: &LoadedPlugin,
    limits: &CallLimits,
    declared: &[Output],
    results: Vec<wb::Values>,
    lineages: &[Lineage],
    max_pixels: u64,
) -> Result<Vec<Vec<Val>>, CallError> {
    let refuse = |kind, message: String| CallError::Plugin {
        plugin: plugin.name().to_string(),
        kind,
        message,
    };
    if results.len() != lineages.len() {
        return Err(refuse(
            PluginErrorKind::InvalidOutput,
            format!("returned {} outputs lists for {} items", results.len(), lineages.len()),
        ));
    }
    let bytes: usize = results.iter().flatten().map(|(n, v)| n.len() + value_bytes(v)).sum();
    let limit = limits.output_bytes.saturating_mul(lineages.len());
    if bytes > limit {
        return Err(refuse(
            PluginErrorKind::OutputTooLarge,
            format!(
                "returned about {bytes} bytes of outputs for {} item(s), over its output limit of {} bytes per item",
                lineages.len(),
                limits.output_bytes
            ),
        ));
    }
    results
        .into_iter()
        .zip(lineages)
        .map(|(outs, lineage)| item_outputs(declared, outs, lineage, max_pixels))
        .collect::<Result<_, _>>()
        .map_err(|m| refuse(PluginErrorKind::InvalidOutput, m))
}

fn item_outputs(declared: &[Output], outs: wb::Values, lineage: &Lineage, max_pixels: u64) -> Result<Vec<Val>, String> {
    let mut slots: Vec<Option<Val>> = declared.iter().map(|_| None).collect();
    for (name, value) in outs {
        let Some(i) = declared.iter().position(|o| o.name == name) else {
            let names: Vec<&str> = declared.iter().map(|o| o.name).collect();
            return Err(format!(
                "returned output `{name}`, which its manifest does not declare (it declares {names:?})"
            ));
        };
        if slots[i].is_some() {
            return Err(format!("returned output `{name}` twice"));
        }
        slots[i] = Some(from_wit(&name, declared[i].kinds, value, lineage, max_pixels)?);
    }
    slots
        .into_iter()
        .zip(declared)
        .map(|(v, o)| v.ok_or_else(|| format!("did not return output `{}`", o.name)))
        .collect()
}

/// An output's value as the workflow's, if it fits the output's declared kinds.
fn from_wit(name: &str, kinds: &[&str], value: W, lineage: &Lineage, max_pixels: u64) -> Result<Val, String> {
    let any = kinds.contains(&"*");
    let image = any || kinds.contains(&IMAGE);
    let detections = any || kinds.iter().any(|k| DETECTIONS.contains(k));
    let scalar = any || kinds.iter().any(|k| *k != IMAGE && !DETECTIONS.contains(k));
    let wrong = |got: &str| format!("output `{name}` is of kind {kinds:?}, but the block returned {got}");
    match value {
        W::Null => Ok(Val::NULL),
        W::Image(i) if image => image_from_wit(i, lineage, max_pixels)
            .map(|i| Val::Image(Arc::new(i)))
            .map_err(|e| format!("output `{name}`: {e}")),
        W::Image(_) => Err(wrong("an image")),
        W::Detections(d) if detections => detections_from_wit(d, lineage)
            .map(|d| Val::Detections(Arc::new(d)))
            .map_err(|e| format!("output `{name}`: {e}")),
        W::Detections(_) => Err(wrong("detections")),
        _ if !scalar => Err(wrong("a scalar or JSON")),
        W::Boolean(b) => Ok(Val::Json(Value::Bool(b))),
        W::Integer(i) => Ok(Val::Json(Value::from(i))),
        W::Float(f) => Ok(Val::Json(Value::from(f))),
        W::Text(s) => Ok(Val::Json(Value::String(s))),
        W::Json(text) => serde_json::from_str(&text)
            .map(Val::Json)
            .map_err(|e| format!("output `{name}` is not valid JSON: {e}")),
    }
}

fn image_from_wit(i: wb::BlockImage, lineage: &Lineage, max_pixels: u64) -> Result<Image, String> {
    let (w, h) = (i.image.width, i.image.height);
    let pixels = u64::from(w) * u64::from(h);
    if pixels == 0 || pixels > max_pixels {
        return Err(format!(
            "a {w}x{h} image is empty or over the server's limit of {max_pixels} pixels"
        ));
    }
    if i.image.rgb.len() as u64 != pixels * 3 {
        return Err(format!(
            "the {w}x{h} image has {} bytes of RGB, not {}",
            i.image.rgb.len(),
            pixels * 3
        ));
    }
    let pixels = RgbImage {
        width: w,
        height: h,
        rgb: i.image.rgb,
    };
    Ok(match lineage.images.iter().find(|im| im.parent_id == i.parent_id) {
        Some(input) => input.derived(pixels),
        None => Image {
            pixels,
            parent_id: i.parent_id.clone(),
            parent_origin: None,
            root_parent_id: i.parent_id,
            root_origin: None,
            original: None,
        },
    })
}

fn detections_from_wit(d: wb::Detections, lineage: &Lineage) -> Result<Detections, String> {
    let size = (d.image_width, d.image_height);
    let items = d
        .items
        .into_iter()
        .map(|x| {
            if ![x.x, x.y, x.width, x.height, x.confidence].iter().all(|v| v.is_finite()) {
                return Err(format!("detection {:?} has a coordinate or confidence that is not a finite number", x.detection_id));
            }
            let place = lineage.places.get(&x.parent_id).cloned().unwrap_or_else(|| Place {
                size,
                parent_origin: None,
                root_parent_id: x.parent_id.clone(),
                root_origin: None,
            });
            Ok(Detection {
                x: x.x,
                y: x.y,
                width: x.width,
                height: x.height,
                confidence: x.confidence,
                class_id: x.class_id,
                class_name: x.class_name,
                // A detection the block made up gets an id of its own.
                detection_id: if x.detection_id.is_empty() {
                    uuid::Uuid::new_v4().to_string()
                } else {
                    x.detection_id
                },
                parent_id: x.parent_id,
                image: if place.size == (0, 0) { size } else { place.size },
                parent_origin: place.parent_origin,
                root_parent_id: place.root_parent_id,
                root_origin: place.root_origin,
                points: x.points.map(|p| p.into_iter().map(|p| (p.x, p.y)).collect()),
                keypoints: x.keypoints.map(|k| {
                    k.into_iter()
                        .map(|k| json!({"x": k.x, "y": k.y, "confidence": k.confidence, "class_id": k.class_id, "class": k.class_name}))
                        .collect()
                }),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Detections {
        items,
        image: (size.0 > 0 && size.1 > 0).then_some(size),
        root: lineage.root.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::block::{BlockField, BlockOutput};

    fn field(name: &str, kinds: &[&str], default: Option<Value>) -> BlockField {
        BlockField {
            name: name.into(),
            kinds: kinds.iter().map(|k| k.to_string()).collect(),
            default,
            required: None,
            description: String::new(),
        }
    }

    fn spec(fields: Vec<BlockField>) -> BlockSpec {
        BlockSpec {
            type_id: "t/zone@v1".into(),
            title: None,
            fields,
            outputs: vec![BlockOutput {
                name: "n".into(),
                kind: vec!["integer".into()],
                description: String::new(),
            }],
        }
    }

    #[test]
    fn declarations_are_checked_against_kinds() {
        assert!(check(&spec(vec![
            field("predictions", &["object_detection_prediction"], None),
            field("zone", &["list_of_values"], Some(json!([1, 2]))),
            field("min", &["float_zero_to_one"], Some(json!(0.5))),
        ]))
        .is_ok());
        let err = |f| check(&spec(vec![f])).unwrap_err().to_string();
        assert!(err(field("image", &["image"], Some(Value::Null))).contains("required"));
        assert!(err(field("min", &["float_zero_to_one"], Some(json!(3)))).contains("less than or equal to 1"));
        assert!(err(field("n", &["integer"], Some(json!("x")))).contains("valid integer"));
    }

    #[test]
    fn outputs_must_be_declared_and_of_their_kind() {
        let declared = [
            Output {
                name: "count",
                kinds: &["integer"],
            },
            Output {
                name: "kept",
                kinds: &["object_detection_prediction"],
            },
        ];
        let lineage = Lineage::default();
        let dets = || {
            W::Detections(wb::Detections {
                image_width: 10,
                image_height: 10,
                items: vec![],
            })
        };
        let ok = item_outputs(
            &declared,
            vec![("kept".into(), dets()), ("count".into(), W::Integer(2))],
            &lineage,
            100,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ok[0].json(), Some(&json!(2)));
        let err = |outs: wb::Values| item_outputs(&declared, outs, &lineage, 100).err().unwrap_or_default();
        assert!(err(vec![("count".into(), W::Integer(1))]).contains("did not return output `kept`"));
        assert!(err(vec![("other".into(), W::Null)]).contains("does not declare"));
        assert!(err(vec![("count".into(), dets()), ("kept".into(), dets())]).contains("is of kind [\"integer\"]"));
        assert!(err(vec![("count".into(), W::Json("{".into())), ("kept".into(), dets())]).contains("not valid JSON"));
        let big = W::Image(wb::BlockImage {
            parent_id: "image".into(),
            image: wit::Pixels {
                width: 20,
                height: 20,
                rgb: vec![0; 1200],
            },
        });
        assert!(from_wit("picture", &["image"], big, &lineage, 100)
            .err()
            .is_some_and(|e| e.contains("over the server's limit of 100 pixels")));
    }
}
