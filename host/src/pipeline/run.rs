//! Running a task on a request's images: admit, decode, call the plugin on a blocking thread,
//! shape one response per image, draw when asked.

use std::sync::Arc;
use std::time::Instant;

use futures_util::future::try_join_all;
use tokio::sync::SemaphorePermit;

use super::{Caller, Error, Pipeline};
use crate::input::{self, ImageSource, InputError, RgbImage};
use crate::metrics;
use crate::models::LoadedModel;
use crate::plugins::{CallError, CallLimits, CallOutcome, LoadedPlugin, PluginRuntime};
use crate::tasks::custom::{self, CustomResponse};
use crate::tasks::{self, Common, ImageSize, Meta, Task};
use crate::visualize::{self, Style};

/// A plugin call's outcome and what came with it.
struct Called<'a, O> {
    outcome: CallOutcome<O>,
    plugin: Arc<LoadedPlugin>,
    /// The images' sizes, in order.
    sizes: Vec<ImageSize>,
    /// Seconds the call took.
    time: f64,
    /// The decoded images, when the caller asked to keep them.
    images: Option<Vec<RgbImage>>,
    /// The call slot, held as long as the images are.
    slot: SemaphorePermit<'a>,
}

/// What runs on the blocking thread: the plugin call on the decoded images.
type Work<O> = Box<
    dyn FnOnce(
            &LoadedPlugin,
            &PluginRuntime,
            &CallLimits,
            &LoadedModel,
            &mut [RgbImage],
        ) -> Result<CallOutcome<O>, CallError>
        + Send,
>;

/// Refuses a model on another task's route, naming the right one.
pub fn check_task<T: Task>(model: &LoadedModel) -> Result<(), Error> {
    let task = &model.description.task;
    if task != T::NAME {
        let route = tasks::route_of(task).unwrap_or_else(|| "a plugin's own route".into());
        return Err(Error::Invalid(format!(
            "Model {} is for {task}, not {}: use {route}",
            model.description.id,
            T::NAME,
        )));
    }
    Ok(())
}

impl Pipeline {
    /// Runs task `T` of `model` on every image with `params`; one response per image, in order.
    #[allow(clippy::too_many_arguments)]
    pub async fn infer<T: Task>(
        &self,
        caller: &Caller,
        model: Arc<LoadedModel>,
        sources: Vec<ImageSource>,
        common: Common,
        params: T::Params,
        inference_id: String,
        visualize: Option<Style>,
    ) -> Result<Vec<T::Response>, Error> {
        let plugin = self.plugin(caller, T::WORLD, &model)?.plugin;
        let work: Work<Vec<T::Output>> = Box::new(move |plugin, runtime, limits, model, images| {
            let count = images.len();
            let outcome = plugin.call(
                runtime,
                limits,
                model,
                images,
                Box::new(|bound, store, info, images| T::invoke(bound, store, info, images, &params)),
            )?;
            let value = plugin.check_results(limits, outcome.value, count, T::output_bytes)?;
            Ok(CallOutcome { value, ..outcome })
        });
        let called = self
            .call(caller, plugin, model.clone(), sources, visualize.is_some(), work)
            .await?;
        let mut responses: Vec<T::Response> = called
            .outcome
            .value
            .into_iter()
            .zip(&called.sizes)
            .map(|(output, image)| {
                let meta = Meta {
                    image: *image,
                    inference_id: &inference_id,
                    time: called.time,
                    model: &model.description,
                    common: &common,
                };
                T::respond(output, &meta)
            })
            .collect();
        if let (Some(style), Some(images)) = (visualize, called.images) {
            responses = draw::<T>(responses, images, style, &model).await?;
        }
        // The slot bounded the decoded pixels, held until the drawing is done.
        drop(called.slot);
        Ok(responses)
    }

    /// Runs the custom-task plugin serving `/infer/<route>` on the images with the request's own
    /// parameters (`params_json`); its JSON document is the response's `result`.
    pub async fn custom(
        &self,
        caller: &Caller,
        route: &str,
        model: Arc<LoadedModel>,
        sources: Vec<ImageSource>,
        params_json: String,
        inference_id: String,
    ) -> Result<CustomResponse, Error> {
        let plugin = self
            .custom_plugin(caller, route)
            .ok_or_else(|| Error::NotFound(format!("no plugin serves /infer/{route}")))?;
        let work: Work<serde_json::Value> = Box::new(move |plugin, runtime, limits, model, images| {
            let outcome = plugin.call(
                runtime,
                limits,
                model,
                images,
                Box::new(|bound, store, info, images| custom::invoke(bound, store, info, images, &params_json)),
            )?;
            Ok(CallOutcome {
                value: custom::document(plugin, limits, outcome.value)?,
                elapsed: outcome.elapsed,
                model_runs: outcome.model_runs,
            })
        });
        let called = self.call(caller, plugin, model, sources, false, work).await?;
        Ok(CustomResponse {
            inference_id,
            time: called.time,
            plugin: called.plugin.name().to_string(),
            images: called.sizes,
            result: called.outcome.value,
        })
    }

    /// The custom-task plugin at `/infer/<route>`, if the caller may use it.
    pub fn custom_plugin(&self, caller: &Caller, route: &str) -> Option<Arc<LoadedPlugin>> {
        self.plugins.by_route(route).filter(|p| caller.may_use_plugin(p.name()))
    }

    /// Decodes the images and runs one plugin call on them; the decoded images are kept only
    /// with `keep_images` (for drawing), else freed as soon as the plugin is done with them.
    async fn call<O: Send + 'static>(
        &self,
        caller: &Caller,
        plugin: Arc<LoadedPlugin>,
        model: Arc<LoadedModel>,
        sources: Vec<ImageSource>,
        keep_images: bool,
        work: Work<O>,
    ) -> Result<Called<'_, O>, Error> {
        if sources.is_empty() {
            return Err(Error::Invalid("no image in request".into()));
        }
        if self.models.offline() && sources.iter().any(|s| matches!(s, ImageSource::Url(_))) {
            return Err(Error::Invalid(
                "offline mode (--offline): URL images are not fetched".into(),
            ));
        }
        let input_limits = caller.input_limits(&self.input_limits);
        let call_limits = caller.call_limits(&plugin.limits);
        if sources.len() > input_limits.max_batch {
            return Err(InputError::TooManyImages {
                got: sources.len(),
                max: input_limits.max_batch,
            }
            .into());
        }
        // Take the call slot before decoding, so at most that many requests hold decoded pixels.
        let queued = Instant::now();
        let slot = self
            .call_slots
            .acquire()
            .await
            .map_err(|_| Error::Unavailable("server is shutting down".into()))?;
        metrics::record_queue(queued.elapsed());
        let decoding = Instant::now();
        let images: Vec<RgbImage> = try_join_all(
            sources
                .into_iter()
                .map(|s| input::load(s, &input_limits, &self.http, &self.url_policy)),
        )
        .await?;
        metrics::record_decode(decoding.elapsed());
        let sizes: Vec<ImageSize> = images
            .iter()
            .map(|i| ImageSize {
                width: i.width,
                height: i.height,
            })
            .collect();
        let started = Instant::now();
        let runtime = self.runtime.clone();
        let (call_plugin, call_model) = (plugin.clone(), model.clone());
        let (outcome, images) = tokio::task::spawn_blocking(move || {
            let mut images = images;
            let outcome = work(&call_plugin, &runtime, &call_limits, &call_model, &mut images);
            (outcome, keep_images.then_some(images))
        })
        .await
        .map_err(|e| Error::Internal(format!("plugin thread failed: {e}")))?;
        let outcome = outcome.inspect_err(CallError::record)?;
        metrics::record_plugin(&model.description.id, plugin.name(), started.elapsed());
        tracing::debug!(model = %model.description.id, plugin = plugin.name(), images = sizes.len(),
            request_id = %caller.request_id, plugin_ms = outcome.elapsed.as_secs_f64() * 1e3,
            model_runs = outcome.model_runs, "plugin call done");
        Ok(Called {
            outcome,
            plugin,
            sizes,
            time: started.elapsed().as_secs_f64(),
            images,
            slot,
        })
    }
}

/// Draws each response's predictions onto its image (on a blocking thread: drawing and JPEG
/// encoding are CPU work) and attaches the picture as `visualization`.
async fn draw<T: Task>(
    mut responses: Vec<T::Response>,
    images: Vec<RgbImage>,
    style: Style,
    model: &LoadedModel,
) -> Result<Vec<T::Response>, Error> {
    let edges = model.description.keypoint_edges.clone();
    tokio::task::spawn_blocking(move || {
        for (response, image) in responses.iter_mut().zip(images) {
            let jpeg = visualize::annotate(image, &T::scene(response), style, &edges)
                .map_err(|e| Error::Internal(format!("cannot draw the predictions: {e:#}")))?;
            *T::visualization(response) = Some(tasks::Visualization(jpeg));
        }
        Ok(responses)
    })
    .await
    .map_err(|e| Error::Internal(format!("drawing thread failed: {e}")))?
}
