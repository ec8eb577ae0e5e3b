//! The WIT worlds plugins implement, as this layer knows them: a name, the routes a task world is
//! served at (or, for workflow blocks, how a block's declaration is checked), and how to
//! type-check a component against it. The host's side of each world (its bindings and how it is
//! called) lives with its task in `crate::tasks` (workflow blocks: in `crate::workflows`), which
//! registers it here.

use std::any::Any;

use anyhow::Result;
use wasmtime::component::InstancePre;

use super::block::BlockSpec;
use super::runtime::CallState;

/// What calling a component in its world needs (the world's typed `…Pre`), kept per plugin.
pub type Bound = Box<dyn Any + Send + Sync>;

#[derive(Clone, Copy)]
pub struct World {
    /// The world's name in `wit/inference.wit` (and in plugin manifests).
    pub name: &'static str,
    /// The `/infer/<route>` segments a task world is served at, the first one canonical;
    /// empty for a world whose plugins each name their own route (`custom-task`) or serve no
    /// route at all (`workflow-block`).
    pub routes: &'static [&'static str],
    /// For the workflow-block world: checks a block's declaration (`[block]`) beyond its shape
    /// (kinds, defaults). `None` for every other world.
    pub block: Option<fn(&BlockSpec) -> Result<()>>,
    /// Type-checks a component against the world (its exports' names and types).
    pub bind: fn(InstancePre<CallState>) -> Result<Bound>,
}

impl World {
    /// Whether its plugins are chosen per model (task worlds) rather than by their own route.
    pub fn is_task(&self) -> bool {
        !self.routes.is_empty()
    }

    /// Whether its plugins are workflow blocks (used by their type id, not at a route).
    pub fn is_block(&self) -> bool {
        self.block.is_some()
    }
}

/// Every world the host can call.
pub struct Worlds(Vec<World>);

impl Worlds {
    pub fn new(worlds: Vec<World>) -> Self {
        Self(worlds)
    }

    /// These and `world` (the composition root adds the worlds of layers above the tasks').
    pub fn with(mut self, world: World) -> Self {
        self.0.push(world);
        self
    }

    pub fn get(&self, name: &str) -> Option<&World> {
        self.0.iter().find(|w| w.name == name)
    }

    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.0.iter().map(|w| w.name)
    }

    /// Whether `route` belongs to a task world (so no plugin may claim it for itself).
    pub fn is_task_route(&self, route: &str) -> bool {
        self.0.iter().any(|w| w.routes.contains(&route))
    }
}
