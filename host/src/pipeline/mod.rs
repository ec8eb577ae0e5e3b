//! The path of an inference, whatever the task: resolve the caller's model, choose its plugin,
//! decode the images, call the plugin, shape and draw the results (`run`). Everything it needs
//! arrives as arguments: the services in [`Pipeline`], the request's [`Caller`].

mod admission;
mod run;

pub use admission::{Counted, MemoryBudget, ModelQueue};

pub use run::check_task;

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::input::url::UrlPolicy;
use crate::input::{InputError, InputLimits};
use crate::metrics::RequestLabels;
use crate::models::{InvalidModelId, LoadedModel, LoadedModels, ModelError, ModelId};
use crate::plugins::{CallError, CallLimits, Chosen, NoPlugin, PluginRegistry, PluginRuntime};
use crate::tenants::Tenant;

/// The services an inference uses.
pub struct Pipeline {
    pub models: LoadedModels,
    pub runtime: Arc<PluginRuntime>,
    pub plugins: PluginRegistry,
    pub input_limits: InputLimits,
    /// Fetches URL images under `url_policy`.
    pub http: reqwest::Client,
    pub url_policy: UrlPolicy,
    /// Bounds concurrent plugin calls (and so the memory their images and stores hold).
    pub call_slots: Semaphore,
    /// The plugin last chosen per model and world, so a new choice is logged once.
    pub choices: ChoiceLog,
    /// Bounds the memory of the images in flight (decoded, in the plugins, as tensors).
    pub memory: MemoryBudget,
    /// Most requests queued or running per model.
    pub max_queue_per_model: usize,
    pub queues: ModelQueues,
    /// Bounds concurrent URL image downloads (which happen before a call slot is taken).
    pub fetch_slots: Semaphore,
}

/// Each model's queue.
#[derive(Default)]
pub struct ModelQueues(parking_lot::Mutex<std::collections::HashMap<String, Arc<ModelQueue>>>);

impl ModelQueues {
    fn of(&self, model: &str) -> Arc<ModelQueue> {
        self.0.lock().entry(model.to_string()).or_default().clone()
    }
}

/// The plugin last chosen per model and world.
#[derive(Default)]
pub struct ChoiceLog(parking_lot::Mutex<std::collections::HashMap<(String, String), String>>);

impl ChoiceLog {
    /// Logs `chosen` for `model` in `world` when it differs from the last choice.
    fn note(&self, model: &str, world: &str, chosen: &Chosen) {
        let name = chosen.plugin.name();
        let mut last = self.0.lock();
        let key = (model.to_string(), world.to_string());
        if last.get(&key).map(String::as_str) != Some(name) {
            tracing::info!(model, world, plugin = name, reason = ?chosen.reason,
                "plugin for model {model}: {name} ({:?})", chosen.reason);
            last.insert(key, name.to_string());
        }
    }
}

/// Who asks, and what the request carries for the pipeline.
pub struct Caller {
    /// The caller's tenant; `None` when the server runs open.
    pub tenant: Option<Arc<Tenant>>,
    /// The Roboflow API key the request carries, for downloading models on an open server
    /// (a tenant's downloads use its own configured key, never the key it calls us with).
    pub api_key: Option<String>,
    /// The request's id (its `x-request-id`), for logs.
    pub request_id: String,
    /// What the request's metrics are labelled with.
    pub labels: Arc<RequestLabels>,
}

impl Caller {
    /// A request's own `api_key` field, which wins over its `Authorization: Bearer` key.
    pub fn with_api_key(mut self, key: Option<String>) -> Self {
        if let Some(key) = key.filter(|k| !k.is_empty()) {
            self.api_key = Some(key);
        }
        self
    }

    /// The Roboflow key this caller's downloads (models, stored workflows) use: a tenant's
    /// configured `roboflow_api_key` (never the key it calls us with), else the request's own.
    pub fn roboflow_key(&self) -> Option<&str> {
        match &self.tenant {
            Some(tenant) => tenant.roboflow_api_key.as_deref(),
            None => self.api_key.as_deref(),
        }
        .filter(|k| !k.is_empty())
    }

    pub fn may_use_model(&self, id: &ModelId) -> bool {
        self.tenant.as_ref().is_none_or(|t| t.may_use_model(id))
    }

    pub fn may_use_plugin(&self, name: &str) -> bool {
        self.tenant.as_ref().is_none_or(|t| t.may_use_plugin(name))
    }

    /// Whether the caller may see and act on everyone's models (an open server, or an admin).
    pub fn is_operator(&self) -> bool {
        self.tenant.as_ref().is_none_or(|t| t.admin)
    }

    /// The server's input limits, tightened by the tenant's.
    pub fn input_limits(&self, server: &InputLimits) -> InputLimits {
        match &self.tenant {
            Some(t) => t.input_limits(server),
            None => server.clone(),
        }
    }

    /// A plugin's call limits, tightened by the tenant's.
    pub fn call_limits(&self, plugin: &CallLimits) -> CallLimits {
        match &self.tenant {
            Some(t) => t.call_limits(plugin),
            None => plugin.clone(),
        }
    }
}

/// Why an inference failed; the HTTP edge maps each to its status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad parameter or request (400).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Image(#[from] InputError),
    #[error(transparent)]
    ModelId(#[from] InvalidModelId),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Plugin(#[from] CallError),
    /// The picture asked for cannot be drawn for this image (400).
    #[error(transparent)]
    Draw(#[from] crate::visualize::DrawError),
    #[error("{0}")]
    NotFound(String),
    /// Nothing can serve it now (503).
    #[error("{0}")]
    Unavailable(String),
    /// More than the server takes on at once: retry shortly (503 with Retry-After).
    #[error("{0}")]
    Overloaded(String),
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// What a tenant is told of another tenant's model, and of a model that does not exist: the
    /// same words, so an answer never reveals that someone else's model is there.
    pub fn hidden_model(id: &ModelId) -> Self {
        Error::NotFound(format!("Model {id} not found"))
    }
}

impl Pipeline {
    /// The caller's model, loaded on first use: from the models directory, else the cache, else
    /// downloaded (from Roboflow with the tenant's configured key, or on an open server with the
    /// request's key).
    pub async fn model(&self, caller: &Caller, raw_id: &str) -> Result<Arc<LoadedModel>, Error> {
        let id = ModelId::parse(raw_id)?;
        // Another tenant's model and a model that does not exist get the same answer.
        if !caller.may_use_model(&id) {
            return Err(Error::hidden_model(&id));
        }
        match self.models.get_with_key(&id, caller.roboflow_key()).await {
            Ok((model, _)) => {
                if !self.may_have(caller, &id, model.owner.as_deref()).await? {
                    return Err(Error::hidden_model(&id));
                }
                caller.labels.note_model(&model.description.id);
                Ok(model)
            }
            Err(ModelError::NotFound(..)) if caller.tenant.is_some() => Err(Error::hidden_model(&id)),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether the caller may be served, unload or purge a model fetched with the credential
    /// hashed in `owner` (`None`: shared): admins and open servers always; a tenant when its own
    /// Roboflow key fetched it or Roboflow says that key may have it (asked once, then cached).
    pub async fn may_have(&self, caller: &Caller, id: &ModelId, owner: Option<&str>) -> Result<bool, Error> {
        match &caller.tenant {
            Some(tenant) if !tenant.admin => Ok(self
                .models
                .entitled(id, owner, tenant.roboflow_api_key.as_deref())
                .await?),
            _ => Ok(true),
        }
    }

    /// As `may_have`, for a model that may not be loaded (its owner read from the cache).
    pub async fn may_manage(&self, caller: &Caller, id: &ModelId) -> Result<bool, Error> {
        if !caller.may_use_model(id) {
            return Ok(false);
        }
        let owner = self.models.owner(id);
        self.may_have(caller, id, owner.as_deref()).await
    }

    /// The name of the plugin that serves `model`'s own task for the caller, if one can.
    pub fn task_plugin(&self, caller: &Caller, model: &LoadedModel) -> Option<String> {
        let world = crate::tasks::world_of_task(&model.description.task)?;
        self.plugin(caller, world, model)
            .ok()
            .map(|c| c.plugin.name().to_string())
    }

    /// The plugin of `world` that serves `model` for the caller (see `PluginRegistry::choose`).
    pub fn plugin(&self, caller: &Caller, world: &str, model: &LoadedModel) -> Result<Chosen, Error> {
        let chosen = self
            .plugins
            .choose(world, &model.description, |name| caller.may_use_plugin(name))
            .map_err(|e| match e {
                // A tenant is not told whether a plugin it may not use exists.
                NoPlugin::NotAllowed { .. } | NoPlugin::None { .. } if caller.tenant.is_some() => {
                    Error::NotFound(format!("no plugin serves {world} for model {}", model.description.id))
                }
                e => Error::Unavailable(e.to_string()),
            })?;
        self.choices.note(&model.description.id, world, &chosen);
        Ok(chosen)
    }
}
