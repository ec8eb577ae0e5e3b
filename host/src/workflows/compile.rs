//! A definition compiled once into a validated graph: inputs, steps bound to their blocks'
//! manifests, every selector resolved and kind-checked, the dimensionality of every step, and
//! the waves of steps that can run concurrently.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use super::blocks::custom::Catalog;
use super::blocks::{self, check_literal, Input, Manifest};
use super::error::{self, BlockError, WorkflowError};
use crate::plugins::LoadedPlugin;

/// The execution engine version we implement (Roboflow's, for `version` checks).
pub const ENGINE_VERSION: (u64, u64, u64) = (1, 17, 0);

pub enum InputKind {
    Image,
    Parameter { default: Value },
}

pub struct InputDef {
    pub name: String,
    pub kind: InputKind,
    pub kinds: Vec<String>,
}

/// What a selector points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sel {
    Input(usize),
    /// A step's output; `None`: all of them (`$steps.s.*`).
    Step(usize, Option<usize>),
}

/// A field's value in a step.
pub enum Arg {
    Lit(Value),
    Sel(Sel),
    Map(Vec<(String, Sel)>),
    List(Vec<Sel>),
    Steps(Vec<usize>),
}

pub struct Step {
    pub name: String,
    pub type_id: String,
    pub manifest: &'static Manifest,
    pub args: Vec<(&'static str, Arg)>,
    pub deps: Vec<usize>,
    /// The level it runs at: 0 per input image, 1 per crop or slice.
    pub level: usize,
    pub out_level: usize,
    /// No batch input at all (parameters and constants only).
    pub scalar: bool,
    /// A custom block's plugin, as loaded when the definition was compiled.
    pub plugin: Option<std::sync::Arc<LoadedPlugin>>,
}

pub struct OutputDef {
    pub name: String,
    pub sel: Sel,
    /// `coordinates_system: own`.
    pub own: bool,
}

pub struct Graph {
    pub inputs: Vec<InputDef>,
    pub steps: Vec<Step>,
    pub outputs: Vec<OutputDef>,
    /// Steps by wave: each wave needs only the waves before it.
    pub waves: Vec<Vec<usize>>,
    /// (step, field, parameter input): parameters a step takes, to check at run time (Roboflow
    /// substitutes them into the manifest then).
    pub parameter_uses: Vec<(usize, &'static str, usize)>,
}

fn syntax_missing(field: &str) -> WorkflowError {
    WorkflowError::syntax(
        format!(
            "1 validation error for WorkflowSpecificationV1\n{field}\n  Field required [type=missing]\n    For further information visit https://errors.pydantic.dev/2.11/v/missing"
        ),
        Vec::new(),
    )
}

fn names_of<'a>(items: &'a [Value], section: &str) -> Result<Vec<&'a str>, WorkflowError> {
    items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| syntax_missing(&format!("{section}.{i}.name")))
        })
        .collect()
}

fn check_version(version: &str) -> Result<(), WorkflowError> {
    let parts: Vec<u64> = version
        .split('.')
        .map(|p| p.trim().parse().unwrap_or(u64::MAX))
        .collect();
    let (major, minor) = (
        parts.first().copied().unwrap_or(u64::MAX),
        parts.get(1).copied().unwrap_or(0),
    );
    let patch = parts.get(2).copied().unwrap_or(0);
    let (em, en, ep) = ENGINE_VERSION;
    if major == em && (minor, patch) <= (en, ep) {
        return Ok(());
    }
    Err(WorkflowError::short(
        "NotSupportedExecutionEngineError",
        error::ENGINE,
        format!(
            "Workflow definition requested Execution Engine in version: `<{}.0.0,>={version}` which cannot be found in existing setup. Available Execution Engines versions: `[<Version('{em}.{en}.{ep}')>]`.",
            major.saturating_add(1)
        ),
    ))
}

/// Parses and validates a definition; its steps may use the built-in blocks and `catalog`'s.
pub fn compile(def: &Value, catalog: &Catalog) -> Result<Graph, WorkflowError> {
    let Some(root) = def.as_object() else {
        return Err(WorkflowError::syntax(
            "1 validation error for WorkflowSpecificationV1\n  Input should be a valid dictionary [type=dict_type]"
                .into(),
            Vec::new(),
        ));
    };
    if root
        .get("dynamic_blocks_definitions")
        .is_some_and(|d| d.as_array().is_none_or(|a| !a.is_empty()))
    {
        return Err(WorkflowError::short(
            "DynamicBlockError",
            error::PARSING,
            "This server does not run custom Python blocks (`dynamic_blocks_definitions`): Python code would run \
             unsandboxed in the server. Write the block as a WebAssembly workflow block instead (a component of the workflow-block world, \
             installed as a plugin: see the README, \"Workflows\" → \"Writing a custom block\") and use it by its type id.",
        ));
    }
    for key in ["version", "inputs", "steps", "outputs"] {
        if !root.contains_key(key) {
            return Err(syntax_missing(key));
        }
    }
    let version = match &root["version"] {
        Value::String(s) => s.clone(),
        _ => {
            return Err(WorkflowError::syntax(
                "1 validation error for WorkflowSpecificationV1\nversion\n  Input should be a valid string [type=string_type]".into(),
                Vec::new(),
            ))
        }
    };
    let list = |key: &str| -> Result<&Vec<Value>, WorkflowError> {
        root[key].as_array().ok_or_else(|| {
            WorkflowError::syntax(
                format!("1 validation error for WorkflowSpecificationV1\n{key}\n  Input should be a valid list [type=list_type]"),
                Vec::new(),
            )
        })
    };
    let (raw_inputs, raw_steps, raw_outputs) = (list("inputs")?, list("steps")?, list("outputs")?);
    let inputs = parse_inputs(raw_inputs)?;
    let step_names = names_of(raw_steps, "steps")?;
    // Block types before names, as Roboflow's parser sees them first.
    let mut manifests = Vec::new();
    for (i, s) in raw_steps.iter().enumerate() {
        let type_id = s.get("type").and_then(Value::as_str).unwrap_or_default();
        match blocks::find(type_id).or_else(|| catalog.find(type_id).map(|b| b.manifest)) {
            Some(m) => manifests.push(m),
            None => return Err(unknown_block(i, step_names[i], type_id, catalog)),
        }
    }
    check_version(&version)?;
    let duplicated = |names: Vec<&str>| names.iter().collect::<HashSet<_>>().len() != names.len();
    let input_names: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
    if duplicated(input_names.clone()) {
        return Err(WorkflowError::short(
            "DuplicatedNameError",
            error::VALIDATION,
            "Found duplicated input names",
        ));
    }
    if duplicated(step_names.clone()) {
        return Err(WorkflowError::short(
            "DuplicatedNameError",
            error::VALIDATION,
            "Found duplicated input steps names",
        ));
    }
    if duplicated(names_of(raw_outputs, "outputs")?) {
        return Err(WorkflowError::short(
            "DuplicatedNameError",
            error::VALIDATION,
            "Found duplicated outputs names",
        ));
    }
    let scope = Scope {
        inputs: &inputs,
        step_names: &step_names,
        manifests: &manifests,
    };
    let mut steps = Vec::new();
    let mut parameter_uses = Vec::new();
    for (i, s) in raw_steps.iter().enumerate() {
        let mut step = parse_step(i, s.as_object().cloned().unwrap_or_default(), manifests[i], &scope)?;
        if matches!(step.manifest.run, blocks::Run::Custom) {
            step.plugin = catalog.find(&step.type_id).map(|b| b.plugin.clone());
        }
        for (field, arg) in &step.args {
            for sel in sels(arg) {
                if let Sel::Input(n) = sel {
                    if matches!(inputs[n].kind, InputKind::Parameter { .. }) {
                        parameter_uses.push((i, *field, n));
                    }
                }
            }
        }
        steps.push(step);
    }
    let waves = order(&mut steps)?;
    levels(&mut steps, &waves, &inputs)?;
    let mut outputs = Vec::new();
    for o in raw_outputs {
        let name = o.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
        let selector = o.get("selector").and_then(Value::as_str).unwrap_or_default();
        let sel = scope
            .resolve(selector)
            .map_err(|e| e.into_error("$outputs", None, &name))?;
        let own = match o.get("coordinates_system").and_then(Value::as_str) {
            None | Some("parent") => false,
            Some("own") => true,
            Some(other) => {
                return Err(WorkflowError::syntax(
                    format!(
                        "1 validation error for WorkflowSpecificationV1\noutputs.{name}.coordinates_system\n  Input should be 'own' or 'parent', got {other:?}"
                    ),
                    Vec::new(),
                ))
            }
        };
        outputs.push(OutputDef { name, sel, own });
    }
    Ok(Graph {
        inputs,
        steps,
        outputs,
        waves,
        parameter_uses,
    })
}

fn parse_inputs(raw: &[Value]) -> Result<Vec<InputDef>, WorkflowError> {
    let names = names_of(raw, "inputs")?;
    raw.iter()
        .zip(names)
        .enumerate()
        .map(|(i, (v, name))| {
            let kinds = v
                .get("kind")
                .and_then(Value::as_array)
                .map(|k| k.iter().filter_map(|k| k.as_str().map(str::to_string)).collect::<Vec<_>>());
            let kind = match v.get("type").and_then(Value::as_str) {
                Some("WorkflowImage" | "InferenceImage") => InputKind::Image,
                Some("WorkflowParameter" | "InferenceParameter") => InputKind::Parameter {
                    default: v.get("default_value").cloned().unwrap_or(Value::Null),
                },
                other => {
                    return Err(WorkflowError::syntax(
                        format!(
                            "1 validation error for WorkflowSpecificationV1\ninputs.{i}\n  Input tag '{}' found using 'type' does not match any of the expected tags: 'WorkflowImage', 'InferenceImage', 'WorkflowParameter', 'InferenceParameter'",
                            other.unwrap_or("None")
                        ),
                        Vec::new(),
                    ))
                }
            };
            let kinds = kinds.unwrap_or_else(|| {
                vec![match kind {
                    InputKind::Image => "image".into(),
                    InputKind::Parameter { .. } => "*".into(),
                }]
            });
            Ok(InputDef {
                name: name.to_string(),
                kind,
                kinds,
            })
        })
        .collect()
}

fn unknown_block(index: usize, name: &str, type_id: &str, catalog: &Catalog) -> WorkflowError {
    let tags = blocks::tags()
        .into_iter()
        .chain(catalog.blocks().iter().map(|b| b.manifest.type_id))
        .map(|t| format!("'{t}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let details = format!("Input tag '{type_id}' found using 'type' does not match any of the expected tags: {tags}");
    WorkflowError::syntax(
        format!("1 validation error for WorkflowSpecificationV1\nsteps.{index}\n  {details}"),
        vec![BlockError {
            block_id: name.into(),
            block_type: Some(type_id.into()),
            property_name: None,
            property_details: Some(details),
            traceback: None,
        }],
    )
}

struct Scope<'a> {
    inputs: &'a [InputDef],
    step_names: &'a [&'a str],
    manifests: &'a [&'static Manifest],
}

/// Why a selector does not resolve.
enum BadSel {
    Pattern(String),
    Target(String, &'static str),
}

impl BadSel {
    fn into_error(self, block_id: &str, block_type: Option<&str>, property: &str) -> WorkflowError {
        match self {
            BadSel::Pattern(s) => WorkflowError::syntax(
                format!("1 validation error for WorkflowSpecificationV1\n{block_id}.{property}\n  {s:?} is not a valid selector"),
                vec![BlockError {
                    block_id: block_id.into(),
                    block_type: block_type.map(str::to_string),
                    property_name: Some(property.into()),
                    property_details: Some(format!("{s:?} is not a valid selector")),
                    traceback: None,
                }],
            ),
            BadSel::Target(reference, what) => WorkflowError::full(
                "InvalidReferenceTargetError",
                error::GRAPH,
                format!("Workflow references '{reference}' which points to a non-existent {what}."),
                vec![BlockError {
                    block_id: block_id.into(),
                    block_type: block_type.map(str::to_string),
                    property_name: Some(property.into()),
                    property_details: Some(format!("Invalid reference to {reference}")),
                    traceback: None,
                }],
            ),
        }
    }
}

fn valid_name(s: &str, star: bool) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || (star && c == '*'))
}

impl Scope<'_> {
    fn resolve(&self, s: &str) -> Result<Sel, BadSel> {
        if let Some(name) = s.strip_prefix("$inputs.") {
            if !valid_name(name, false) {
                return Err(BadSel::Pattern(s.into()));
            }
            return self
                .inputs
                .iter()
                .position(|i| i.name == name)
                .map(Sel::Input)
                .ok_or_else(|| BadSel::Target(s.into(), "input"));
        }
        if let Some(rest) = s.strip_prefix("$steps.") {
            let (step, output) = rest.split_once('.').ok_or_else(|| BadSel::Pattern(s.into()))?;
            if !valid_name(step, false) || !valid_name(output, true) {
                return Err(BadSel::Pattern(s.into()));
            }
            let index = self
                .step_names
                .iter()
                .position(|n| *n == step)
                .ok_or_else(|| BadSel::Target(format!("$steps.{step}"), "block"))?;
            if output == "*" {
                return Ok(Sel::Step(index, None));
            }
            return self.manifests[index]
                .output(output)
                .map(|o| Sel::Step(index, Some(o)))
                .ok_or_else(|| BadSel::Target(s.into(), "output of the block"));
        }
        Err(BadSel::Pattern(s.into()))
    }

    fn step_ref(&self, s: &str) -> Result<usize, BadSel> {
        let name = s.strip_prefix("$steps.").ok_or_else(|| BadSel::Pattern(s.into()))?;
        self.step_names
            .iter()
            .position(|n| *n == name)
            .ok_or_else(|| BadSel::Target(s.into(), "block"))
    }

    /// The kinds a selector carries.
    fn kinds(&self, sel: Sel) -> Vec<&str> {
        match sel {
            Sel::Input(i) => self.inputs[i].kinds.iter().map(String::as_str).collect(),
            Sel::Step(_, None) => vec!["*"],
            Sel::Step(s, Some(o)) => self.manifests[s].outputs[o].kinds.to_vec(),
        }
    }
}

fn is_selector(v: &Value) -> Option<&str> {
    v.as_str().filter(|s| s.starts_with('$'))
}

fn field_error(index: usize, step: &str, type_id: &str, field: &str, detail: &str) -> WorkflowError {
    WorkflowError::syntax(
        format!("1 validation error for WorkflowSpecificationV1\nsteps.{index}.{type_id}.{field}\n  {detail}"),
        vec![BlockError {
            block_id: step.into(),
            block_type: Some(type_id.into()),
            property_name: Some(field.into()),
            property_details: Some(detail.into()),
            traceback: None,
        }],
    )
}

fn parse_step(
    index: usize,
    mut raw: Map<String, Value>,
    m: &'static Manifest,
    scope: &Scope<'_>,
) -> Result<Step, WorkflowError> {
    let name = raw.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
    let type_id = raw.get("type").and_then(Value::as_str).unwrap_or_default().to_string();
    let ferr = |field: &str, detail: &str| field_error(index, &name, &type_id, field, detail);
    let serr = |e: BadSel, field: &str| e.into_error(&name, Some(&type_id), field);
    let mut args = Vec::new();
    let mut deps = Vec::new();
    for f in m.fields {
        let (value, defaulted) = match raw.remove(f.name) {
            Some(v) => (v, false),
            None => match f.default {
                Some(d) => (serde_json::from_str(d).unwrap_or(Value::Null), true),
                None => return Err(ferr(f.name, "Field required")),
            },
        };
        // A default is the block's own (a custom block's is checked when it is installed; an
        // optional field's null is no constant of its kind), not the definition's to check.
        let check = if defaulted { blocks::Check::Any } else { f.check };
        let arg = match f.input {
            Input::Literal => {
                check_literal(check, &value).map_err(|d| ferr(f.name, &d))?;
                Arg::Lit(value)
            }
            Input::Batch | Input::Either => match is_selector(&value) {
                Some(s) => {
                    let sel = scope.resolve(s).map_err(|e| serr(e, f.name))?;
                    let kinds = scope.kinds(sel);
                    let accepts = f.kinds.is_empty()
                        || kinds.contains(&"*")
                        || kinds.iter().any(|k| f.kinds.contains(k))
                        || (f.input == Input::Either && matches!(sel, Sel::Input(_)));
                    if !accepts {
                        return Err(WorkflowError::short(
                            "ReferenceTypeError",
                            error::GRAPH,
                            format!(
                                "Failed to validate reference provided for step input `{name}.{}`. Selector `{s}` carries kinds {kinds:?}, but the field accepts {:?}.",
                                f.name, f.kinds
                            ),
                        ));
                    }
                    Arg::Sel(sel)
                }
                None if f.input == Input::Batch => {
                    return Err(ferr(
                        f.name,
                        "Input should be a valid selector (a string starting with $)",
                    ))
                }
                None => {
                    check_literal(check, &value).map_err(|d| ferr(f.name, &d))?;
                    Arg::Lit(value)
                }
            },
            Input::SelectorMap => {
                let map = value
                    .as_object()
                    .ok_or_else(|| ferr(f.name, "Input should be a valid dictionary"))?;
                let mut sels = Vec::new();
                for (k, v) in map {
                    let s = is_selector(v).ok_or_else(|| ferr(f.name, &format!("{k}: Input should be a selector")))?;
                    sels.push((k.clone(), scope.resolve(s).map_err(|e| serr(e, f.name))?));
                }
                Arg::Map(sels)
            }
            Input::SelectorList => {
                let list = value
                    .as_array()
                    .ok_or_else(|| ferr(f.name, "Input should be a valid list"))?;
                let mut sels = Vec::new();
                for v in list {
                    let s = is_selector(v).ok_or_else(|| ferr(f.name, "Input should be a list of selectors"))?;
                    sels.push(scope.resolve(s).map_err(|e| serr(e, f.name))?);
                }
                Arg::List(sels)
            }
            Input::StepRefs => {
                let list = value
                    .as_array()
                    .ok_or_else(|| ferr(f.name, "Input should be a valid list"))?;
                let mut targets = Vec::new();
                for v in list {
                    let s = v
                        .as_str()
                        .ok_or_else(|| ferr(f.name, "Input should be a list of step selectors"))?;
                    targets.push(scope.step_ref(s).map_err(|e| serr(e, f.name))?);
                }
                Arg::Steps(targets)
            }
        };
        for sel in sels(&arg) {
            if let Sel::Step(s, _) = sel {
                deps.push(s);
            }
        }
        args.push((f.name, arg));
    }
    // A custom block gets only what its manifest declares: a misspelt field is an error, not a
    // default silently taken (built-in blocks ignore extra fields, as Roboflow's do).
    if matches!(m.run, blocks::Run::Custom) {
        if let Some(extra) = raw.keys().find(|k| !matches!(k.as_str(), "name" | "type")) {
            return Err(ferr(extra, "Extra inputs are not permitted [type=extra_forbidden]"));
        }
    }
    Ok(Step {
        name,
        type_id,
        manifest: m,
        args,
        deps,
        level: 0,
        out_level: 0,
        scalar: false,
        plugin: None,
    })
}

/// The selectors of a field's value.
pub fn sels(arg: &Arg) -> Vec<Sel> {
    match arg {
        Arg::Lit(_) | Arg::Steps(_) => Vec::new(),
        Arg::Sel(s) => vec![*s],
        Arg::Map(m) => m.iter().map(|(_, s)| *s).collect(),
        Arg::List(l) => l.clone(),
    }
}

/// The waves of steps (Kahn's algorithm); flow control runs before the steps it gates.
fn order(steps: &mut [Step]) -> Result<Vec<Vec<usize>>, WorkflowError> {
    let gated: Vec<(usize, usize)> = steps
        .iter()
        .enumerate()
        .flat_map(|(i, s)| {
            s.args.iter().flat_map(move |(_, a)| match a {
                Arg::Steps(t) => t.iter().map(|t| (i, *t)).collect::<Vec<_>>(),
                _ => Vec::new(),
            })
        })
        .collect();
    for (gate, target) in gated {
        steps[target].deps.push(gate);
    }
    let mut done: HashSet<usize> = HashSet::new();
    let mut waves = Vec::new();
    while done.len() < steps.len() {
        let wave: Vec<usize> = (0..steps.len())
            .filter(|i| !done.contains(i) && steps[*i].deps.iter().all(|d| done.contains(d)))
            .collect();
        if wave.is_empty() {
            let stuck: Vec<&str> = (0..steps.len())
                .filter(|i| !done.contains(i))
                .map(|i| steps[i].name.as_str())
                .collect();
            return Err(WorkflowError::full(
                "ExecutionGraphStructureError",
                error::GRAPH,
                format!("Detected cycle in execution graph (steps {}).", stuck.join(", ")),
                Vec::new(),
            ));
        }
        done.extend(&wave);
        waves.push(wave);
    }
    Ok(waves)
}

/// Every step's level: the deepest of its batch inputs (a `reduces` field one level below),
/// plus the block's offset for its outputs.
fn levels(steps: &mut [Step], waves: &[Vec<usize>], inputs: &[InputDef]) -> Result<(), WorkflowError> {
    let dim_error = |step: &Step, what: String| {
        WorkflowError::full(
            "StepInputDimensionalityError",
            error::GRAPH,
            what,
            vec![BlockError {
                block_id: step.name.clone(),
                block_type: Some(step.type_id.clone()),
                property_name: None,
                property_details: None,
                traceback: None,
            }],
        )
    };
    let mut out: HashMap<usize, Option<usize>> = HashMap::new();
    for &i in waves.iter().flatten() {
        let step = &steps[i];
        let mut level: Option<usize> = None;
        let mut reduced: Option<usize> = None;
        for (field, arg) in &step.args {
            for sel in sels(arg) {
                let l = match sel {
                    Sel::Input(n) => matches!(inputs[n].kind, InputKind::Image).then_some(0),
                    Sel::Step(s, _) => out[&s],
                };
                if step.manifest.reduces == Some(*field) {
                    reduced = l;
                } else if let Some(l) = l {
                    level = Some(level.map_or(l, |m: usize| m.max(l)));
                }
            }
        }
        if step.manifest.reduces.is_some() {
            let base = level.unwrap_or(0);
            if reduced != Some(base + 1) {
                return Err(dim_error(
                    step,
                    format!(
                        "Step {} takes {} one level below its reference image (from a crop or a slice).",
                        step.name,
                        step.manifest.reduces.unwrap_or_default()
                    ),
                ));
            }
        }
        let scalar = level.is_none() && reduced.is_none();
        let level = level.unwrap_or(0);
        let out_level = (level as i64 + i64::from(step.manifest.output_offset)).max(0) as usize;
        if out_level > 1 {
            return Err(dim_error(
                step,
                format!(
                    "Step {} would nest a second level (a crop of a crop): this server runs one nested level.",
                    step.name
                ),
            ));
        }
        out.insert(i, (!scalar).then_some(out_level));
        let step = &mut steps[i];
        step.level = level;
        step.out_level = out_level;
        step.scalar = scalar;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn def(steps: Value, outputs: Value) -> Value {
        json!({"version": "1.0", "inputs": [{"type": "WorkflowImage", "name": "image"}], "steps": steps, "outputs": outputs})
    }

    fn det(name: &str, images: &str) -> Value {
        json!({"type": "ObjectDetectionModel", "name": name, "images": images, "model_id": "m/1"})
    }

    #[test]
    fn compiles_levels_and_waves() {
        let g = compile(
            &def(
                json!([det("a", "$inputs.image"),
                   {"type": "Crop", "name": "c", "images": "$inputs.image", "predictions": "$steps.a.predictions"},
                   det("b", "$steps.c.crops"),
                   {"type": "roboflow_core/detections_stitch@v1", "name": "s", "reference_image": "$inputs.image",
                    "predictions": "$steps.b.predictions"}]),
                json!([{"type": "JsonField", "name": "o", "selector": "$steps.s.predictions"}]),
            ),
            &Catalog::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(g.waves.len(), 4);
        assert_eq!((g.steps[2].level, g.steps[3].level, g.steps[3].out_level), (1, 0, 0));
    }

    #[test]
    fn errors_have_roboflow_types() {
        let e = |d: Value| {
            compile(&d, &Catalog::default())
                .err()
                .map(|e| e.error_type)
                .unwrap_or("ok")
        };
        assert_eq!(
            e(def(
                json!([det("a", "$inputs.image")]),
                json!([{"type": "JsonField", "name": "o", "selector": "$steps.x.predictions"}])
            )),
            "InvalidReferenceTargetError"
        );
        assert_eq!(
            e(def(json!([{"type": "nope", "name": "a"}]), json!([]))),
            "WorkflowSyntaxError"
        );
        assert_eq!(
            e(def(
                json!([det("a", "$inputs.image"), det("a", "$inputs.image")]),
                json!([])
            )),
            "DuplicatedNameError"
        );
        assert_eq!(
            e(def(
                json!([det("a", "$steps.b.predictions"), det("b", "$steps.a.predictions")]),
                json!([])
            )),
            "ReferenceTypeError"
        );
        assert_eq!(
            e(def(
                json!([{"type": "DetectionsFilter", "name": "f", "predictions": "$steps.g.predictions", "operations": []},
                       {"type": "DetectionsFilter", "name": "g", "predictions": "$steps.f.predictions", "operations": []}]),
                json!([])
            )),
            "ExecutionGraphStructureError"
        );
        let mut v2 = def(json!([]), json!([]));
        v2["version"] = json!("2.0");
        assert_eq!(e(v2), "NotSupportedExecutionEngineError");
    }
}
