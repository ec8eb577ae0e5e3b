//! `roboflow_core/property_definition@v1`: a UQL chain over any value (count, class list…).

use super::{either, literal, Check, Manifest, Output, Run};
use crate::workflows::uql;
use crate::workflows::value::Val;

pub static MANIFEST: Manifest = Manifest {
    type_id: "roboflow_core/property_definition@v1",
    aliases: &["PropertyDefinition", "PropertyExtraction"],
    name: "Property Definition",
    description: "Computes a property of its data with UQL operations (SequenceLength, DetectionsPropertyExtract, …).",
    fields: &[
        either("data", &[], None, Check::Any, "The value to compute on"),
        literal("operations", None, Check::List, "UQL operations"),
    ],
    outputs: &[Output {
        name: "output",
        kinds: &["*"],
    }],
    output_offset: 0,
    reduces: None,
    run: Run::Light(run),
};

fn run(args: &super::Args) -> Result<Vec<Val>, String> {
    let ops = args.json("operations").as_array().cloned().unwrap_or_default();
    let q = uql::apply(uql::from_val(args.get("data")), &ops, &Default::default())?;
    Ok(vec![uql::to_val(q)])
}
