//! The installed plugins: every `<name>.toml` + `<name>.wasm` pair in the plugins directory.
//! The directory is rescanned periodically, so adding, replacing or removing a plugin takes
//! effect without a restart; a broken plugin is refused with a log line (keeping the version
//! that was serving, if any) while the others carry on.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{Context, Result};
use parking_lot::RwLock;

use super::manifest::Manifest;
use super::runtime::{CallLimits, PluginRuntime};
use super::task::TaskPlugin;
use crate::models::Task;

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
    pub plugin: TaskPlugin,
    pub route: String,
    stamp: Stamp,
}

pub struct PluginRegistry {
    dir: PathBuf,
    cache_dir: Option<PathBuf>,
    defaults: CallLimits,
    /// By file stem.
    plugins: RwLock<HashMap<String, Arc<LoadedPlugin>>>,
    /// Stamps of plugins that failed to load, so they are not retried until they change.
    refused: RwLock<HashMap<String, Stamp>>,
}

impl PluginRegistry {
    pub fn new(dir: PathBuf, cache_dir: Option<PathBuf>, defaults: CallLimits) -> Self {
        Self {
            dir,
            cache_dir,
            defaults,
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
                    tracing::info!(plugin = %plugin.manifest.name, version = %plugin.manifest.version,
                        route = %format!("/infer/{}", plugin.route), "plugin loaded");
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
        let manifest = Manifest::read(manifest_path)?;
        if !wasm_path.is_file() {
            anyhow::bail!("{} is missing", wasm_path.display());
        }
        let route = manifest.route();
        if let Some(other) = self
            .plugins
            .read()
            .iter()
            .find(|(other_stem, p)| other_stem.as_str() != stem && p.route == route)
        {
            anyhow::bail!(
                "route /infer/{route} is already served by plugin {}",
                other.1.manifest.name
            );
        }
        let component = runtime.compile(wasm_path, self.cache_dir.as_deref())?;
        let plugin =
            TaskPlugin::new(runtime, manifest.name.clone(), manifest.world, &component).with_context(|| {
                format!(
                    "{} does not implement the {:?} world",
                    wasm_path.display(),
                    manifest.world
                )
            })?;
        Ok(LoadedPlugin {
            limits: manifest.limits(&self.defaults),
            manifest,
            plugin,
            route,
            stamp,
        })
    }

    pub fn by_route(&self, route: &str) -> Option<Arc<LoadedPlugin>> {
        self.plugins.read().values().find(|p| p.route == route).cloned()
    }

    pub fn by_task(&self, task: Task) -> Option<Arc<LoadedPlugin>> {
        self.plugins
            .read()
            .values()
            .find(|p| p.manifest.world.task() == Some(task))
            .cloned()
    }

    /// Every loaded plugin, by name.
    pub fn list(&self) -> Vec<Arc<LoadedPlugin>> {
        let mut all: Vec<_> = self.plugins.read().values().cloned().collect();
        all.sort_by(|a, b| a.manifest.name.cmp(&b.manifest.name));
        all
    }
}
