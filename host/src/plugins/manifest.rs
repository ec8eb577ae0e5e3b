//! A plugin's manifest (`<name>.toml` beside `<name>.wasm`): what it is, which world it
//! implements, which models it serves (or which route, or which workflow block it is), and its
//! limits. Our own plugins ship with one too.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::block::BlockSpec;
use super::world::{World, Worlds};
use super::CallLimits;

/// The name of the world workflow blocks implement (named here for the manifest's errors).
const WORKFLOW_BLOCK: &str = "workflow-block";

/// Overrides of the server's per-call limits.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitOverrides {
    pub timeout_ms: Option<u64>,
    pub memory_mib: Option<usize>,
    pub max_model_runs: Option<usize>,
    pub output_kib: Option<usize>,
}

/// The models a task plugin serves (`[models]`): those of the named architectures, or those whose
/// outputs look like the ones it decodes. A task plugin without it is its world's default, used
/// for the models no other plugin claims.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// Architecture names, exact (`rfdetr-base`) or a prefix ending in `*` (`rfdetr-*`), matched
    /// against the model's architecture: Roboflow's `model_type.json` `model_type`, the ONNX
    /// metadata `model_type`, or `architecture` in the model directory's `model.toml`.
    #[serde(default)]
    pub architectures: Vec<String>,
    /// Outputs the plugin decodes: every one must be there, by name, with this shape (-1: any
    /// size; no shape: any).
    #[serde(default)]
    pub outputs: Vec<OutputClaim>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutputClaim {
    pub name: String,
    #[serde(default)]
    pub shape: Option<Vec<i64>>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    /// The WIT world it implements (`object-detection`, ..., `custom-task`).
    pub world: String,
    /// `POST /infer/<route>`: custom-task plugins name theirs; task plugins are served at their
    /// task's route (and may only repeat it).
    #[serde(default)]
    pub route: Option<String>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub models: Option<Claims>,
    /// The workflow block a `workflow-block` plugin implements.
    #[serde(default)]
    pub block: Option<BlockSpec>,
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

/// An architecture pattern: a name, or a prefix followed by one final `*`.
fn valid_pattern(p: &str) -> bool {
    let name = p.strip_suffix('*').unwrap_or(p);
    !p.is_empty() && (name.is_empty() || valid_name(name, b"-_.")) && !name.contains('*')
}

impl Manifest {
    pub fn read(path: &Path, worlds: &Worlds) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        if text.len() > 64 << 10 {
            bail!("{} is larger than 64 KiB", path.display());
        }
        let manifest: Manifest =
            toml::from_str(&text).with_context(|| format!("{} is not a valid manifest", path.display()))?;
        manifest.validate(worlds)?;
        Ok(manifest)
    }

    /// The world it names, which must be one the host knows.
    pub fn world<'w>(&self, worlds: &'w Worlds) -> Result<&'w World> {
        worlds.get(&self.world).with_context(|| {
            format!(
                "unknown world {:?} (known: {})",
                self.world,
                worlds.names().collect::<Vec<_>>().join(", ")
            )
        })
    }

    fn validate(&self, worlds: &Worlds) -> Result<()> {
        if !valid_name(&self.name, b"-_") {
            bail!(
                "plugin name {:?} must be lowercase letters, digits, '-' or '_' (at most 64)",
                self.name
            );
        }
        let world = self.world(worlds)?;
        if let Some(route) = &self.route {
            if !valid_name(route, b"_") {
                bail!("route {route:?} must be lowercase letters, digits or '_' (at most 64)");
            }
        }
        match (&world.block, &self.block) {
            (Some(check), Some(block)) => {
                block.validate()?;
                check(block).context("[block]")?;
            }
            (Some(_), None) => bail!(
                "a {} plugin declares its block: [block] with its type, fields and outputs",
                world.name
            ),
            (None, Some(_)) => bail!("[block] is for {} plugins, not {}", WORKFLOW_BLOCK, world.name),
            (None, None) => {}
        }
        match (world.routes.first(), &self.route) {
            (Some(task_route), Some(route)) if route != task_route => {
                bail!("a {} plugin serves /infer/{task_route}, not /infer/{route}", world.name)
            }
            (None, Some(_)) if world.is_block() => {
                bail!(
                    "a {} plugin is used by its block type in workflows: it has no route",
                    world.name
                )
            }
            (None, None) if !world.is_block() => bail!("a {} plugin must name its route", world.name),
            (None, Some(route)) if worlds.is_task_route(route) => bail!("route {route:?} belongs to a built-in task"),
            _ => {}
        }
        if let Some(claims) = &self.models {
            if !world.is_task() {
                bail!(
                    "a {} plugin is chosen by its route: [models] is for task plugins",
                    world.name
                );
            }
            if claims.architectures.is_empty() && claims.outputs.is_empty() {
                bail!("[models] claims nothing: list architectures or outputs (or leave it out for a default plugin)");
            }
            if let Some(bad) = claims.architectures.iter().find(|p| !valid_pattern(p)) {
                bail!("architecture pattern {bad:?} must be lowercase letters, digits, '-', '_' or '.', optionally ending in '*'");
            }
            if let Some(bad) = claims.outputs.iter().find(|o| o.name.is_empty() || o.name.len() > 128) {
                bail!("output name {:?} must be 1 to 128 characters", bad.name);
            }
        }
        Ok(())
    }

    /// The route segment after `/infer/`; `None` for a workflow block.
    pub fn route(&self, world: &World) -> Option<String> {
        match (world.routes.first(), &self.route) {
            (Some(route), _) => Some(route.to_string()),
            (None, route) => route.clone(),
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

/// How well a plugin's claims fit a model: higher is more specific; `None` when they don't.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fit {
    /// No claims: the world's default.
    Default,
    /// Every claimed output is there with its shape.
    Outputs,
    /// An architecture prefix matched (longer prefixes fit better).
    ArchitecturePrefix(usize),
    /// The architecture's exact name.
    Architecture,
}

impl Claims {
    /// How well these claims fit a model of `architecture` with `outputs` (name, dims).
    pub fn fit(&self, architecture: Option<&str>, outputs: &[(String, Vec<i64>)]) -> Option<Fit> {
        let by_name = architecture.and_then(|arch| {
            self.architectures
                .iter()
                .filter_map(|p| match p.strip_suffix('*') {
                    Some(prefix) => arch
                        .starts_with(prefix)
                        .then_some(Fit::ArchitecturePrefix(prefix.len())),
                    None => (p == arch).then_some(Fit::Architecture),
                })
                .max()
        });
        let by_outputs = (!self.outputs.is_empty()
            && self.outputs.iter().all(|claim| {
                outputs
                    .iter()
                    .any(|(name, dims)| *name == claim.name && claim.shape.as_ref().is_none_or(|s| shape_fits(s, dims)))
            }))
        .then_some(Fit::Outputs);
        by_name.max(by_outputs)
    }
}

/// Whether declared dims fit a claimed shape: same rank, and each claimed size either -1 or
/// equal (a dynamic declared size only fits -1).
fn shape_fits(claimed: &[i64], declared: &[i64]) -> bool {
    claimed.len() == declared.len() && claimed.iter().zip(declared).all(|(c, d)| *c == -1 || c == d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worlds() -> Worlds {
        fn unused(
            _: wasmtime::component::InstancePre<super::super::runtime::CallState>,
        ) -> Result<super::super::Bound> {
            bail!("not bound in these tests")
        }
        Worlds::new(vec![
            World {
                name: "object-detection",
                routes: &["object_detection"],
                block: None,
                bind: unused,
            },
            World {
                name: "instance-segmentation",
                routes: &["instance_segmentation", "segmentation"],
                block: None,
                bind: unused,
            },
            World {
                name: "custom-task",
                routes: &[],
                block: None,
                bind: unused,
            },
            World {
                name: "workflow-block",
                routes: &[],
                block: Some(|b| match b.fields.iter().any(|f| f.name == "refused") {
                    true => bail!("the workflows refuse it"),
                    false => Ok(()),
                }),
                bind: unused,
            },
        ])
    }

    fn parse(text: &str) -> Result<Manifest> {
        let m: Manifest = toml::from_str(text)?;
        m.validate(&worlds())?;
        Ok(m)
    }

    fn route(m: &Manifest) -> String {
        let worlds = worlds();
        m.route(m.world(&worlds).unwrap()).unwrap_or_default()
    }

    #[test]
    fn task_plugins_default_to_their_route() {
        let m = parse("name = \"object-detection\"\nversion = \"1\"\nworld = \"object-detection\"").unwrap();
        assert_eq!(route(&m), "object_detection");
        assert!(parse("name = \"x\"\nversion = \"1\"\nworld = \"object-detection\"\nroute = \"other\"").is_err());
        let err = parse("name = \"x\"\nversion = \"1\"\nworld = \"classifier\"").unwrap_err();
        assert!(format!("{err:#}").contains("unknown world"), "{err:#}");
    }

    #[test]
    fn custom_plugins_need_their_own_route() {
        let m =
            parse("name = \"counts\"\nversion = \"1\"\nworld = \"custom-task\"\nroute = \"object_counts\"").unwrap();
        assert_eq!(route(&m), "object_counts");
        assert!(parse("name = \"c\"\nversion = \"1\"\nworld = \"custom-task\"").is_err());
        assert!(parse("name = \"c\"\nversion = \"1\"\nworld = \"custom-task\"\nroute = \"segmentation\"").is_err());
        assert!(parse("name = \"c\"\nversion = \"1\"\nworld = \"custom-task\"\nroute = \"../x\"").is_err());
        assert!(parse("name = \"C!\"\nversion = \"1\"\nworld = \"custom-task\"\nroute = \"x\"").is_err());
        assert!(parse("name = \"c\"\nversion = \"1\"\nworld = \"nope\"\nroute = \"x\"").is_err());
        assert!(parse("name = \"c\"\nversion = \"1\"\nworld = \"custom-task\"\nroute = \"x\"\nextra = 1").is_err());
        assert!(parse(
            "name = \"c\"\nversion = \"1\"\nworld = \"custom-task\"\nroute = \"x\"\n[models]\narchitectures = [\"a\"]"
        )
        .is_err());
    }

    #[test]
    fn blocks_declare_themselves_and_have_no_route() {
        let block = "[block]\ntype = \"my_org/zone@v1\"\n[[block.outputs]]\nname = \"n\"\nkind = \"integer\"";
        let m = parse(&format!(
            "name = \"zone\"\nversion = \"1\"\nworld = \"workflow-block\"\n{block}"
        ))
        .unwrap();
        assert_eq!(m.block.as_ref().map(|b| b.type_id.as_str()), Some("my_org/zone@v1"));
        assert_eq!(route(&m), "");
        let err = |text: &str| format!("{:#}", parse(text).unwrap_err());
        assert!(err("name = \"z\"\nversion = \"1\"\nworld = \"workflow-block\"").contains("[block]"));
        assert!(err(&format!(
            "name = \"z\"\nversion = \"1\"\nworld = \"workflow-block\"\nroute = \"z\"\n{block}"
        ))
        .contains("no route"));
        assert!(err(&format!(
            "name = \"z\"\nversion = \"1\"\nworld = \"custom-task\"\nroute = \"z\"\n{block}"
        ))
        .contains("for workflow-block plugins"));
        assert!(err(&format!(
            "name = \"z\"\nversion = \"1\"\nworld = \"workflow-block\"\n{block}\n[[block.fields]]\nname = \"refused\""
        ))
        .contains("the workflows refuse it"));
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

    #[test]
    fn claims_fit_by_architecture_then_outputs() {
        let m = parse(
            "name = \"rf\"\nversion = \"1\"\nworld = \"object-detection\"\n[models]\narchitectures = [\"rfdetr-*\", \"rfdetr-base\"]\noutputs = [{ name = \"dets\", shape = [-1, -1, 4] }, { name = \"labels\" }]",
        )
        .unwrap();
        let claims = m.models.unwrap();
        let outputs = vec![
            ("dets".to_string(), vec![-1, 300, 4]),
            ("labels".to_string(), vec![-1, 300, 91]),
        ];
        assert_eq!(claims.fit(Some("rfdetr-base"), &[]), Some(Fit::Architecture));
        assert_eq!(claims.fit(Some("rfdetr-nano"), &[]), Some(Fit::ArchitecturePrefix(7)));
        assert_eq!(claims.fit(Some("yolov8n"), &outputs), Some(Fit::Outputs));
        assert_eq!(claims.fit(None, &outputs[..1]), None);
        assert_eq!(
            claims.fit(None, &[("dets".into(), vec![1, 300, 5]), outputs[1].clone()]),
            None
        );
        assert!(Fit::Architecture > Fit::ArchitecturePrefix(30) && Fit::Outputs > Fit::Default);
        for bad in [
            "[models]",
            "[models]\narchitectures = [\"a*b\"]",
            "[models]\narchitectures = [\"A\"]",
        ] {
            assert!(
                parse(&format!(
                    "name = \"x\"\nversion = \"1\"\nworld = \"object-detection\"\n{bad}"
                ))
                .is_err(),
                "{bad}"
            );
        }
    }
}
