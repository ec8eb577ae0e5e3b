//! What a custom workflow block (the `workflow-block` world) needs around its `run`: the world's
//! types, reading an item's fields, and running item by item.
//!
//! ```ignore
//! use inference_guest::block::{self, Guest, Value, Values};
//! use inference_guest::wit::PluginError;
//! struct Count;
//! impl Guest for Count {
//!     fn run(items: Vec<Values>) -> Result<Vec<Values>, PluginError> {
//!         block::each(items, |item| {
//!             let n = block::detections(block::field(&item, "predictions")).map_or(0, |d| d.items.len());
//!             Ok(vec![("count".into(), Value::Integer(n as i64))])
//!         })
//!     }
//! }
//! inference_guest::export_workflow_block!(Count);
//! ```

pub use crate::bindings::workflow_block::exports::inference::plugins::block::{
    BlockDetection, BlockImage, Detections, Guest, Keypoint, Point, Value, Values,
};
use crate::wit::PluginError;

static NULL: Value = Value::Null;

/// The item's field `name` (`Value::Null` when it has none: the host gives every declared field).
pub fn field<'a>(item: &'a Values, name: &str) -> &'a Value {
    item.iter().find(|(n, _)| n == name).map_or(&NULL, |(_, v)| v)
}

/// A number: an integer, a float, or a number as text (which workflow parameters may be).
pub fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Integer(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        Value::Text(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A string.
pub fn text(v: &Value) -> Option<&str> {
    match v {
        Value::Text(s) => Some(s),
        _ => None,
    }
}

/// A boolean.
pub fn boolean(v: &Value) -> Option<bool> {
    match v {
        Value::Boolean(b) => Some(*b),
        _ => None,
    }
}

/// Detections (a field of a `*_prediction` kind).
pub fn detections(v: &Value) -> Option<&Detections> {
    match v {
        Value::Detections(d) => Some(d),
        _ => None,
    }
}

/// An image (a field of kind `image`).
pub fn image(v: &Value) -> Option<&BlockImage> {
    match v {
        Value::Image(i) => Some(i),
        _ => None,
    }
}

/// JSON text (a list or an object given to the field), as it came.
pub fn json(v: &Value) -> Option<&str> {
    match v {
        Value::Json(s) => Some(s),
        _ => None,
    }
}

/// Runs `f` on every item, in order: the usual body of `Guest::run`.
pub fn each(
    items: Vec<Values>,
    f: impl FnMut(Values) -> Result<Values, PluginError>,
) -> Result<Vec<Values>, PluginError> {
    items.into_iter().map(f).collect()
}
