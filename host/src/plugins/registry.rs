//! The installed plugins: every `<name>.toml` + `<name>.wasm` pair in the plugins directory.
//! The directory is rescanned periodically, so adding, replacing or removing a plugin takes
//! effect without a restart; a broken plugin is refused with a log line (keeping the version
//! that was serving, if any) while the others carry on.
//!
//! Task plugins are chosen per model (`choose`): the plugin the model pins, else the one whose
//! `[models]` claims fit it best (an exact architecture name, then the longest architecture
//! prefix, then the outputs it decodes), else the world's default (a plugin with no claims).
//! Custom-task plugins are found by their route, workflow blocks by their block type.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{Context, Result};
use parking_lot::RwLock;

use super::legacy::{self, Legacy};
use super::manifest::{Fit, Manifest};
use super::runtime::{CallLimits, PluginRuntime};
use super::wit;
use super::world::{Bound, World, Worlds};
use crate::models::ModelDescription;

/// Size and modification time of a plugin's two files: a change means "reload".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    wasm: (u64, Option<SystemTime>),
    manifest: (u64, Option<SystemTime>),
}

fn stamp_of(path: &Path) -> (u64, Option<SystemTime>) {
    std::fs::metadata(path)
        .map(|m| (m.len(), m.modified().ok()))
        .unwrap_or((0, None))
}

/// A plugin ready to serve.
pub struct LoadedPlugin {
    pub manifest: Manifest,
    pub limits: CallLimits,
    /// The component, type-checked against its world (see `World::bind`).
    pub bound: Bound,
    /// The `/infer/<route>` segment it serves (`None`: a workflow block).
    pub route: Option<String>,
    /// Distinguishes this load from any other (of this plugin or another), for caches of what
    /// was derived from it.
    pub serial: u64,
    stamp: Stamp,
}

impl LoadedPlugin {
    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    /// The workflow block type it implements, if it is a block.
    pub fn block_type(&self) -> Option<&str> {
        self.manifest.block.as_ref().map(|b| b.type_id.as_str())
    }

    /// The version of the WIT package it was built against: 0.1.0 components run through
    /// `legacy`, every other one was checked against the current WIT.
    pub fn wit_version(&self) -> &'static str {
        if self.bound.downcast_ref::<Legacy>().is_some() {
            legacy::WIT_VERSION
        } else {
            wit::WIT_VERSION
        }
    }

    /// Whether it claims models (`[models]`), rather than being its world's default.
    pub fn claims_models(&self) -> bool {
        self.manifest.models.is_some()
    }
}

/// The plugin chosen for a model, and why.
pub struct Chosen {
    pub plugin: Arc<LoadedPlugin>,
    pub reason: Reason,
}

/// Why a plugin serves a model (reported by `/model/registry` and in logs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The model names it (`plugin` in its `model.toml`).
    Pinned,
    /// It claims the model's architecture.
    Architecture,
    /// It claims the model's outputs.
    Outputs,
    /// No plugin claims the model: the world's default.
    Default,
}

/// Why no plugin can serve a model.
#[derive(Debug, thiserror::Error)]
pub enum NoPlugin {
    #[error("no {world} plugin is installed")]
    None { world: String },
    #[error("model {model} is pinned to plugin {plugin}, which is not installed for {world}")]
    PinnedMissing {
        model: String,
        plugin: String,
        world: String,
    },
    #[error("no {world} plugin serves model {model}: none claims it and there is no default plugin")]
    Unclaimed { model: String, world: String },
    /// Plugins exist but the caller may not use them.
    #[error("no plugin the caller may use serves {world}")]
    NotAllowed { world: String },
}

pub struct PluginRegistry {
    dir: PathBuf,
    cache_dir: Option<PathBuf>,
    defaults: CallLimits,
    worlds: Worlds,
    /// By file stem.
    plugins: RwLock<HashMap<String, Arc<LoadedPlugin>>>,
    /// Stamps of plugins that failed to load, so they are not retried until they change.
    refused: RwLock<HashMap<String, Stamp>>,
}

impl PluginRegistry {
    pub fn new(dir: PathBuf, cache_dir: Option<PathBuf>, defaults: CallLimits, worlds: Worlds) -> Self {
        Self {
            dir,
            cache_dir,
            defaults,
            worlds,
            plugins: RwLock::new(HashMap::new()),
            refused: RwLock::new(HashMap::new()),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Brings the loaded set in line with the directory. Blocking (compiles components).
    pub fn scan(&self, runtime: &PluginRuntime) {
        let mut seen = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), "cannot read the plugins directory: {e}");
                return;
            }
        };
        for entry in entries.flatten() {
            let manifest_path = entry.path();
            if manifest_path.extension().and_then(|e| e.to_str()) != Some("toml") {
                continue;
            }
            let Some(stem) = manifest_path.file_stem().and_then(|s| s.to_str()).map(str::to_string) else {
                continue;
            };
            let wasm_path = manifest_path.with_extension("wasm");
            let stamp = Stamp {
                wasm: stamp_of(&wasm_path),
                manifest: stamp_of(&manifest_path),
            };
            seen.push(stem.clone());
            let unchanged = self.plugins.read().get(&stem).is_some_and(|p| p.stamp == stamp)
                || self.refused.read().get(&stem) == Some(&stamp);
            if unchanged {
                continue;
            }
            match self.load(runtime, &stem, &manifest_path, &wasm_path, stamp) {
                Ok(plugin) => {
                    let serves = match (&plugin.route, plugin.block_type()) {
                        (Some(route), _) => format!("/infer/{route}"),
                        (None, block) => format!("workflow block {}", block.unwrap_or_default()),
                    };
                    tracing::info!(plugin = %plugin.manifest.name, version = %plugin.manifest.version,
                        world = %plugin.manifest.world, serves = %serves,
                        claims = plugin.claims_models(), "plugin loaded");
                    self.refused.write().remove(&stem);
                    self.plugins.write().insert(stem, Arc::new(plugin));
                }
                Err(e) => {
                    let keeping = if self.plugins.read().contains_key(&stem) {
                        " (keeping the previous version)"
                    } else {
                        ""
                    };
                    tracing::error!(plugin = %manifest_path.display(), "plugin refused{keeping}: {e:#}");
                    self.refused.write().insert(stem, stamp);
                }
            }
        }
        let mut plugins = self.plugins.write();
        plugins.retain(|stem, plugin| {
            let keep = seen.contains(stem);
            if !keep {
                tracing::info!(plugin = %plugin.manifest.name, "plugin removed");
            }
            keep
        });
        self.refused.write().retain(|stem, _| seen.contains(stem));
    }

    fn load(
        &self,
        runtime: &PluginRuntime,
        stem: &str,
        manifest_path: &Path,
        wasm_path: &Path,
        stamp: Stamp,
    ) -> Result<LoadedPlugin> {
        let manifest = Manifest::read(manifest_path, &self.worlds)?;
        if !wasm_path.is_file() {
            anyhow::bail!("{} is missing", wasm_path.display());
        }
        let world: World = *manifest.world(&self.worlds)?;
        let route = manifest.route(&world);
        // One plugin per custom route, one default per task world; family plugins share theirs.
        let clash = |p: &LoadedPlugin| {
            route.is_some()
                && p.route == route
                && (!world.is_task() || (manifest.models.is_none() && !p.claims_models()))
        };
        {
            let loaded = self.plugins.read();
            let others = || loaded.iter().filter(|(other_stem, _)| other_stem.as_str() != stem);
            if let Some((_, other)) = others().find(|(_, p)| clash(p)) {
                anyhow::bail!(
                    "/infer/{} is already served by plugin {} (a world has one default plugin; the others claim [models])",
                    route.unwrap_or_default(),
                    other.manifest.name
                );
            }
            if let Some((other_stem, _)) = others().find(|(_, p)| p.manifest.name == manifest.name) {
                anyhow::bail!("plugin name {} is already taken by {other_stem}.toml", manifest.name);
            }
            let block = manifest.block.as_ref().map(|b| b.type_id.as_str());
            if let Some((_, other)) = others().find(|(_, p)| block.is_some() && p.block_type() == block) {
                anyhow::bail!(
                    "workflow block {} is already implemented by plugin {}",
                    block.unwrap_or_default(),
                    other.manifest.name
                );
            }
        }
        let component = runtime.compile(wasm_path, self.cache_dir.as_deref())?;
        let pre = runtime
            .linker()
            .instantiate_pre(&component)
            .map_err(anyhow::Error::from)?;
        let bound = (world.bind)(pre)
            .with_context(|| format!("{} does not implement the {} world", wasm_path.display(), world.name))?;
        static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Ok(LoadedPlugin {
            limits: manifest.limits(&self.defaults),
            manifest,
            bound,
            route,
            serial: SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            stamp,
        })
    }

    /// The custom-task plugin serving `/infer/<route>`.
    pub fn by_route(&self, route: &str) -> Option<Arc<LoadedPlugin>> {
        self.plugins
            .read()
            .values()
            .find(|p| {
                p.route.as_deref() == Some(route) && self.worlds.get(&p.manifest.world).is_some_and(|w| !w.is_task())
            })
            .cloned()
    }

    /// The plugin of `world` for `model` among those `allowed` (by name): see the module's doc.
    /// Ties go to the first name in alphabetical order.
    pub fn choose(
        &self,
        world: &str,
        model: &ModelDescription,
        allowed: impl Fn(&str) -> bool,
    ) -> Result<Chosen, NoPlugin> {
        let plugins = self.plugins.read();
        let mut candidates: Vec<&Arc<LoadedPlugin>> = plugins.values().filter(|p| p.manifest.world == world).collect();
        candidates.sort_by(|a, b| a.name().cmp(b.name()));
        if candidates.is_empty() {
            return Err(NoPlugin::None { world: world.into() });
        }
        if let Some(pin) = &model.plugin {
            return match candidates.iter().find(|p| p.name() == pin) {
                Some(p) if allowed(p.name()) => Ok(Chosen {
                    plugin: (*p).clone(),
                    reason: Reason::Pinned,
                }),
                Some(_) => Err(NoPlugin::NotAllowed { world: world.into() }),
                None => Err(NoPlugin::PinnedMissing {
                    model: model.id.clone(),
                    plugin: pin.clone(),
                    world: world.into(),
                }),
            };
        }
        let outputs: Vec<(String, Vec<i64>)> = model.outputs.clone();
        let fit = |p: &LoadedPlugin| match &p.manifest.models {
            None => Some(Fit::Default),
            Some(claims) => claims.fit(model.architecture.as_deref(), &outputs),
        };
        let mut best: Option<(Fit, &Arc<LoadedPlugin>)> = None;
        for p in candidates.iter().filter(|p| allowed(p.name())) {
            if let Some(f) = fit(p) {
                if best.as_ref().is_none_or(|(b, _)| f > *b) {
                    best = Some((f, p));
                }
            }
        }
        match best {
            Some((fit, plugin)) => Ok(Chosen {
                plugin: plugin.clone(),
                reason: match fit {
                    Fit::Default => Reason::Default,
                    Fit::Outputs => Reason::Outputs,
                    Fit::Architecture | Fit::ArchitecturePrefix(_) => Reason::Architecture,
                },
            }),
            None if candidates.iter().any(|p| allowed(p.name())) => Err(NoPlugin::Unclaimed {
                model: model.id.clone(),
                world: world.into(),
            }),
            None => Err(NoPlugin::NotAllowed { world: world.into() }),
        }
    }

    /// Every loaded plugin, by name.
    pub fn list(&self) -> Vec<Arc<LoadedPlugin>> {
        let mut all: Vec<_> = self.plugins.read().values().cloned().collect();
        all.sort_by(|a, b| a.manifest.name.cmp(&b.manifest.name));
        all
    }
}
