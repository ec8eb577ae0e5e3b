//! Dynamic batching of one model's runs: concurrent `compute` calls (each plugin call runs on a
//! blocking thread of its own) are gathered into one ONNX Runtime run along the batch dimension
//! and each caller gets back its own rows. Batching below the plugins keeps every request's own
//! parameters exact (the plugins pre- and post-process their own images) and serves every
//! plugin, ours and users', with no change to the WIT.
//!
//! A model has `slots` runs in flight at most. A caller that finds a slot free and nobody
//! waiting runs at once, alone: an idle server answers as fast as without batching. Otherwise
//! it queues; whoever is at the head of the queue when a slot frees leads the next run, taking
//! the queued inputs of the same shape (in order) up to `max_batch` images, after waiting up to
//! `max_queue_delay` for more when the batch is not full. Each thread only ever runs a batch that
//! holds its own input, so no request waits on another's plugin.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use parking_lot::{Condvar, Mutex};
use wasmtime_wasi_nn::backend::NamedTensor;
use wasmtime_wasi_nn::wit::TensorType;
use wasmtime_wasi_nn::Tensor;

/// How one model's runs are batched.
#[derive(Clone, Debug)]
pub struct BatchSettings {
    /// Most images in one run (1: no batching).
    pub max_batch: usize,
    /// How long a run that is not full waits for more inputs (only when others are queued).
    pub max_queue_delay: Duration,
    /// Runs of the model in flight at once.
    pub slots: usize,
}

/// One caller's input, waiting to be run.
struct Pending {
    input: Mutex<Option<NamedTensor>>,
    /// Its batch size (dimension 0).
    images: usize,
    /// What must match to share a run: the input's name, type and other dimensions.
    key: (String, TensorType, Vec<u32>),
    result: Mutex<Option<Result<Vec<NamedTensor>, String>>>,
    queued: Instant,
}

struct State {
    queue: VecDeque<Arc<Pending>>,
    free_slots: usize,
}

/// The runs of one model.
pub struct Batcher {
    settings: BatchSettings,
    /// Most images in one run: `max_batch`, or less once the model's working memory is known.
    max_images: AtomicUsize,
    /// The model id, for metrics.
    name: String,
    state: Mutex<State>,
    changed: Condvar,
}

/// The batch of runs a leader takes: the inputs and how many rows each has.
type Taken = Vec<Arc<Pending>>;

impl Batcher {
    pub fn new(name: &str, settings: BatchSettings) -> Self {
        let slots = settings.slots.max(1);
        Self {
            max_images: AtomicUsize::new(settings.max_batch.max(1)),
            settings: BatchSettings { slots, ..settings },
            name: name.to_string(),
            state: Mutex::new(State {
                queue: VecDeque::new(),
                free_slots: slots,
            }),
            changed: Condvar::new(),
        }
    }

    /// Most images in one run now.
    pub fn max_images(&self) -> usize {
        self.max_images.load(Ordering::Relaxed)
    }

    /// Lowers the images per run (never below 1, never above `max_batch`).
    pub fn limit_images(&self, n: usize) {
        self.max_images
            .store(n.clamp(1, self.settings.max_batch.max(1)), Ordering::Relaxed);
    }

    /// Runs `input` (batch-major, one input of the model) with `exec`, alone or batched with
    /// other callers' inputs; returns this caller's rows of every output. `exec` is told how
    /// many callers' inputs the run holds.
    pub fn run(
        &self,
        input: NamedTensor,
        exec: impl Fn(NamedTensor, usize) -> Result<Vec<NamedTensor>>,
    ) -> Result<Vec<NamedTensor>> {
        let images = input.tensor.dimensions.first().copied().unwrap_or(1) as usize;
        let key = (
            input.name.clone(),
            input.tensor.ty,
            input.tensor.dimensions.get(1..).unwrap_or_default().to_vec(),
        );
        let mut state = self.state.lock();
        if state.free_slots > 0 && state.queue.is_empty() {
            // A slot is free and nobody waits: run now, alone.
            state.free_slots -= 1;
            self.record_state(&state);
            drop(state);
            crate::metrics::record_batch(&self.name, images, Duration::ZERO);
            let result = exec(input, 1);
            self.release();
            return result;
        }
        let me = Arc::new(Pending {
            input: Mutex::new(Some(input)),
            images,
            key,
            result: Mutex::new(None),
            queued: Instant::now(),
        });
        state.queue.push_back(me.clone());
        self.record_state(&state);
        loop {
            if let Some(result) = me.result.lock().take() {
                return result.map_err(|e| anyhow!(e));
            }
            let at_head = state.queue.front().is_some_and(|p| Arc::ptr_eq(p, &me));
            if at_head && state.free_slots > 0 {
                self.wait_for_more(&mut state, &me);
                let taken = self.take(&mut state);
                let calls = taken.len();
                state.free_slots -= 1;
                self.record_state(&state);
                // Others may lead the next batch now.
                self.changed.notify_all();
                drop(state);
                self.run_taken(taken, |batch| exec(batch, calls));
                self.release();
                state = self.state.lock();
                continue;
            }
            self.changed.wait(&mut state);
        }
    }

    /// While the head's batch is not full and the delay allows, waits for more inputs.
    fn wait_for_more(&self, state: &mut parking_lot::MutexGuard<'_, State>, head: &Arc<Pending>) {
        let deadline = head.queued + self.settings.max_queue_delay;
        loop {
            let compatible: usize = state.queue.iter().filter(|p| p.key == head.key).map(|p| p.images).sum();
            if compatible >= self.max_images() {
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            if self.changed.wait_for(state, deadline - now).timed_out() {
                return;
            }
        }
    }

    /// Takes the head's batch: it and the queued inputs of its shape, in order, up to
    /// `max_batch` images (the head always goes, even if it alone is more).
    fn take(&self, state: &mut State) -> Taken {
        let head = state.queue.pop_front().expect("the caller is at the head");
        let mut images = head.images;
        let max = self.max_images();
        let mut taken = vec![head];
        let mut i = 0;
        while i < state.queue.len() {
            let p = &state.queue[i];
            if p.key == taken[0].key && images + p.images <= max {
                images += p.images;
                taken.push(state.queue.remove(i).expect("in range"));
            } else {
                i += 1;
            }
        }
        taken
    }

    /// Runs the taken inputs as one batch and hands each its rows (or the run's error).
    fn run_taken(&self, taken: Taken, exec: impl FnOnce(NamedTensor) -> Result<Vec<NamedTensor>>) {
        let waited = taken[0].queued.elapsed();
        let inputs: Vec<NamedTensor> = taken
            .iter()
            .map(|p| p.input.lock().take().expect("each input is run once"))
            .collect();
        let counts: Vec<usize> = taken.iter().map(|p| p.images).collect();
        let total: usize = counts.iter().sum();
        crate::metrics::record_batch(&self.name, total, waited);
        let result = concat(inputs)
            .and_then(exec)
            .and_then(|outputs| split(outputs, &counts));
        match result {
            Ok(parts) => {
                for (p, rows) in taken.iter().zip(parts) {
                    *p.result.lock() = Some(Ok(rows));
                }
            }
            Err(e) => {
                let message = if taken.len() > 1 {
                    format!(
                        "a batched run of {total} images from {} calls failed: {e:#}",
                        taken.len()
                    )
                } else {
                    format!("{e:#}")
                };
                for p in &taken {
                    *p.result.lock() = Some(Err(message.clone()));
                }
            }
        }
    }

    fn release(&self) {
        let mut state = self.state.lock();
        state.free_slots += 1;
        self.record_state(&state);
        self.changed.notify_all();
    }

    fn record_state(&self, state: &State) {
        let queued: usize = state.queue.iter().map(|p| p.images).sum();
        crate::metrics::set_batch_state(&self.name, queued, self.settings.slots - state.free_slots);
    }
}

/// The inputs, one after the other along dimension 0.
fn concat(mut inputs: Vec<NamedTensor>) -> Result<NamedTensor> {
    if inputs.len() == 1 {
        return Ok(inputs.pop().expect("one"));
    }
    let first = &inputs[0];
    let (name, ty) = (first.name.clone(), first.tensor.ty);
    let mut dimensions = first.tensor.dimensions.clone();
    dimensions[0] = inputs.iter().map(|i| i.tensor.dimensions[0]).sum();
    let mut data = Vec::with_capacity(inputs.iter().map(|i| i.tensor.data.len()).sum());
    for input in inputs {
        data.extend_from_slice(&input.tensor.data);
    }
    Ok(NamedTensor {
        name,
        tensor: Tensor { dimensions, ty, data },
    })
}

/// Each output cut into consecutive row ranges of `counts` rows (dimension 0).
fn split(outputs: Vec<NamedTensor>, counts: &[usize]) -> Result<Vec<Vec<NamedTensor>>> {
    let total: usize = counts.iter().sum();
    let mut parts: Vec<Vec<NamedTensor>> = counts.iter().map(|_| Vec::with_capacity(outputs.len())).collect();
    for output in outputs {
        let rows = output.tensor.dimensions.first().copied().unwrap_or(0) as usize;
        if rows != total || total == 0 || output.tensor.data.len() % total != 0 {
            return Err(anyhow!(
                "output {:?} has shape {:?}, not {total} rows: it cannot be split between batched calls",
                output.name,
                output.tensor.dimensions
            ));
        }
        let row_bytes = output.tensor.data.len() / total;
        let mut start = 0;
        for (part, &n) in parts.iter_mut().zip(counts) {
            let mut dimensions = output.tensor.dimensions.clone();
            dimensions[0] = n as u32;
            part.push(NamedTensor {
                name: output.name.clone(),
                tensor: Tensor {
                    dimensions,
                    ty: output.tensor.ty,
                    data: output.tensor.data[start..start + n * row_bytes].to_vec(),
                },
            });
            start += n * row_bytes;
        }
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn tensor(rows: u32, value: u8) -> NamedTensor {
        NamedTensor {
            name: "x".into(),
            tensor: Tensor {
                dimensions: vec![rows, 2],
                ty: TensorType::U8,
                data: vec![value; rows as usize * 2],
            },
        }
    }

    /// A "model" that returns its input plus one, and counts its runs, their sizes and the
    /// callers each was told it holds.
    fn plus_one<'a>(
        runs: &'a AtomicUsize,
        sizes: &'a Mutex<Vec<(u32, usize)>>,
        delay: Duration,
    ) -> impl Fn(NamedTensor, usize) -> Result<Vec<NamedTensor>> + 'a {
        move |input, calls| {
            runs.fetch_add(1, Ordering::Relaxed);
            sizes.lock().push((input.tensor.dimensions[0], calls));
            std::thread::sleep(delay);
            let mut out = input;
            out.name = "y".into();
            out.tensor.data.iter_mut().for_each(|v| *v += 1);
            Ok(vec![out])
        }
    }

    #[test]
    fn concurrent_callers_share_runs_and_get_their_own_rows() {
        let batcher = Batcher::new(
            "m",
            BatchSettings {
                max_batch: 8,
                max_queue_delay: Duration::from_millis(20),
                slots: 1,
            },
        );
        let runs = AtomicUsize::new(0);
        let sizes = Mutex::new(Vec::new());
        let exec = plus_one(&runs, &sizes, Duration::from_millis(30));
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..6u8)
                .map(|i| {
                    let (batcher, exec) = (&batcher, &exec);
                    s.spawn(move || batcher.run(tensor(1 + u32::from(i % 2), i * 10), exec).unwrap())
                })
                .collect();
            for (i, h) in handles.into_iter().enumerate() {
                let out = h.join().unwrap();
                let rows = 1 + (i % 2);
                assert_eq!(out[0].tensor.dimensions, vec![rows as u32, 2]);
                assert!(
                    out[0].tensor.data.iter().all(|v| *v == i as u8 * 10 + 1),
                    "caller {i} got another's rows"
                );
            }
        });
        // 9 rows in all, at most 8 per run: fewer runs than callers.
        assert!(runs.load(Ordering::Relaxed) < 6, "{:?}", sizes.lock());
        assert!(sizes.lock().iter().all(|(n, _)| *n <= 8));
        // Every caller was in exactly one run, and each run knew how many it held.
        assert_eq!(
            sizes.lock().iter().map(|(_, calls)| calls).sum::<usize>(),
            6,
            "{:?}",
            sizes.lock()
        );
        assert!(sizes.lock().iter().any(|(_, calls)| *calls > 1), "{:?}", sizes.lock());
    }

    #[test]
    fn an_idle_caller_runs_at_once_and_a_failed_batch_fails_its_callers_only() {
        let batcher = Batcher::new(
            "m",
            BatchSettings {
                max_batch: 4,
                max_queue_delay: Duration::from_secs(10),
                slots: 1,
            },
        );
        let started = Instant::now();
        let out = batcher
            .run(tensor(1, 1), |t, calls| {
                assert_eq!(calls, 1, "an idle caller runs alone");
                Ok(vec![t])
            })
            .unwrap();
        assert_eq!(out[0].tensor.data, vec![1, 1]);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "an idle caller waited for the queue delay"
        );
        let err = batcher
            .run(tensor(1, 1), |_, _| Err(anyhow!("boom")))
            .err()
            .expect("the run fails");
        assert!(err.to_string().contains("boom"));
        // The slot was given back.
        assert!(batcher.run(tensor(2, 3), |t, _| Ok(vec![t])).is_ok());
    }

    #[test]
    fn outputs_that_are_not_batch_major_cannot_be_split() {
        let out = NamedTensor {
            name: "y".into(),
            tensor: Tensor {
                dimensions: vec![3],
                ty: TensorType::U8,
                data: vec![0; 3],
            },
        };
        assert!(split(vec![out], &[1, 1]).is_err());
    }
}
