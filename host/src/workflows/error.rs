//! Workflow errors in Roboflow's shapes (workflows.md §1): the status, `error_type`, `context`
//! and, for the compilation and step errors, the `blocks_errors` list.

use serde_json::{json, Value};

/// One entry of `blocks_errors`.
#[derive(Debug, Clone)]
pub struct BlockError {
    pub block_id: String,
    pub block_type: Option<String>,
    pub property_name: Option<String>,
    pub property_details: Option<String>,
    /// A step's failure, as `block_traceback.traceback`.
    pub traceback: Option<String>,
}

/// Why a definition cannot be compiled or run.
#[derive(Debug, Clone)]
pub struct WorkflowError {
    pub status: u16,
    pub error_type: &'static str,
    pub message: String,
    pub context: &'static str,
    // Boxed: the error stays small enough to return by value everywhere.
    pub inner_error_type: Option<Box<str>>,
    pub inner_error_message: Option<Box<str>>,
    /// `Some`: the full body (with `blocks_errors` and the `python_blocks_*` keys); `None`: the
    /// five keys Roboflow answers for definition and input errors.
    pub blocks_errors: Option<Vec<BlockError>>,
}

pub const PARSING: &str = "workflow_compilation | workflow_definition_parsing";
pub const VALIDATION: &str = "workflow_compilation | specification_validation";
pub const GRAPH: &str = "workflow_compilation | execution_graph_construction";
pub const ENGINE: &str = "workflow_compilation | engine_initialisation";
pub const INPUTS: &str = "workflow_execution | runtime_input_validation";
pub const STEP: &str = "workflow_execution | step_execution";

impl WorkflowError {
    /// A 400 with the five keys.
    pub fn short(error_type: &'static str, context: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: 400,
            error_type,
            message: message.into(),
            context,
            inner_error_type: None,
            inner_error_message: None,
            blocks_errors: None,
        }
    }

    /// A 400 with `blocks_errors`.
    pub fn full(
        error_type: &'static str,
        context: &'static str,
        message: impl Into<String>,
        blocks: Vec<BlockError>,
    ) -> Self {
        Self {
            blocks_errors: Some(blocks),
            ..Self::short(error_type, context, message)
        }
    }

    /// `WorkflowSyntaxError`: the definition does not parse (pydantic's wording in `inner`).
    pub fn syntax(inner: String, blocks: Vec<BlockError>) -> Self {
        Self {
            inner_error_type: Some("ValidationError".into()),
            inner_error_message: Some(inner.into()),
            ..Self::full(
                "WorkflowSyntaxError",
                PARSING,
                "Could not parse workflow definition. Details provided in inner error.",
                blocks,
            )
        }
    }

    /// `RuntimeInputError`: a missing or unusable input.
    pub fn input(message: impl Into<String>) -> Self {
        Self::short("RuntimeInputError", INPUTS, message)
    }

    /// `StepExecutionError`: a step failed while running.
    pub fn step(step: &str, block_type: &str, status: u16, inner_type: &str, message: String) -> Self {
        Self {
            status,
            inner_error_type: Some(inner_type.into()),
            inner_error_message: Some(message.clone().into()),
            ..Self::full(
                "StepExecutionError",
                STEP,
                message.clone(),
                vec![BlockError {
                    block_id: step.into(),
                    block_type: Some(block_type.into()),
                    property_name: None,
                    property_details: Some(message.clone()),
                    traceback: Some(message),
                }],
            )
        }
    }

    /// The response body, key for key as Roboflow's.
    pub fn body(&self) -> Value {
        let inner_message = self.inner_error_message.clone().unwrap_or_else(|| "None".into());
        match &self.blocks_errors {
            None => json!({
                "message": self.message,
                "error_type": self.error_type,
                "context": self.context,
                "inner_error_type": self.inner_error_type,
                "inner_error_message": inner_message,
            }),
            Some(blocks) => json!({
                "message": self.message,
                "error_type": self.error_type,
                "context": self.context,
                // `str()`-ed by Roboflow: an absent inner error is the string "None".
                "inner_error_type": self.inner_error_type.clone().unwrap_or_else(|| "None".into()),
                "inner_error_message": inner_message,
                "blocks_errors": blocks.iter().map(|b| json!({
                    "block_id": b.block_id,
                    "block_type": b.block_type,
                    "block_details": null,
                    "property_name": b.property_name,
                    "property_details": b.property_details,
                    "block_traceback": b.traceback.as_ref().map(|t| json!({"traceback": t})),
                })).collect::<Vec<_>>(),
                "python_blocks_output_streams": null,
                "python_blocks_debug_traces": null,
            }),
        }
    }
}

impl std::fmt::Display for WorkflowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error_type, self.message)
    }
}
