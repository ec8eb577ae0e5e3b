//! Running a task on a request's images: admit, decode, call the plugin on a blocking thread,
//! shape one response per image, draw when asked.

use std::sync::Arc;
use std::time::Instant;

use futures_util::future::try_join_all;
use tokio::sync::SemaphorePermit;

use super::{Caller, Error, Pipeline};
use crate::input::{self, Encoded, ImageSource, InputError, RgbImage};
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
    /// The call slot and the memory reserved, held as long as the images are.
    slot: SemaphorePermit<'a>,
    _memory: (super::admission::Reservation<'a>, super::admission::Reservation<'a>),
    _place: super::admission::Place,
}

/// What runs on a blocking thread: a plugin call on (some of) the decoded images, with a
/// result per image (a custom task: one document for all of them); with `true`, the pixels
/// come back after the call (for drawing), else they are freed once the plugin drops them.
type Work<O> = Arc<
    dyn Fn(
            &LoadedPlugin,
            &PluginRuntime,
            &CallLimits,
            &LoadedModel,
            &mut [RgbImage],
            bool,
        ) -> Result<CallOutcome<Vec<O>>, CallError>
        + Send
        + Sync,
>;

/// A call's images: as the request gave them, or already decoded (a workflow's crops, slices
/// and inputs).
enum Images {
    Sources(Vec<ImageSource>),
    Decoded(Vec<RgbImage>),
}

impl Images {
    fn len(&self) -> usize {
        match self {
            Images::Sources(s) => s.len(),
            Images::Decoded(d) => d.len(),
        }
    }
}

/// Whether a call's images may be split between plugin calls running in parallel.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Split {
    /// Results are per image (task worlds).
    PerImage,
    /// One result for the whole call (custom tasks).
    Never,
}

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
        self.infer_images::<T>(
            caller,
            model,
            Images::Sources(sources),
            common,
            params,
            inference_id,
            visualize,
        )
        .await
    }

    /// [`Pipeline::infer`] on images already decoded (by a workflow): the same admission,
    /// plugin and batching.
    pub async fn infer_decoded<T: Task>(
        &self,
        caller: &Caller,
        model: Arc<LoadedModel>,
        images: Vec<RgbImage>,
        common: Common,
        params: T::Params,
        inference_id: String,
    ) -> Result<Vec<T::Response>, Error> {
        self.infer_images::<T>(
            caller,
            model,
            Images::Decoded(images),
            common,
            params,
            inference_id,
            None,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn infer_images<T: Task>(
        &self,
        caller: &Caller,
        model: Arc<LoadedModel>,
        sources: Images,
        common: Common,
        params: T::Params,
        inference_id: String,
        visualize: Option<Style>,
    ) -> Result<Vec<T::Response>, Error> {
        let plugin = self.plugin(caller, T::WORLD, &model)?.plugin;
        let work: Work<T::Output> = Arc::new(move |plugin, runtime, limits, model, images, keep| {
            let count = images.len();
            let outcome = plugin.call(
                runtime,
                limits,
                model,
                images,
                keep,
                Box::new(|bound, store, info| T::invoke(bound, store, info, &params)),
            )?;
            let value = plugin.check_results(limits, outcome.value, count, T::output_bytes)?;
            Ok(CallOutcome { value, ..outcome })
        });
        let called = self
            .call(
                caller,
                plugin,
                model.clone(),
                sources,
                visualize.is_some(),
                work,
                Split::PerImage,
            )
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
        let work: Work<serde_json::Value> = Arc::new(move |plugin, runtime, limits, model, images, keep| {
            let outcome = plugin.call(
                runtime,
                limits,
                model,
                images,
                keep,
                Box::new(|bound, store, info| custom::invoke(bound, store, info, &params_json)),
            )?;
            Ok(CallOutcome {
                value: vec![custom::document(plugin, limits, outcome.value)?],
                elapsed: outcome.elapsed,
                model_runs: outcome.model_runs,
            })
        });
        let mut called = self
            .call(
                caller,
                plugin,
                model,
                Images::Sources(sources),
                false,
                work,
                Split::Never,
            )
            .await?;
        Ok(CustomResponse {
            inference_id,
            time: called.time,
            plugin: called.plugin.name().to_string(),
            images: called.sizes,
            result: called.outcome.value.pop().unwrap_or_default(),
        })
    }

    /// Runs `work` in `plugin` without a model (a workflow block's call): it holds a call slot and
    /// `cost` bytes of the memory budget (what it copies into the plugin), runs on a blocking
    /// thread with the plugin's limits tightened by the caller's, and is counted like any call.
    pub async fn call_without_model<O: Send + 'static>(
        &self,
        caller: &Caller,
        plugin: Arc<LoadedPlugin>,
        cost: u64,
        work: impl FnOnce(&LoadedPlugin, &PluginRuntime, &CallLimits) -> Result<O, CallError> + Send + 'static,
    ) -> Result<O, Error> {
        let limits = caller.call_limits(&plugin.limits);
        let _memory = self.memory.reserve(cost)?;
        let queued = Instant::now();
        let _slot = self
            .call_slots
            .acquire()
            .await
            .map_err(|_| Error::Unavailable("server is shutting down".into()))?;
        metrics::record_queue(queued.elapsed());
        let started = Instant::now();
        let (runtime, called) = (self.runtime.clone(), plugin.clone());
        let value = tokio::task::spawn_blocking(move || work(&called, &runtime, &limits))
            .await
            .map_err(|e| Error::Internal(format!("plugin thread failed: {e}")))?
            .inspect_err(CallError::record)?;
        // No model: the plugin's own label says what ran.
        metrics::record_plugin("", plugin.name(), started.elapsed());
        tracing::debug!(plugin = plugin.name(), request_id = %caller.request_id,
            plugin_ms = started.elapsed().as_secs_f64() * 1e3, "plugin call without a model done");
        Ok(value)
    }

    /// The custom-task plugin at `/infer/<route>`, if the caller may use it.
    pub fn custom_plugin(&self, caller: &Caller, route: &str) -> Option<Arc<LoadedPlugin>> {
        self.plugins.by_route(route).filter(|p| caller.may_use_plugin(p.name()))
    }

    /// Decodes the images and runs the plugin on them, one model run's images per call; the
    /// decoded images are kept only with `keep_images` (for drawing), else freed as soon as the
    /// plugin is done with them.
    #[allow(clippy::too_many_arguments)]
    async fn call<O: Send + 'static>(
        &self,
        caller: &Caller,
        plugin: Arc<LoadedPlugin>,
        model: Arc<LoadedModel>,
        sources: Images,
        keep_images: bool,
        work: Work<O>,
        split: Split,
    ) -> Result<Called<'_, Vec<O>>, Error> {
        if sources.len() == 0 {
            return Err(Error::Invalid("no image in request".into()));
        }
        let (sources, decoded) = match sources {
            Images::Sources(s) => (s, None),
            Images::Decoded(d) => (Vec::new(), Some(d)),
        };
        let count = sources.len() + decoded.as_ref().map_or(0, Vec::len);
        if self.models.offline() && sources.iter().any(|s| matches!(s, ImageSource::Url(_))) {
            return Err(Error::Invalid(
                "offline mode (--offline): URL images are not fetched".into(),
            ));
        }
        let input_limits = caller.input_limits(&self.input_limits);
        let call_limits = caller.call_limits(&plugin.limits);
        if count > input_limits.max_batch {
            return Err(InputError::TooManyImages {
                got: count,
                max: input_limits.max_batch,
            }
            .into());
        }
        let place = self
            .queues
            .of(&model.description.id)
            .enter(self.max_queue_per_model, &model.description.id)?;
        // URL images are fetched before a call slot is taken (a stalled download holds up no one
        // else's call), bounded by their own slots and by the time limit for the whole request.
        let fetching = Instant::now();
        let fetch_all = try_join_all(sources.into_iter().map(|s| async {
            // Only downloads take a fetch slot; inline images are read at once.
            let _fetch = match s {
                ImageSource::Url(_) => Some(
                    self.fetch_slots
                        .acquire()
                        .await
                        .map_err(|_| InputError::Url("server is shutting down".into()))?,
                ),
                _ => None,
            };
            input::fetch(s, &input_limits, &self.http, &self.url_policy).await
        }));
        let encoded = tokio::time::timeout(input_limits.url_timeout, fetch_all)
            .await
            .map_err(|_| {
                InputError::Url(format!(
                    "the request's image URLs took longer than {:?} to download",
                    input_limits.url_timeout
                ))
            })??;
        let fetched = fetching.elapsed();
        // While it waits for a call slot a request holds its images encoded (or, from a
        // workflow, decoded already); their decoded pixels and the plugin's copy of them exist
        // only once it has a slot, and are reserved then. Input tensors and ONNX Runtime's
        // working memory are bounded per call instead (`OnnxModel::calibrate`).
        let waiting: u64 = encoded
            .iter()
            .map(|e| e.encoded_bytes() as u64)
            .chain(decoded.iter().flatten().map(|i| 2 * i.rgb.len() as u64))
            .sum();
        let reserved_waiting = self.memory.reserve(waiting)?;
        // Take the call slot before decoding, so at most that many requests hold decoded pixels.
        let queued = Instant::now();
        let slot = self
            .call_slots
            .acquire()
            .await
            .map_err(|_| Error::Unavailable("server is shutting down".into()))?;
        // A plugin call takes the images of one model run at a time: a list is decoded and
        // handed to the plugin run by run, so that a request holds one run's pixels decoded
        // (here and in the plugin's copy), not its whole list's.
        let per_call = match split {
            Split::Never => usize::MAX,
            Split::PerImage => model.images_per_run().unwrap_or(usize::MAX).max(1),
        };
        // An image over the pixel cap is refused by the decoder (400) before it allocates.
        let max_rgb = input_limits.max_image_pixels.saturating_mul(3);
        let mut decoded_sizes: Vec<u64> = encoded
            .iter()
            .filter_map(Encoded::decoded_size)
            .filter(|bytes| *bytes <= max_rgb)
            .collect();
        decoded_sizes.sort_unstable_by(|a, b| b.cmp(a));
        // Each share in flight: its largest run's pixels, decoded and in the plugin (a plugin
        // built against the WIT's 0.1.0 gets a copy, a current one may ask for one: counted for
        // every plugin alike); images kept for drawing stay decoded until the response is drawn.
        let share_cost = 2 * decoded_sizes.iter().take(per_call).sum::<u64>();
        let kept_cost = if keep_images { decoded_sizes.iter().sum() } else { 0 };
        let memory = (reserved_waiting, self.memory.reserve(share_cost + kept_cost)?);
        metrics::record_queue(queued.elapsed());
        let pending: Vec<Pending> = match decoded {
            Some(images) => images.into_iter().map(Pending::Decoded).collect(),
            None => encoded.into_iter().map(Pending::Encoded).collect(),
        };
        // A list of images is shared between parallel plugin calls (each pre-processes its own
        // share on a core of its own; their model runs are batched together again below the
        // plugins), as far as free call slots, the memory budget and the cores allow.
        let extra_shares: Vec<_> = if split == Split::PerImage && model.onnx.batch_limit().is_some() {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            (1..pending.len().min(cores))
                .map_while(|_| {
                    let slot = self.call_slots.try_acquire().ok()?;
                    Some((slot, self.memory.try_reserve(share_cost)?))
                })
                .collect()
        } else {
            Vec::new()
        };
        let started = Instant::now();
        let max_pixels = input_limits.max_image_pixels;
        let shares = chunks(pending, 1 + extra_shares.len())
            .into_iter()
            .map(|share| {
                let (runtime, work, limits) = (self.runtime.clone(), work.clone(), call_limits.clone());
                let (call_plugin, call_model) = (plugin.clone(), model.clone());
                tokio::task::spawn_blocking(move || {
                    run_share(share, per_call, max_pixels, keep_images, |images| {
                        work(&call_plugin, &runtime, &limits, &call_model, images, keep_images)
                    })
                })
            })
            .collect::<Vec<_>>();
        let mut outcome = CallOutcome {
            value: Vec::new(),
            elapsed: std::time::Duration::ZERO,
            model_runs: 0,
        };
        let (mut sizes, mut decoding) = (Vec::new(), std::time::Duration::ZERO);
        let mut images = keep_images.then(Vec::new);
        let mut failure = None;
        for share in shares {
            let share = share
                .await
                .map_err(|e| Error::Internal(format!("plugin thread failed: {e}")))?;
            match (share, &failure) {
                (Ok(share), None) => {
                    outcome.value.extend(share.outcome.value);
                    outcome.elapsed = outcome.elapsed.max(share.outcome.elapsed);
                    outcome.model_runs += share.outcome.model_runs;
                    sizes.extend(share.sizes);
                    decoding = decoding.max(share.decoding);
                    if let Some(all) = &mut images {
                        all.extend(share.kept);
                    }
                }
                (Err(e), None) => failure = Some(e),
                (_, Some(_)) => {}
            }
        }
        drop(extra_shares);
        if let Some(e) = failure {
            return Err(e);
        }
        metrics::record_decode(fetched + decoding);
        // The plugin calls' time, as before decoding moved into them (`time` in the response).
        let called_for = started.elapsed().saturating_sub(decoding);
        metrics::record_plugin(&model.description.id, plugin.name(), called_for);
        tracing::debug!(model = %model.description.id, plugin = plugin.name(), images = sizes.len(),
            request_id = %caller.request_id, plugin_ms = outcome.elapsed.as_secs_f64() * 1e3,
            model_runs = outcome.model_runs, "plugin call done");
        Ok(Called {
            outcome,
            plugin,
            sizes,
            time: called_for.as_secs_f64(),
            images,
            slot,
            _memory: memory,
            _place: place,
        })
    }
}

/// An image of a call, decoded when its run comes.
enum Pending {
    Encoded(Encoded),
    Decoded(RgbImage),
}

/// What one plugin call's share of a request gave.
struct Share<O> {
    outcome: CallOutcome<Vec<O>>,
    sizes: Vec<ImageSize>,
    /// The decoded images, when kept for drawing.
    kept: Vec<RgbImage>,
    decoding: std::time::Duration,
}

/// Runs `call` on `share` (on a blocking thread) `per_call` images at a time, decoding each
/// run's images just before it and freeing them after, unless they are kept for drawing.
fn run_share<O>(
    share: Vec<Pending>,
    per_call: usize,
    max_pixels: u64,
    keep: bool,
    mut call: impl FnMut(&mut [RgbImage]) -> Result<CallOutcome<Vec<O>>, CallError>,
) -> Result<Share<O>, Error> {
    let mut done = Share {
        outcome: CallOutcome {
            value: Vec::with_capacity(share.len()),
            elapsed: std::time::Duration::ZERO,
            model_runs: 0,
        },
        sizes: Vec::with_capacity(share.len()),
        kept: Vec::new(),
        decoding: std::time::Duration::ZERO,
    };
    let mut share = share.into_iter().peekable();
    while share.peek().is_some() {
        let decoding = Instant::now();
        let mut run = share
            .by_ref()
            .take(per_call)
            .map(|p| match p {
                Pending::Encoded(e) => input::decode_here(&e, max_pixels),
                Pending::Decoded(image) => Ok(image),
            })
            .collect::<Result<Vec<_>, _>>()?;
        done.decoding += decoding.elapsed();
        // A picture that cannot be encoded is refused before its run.
        if keep {
            for image in &run {
                visualize::check_drawable(image.width, image.height)?;
            }
        }
        done.sizes.extend(run.iter().map(|i| ImageSize {
            width: i.width,
            height: i.height,
        }));
        let part = call(&mut run).inspect_err(CallError::record)?;
        done.outcome.value.extend(part.value);
        done.outcome.elapsed += part.elapsed;
        done.outcome.model_runs += part.model_runs;
        if keep {
            done.kept.extend(run);
        }
    }
    Ok(done)
}

/// `items` in `n` consecutive chunks of near-equal size (none empty).
fn chunks<T>(items: Vec<T>, n: usize) -> Vec<Vec<T>> {
    let n = n.clamp(1, items.len().max(1));
    let (base, extra) = (items.len() / n, items.len() % n);
    let mut items = items.into_iter();
    (0..n)
        .map(|i| items.by_ref().take(base + usize::from(i < extra)).collect())
        .collect()
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

#[cfg(test)]
mod tests {
    use super::{chunks, run_share, CallOutcome, Pending, RgbImage};

    #[test]
    fn a_share_is_called_run_by_run_in_order() {
        let images = |n: u32| {
            (1..=n)
                .map(|width| {
                    Pending::Decoded(RgbImage {
                        width,
                        height: 1,
                        rgb: vec![0; 3 * width as usize],
                    })
                })
                .collect::<Vec<_>>()
        };
        for keep in [false, true] {
            let mut runs = Vec::new();
            let done = run_share(images(5), 2, 1 << 20, keep, |run| {
                runs.push(run.len());
                Ok(CallOutcome {
                    value: run.iter().map(|i| i.width).collect(),
                    elapsed: std::time::Duration::from_millis(1),
                    model_runs: 1,
                })
            })
            .unwrap();
            assert_eq!(runs, [2, 2, 1]);
            assert_eq!(done.outcome.value, [1, 2, 3, 4, 5]);
            assert_eq!(done.outcome.model_runs, 3);
            assert_eq!(done.sizes.iter().map(|s| s.width).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
            assert_eq!(done.kept.len(), if keep { 5 } else { 0 });
        }
    }

    #[test]
    fn chunks_keep_order_and_balance() {
        assert_eq!(chunks((0..5).collect(), 2), vec![vec![0, 1, 2], vec![3, 4]]);
        assert_eq!(chunks((0..2).collect(), 4), vec![vec![0], vec![1]]);
        assert_eq!(chunks(vec![7], 1), vec![vec![7]]);
    }
}
