//! Admission: what the server takes on at once, so that overload is a quick 503 with
//! `Retry-After` instead of a growing queue or memory. Memory budgets (the images in flight:
//! decoded pixels, their copy in the plugin, the model's input tensors, a large image counting
//! for what it costs; and, at the HTTP edge, the request bodies being read), and per model, the
//! requests queued or running.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use super::Error;

/// The memory what a budget counts may take together.
pub struct MemoryBudget {
    limit: u64,
    used: AtomicU64,
    counts: Counted,
}

/// What a budget counts: its rejection reason, its gauge and its words in a refusal.
#[derive(Clone, Copy)]
pub enum Counted {
    Images,
    Bodies,
}

impl Counted {
    fn reason(self) -> &'static str {
        match self {
            Counted::Images => "memory",
            Counted::Bodies => "bodies",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Counted::Images => "images in flight",
            Counted::Bodies => "request bodies being read",
        }
    }
}

/// Memory reserved for a request's images; given back when dropped.
pub struct Reservation<'a> {
    budget: &'a MemoryBudget,
    bytes: u64,
}

impl MemoryBudget {
    pub fn new(limit: u64, counts: Counted) -> Self {
        Self {
            limit,
            used: AtomicU64::new(0),
            counts,
        }
    }

    /// Reserves `bytes`, or refuses when the budget would be exceeded. A request larger than
    /// the whole budget is still taken when nothing else is in flight, so that the limit never
    /// makes an image the server may decode impossible to serve.
    pub fn reserve(&self, bytes: u64) -> Result<Reservation<'_>, Error> {
        self.try_reserve(bytes).ok_or_else(|| {
            crate::metrics::record_rejection(self.counts.reason());
            Error::Overloaded(format!(
                "the server is at its memory budget for {} ({} MiB); retry shortly",
                self.counts.what(),
                self.limit >> 20
            ))
        })
    }

    /// `reserve` for what a request can do without (a parallel share of its work): no
    /// rejection is counted when it does not fit.
    pub fn try_reserve(&self, bytes: u64) -> Option<Reservation<'_>> {
        let mut used = self.used.load(Ordering::Acquire);
        loop {
            if used > 0 && used.saturating_add(bytes) > self.limit {
                return None;
            }
            match self
                .used
                .compare_exchange_weak(used, used + bytes, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    self.show(used + bytes);
                    return Some(Reservation { budget: self, bytes });
                }
                Err(now) => used = now,
            }
        }
    }

    /// Sets the budget's gauge.
    fn show(&self, used: u64) {
        match self.counts {
            Counted::Images => crate::metrics::set_inflight_image_bytes(used),
            Counted::Bodies => crate::metrics::set_inflight_body_bytes(used),
        }
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let left = self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel) - self.bytes;
        self.budget.show(left);
    }
}

/// Requests queued or running for one model, bounded.
#[derive(Default)]
pub struct ModelQueue {
    inside: AtomicUsize,
}

/// A place in a model's queue; left when dropped.
pub struct Place(Arc<ModelQueue>);

impl ModelQueue {
    pub fn enter(self: &Arc<Self>, limit: usize, model: &str) -> Result<Place, Error> {
        let before = self.inside.fetch_add(1, Ordering::AcqRel);
        if before >= limit {
            self.inside.fetch_sub(1, Ordering::AcqRel);
            crate::metrics::record_rejection("queue");
            return Err(Error::Overloaded(format!(
                "model {model} already has {limit} requests queued or running; retry shortly"
            )));
        }
        Ok(Place(self.clone()))
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.0.inside.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_refuses_beyond_its_limit_and_takes_back_what_is_dropped() {
        let budget = MemoryBudget::new(100, Counted::Images);
        let a = budget.reserve(60).unwrap();
        assert!(matches!(budget.reserve(50), Err(Error::Overloaded(_))));
        let b = budget.reserve(40).unwrap();
        drop(a);
        drop(b);
        // Alone, even a request over the whole budget is taken.
        let big = budget.reserve(500).unwrap();
        assert!(budget.reserve(1).is_err());
        drop(big);
        assert!(budget.reserve(1).is_ok());
    }

    #[test]
    fn a_model_queue_holds_at_most_its_limit() {
        let queue = Arc::new(ModelQueue::default());
        let places: Vec<_> = (0..3).map(|_| queue.enter(3, "m").unwrap()).collect();
        assert!(queue.enter(3, "m").is_err());
        drop(places);
        assert!(queue.enter(3, "m").is_ok());
    }
}
