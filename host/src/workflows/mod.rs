//! Roboflow Workflows (execution engine 1.17 as `inference` 1.8.3 serves it): a JSON definition
//! of inputs, steps (blocks) and outputs, compiled once into a validated graph (`compile`) and
//! run with independent steps concurrently (`execute`), model steps going through the pipeline
//! as `/infer` does. The blocks live in `blocks`, one module each with its manifest; custom
//! blocks are WebAssembly components installed as plugins (`blocks::custom`).

pub mod blocks;
mod compile;
pub mod error;
mod execute;
mod serialize;
mod uql;
mod value;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{json, Map, Value};

pub use blocks::custom::{world as block_world, Catalog};
pub use compile::Graph;
pub use error::WorkflowError;

use crate::pipeline::{Caller, Pipeline};

/// Compiled definitions kept (by their JSON text), as Roboflow caches its compilations.
const CACHED_GRAPHS: usize = 256;

/// The workflow service: the compiled-graph cache and the stored workflows' directory.
pub struct Workflows {
    /// `<dir>/<workspace>/<workflow_id>.json`.
    pub dir: Option<PathBuf>,
    cache: parking_lot::Mutex<HashMap<String, Arc<Graph>>>,
}

/// Why a stored workflow cannot be had.
#[derive(Debug)]
pub enum StoredError {
    NotFound(String),
    Invalid(String),
}

impl Workflows {
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self {
            dir,
            cache: Default::default(),
        }
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

    /// A stored workflow's definition: `<dir>/<workspace>/<workflow_id>.json`, holding the
    /// definition itself, `{"specification": …}`, or Roboflow's `{"workflow": {"config": "<json>"}}`.
    pub fn stored(&self, workspace: &str, workflow_id: &str) -> Result<Value, StoredError> {
        let safe = |s: &str| {
            !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) && !s.starts_with('.')
        };
        if !safe(workspace) || !safe(workflow_id) {
            return Err(StoredError::NotFound(format!(
                "Workflow {workspace}/{workflow_id} not found"
            )));
        }
        let Some(dir) = &self.dir else {
            return Err(StoredError::NotFound(format!(
                "Workflow {workspace}/{workflow_id} not found: this server has no stored workflows (--workflows-dir)"
            )));
        };
        let path = dir.join(workspace).join(format!("{workflow_id}.json"));
        let text = std::fs::read_to_string(&path)
            .map_err(|_| StoredError::NotFound(format!("Workflow {workspace}/{workflow_id} not found")))?;
        let doc: Value = serde_json::from_str(&text)
            .map_err(|e| StoredError::Invalid(format!("stored workflow {workspace}/{workflow_id} is not JSON: {e}")))?;
        specification_of(doc).map_err(StoredError::Invalid)
    }
}

/// The definition inside a stored workflow document.
pub fn specification_of(doc: Value) -> Result<Value, String> {
    if let Some(config) = doc.pointer("/workflow/config") {
        let config: Value = match config {
            Value::String(s) => serde_json::from_str(s).map_err(|e| format!("workflow config is not JSON: {e}"))?,
            other => other.clone(),
        };
        return Ok(config.get("specification").cloned().unwrap_or(config));
    }
    Ok(doc.get("specification").cloned().unwrap_or(doc))
}

/// Runs `graph` on `inputs`: Roboflow's response body, `{"outputs": [...], "profiler_trace": []}`,
/// without the `excluded` output names.
pub async fn run(
    graph: &Graph,
    pipeline: &Pipeline,
    caller: &Caller,
    inputs: &Map<String, Value>,
    excluded: &[String],
) -> Result<Value, WorkflowError> {
    let mut outputs = execute::run(graph, pipeline, caller, inputs).await?;
    for o in &mut outputs {
        for name in excluded {
            o.shift_remove(name);
        }
    }
    Ok(json!({"outputs": outputs, "profiler_trace": []}))
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
