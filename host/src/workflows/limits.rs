//! How much one workflow run may take: a whole-run deadline, the images it holds (its input
//! images and every image its steps make: crops, slices, drawings) and the size of its serialized
//! response. The server's settings (`--workflow-*`), each tightened by the caller's tenant
//! (`workflow_*` in the tenants file); a step's model calls keep their own plugin-call limits.
//! Over a limit the run stops with Roboflow's `RuntimeLimitsCausedStepExecutionError` body naming
//! the steps concerned: 504 for the deadline (as a plugin call over its time), 413 for images and
//! for the response size (retrying the same request cannot help).

use std::io;
use std::time::Duration;

use serde_json::Value;

use super::compile::Step;
use super::error::{BlockError, WorkflowError, STEP};
use crate::pipeline::Caller;

const ERROR_TYPE: &str = "RuntimeLimitsCausedStepExecutionError";

/// The limits of one run.
#[derive(Clone, Debug, PartialEq)]
pub struct RunLimits {
    pub timeout: Duration,
    pub max_images: usize,
    pub max_output_bytes: usize,
}

impl Default for RunLimits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(60),
            max_images: 2048,
            max_output_bytes: 64 << 20,
        }
    }
}

impl RunLimits {
    /// These limits, tightened by the caller's tenant (never loosened).
    pub fn for_caller(&self, caller: &Caller) -> RunLimits {
        let Some(tenant) = &caller.tenant else {
            return self.clone();
        };
        let l = tenant.limits();
        RunLimits {
            timeout: l
                .workflow_timeout_ms
                .map_or(self.timeout, |ms| Duration::from_millis(ms).min(self.timeout)),
            max_images: l
                .workflow_max_images
                .map_or(self.max_images, |n| n.min(self.max_images)),
            max_output_bytes: l
                .workflow_max_output_bytes
                .map_or(self.max_output_bytes, |n| n.min(self.max_output_bytes)),
        }
    }
}

fn limit_error(status: u16, message: String, steps: &[&Step]) -> WorkflowError {
    let blocks = steps
        .iter()
        .map(|s| BlockError {
            block_id: s.name.clone(),
            block_type: Some(s.type_id.clone()),
            property_name: None,
            property_details: Some(message.clone()),
            traceback: None,
        })
        .collect();
    WorkflowError {
        status,
        inner_error_type: Some("RuntimeLimitExceeded".into()),
        ..WorkflowError::full(ERROR_TYPE, STEP, message, blocks)
    }
}

/// The run went past its deadline while `steps` ran (none: while the inputs were read).
pub fn overtime(limits: &RunLimits, steps: &[&Step]) -> WorkflowError {
    let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
    let during = if names.is_empty() {
        "while reading its inputs".to_string()
    } else {
        format!("while running {}", names.join(", "))
    };
    limit_error(
        504,
        format!(
            "Could not complete workflow execution due to configured runtime constraints: the run took longer \
             than this server's limit of {} ms (workflow_timeout_ms), {during}.",
            limits.timeout.as_millis()
        ),
        steps,
    )
}

/// The run holds `count` images, more than it may (`step`: the one that made the last ones).
pub fn too_many_images(limits: &RunLimits, count: usize, step: Option<&Step>) -> WorkflowError {
    let source = match step {
        Some(s) => format!("after step {} made its images", s.name),
        None => "in its inputs".to_string(),
    };
    limit_error(
        413,
        format!(
            "Could not complete workflow execution due to configured runtime constraints: the run holds {count} \
             images {source}, more than this server's limit of {} (workflow_max_images, counting input images and \
             the crops, slices and pictures steps make).",
            limits.max_images
        ),
        step.as_slice(),
    )
}

/// Bytes written up to a limit; past it every write fails.
struct Within {
    bytes: Vec<u8>,
    max: usize,
    over: bool,
}

impl io::Write for Within {
    fn write(&mut self, chunk: &[u8]) -> io::Result<usize> {
        if self.bytes.len() + chunk.len() > self.max {
            self.over = true;
            return Err(io::Error::other("over the limit"));
        }
        self.bytes.extend_from_slice(chunk);
        Ok(chunk.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The response as JSON bytes, refused (without finishing it) once it is larger than the limit.
pub fn to_json_within(response: &Value, limits: &RunLimits) -> Result<Vec<u8>, WorkflowError> {
    let mut out = Within {
        bytes: Vec::new(),
        max: limits.max_output_bytes,
        over: false,
    };
    match serde_json::to_writer(&mut out, response) {
        Ok(()) => Ok(out.bytes),
        Err(_) if out.over => Err(limit_error(
            413,
            format!(
                "Could not complete workflow execution due to configured runtime constraints: the response is \
                 larger than this server's limit of {} bytes (workflow_max_output_bytes). Leave outputs out with \
                 `excluded_fields`, or send fewer or smaller images.",
                limits.max_output_bytes
            ),
            &[],
        )),
        Err(e) => Err(WorkflowError {
            status: 500,
            ..WorkflowError::short("WorkflowError", STEP, format!("cannot serialize the response: {e}"))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn responses_are_cut_at_the_limit() {
        let limits = RunLimits {
            max_output_bytes: 20,
            ..RunLimits::default()
        };
        assert_eq!(to_json_within(&json!({"a": 1}), &limits).unwrap(), br#"{"a":1}"#);
        let e = to_json_within(&json!({"outputs": ["x".repeat(100)]}), &limits).unwrap_err();
        assert_eq!((e.status, e.error_type), (413, ERROR_TYPE));
        assert!(e.message.contains("20 bytes"), "{}", e.message);
    }
}
