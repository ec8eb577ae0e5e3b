//! Roboflow Workflows (execution engine 1.17 as `inference` 1.8.3 serves it): a JSON definition
//! of inputs, steps (blocks) and outputs, compiled once into a validated graph (`compile`) and
//! run with independent steps concurrently (`execute`), model steps going through the pipeline
//! as `/infer` does, within the run's `limits`. The blocks live in `blocks`, one module each with
//! its manifest; custom blocks are WebAssembly components installed as plugins
//! (`blocks::custom`); stored workflows come from a directory or Roboflow's API (`stored`).

pub mod blocks;
mod compile;
pub mod error;
mod execute;
mod limits;
mod serialize;
mod stored;
mod uql;
mod value;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{json, Map, Value};

pub use blocks::custom::{world as block_world, Catalog};
pub use compile::Graph;
pub use error::WorkflowError;
pub use limits::RunLimits;
pub use stored::{RoboflowSource, StoredError, StoredWorkflows, Wanted};

use crate::pipeline::{Caller, Pipeline};

/// Compiled definitions kept (by their JSON text), as Roboflow caches its compilations.
const CACHED_GRAPHS: usize = 256;

/// The workflow service: the compiled-graph cache, the stored workflows and the run limits.
pub struct Workflows {
    /// `--workflows-dir`, and Roboflow's API for the workflows it does not hold.
    pub stored: StoredWorkflows,
    /// The server's run limits (each tenant's may tighten them).
    pub limits: RunLimits,
    cache: parking_lot::Mutex<HashMap<String, Arc<Graph>>>,
}

impl Workflows {
    /// Stored workflows from `<dir>/<workspace>/<workflow_id>.json` only, default limits.
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self {
            stored: StoredWorkflows::new(dir),
            limits: RunLimits::default(),
            cache: Default::default(),
        }
    }

    pub fn with_stored(mut self, stored: StoredWorkflows) -> Self {
        self.stored = stored;
        self
    }

    pub fn with_limits(mut self, limits: RunLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The graph of `definition` with the custom blocks of `catalog`, compiled once (per set of
    /// custom blocks: a reloaded block gets a new graph).
    pub fn compile(&self, definition: &Value, catalog: &Catalog) -> Result<Arc<Graph>, WorkflowError> {
        let key = format!("{}{definition}", catalog.key());
        if let Some(g) = self.cache.lock().get(&key) {
            return Ok(g.clone());
        }
        let graph = Arc::new(compile::compile(definition, catalog)?);
        let mut cache = self.cache.lock();
        if cache.len() >= CACHED_GRAPHS {
            cache.clear();
        }
        cache.insert(key, graph.clone());
        Ok(graph)
    }
}

/// Runs `graph` on `inputs` within `limits` (the caller's, see `RunLimits::for_caller`):
/// Roboflow's response body, `{"outputs": [...], "profiler_trace": []}`, without the `excluded`
/// output names, as JSON bytes.
pub async fn run(
    graph: &Graph,
    pipeline: &Pipeline,
    caller: &Caller,
    inputs: &Map<String, Value>,
    excluded: &[String],
    limits: &RunLimits,
) -> Result<Vec<u8>, WorkflowError> {
    let mut outputs = execute::run(graph, pipeline, caller, inputs, limits).await?;
    for o in &mut outputs {
        for name in excluded {
            o.shift_remove(name);
        }
    }
    limits::to_json_within(&json!({"outputs": outputs, "profiler_trace": []}), limits)
}

/// `/workflows/describe_interface`: the inputs' and outputs' kinds.
pub fn describe_interface(graph: &Graph) -> Value {
    let mut inputs = Map::new();
    for i in &graph.inputs {
        inputs.insert(i.name.clone(), json!(i.kinds));
    }
    let mut outputs = Map::new();
    let mut hints = Map::new();
    for o in &graph.outputs {
        let kinds: Vec<String> = match o.sel {
            compile::Sel::Input(n) => graph.inputs[n].kinds.clone(),
            compile::Sel::Step(_, None) => vec!["*".into()],
            compile::Sel::Step(s, Some(k)) => graph.steps[s].manifest.outputs[k]
                .kinds
                .iter()
                .map(|k| k.to_string())
                .collect(),
        };
        for k in &kinds {
            hints.insert(k.clone(), json!(if k == "*" { "Any" } else { "dict" }));
        }
        outputs.insert(o.name.clone(), json!(kinds));
    }
    for i in &graph.inputs {
        for k in &i.kinds {
            hints.insert(k.clone(), json!(if k == "*" { "Any" } else { "dict" }));
        }
    }
    json!({"inputs": inputs, "outputs": outputs, "typing_hints": hints, "kinds_schemas": {}})
}

/// `/workflows/blocks/describe`: every block, generated from the manifests (the built-ins, then
/// `catalog`'s custom blocks).
pub fn describe_blocks(catalog: &Catalog) -> Value {
    let all: Vec<&blocks::Manifest> = blocks::all()
        .iter()
        .copied()
        .chain(catalog.blocks().iter().map(|b| b.manifest))
        .collect();
    let mut kinds: Vec<&str> = all
        .iter()
        .flat_map(|m| {
            m.outputs
                .iter()
                .flat_map(|o| o.kinds.iter().copied())
                .chain(m.fields.iter().flat_map(|f| f.kinds.iter().copied()))
        })
        .collect();
    kinds.sort_unstable();
    kinds.dedup();
    json!({
        "blocks": blocks::all()
            .iter()
            .map(|m| blocks::describe(m))
            .chain(catalog.blocks().iter().map(blocks::custom::describe_custom))
            .collect::<Vec<_>>(),
        "declared_kinds": kinds.iter().map(|k| json!({"name": k, "description": null, "docs": null})).collect::<Vec<_>>(),
        "kinds_connections": {},
        "primitives_connections": [],
        "universal_query_language_description": {},
        "dynamic_block_definition_schema": {},
    })
}
