//! Running a compiled graph: the inputs assembled into a batch (one element per input image),
//! then wave by wave every step of a wave concurrently, each over all the batch's elements at
//! once (a model step makes one pipeline call for all its images, crops included), then one
//! output entry per element.

use std::collections::HashSet;
use std::sync::Arc;

use futures_util::future::{join_all, try_join_all};
use serde_json::{Map, Value};

use super::blocks::{check_literal, custom, model, Args, Input, Run};
use super::compile::{Arg, Graph, InputKind, Sel, Step};
use super::error::WorkflowError;
use super::limits::{self, RunLimits};
use super::serialize::serialize;
use super::value::{Image, Val};
use crate::input::{self, ImageSource};
use crate::pipeline::{Caller, Error, Pipeline};

/// A step's outputs for one batch element.
enum Slot {
    /// At the element's level: `None` when the step did not run (flow control, or an input
    /// that did not come).
    Zero(Option<Vec<Val>>),
    /// One per crop or slice of the element.
    One(Vec<Option<Vec<Val>>>),
}

enum InputVal {
    Images(Vec<Arc<Image>>),
    Param(Value),
}

struct Run_<'a> {
    graph: &'a Graph,
    pipeline: &'a Pipeline,
    caller: &'a Caller,
    inputs: Vec<InputVal>,
    batch: usize,
    slots: Vec<Option<Vec<Slot>>>,
    /// (step, element, item): skipped by flow control (`None`: every item of the element).
    skips: HashSet<(usize, usize, Option<usize>)>,
}

/// What one step produced: its slots per element, and what it skips.
type StepResult = (Vec<Slot>, Vec<(usize, usize, Option<usize>)>);

/// Runs `graph` on the request's `inputs`; one output object per batch element. The run stops
/// at `limits`' deadline, and as soon as it holds more images than `limits` allow.
pub async fn run(
    graph: &Graph,
    pipeline: &Pipeline,
    caller: &Caller,
    inputs: &Map<String, Value>,
    limits: &RunLimits,
) -> Result<Vec<Map<String, Value>>, WorkflowError> {
    let deadline = tokio::time::Instant::now() + limits.timeout;
    // Counted before decoding: an input over the limit costs nothing.
    let mut images = input_images(graph, inputs);
    if images > limits.max_images {
        return Err(limits::too_many_images(limits, images, None));
    }
    let (values, batch) = tokio::time::timeout_at(deadline, assemble(graph, pipeline, caller, inputs))
        .await
        .map_err(|_| limits::overtime(limits, &[]))??;
    check_parameters(graph, &values)?;
    // Every image the run holds, once (steps may hand an image on as it came).
    // (Addresses: every image stays alive in the run's slots, so none is reused.)
    let mut seen: HashSet<usize> = values
        .iter()
        .flat_map(|v| match v {
            InputVal::Images(i) => i.iter().map(|i| Arc::as_ptr(i) as usize).collect(),
            InputVal::Param(_) => Vec::new(),
        })
        .collect();
    let mut state = Run_ {
        graph,
        pipeline,
        caller,
        inputs: values,
        batch,
        slots: (0..graph.steps.len()).map(|_| None).collect(),
        skips: HashSet::new(),
    };
    for wave in &graph.waves {
        let results = tokio::time::timeout_at(deadline, join_all(wave.iter().map(|&s| state.step(s))))
            .await
            .map_err(|_| {
                let steps: Vec<&Step> = wave.iter().map(|&s| &graph.steps[s]).collect();
                limits::overtime(limits, &steps)
            })?;
        let mut done = Vec::with_capacity(wave.len());
        for (&s, result) in wave.iter().zip(results) {
            done.push((s, result?));
        }
        for (s, (slots, skips)) in done {
            for slot in &slots {
                slot_images(slot, &mut |image| {
                    if seen.insert(Arc::as_ptr(image) as usize) {
                        images += 1;
                    }
                });
            }
            if images > limits.max_images {
                return Err(limits::too_many_images(limits, images, Some(&graph.steps[s])));
            }
            state.slots[s] = Some(slots);
            state.skips.extend(skips);
        }
    }
    let state = &state;
    Ok((0..batch).map(|e| state.outputs(e)).collect())
}

/// How many images the request's image inputs hold (a list: its length).
fn input_images(graph: &Graph, inputs: &Map<String, Value>) -> usize {
    graph
        .inputs
        .iter()
        .filter(|d| matches!(d.kind, InputKind::Image))
        .map(|d| match inputs.get(&d.name) {
            Some(Value::Array(list)) => list.len(),
            Some(Value::Null) | None => 0,
            Some(_) => 1,
        })
        .sum()
}

/// Calls `f` on every image in a step's outputs for one element (crops, slices, pictures).
fn slot_images(slot: &Slot, f: &mut impl FnMut(&Arc<Image>)) {
    fn each(v: &Val, f: &mut impl FnMut(&Arc<Image>)) {
        match v {
            Val::Image(i) => f(i),
            Val::List(items) => items.iter().for_each(|v| each(v, f)),
            Val::Dict(items) => items.iter().for_each(|(_, v)| each(v, f)),
            Val::Json(_) | Val::Detections(_) => {}
        }
    }
    let items: Vec<&Option<Vec<Val>>> = match slot {
        Slot::Zero(o) => vec![o],
        Slot::One(items) => items.iter().collect(),
    };
    for v in items.into_iter().flatten().flatten() {
        each(v, f);
    }
}

fn input_error(name: &str, detail: impl std::fmt::Display) -> WorkflowError {
    WorkflowError::input(format!(
        "Failed to assemble `{name}`. Could not successfully use any deserializer for declared kinds. Details: \nKind: `image` - Error: Detected runtime parameter `{name}` defined as `WorkflowImage` that is invalid. Failed on input validation. Details: {detail}"
    ))
}

/// Decodes one image input value (`{"type", "value"}` or a bare string; the type is ignored, as
/// Roboflow does: a URL is fetched, anything else is base64).
async fn decode(
    pipeline: &Pipeline,
    caller: &Caller,
    name: &str,
    id: String,
    raw: &Value,
) -> Result<Arc<Image>, WorkflowError> {
    let text = match raw {
        Value::String(s) => s.as_str(),
        Value::Object(o) => o
            .get("value")
            .and_then(Value::as_str)
            .ok_or_else(|| input_error(name, "the image's `value` must be a string"))?,
        _ => {
            return Err(input_error(
                name,
                "an image is {\"type\": ..., \"value\": ...} or a base64 string",
            ))
        }
    };
    let limits = caller.input_limits(&pipeline.input_limits);
    let (source, original) = if text.starts_with("http://") || text.starts_with("https://") {
        if pipeline.models.offline() {
            return Err(input_error(
                name,
                "Cannot load an image from URL while offline (--offline).",
            ));
        }
        (ImageSource::Url(text.to_string()), None)
    } else {
        let bytes = input::decode_base64(text).map_err(|e| input_error(name, e))?;
        (ImageSource::Encoded(bytes), Some(text.to_string()))
    };
    let encoded = input::fetch(source, &limits, &pipeline.http, &pipeline.url_policy)
        .await
        .map_err(|e| input_error(name, e))?;
    let pixels = input::decode(encoded, limits.max_image_pixels)
        .await
        .map_err(|e| input_error(name, e))?;
    Ok(Arc::new(Image {
        pixels,
        parent_id: id.clone(),
        parent_origin: None,
        root_parent_id: id,
        root_origin: None,
        original,
    }))
}

/// The batch: every image input decoded (a list gives one element per image, a single image
/// is broadcast), every parameter given or defaulted.
async fn assemble(
    graph: &Graph,
    pipeline: &Pipeline,
    caller: &Caller,
    inputs: &Map<String, Value>,
) -> Result<(Vec<InputVal>, usize), WorkflowError> {
    let mut values = Vec::new();
    for def in &graph.inputs {
        let value = match &def.kind {
            InputKind::Parameter { default } => {
                InputVal::Param(inputs.get(&def.name).cloned().unwrap_or(default.clone()))
            }
            InputKind::Image => {
                let raw = inputs.get(&def.name).filter(|v| !v.is_null()).ok_or_else(|| {
                    WorkflowError::input(format!(
                        "Detected runtime parameter `{}` defined as `WorkflowImage` (of kind `['image']`), but value is not provided.",
                        def.name
                    ))
                })?;
                let items: Vec<(String, &Value)> = match raw {
                    Value::Array(list) => list
                        .iter()
                        .enumerate()
                        .map(|(i, v)| (format!("{}.[{i}]", def.name), v))
                        .collect(),
                    one => vec![(def.name.clone(), one)],
                };
                let images = try_join_all(
                    items
                        .into_iter()
                        .map(|(id, v)| decode(pipeline, caller, &def.name, id, v)),
                )
                .await?;
                InputVal::Images(images)
            }
        };
        values.push(value);
    }
    let sizes: Vec<usize> = values
        .iter()
        .filter_map(|v| match v {
            InputVal::Images(i) => Some(i.len()),
            InputVal::Param(_) => None,
        })
        .collect();
    let batch = sizes.iter().copied().find(|n| *n > 1).unwrap_or(1);
    if sizes.iter().any(|n| *n != batch && *n != 1) {
        return Err(WorkflowError::input(format!(
            "Image inputs are lists of different lengths ({sizes:?}): each must have the same length, or one image."
        )));
    }
    let max = caller.input_limits(&pipeline.input_limits).max_batch;
    if batch > max {
        return Err(WorkflowError::input(format!(
            "{batch} images in one run, more than this server's limit of {max}."
        )));
    }
    for v in &mut values {
        if let InputVal::Images(images) = v {
            if images.len() == 1 && batch > 1 {
                let one = images[0].clone();
                *images = vec![one; batch];
            }
        }
    }
    Ok((values, batch))
}

/// Parameters go into the steps' fields at run time, so they are checked against the fields
/// now (as Roboflow re-validates the manifest).
fn check_parameters(graph: &Graph, values: &[InputVal]) -> Result<(), WorkflowError> {
    for &(s, field, n) in &graph.parameter_uses {
        let step = &graph.steps[s];
        let Some(f) = step.manifest.field(field) else { continue };
        let InputVal::Param(value) = &values[n] else { continue };
        let detail = match f.input {
            Input::Batch => Some("Input should be a valid string [type=string_type]".to_string()),
            Input::Either => check_literal(f.check, value).err(),
            _ => None,
        };
        if let Some(detail) = detail {
            return Err(WorkflowError {
                inner_error_type: Some("ValidationError".into()),
                inner_error_message: Some(format!("1 validation error for BlockManifest\n{field}\n  {detail}").into()),
                ..WorkflowError::input(format!(
                    "Provided input is incompatible with manifest of step {} regarding property {field} provided in input parameter named {}. Details available in inner error object.",
                    step.name, graph.inputs[n].name
                ))
            });
        }
    }
    Ok(())
}

fn pick(step: &Step, outs: &[Val], output: Option<usize>) -> Val {
    match output {
        Some(o) => outs.get(o).cloned().unwrap_or(Val::NULL),
        None => Val::Dict(
            step.manifest
                .outputs
                .iter()
                .zip(outs)
                .map(|(o, v)| (o.name.to_string(), v.clone()))
                .collect(),
        ),
    }
}

fn step_error(step: &Step, message: String) -> WorkflowError {
    WorkflowError::step(&step.name, &step.type_id, 500, "BlockError", message)
}

fn pipeline_error(step: &Step, e: Error) -> WorkflowError {
    let (status, inner) = match &e {
        Error::Overloaded(_) | Error::Unavailable(_) => (503, "ServiceUnavailable"),
        Error::NotFound(_) | Error::Model(_) | Error::ModelId(_) => (500, "ModelError"),
        Error::Invalid(_) | Error::Image(_) | Error::Draw(_) => (500, "InvalidInput"),
        Error::Plugin(_) => (500, "PluginError"),
        Error::Internal(_) => (500, "InternalError"),
    };
    WorkflowError::step(&step.name, &step.type_id, status, inner, e.to_string())
}

impl Run_<'_> {
    /// A selector's value for element `e` (item `k` of a nested step); `None` when the step it
    /// names did not run there.
    fn value(&self, sel: Sel, e: usize, k: Option<usize>, reduce: bool) -> Option<Val> {
        match sel {
            Sel::Input(n) => Some(match &self.inputs[n] {
                InputVal::Images(images) => Val::Image(images[e].clone()),
                InputVal::Param(v) => Val::Json(v.clone()),
            }),
            Sel::Step(s, output) => {
                let step = &self.graph.steps[s];
                match &self.slots[s].as_ref()?[e] {
                    Slot::Zero(outs) => outs.as_ref().map(|o| pick(step, o, output)),
                    Slot::One(items) => match (reduce, k) {
                        (false, Some(k)) => items.get(k)?.as_ref().map(|o| pick(step, o, output)),
                        _ => Some(Val::List(
                            items.iter().flatten().map(|o| pick(step, o, output)).collect(),
                        )),
                    },
                }
            }
        }
    }

    /// The arguments of one item; `None` when a batch input is missing (the step is skipped).
    fn args(&self, step: &Step, e: usize, k: Option<usize>) -> Option<Args> {
        let mut values = Vec::with_capacity(step.args.len());
        for (field, arg) in &step.args {
            let input = step.manifest.field(field).map(|f| f.input);
            let reduce = step.manifest.reduces == Some(*field);
            let v = match arg {
                Arg::Lit(v) => Val::Json(v.clone()),
                Arg::Sel(sel) => match self.value(*sel, e, k, reduce) {
                    Some(v) => v,
                    None if input == Some(Input::Batch) => return None,
                    None => Val::NULL,
                },
                Arg::Map(m) => Val::Dict(
                    m.iter()
                        .map(|(n, s)| (n.clone(), self.value(*s, e, k, false).unwrap_or(Val::NULL)))
                        .collect(),
                ),
                Arg::List(l) => Val::List(
                    l.iter()
                        .map(|s| self.value(*s, e, k, false).unwrap_or(Val::NULL))
                        .collect(),
                ),
                Arg::Steps(_) => continue,
            };
            values.push((*field, v));
        }
        Some(Args { values })
    }

    /// How many items a nested step has for element `e`: those of its nested input.
    fn items_at(&self, step: &Step, e: usize) -> usize {
        for (_, arg) in &step.args {
            for sel in super::compile::sels(arg) {
                if let Sel::Step(s, _) = sel {
                    if let Some(Slot::One(items)) = self.slots[s].as_ref().map(|v| &v[e]) {
                        return items.len();
                    }
                }
            }
        }
        0
    }

    async fn step(&self, s: usize) -> Result<StepResult, WorkflowError> {
        let step = &self.graph.steps[s];
        // (element, item, arguments) of every item that runs.
        let mut items: Vec<(usize, Option<usize>, Args)> = Vec::new();
        let mut counts = vec![0usize; self.batch];
        for (e, count) in counts.iter_mut().enumerate() {
            if self.skips.contains(&(s, e, None)) {
                continue;
            }
            if step.level == 0 {
                if let Some(a) = self.args(step, e, None) {
                    items.push((e, None, a));
                }
            } else {
                *count = self.items_at(step, e);
                for k in 0..*count {
                    if !self.skips.contains(&(s, e, Some(k))) {
                        if let Some(a) = self.args(step, e, Some(k)) {
                            items.push((e, Some(k), a));
                        }
                    }
                }
            }
        }
        let mut skips = Vec::new();
        let results: Vec<Vec<Val>> = match &step.manifest.run {
            Run::Light(f) => items
                .iter()
                .map(|(_, _, a)| f(a))
                .collect::<Result<_, _>>()
                .map_err(|m| step_error(step, m))?,
            Run::Heavy(f) => {
                let f = *f;
                let args: Vec<Args> = items
                    .iter_mut()
                    .map(|(_, _, a)| Args {
                        values: std::mem::take(&mut a.values),
                    })
                    .collect();
                tokio::task::spawn_blocking(move || args.iter().map(f).collect::<Result<Vec<_>, _>>())
                    .await
                    .map_err(|e| step_error(step, format!("the step's thread failed: {e}")))?
                    .map_err(|m| step_error(step, m))?
            }
            Run::Model(task) => {
                let args: Vec<Args> = items
                    .iter_mut()
                    .map(|(_, _, a)| Args {
                        values: std::mem::take(&mut a.values),
                    })
                    .collect();
                if args.is_empty() {
                    Vec::new()
                } else {
                    model::run(*task, step.manifest, self.pipeline, self.caller, &args)
                        .await
                        .map_err(|e| pipeline_error(step, e))?
                }
            }
            Run::Custom => {
                let args: Vec<Args> = items
                    .iter_mut()
                    .map(|(_, _, a)| Args {
                        values: std::mem::take(&mut a.values),
                    })
                    .collect();
                let plugin = step.plugin.as_ref();
                custom::run(
                    plugin,
                    &step.name,
                    &step.type_id,
                    step.manifest,
                    self.pipeline,
                    self.caller,
                    args,
                )
                .await?
            }
            Run::Flow(f) => {
                let targets: Vec<usize> = step
                    .args
                    .iter()
                    .flat_map(|(_, a)| match a {
                        Arg::Steps(t) => t.clone(),
                        _ => Vec::new(),
                    })
                    .collect();
                for (e, k, a) in &items {
                    if !f(a).map_err(|m| step_error(step, m))? {
                        skips.extend(targets.iter().map(|t| (*t, *e, *k)));
                    }
                }
                items.iter().map(|_| Vec::new()).collect()
            }
        };
        let mut slots: Vec<Slot> = (0..self.batch)
            .map(|e| {
                if step.level == 1 {
                    Slot::One((0..counts[e]).map(|_| None).collect())
                } else if step.out_level == 1 {
                    Slot::One(Vec::new())
                } else {
                    Slot::Zero(None)
                }
            })
            .collect();
        for ((e, k, _), outs) in items.iter().zip(results) {
            match (&mut slots[*e], k) {
                (Slot::One(list), Some(k)) => list[*k] = Some(outs),
                // A block adding a level: each output is a list over the new items.
                (Slot::One(list), None) => {
                    let n = outs
                        .first()
                        .map_or(0, |o| if let Val::List(l) = o { l.len() } else { 0 });
                    *list = (0..n)
                        .map(|j| {
                            Some(
                                outs.iter()
                                    .map(|o| match o {
                                        Val::List(l) => l.get(j).cloned().unwrap_or(Val::NULL),
                                        other => other.clone(),
                                    })
                                    .collect(),
                            )
                        })
                        .collect();
                }
                (Slot::Zero(slot), _) => *slot = Some(outs),
            }
        }
        Ok((slots, skips))
    }

    /// Element `e`'s outputs: scalar ones first, then the others in definition order.
    fn outputs(&self, e: usize) -> Map<String, Value> {
        let graph = self.graph;
        let scalar = |sel: Sel| match sel {
            Sel::Input(n) => matches!(self.inputs[n], InputVal::Param(_)),
            Sel::Step(s, _) => graph.steps[s].scalar,
        };
        let mut out = Map::new();
        for pass in [true, false] {
            for o in graph.outputs.iter().filter(|o| scalar(o.sel) == pass) {
                let value = match o.sel {
                    Sel::Step(s, output) => match self.slots[s].as_ref().map(|v| &v[e]) {
                        Some(Slot::One(items)) => Value::Array(
                            items
                                .iter()
                                .map(|i| {
                                    i.as_ref().map_or(Value::Null, |outs| {
                                        serialize(&pick(&graph.steps[s], outs, output), o.own)
                                    })
                                })
                                .collect(),
                        ),
                        _ => self
                            .value(o.sel, e, None, false)
                            .map_or(Value::Null, |v| serialize(&v, o.own)),
                    },
                    Sel::Input(_) => self
                        .value(o.sel, e, None, false)
                        .map_or(Value::Null, |v| serialize(&v, o.own)),
                };
                out.insert(o.name.clone(), value);
            }
        }
        out
    }
}
