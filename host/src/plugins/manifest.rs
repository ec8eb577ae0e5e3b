//! A plugin's manifest (`<name>.toml` beside `<name>.wasm`): what it is, which world it
//! implements, which route serves it, and its limits. Our own task plugins ship with one too.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::CallLimits;
use crate::models::Task;

/// The WIT world a plugin implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum World {
    ObjectDetection,
    InstanceSegmentation,
    Classification,
    KeypointDetection,
    CustomTask,
}

impl World {
    /// The task a task world serves (`None` for a custom task).
    pub fn task(self) -> Option<Task> {
        match self {
            World::ObjectDetection => Some(Task::ObjectDetection),
            World::InstanceSegmentation => Some(Task::InstanceSegmentation),
            World::Classification => Some(Task::Classification),
            World::KeypointDetection => Some(Task::KeypointDetection),
            World::CustomTask => None,
        }
    }
}

/// Overrides of the server's per-call limits.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitOverrides {
    pub timeout_ms: Option<u64>,
    pub memory_mib: Option<usize>,
    pub max_model_runs: Option<usize>,
    pub output_kib: Option<usize>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub world: World,
    /// `POST /infer/<route>`. Task worlds default to (and must use) their task's route.
    #[serde(default)]
    pub route: Option<String>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub limits: LimitOverrides,
}

fn valid_name(s: &str, extra: &[u8]) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.as_bytes()[0].is_ascii_lowercase()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || extra.contains(&b))
}

impl Manifest {
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        if text.len() > 64 << 10 {
            bail!("{} is larger than 64 KiB", path.display());
        }
        let manifest: Manifest =
            toml::from_str(&text).with_context(|| format!("{} is not a valid manifest", path.display()))?;
        manifest.validate()?;
        Ok(manifest)
    }

    fn validate(&self) -> Result<()> {
        if !valid_name(&self.name, b"-_") {
            bail!(
                "plugin name {:?} must be lowercase letters, digits, '-' or '_' (at most 64)",
                self.name
            );
        }
        if let Some(route) = &self.route {
            if !valid_name(route, b"_") {
                bail!("route {route:?} must be lowercase letters, digits or '_' (at most 64)");
            }
        }
        match (self.world.task(), &self.route) {
            (Some(task), Some(route)) if route != task_route(task) => {
                bail!(
                    "a {:?} plugin serves /infer/{}, not /infer/{route}",
                    self.world,
                    task_route(task)
                )
            }
            (None, None) => bail!("a custom-task plugin must name its route"),
            (None, Some(route)) if TASK_ROUTES.contains(&route.as_str()) => {
                bail!("route {route:?} belongs to a built-in task")
            }
            _ => Ok(()),
        }
    }

    /// The route segment after `/infer/`.
    pub fn route(&self) -> String {
        match (self.world.task(), &self.route) {
            (Some(task), _) => task_route(task).to_string(),
            (None, Some(route)) => route.clone(),
            (None, None) => unreachable!("validated: custom plugins name their route"),
        }
    }

    /// The server's limits with this plugin's overrides; memory cannot exceed the server's.
    pub fn limits(&self, defaults: &CallLimits) -> CallLimits {
        let l = &self.limits;
        CallLimits {
            deadline: l.timeout_ms.map(Duration::from_millis).unwrap_or(defaults.deadline),
            memory_bytes: l
                .memory_mib
                .map(|m| (m << 20).min(defaults.memory_bytes))
                .unwrap_or(defaults.memory_bytes),
            max_model_runs: l.max_model_runs.unwrap_or(defaults.max_model_runs),
            output_bytes: l.output_kib.map(|k| k << 10).unwrap_or(defaults.output_bytes),
        }
    }
}

/// Routes of the built-in task worlds, in `/infer/<route>`.
pub const TASK_ROUTES: [&str; 5] = [
    "object_detection",
    "instance_segmentation",
    "segmentation",
    "classification",
    "keypoints_detection",
];

pub fn task_route(task: Task) -> &'static str {
    match task {
        Task::ObjectDetection => "object_detection",
        Task::InstanceSegmentation => "instance_segmentation",
        Task::Classification => "classification",
        Task::KeypointDetection => "keypoints_detection",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest> {
        let m: Manifest = toml::from_str(text)?;
        m.validate()?;
        Ok(m)
    }

    #[test]
    fn task_plugins_default_to_their_route() {
        let m = parse("name = \"object-detection\"\nversion = \"1\"\nworld = \"object-detection\"").unwrap();
        assert_eq!(m.route(), "object_detection");
        assert!(parse("name = \"x\"\nversion = \"1\"\nworld = \"classification\"\nroute = \"other\"").is_err());
    }

    #[test]
    fn custom_plugins_need_their_own_route() {
        let m =
            parse("name = \"counts\"\nversion = \"1\"\nworld = \"custom-task\"\nroute = \"object_counts\"").unwrap();
        assert_eq!(m.route(), "object_counts");
        assert!(parse("name = \"c\"\nversion = \"1\"\nworld = \"custom-task\"").is_err());
        assert!(parse("name = \"c\"\nversion = \"1\"\nworld = \"custom-task\"\nroute = \"classification\"").is_err());
        assert!(parse("name = \"c\"\nversion = \"1\"\nworld = \"custom-task\"\nroute = \"../x\"").is_err());
        assert!(parse("name = \"C!\"\nversion = \"1\"\nworld = \"custom-task\"\nroute = \"x\"").is_err());
        assert!(parse("name = \"c\"\nversion = \"1\"\nworld = \"nope\"\nroute = \"x\"").is_err());
        assert!(parse("name = \"c\"\nversion = \"1\"\nworld = \"custom-task\"\nroute = \"x\"\nextra = 1").is_err());
    }

    #[test]
    fn limits_override_but_memory_stays_capped() {
        let m = parse(
            "name = \"c\"\nversion = \"1\"\nworld = \"custom-task\"\nroute = \"x\"\n[limits]\ntimeout_ms = 250\nmemory_mib = 100000\noutput_kib = 4",
        )
        .unwrap();
        let limits = m.limits(&CallLimits::default());
        assert_eq!(limits.deadline, Duration::from_millis(250));
        assert_eq!(limits.memory_bytes, CallLimits::default().memory_bytes);
        assert_eq!(limits.output_bytes, 4096);
    }
}
