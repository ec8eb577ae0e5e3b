//! `roboflow_core/expression@v1`: a switch over named data (`CasesDefinition`).

use serde_json::Value;

use super::{literal, selectors, Check, Input, Manifest, Output, Run};
use crate::workflows::uql::{self, Params};
use crate::workflows::value::Val;

pub static MANIFEST: Manifest = Manifest {
    type_id: "roboflow_core/expression@v1",
    aliases: &["Expression"],
    name: "Expression",
    description: "The result of the first case whose condition holds (else the default).",
    fields: &[
        selectors("data", Input::SelectorMap, None, "Named values"),
        literal("data_operations", Some("{}"), Check::Dict, "UQL operations per name"),
        literal("switch", None, Check::Dict, "CasesDefinition"),
    ],
    outputs: &[Output {
        name: "output",
        kinds: &["*"],
    }],
    output_offset: 0,
    reduces: None,
    run: Run::Light(run),
};

/// The named values of a `{name: selector}` field.
pub fn params(v: &Val) -> Params {
    match v {
        Val::Dict(items) => items.iter().map(|(k, v)| (k.clone(), uql::from_val(v))).collect(),
        _ => Params::new(),
    }
}

fn run(args: &super::Args) -> Result<Vec<Val>, String> {
    let mut data = params(args.get("data"));
    if let Some(ops) = args.json("data_operations").as_object() {
        for (name, chain) in ops {
            if let (Some(q), Some(chain)) = (data.get(name).cloned(), chain.as_array()) {
                let q = uql::apply(q, chain, &data)?;
                data.insert(name.clone(), q);
            }
        }
    }
    let switch = args.json("switch");
    let cases = switch
        .get("cases")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for case in &cases {
        let condition = case.get("condition").ok_or("a case needs a condition")?;
        if uql::evaluate(condition, None, &data)? {
            return result(case.get("result"), &data);
        }
    }
    result(switch.get("default"), &data)
}

fn result(r: Option<&Value>, data: &Params) -> Result<Vec<Val>, String> {
    let Some(r) = r else { return Ok(vec![Val::NULL]) };
    match r.get("type").and_then(Value::as_str) {
        Some("StaticCaseResult") => Ok(vec![Val::Json(r.get("value").cloned().unwrap_or(Value::Null))]),
        Some("DynamicCaseResult") => {
            let name = r.get("parameter_name").and_then(Value::as_str).unwrap_or_default();
            let q = data
                .get(name)
                .cloned()
                .ok_or_else(|| format!("parameter {name:?} is not in data"))?;
            let ops = r
                .get("operations")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            Ok(vec![uql::to_val(uql::apply(q, &ops, data)?)])
        }
        other => Err(format!("unknown case result type {other:?}")),
    }
}
