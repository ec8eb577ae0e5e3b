//! Model ids: `<project>/<version>`, validated before they ever touch the file system.

use std::fmt;

/// A validated model id. Both segments are short, start with an alphanumeric character and
/// contain only `[A-Za-z0-9._-]`, so joining them onto a directory cannot escape it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelId {
    pub project: String,
    pub version: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("Invalid Model ID sent in request: {0}")]
pub struct InvalidModelId(pub String);

const MAX_SEGMENT: usize = 128;

pub(crate) fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_SEGMENT
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl ModelId {
    pub fn parse(raw: &str) -> Result<Self, InvalidModelId> {
        let bad = |why: &str| InvalidModelId(format!("{raw:?} ({why})"));
        let mut parts = raw.split('/');
        let (Some(project), Some(version), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("expected <project>/<version>"));
        };
        if !valid_segment(project) || !valid_segment(version) {
            return Err(bad(
                "segments may contain only letters, digits, '.', '_' and '-', and must start with a letter or digit",
            ));
        }
        Ok(Self {
            project: project.to_string(),
            version: version.to_string(),
        })
    }
}

impl fmt::Display for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.project, self.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_roboflow_ids() {
        let id = ModelId::parse("soccer-players-5fuqs/1").unwrap();
        assert_eq!(id.project, "soccer-players-5fuqs");
        assert_eq!(id.version, "1");
        assert_eq!(id.to_string(), "soccer-players-5fuqs/1");
        assert!(ModelId::parse("shapes_v2/v1.0").is_ok());
    }

    #[test]
    fn rejects_paths_and_odd_shapes() {
        for raw in [
            "",
            "a",
            "a/",
            "/a",
            "a/b/c",
            "../x",
            "x/..",
            "./1",
            "a/.",
            "/etc/passwd",
            "a\\b/1",
            "a b/1",
            "a/1\0",
            "%2e%2e/1",
            ".hidden/1",
            "-x/1",
        ] {
            assert!(ModelId::parse(raw).is_err(), "{raw:?} should be rejected");
        }
        assert!(ModelId::parse(&format!("{}/1", "a".repeat(200))).is_err());
    }
}
