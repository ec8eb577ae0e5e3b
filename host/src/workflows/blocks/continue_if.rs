//! `roboflow_core/continue_if@v1`: flow control; when its statement is false, the steps it
//! names are skipped for that item and their outputs are `null`.

use super::{literal, selectors, Check, Input, Manifest, Run};
use crate::workflows::uql;

pub static MANIFEST: Manifest = Manifest {
    type_id: "roboflow_core/continue_if@v1",
    aliases: &["ContinueIf"],
    name: "Continue If",
    description: "Runs next_steps only when condition_statement holds.",
    fields: &[
        literal("condition_statement", None, Check::Dict, "A UQL statement"),
        selectors(
            "evaluation_parameters",
            Input::SelectorMap,
            Some("{}"),
            "Named values the statement refers to",
        ),
        selectors("next_steps", Input::StepRefs, None, "The steps to run when it holds"),
        literal(
            "stop_delay",
            Some("0"),
            Check::Number,
            "Accepted; unused (no video state)",
        ),
    ],
    outputs: &[],
    output_offset: 0,
    reduces: None,
    run: Run::Flow(run),
};

fn run(args: &super::Args) -> Result<bool, String> {
    let params = super::expression::params(args.get("evaluation_parameters"));
    uql::evaluate(args.json("condition_statement"), None, &params)
}
