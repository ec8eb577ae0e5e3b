//! A workflow block's declaration (`[block]` in its plugin's manifest): the step type it
//! implements, its fields and its outputs, as data. What the kinds mean, and so which values and
//! defaults fit a field, is the workflows' business (they check a declaration through
//! `World::block`); here only its shape is checked.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// `[block]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BlockSpec {
    /// The step `type` definitions name it by, `<owner>/<name>@v<N>` (e.g. `my_org/region_counter@v1`).
    #[serde(rename = "type")]
    pub type_id: String,
    /// Its human-friendly name (in `/workflows/blocks/describe`); default: the plugin's name.
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub fields: Vec<BlockField>,
    pub outputs: Vec<BlockOutput>,
}

/// `[[block.fields]]`: a property of the step.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BlockField {
    pub name: String,
    /// The kinds a selector may carry here (Roboflow's kind names; empty: any).
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Taken when the step leaves the field out (any TOML value, handed over as JSON).
    #[serde(default)]
    pub default: Option<serde_json::Value>,
    /// Whether a step must give it; default: when it has no default. An optional field without a
    /// default is null when left out.
    #[serde(default)]
    pub required: Option<bool>,
    #[serde(default)]
    pub description: String,
}

impl BlockField {
    pub fn is_required(&self) -> bool {
        self.required.unwrap_or(self.default.is_none())
    }
}

/// `[[block.outputs]]`: a value the block returns for each item.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BlockOutput {
    pub name: String,
    /// Its kind (Roboflow's kind name, `*` for any), or a list of them (e.g. every detections kind).
    #[serde(deserialize_with = "one_or_many")]
    pub kind: Vec<String>,
    #[serde(default)]
    pub description: String,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Kinds {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Kinds::deserialize(d)? {
        Kinds::One(k) => vec![k],
        Kinds::Many(k) => k,
    })
}

/// The most fields or outputs a block may declare.
const MAX_NAMES: usize = 64;

/// A field or output name: what a selector (`$steps.s.<name>`) can name.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.as_bytes()[0].is_ascii_lowercase()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn valid_kind(k: &str) -> bool {
    k == "*"
        || (!k.is_empty()
            && k.len() <= 64
            && k.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'))
}

/// `<owner>/<name>@v<N>`, lowercase; `roboflow_core/` is the built-in blocks' own.
fn valid_type_id(t: &str) -> bool {
    let segment = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    };
    let Some((path, version)) = t.split_once("@v") else {
        return false;
    };
    let Some((owner, name)) = path.split_once('/') else {
        return false;
    };
    segment(owner) && segment(name) && !version.is_empty() && version.bytes().all(|b| b.is_ascii_digit())
}

impl BlockSpec {
    /// Its shape: a well-formed type id of its own, valid and unique names, known-looking kinds.
    pub fn validate(&self) -> Result<()> {
        if !valid_type_id(&self.type_id) {
            bail!(
                "block type {:?} must be <owner>/<name>@v<N> (lowercase letters, digits, '_' or '-'), e.g. my_org/region_counter@v1",
                self.type_id
            );
        }
        if self.type_id.starts_with("roboflow_core/") {
            bail!(
                "block type {:?}: roboflow_core/ is the built-in blocks' namespace",
                self.type_id
            );
        }
        if self.outputs.is_empty() {
            bail!("a block declares at least one output ([[block.outputs]])");
        }
        if self.fields.len() > MAX_NAMES || self.outputs.len() > MAX_NAMES {
            bail!("a block declares at most {MAX_NAMES} fields and {MAX_NAMES} outputs");
        }
        let mut seen = std::collections::HashSet::new();
        for f in &self.fields {
            if !valid_name(&f.name) || f.name == "name" || f.name == "type" {
                bail!(
                    "field name {:?} must be lowercase letters, digits or '_' (at most 64), and not `name` or `type`",
                    f.name
                );
            }
            if !seen.insert(f.name.as_str()) {
                bail!("field {:?} is declared twice", f.name);
            }
            if let Some(bad) = f.kinds.iter().find(|k| !valid_kind(k)) {
                bail!(
                    "field {:?}: kind {bad:?} must be lowercase letters, digits or '_', or `*`",
                    f.name
                );
            }
            if f.required == Some(true) && f.default.is_some() {
                bail!("field {:?} is required and has a default: one or the other", f.name);
            }
        }
        let mut seen = std::collections::HashSet::new();
        for o in &self.outputs {
            if !valid_name(&o.name) {
                bail!(
                    "output name {:?} must be lowercase letters, digits or '_' (at most 64)",
                    o.name
                );
            }
            if !seen.insert(o.name.as_str()) {
                bail!("output {:?} is declared twice", o.name);
            }
            if o.kind.is_empty() {
                bail!("output {:?} names no kind (`*` for any)", o.name);
            }
            if let Some(bad) = o.kind.iter().find(|k| !valid_kind(k)) {
                bail!(
                    "output {:?}: kind {bad:?} must be lowercase letters, digits or '_', or `*`",
                    o.name
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> Result<BlockSpec> {
        let s: BlockSpec = toml::from_str(text)?;
        s.validate()?;
        Ok(s)
    }

    #[test]
    fn declarations_parse_and_are_checked() {
        let s = spec(
            "type = \"my_org/zone@v1\"\n[[fields]]\nname = \"predictions\"\nkinds = [\"object_detection_prediction\"]\n\
             [[fields]]\nname = \"zone\"\ndefault = [[0, 0], [10, 10]]\n[[outputs]]\nname = \"count\"\nkind = \"integer\"",
        )
        .unwrap();
        assert!(s.fields[0].is_required() && !s.fields[1].is_required());
        assert_eq!(s.fields[1].default, Some(serde_json::json!([[0, 0], [10, 10]])));
        assert_eq!(s.outputs[0].kind, ["integer"]);
        let many =
            spec("type = \"a/b@v1\"\n[[outputs]]\nname = \"d\"\nkind = [\"object_detection_prediction\", \"image\"]");
        assert_eq!(many.unwrap().outputs[0].kind.len(), 2);
        let err = |text: &str| spec(text).unwrap_err().to_string();
        let out = "\n[[outputs]]\nname = \"n\"\nkind = \"integer\"";
        assert!(err(&format!("type = \"zone\"{out}")).contains("<owner>/<name>@v<N>"));
        assert!(err(&format!("type = \"roboflow_core/x@v1\"{out}")).contains("built-in"));
        assert!(err("type = \"a/b@v1\"\noutputs = []").contains("at least one output"));
        assert!(err(&format!("type = \"a/b@v1\"\n[[fields]]\nname = \"type\"{out}")).contains("not `name`"));
        assert!(err(&format!("type = \"a/b@v1\"{out}{out}")).contains("twice"));
        assert!(err(&format!(
            "type = \"a/b@v1\"\n[[fields]]\nname = \"x\"\nkinds = [\"Bad Kind\"]{out}"
        ))
        .contains("kind"));
        assert!(spec(&format!("type = \"a/b@v1\"\nfoo = 1{out}")).is_err());
    }
}
