//! The blocks a definition's steps may use, one module each with its manifest: the fields it
//! takes (kinds, literal checks, defaults), its outputs and their kinds, how it changes the
//! dimensionality, and how it runs. Validation and `/workflows/blocks/describe` are both read
//! from the manifests. Custom blocks (WebAssembly components installed as plugins) get a
//! manifest made from their plugin's `[block]` (`custom`).

mod bounding_box_visualization;
mod continue_if;
pub mod custom;
mod detections_consensus;
mod detections_filter;
mod detections_stitch;
mod detections_transformation;
mod dynamic_crop;
mod expression;
mod image_slicer;
mod label_visualization;
pub mod model;
mod polygon_visualization;
mod property_definition;
mod visualization;

use serde_json::{json, Value};

use super::value::{Detections, Image, Val};

/// Kinds (Roboflow's names).
pub mod kinds {
    pub const IMAGE: &str = "image";
    pub const OBJECT_DETECTION: &str = "object_detection_prediction";
    pub const INSTANCE_SEGMENTATION: &str = "instance_segmentation_prediction";
    pub const KEYPOINT_DETECTION: &str = "keypoint_detection_prediction";
    pub const CLASSIFICATION: &str = "classification_prediction";
    pub const DETECTIONS: &[&str] = &[OBJECT_DETECTION, INSTANCE_SEGMENTATION, KEYPOINT_DETECTION];
}

/// How a field takes its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// A constant only.
    Literal,
    /// A selector of a batch value (an image, a step's output); never a constant.
    Batch,
    /// A constant or a selector (of a parameter or a step output).
    Either,
    /// `{name: selector}`.
    SelectorMap,
    /// `[selector, …]`.
    SelectorList,
    /// `["$steps.x", …]`: steps, not values (flow control).
    StepRefs,
}

/// What a constant must be.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Check {
    Any,
    /// A number in 0..=1 (or a number as text, which Roboflow also takes).
    Unit,
    Number,
    Int,
    Bool,
    Str,
    /// A list of strings, or null.
    StrList,
    List,
    Dict,
    OneOf(&'static [&'static str]),
}

pub struct Field {
    pub name: &'static str,
    pub input: Input,
    /// The kinds a selector may carry (empty: any).
    pub kinds: &'static [&'static str],
    /// JSON text; `None`: required.
    pub default: Option<&'static str>,
    pub check: Check,
    pub description: &'static str,
}

pub struct Output {
    pub name: &'static str,
    pub kinds: &'static [&'static str],
}

/// How a block runs.
pub enum Run {
    /// Plain code over one item's arguments, on the executor's thread.
    Light(fn(&Args) -> Result<Vec<Val>, String>),
    /// CPU work (pixels): on a blocking thread.
    Heavy(fn(&Args) -> Result<Vec<Val>, String>),
    /// A model, through the pipeline, for all items at once.
    Model(model::ModelTask),
    /// Flow control: the condition's value decides whether `next_steps` run.
    Flow(fn(&Args) -> Result<bool, String>),
    /// A custom block: the step's plugin, for all items at once (`custom::run`).
    Custom,
}

pub struct Manifest {
    pub type_id: &'static str,
    pub aliases: &'static [&'static str],
    pub name: &'static str,
    pub description: &'static str,
    pub fields: &'static [Field],
    pub outputs: &'static [Output],
    /// +1: one output per detection or slice (a nested dimension).
    pub output_offset: i8,
    /// The field that is one level deeper than the others (`detections_stitch.predictions`).
    pub reduces: Option<&'static str>,
    pub run: Run,
}

impl Manifest {
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    pub fn output(&self, name: &str) -> Option<usize> {
        self.outputs.iter().position(|o| o.name == name)
    }
}

/// Field constructors, to keep the manifests short.
pub const fn batch(name: &'static str, kinds: &'static [&'static str], description: &'static str) -> Field {
    Field {
        name,
        input: Input::Batch,
        kinds,
        default: None,
        check: Check::Any,
        description,
    }
}

pub const fn either(
    name: &'static str,
    kinds: &'static [&'static str],
    default: Option<&'static str>,
    check: Check,
    description: &'static str,
) -> Field {
    Field {
        name,
        input: Input::Either,
        kinds,
        default,
        check,
        description,
    }
}

pub const fn literal(
    name: &'static str,
    default: Option<&'static str>,
    check: Check,
    description: &'static str,
) -> Field {
    Field {
        name,
        input: Input::Literal,
        kinds: &[],
        default,
        check,
        description,
    }
}

pub const fn selectors(
    name: &'static str,
    input: Input,
    default: Option<&'static str>,
    description: &'static str,
) -> Field {
    Field {
        name,
        input,
        kinds: &[],
        default,
        check: Check::Any,
        description,
    }
}

/// Every block, in the order `/workflows/blocks/describe` lists them.
pub fn all() -> &'static [&'static Manifest] {
    static ALL: std::sync::LazyLock<Vec<&'static Manifest>> = std::sync::LazyLock::new(|| {
        let mut all: Vec<&'static Manifest> = model::MANIFESTS.iter().collect();
        all.extend([
            &dynamic_crop::MANIFEST,
            &detections_filter::MANIFEST,
            &detections_transformation::MANIFEST,
            &property_definition::MANIFEST,
            &expression::MANIFEST,
            &continue_if::MANIFEST,
            &detections_consensus::MANIFEST,
            &bounding_box_visualization::MANIFEST,
            &label_visualization::MANIFEST,
            &polygon_visualization::MANIFEST,
            &image_slicer::MANIFEST,
            &detections_stitch::MANIFEST,
        ]);
        all
    });
    &ALL
}

/// The block a step's `type` names (its id or an alias).
pub fn find(type_id: &str) -> Option<&'static Manifest> {
    all()
        .iter()
        .copied()
        .find(|m| m.type_id == type_id || m.aliases.contains(&type_id))
}

/// Every tag a step's `type` may be (for the unknown-block error).
pub fn tags() -> Vec<&'static str> {
    all()
        .iter()
        .flat_map(|m| std::iter::once(m.type_id).chain(m.aliases.iter().copied()))
        .collect()
}

/// Checks a constant against a field's check; the error is pydantic's wording.
pub fn check_literal(check: Check, v: &Value) -> Result<(), String> {
    let ok = match check {
        Check::Any => true,
        Check::Unit => match v {
            Value::Number(n) => {
                let x = n.as_f64().unwrap_or(f64::NAN);
                if x > 1.0 {
                    return Err("Input should be less than or equal to 1".into());
                }
                if x < 0.0 {
                    return Err("Input should be greater than or equal to 0".into());
                }
                true
            }
            Value::String(_) => true,
            _ => false,
        },
        Check::Number => v.is_number(),
        Check::Int => v.is_i64() || v.is_u64(),
        Check::Bool => v.is_boolean(),
        Check::Str => v.is_string(),
        Check::StrList => v.is_null() || v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
        Check::List => v.is_array(),
        Check::Dict => v.is_object(),
        Check::OneOf(values) => {
            if !v.as_str().is_some_and(|s| values.contains(&s)) {
                return Err(format!(
                    "Input should be {}",
                    values.iter().map(|s| format!("'{s}'")).collect::<Vec<_>>().join(" or ")
                ));
            }
            true
        }
    };
    if ok {
        Ok(())
    } else {
        Err(match check {
            Check::Unit | Check::Number => "Input should be a valid number".into(),
            Check::Int => "Input should be a valid integer".into(),
            Check::Bool => "Input should be a valid boolean".into(),
            Check::Str => "Input should be a valid string".into(),
            Check::StrList => "Input should be a valid list of strings".into(),
            Check::List => "Input should be a valid list".into(),
            Check::Dict => "Input should be a valid dictionary".into(),
            _ => "Input is not valid".into(),
        })
    }
}

/// One item's arguments: every field's value (a constant, a default or a selector's value).
pub struct Args {
    pub values: Vec<(&'static str, Val)>,
}

impl Args {
    pub fn get(&self, name: &str) -> &Val {
        self.values
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(&Val::NULL, |(_, v)| v)
    }

    pub fn json(&self, name: &str) -> &Value {
        self.get(name).json().unwrap_or(&Value::Null)
    }

    pub fn f64(&self, name: &str, default: f64) -> Result<f64, String> {
        match self.json(name) {
            Value::Null => Ok(default),
            Value::String(s) => s
                .trim()
                .parse()
                .map_err(|_| format!("{name} must be a number, got {s:?}")),
            v => v.as_f64().ok_or_else(|| format!("{name} must be a number, got {v}")),
        }
    }

    pub fn bool(&self, name: &str, default: bool) -> bool {
        self.json(name).as_bool().unwrap_or(default)
    }

    pub fn str(&self, name: &str) -> Option<&str> {
        self.json(name).as_str()
    }

    pub fn image(&self, name: &str) -> Result<&std::sync::Arc<Image>, String> {
        match self.get(name) {
            Val::Image(i) => Ok(i),
            other => Err(format!("{name} must be an image, got {}", other.kind_name())),
        }
    }

    pub fn detections(&self, name: &str) -> Result<&std::sync::Arc<Detections>, String> {
        match self.get(name) {
            Val::Detections(d) => Ok(d),
            other => Err(format!("{name} must be detections, got {}", other.kind_name())),
        }
    }
}

/// The block's description for `/workflows/blocks/describe`, in Roboflow's shape.
pub fn describe(m: &Manifest) -> Value {
    let mut properties = serde_json::Map::new();
    properties.insert(
        "type".into(),
        json!({"enum": std::iter::once(m.type_id).chain(m.aliases.iter().copied()).collect::<Vec<_>>()}),
    );
    properties.insert(
        "name".into(),
        json!({"type": "string", "description": "Unique name of step in workflows"}),
    );
    let mut required = vec!["type", "name"];
    for f in m.fields {
        let accepts = match f.input {
            Input::Literal => "constant",
            Input::Batch => "selector",
            Input::Either => "constant or selector",
            Input::SelectorMap => "{name: selector}",
            Input::SelectorList => "[selector]",
            Input::StepRefs => "[step selector]",
        };
        let mut p = json!({"description": f.description, "accepts": accepts, "kind": f.kinds});
        if let Some(d) = f.default {
            p["default"] = serde_json::from_str(d).unwrap_or(Value::Null);
        } else {
            required.push(f.name);
        }
        properties.insert(f.name.into(), p);
    }
    json!({
        "manifest_type_identifier": m.type_id,
        "manifest_type_identifier_aliases": m.aliases,
        "human_friendly_block_name": m.name,
        "block_description": m.description,
        "block_source": "workflows_core",
        "fully_qualified_block_class_name": format!("inference_host.workflows.{}", m.type_id),
        "block_schema": {"type": "object", "properties": properties, "required": required},
        "outputs_manifest": m.outputs.iter().map(|o| json!({"name": o.name, "kind": o.kinds.iter().map(|k| json!({"name": k})).collect::<Vec<_>>()})).collect::<Vec<_>>(),
        "output_dimensionality_offset": m.output_offset,
        "dimensionality_reference_property": m.reduces.map(|_| m.fields.first().map(|f| f.name)),
        "input_dimensionality_offsets": m.reduces.map(|r| json!({r: 1})).unwrap_or_else(|| json!({})),
        "execution_engine_compatibility": ">=1.0.0,<2.0.0",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_aliases_are_unique_and_defaults_parse() {
        let tags = tags();
        let unique: std::collections::HashSet<_> = tags.iter().collect();
        assert_eq!(unique.len(), tags.len());
        for m in all() {
            for f in m.fields {
                if let Some(d) = f.default {
                    serde_json::from_str::<Value>(d).unwrap_or_else(|e| panic!("{}.{}: {e}", m.type_id, f.name));
                }
            }
        }
        assert!(find("ObjectDetectionModel").is_some());
        assert_eq!(
            check_literal(Check::Unit, &json!(7)).unwrap_err(),
            "Input should be less than or equal to 1"
        );
    }
}
