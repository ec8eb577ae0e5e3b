//! Multi-tenant hosting: who a request is (API key → tenant), what it may use (model
//! namespaces, plugins) and how much (rate, concurrency, input and plugin-call limits).
//!
//! Without a tenants file the server runs open, like Roboflow's: none of this applies.

pub mod config;
mod gate;
pub mod shared;

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota};
use subtle::ConstantTimeEq;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::input::InputLimits;
use crate::models::ModelId;
use crate::plugins::CallLimits;
pub use config::{key_hash_text, Limits};
use config::{ModelPattern, TenantConfig};
pub use gate::Gate;
pub use shared::{FailureMode, QuotaStore};

/// One tenant and its live quota state.
pub struct Tenant {
    pub name: String,
    key_hashes: Vec<[u8; 32]>,
    models: Vec<ModelPattern>,
    plugins: Option<Vec<String>>,
    pub admin: bool,
    pub roboflow_api_key: Option<String>,
    limits: Limits,
    /// This process's own quota state: the quota in force without a quota store, or while it
    /// is unreachable (fail-open). Shared with the tenant of the same name and limits across a
    /// reload of the tenants file, so a reload resets nothing.
    rate: Option<Arc<DefaultDirectRateLimiter>>,
    concurrency: Option<Arc<Semaphore>>,
}

/// Why a tenant's request is not admitted now.
#[derive(Debug, PartialEq)]
pub enum Refusal {
    /// Over the request rate: retry after this long.
    Rate(Duration),
    /// As many requests in flight as the tenant may have.
    Concurrency(usize),
    /// The shared quota store cannot be reached and the server fails closed.
    StoreDown,
}

/// Held while an admitted request is handled: a slot of this process, or a lease in the
/// quota store (released when dropped).
pub enum Admission {
    Local(#[allow(dead_code)] Option<OwnedSemaphorePermit>),
    Shared(#[allow(dead_code)] Option<shared::Lease>),
}

impl Tenant {
    /// A tenant from its configuration; `before`: the tenant of that name before a reload, whose
    /// quota state is kept when its quota limits did not change.
    fn new(c: TenantConfig, before: Option<&Tenant>) -> Self {
        let same_quota = before.filter(|b| {
            let (old, new) = (&b.limits, &c.limits);
            old.requests_per_second == new.requests_per_second
                && old.burst == new.burst
                && old.max_concurrent == new.max_concurrent
        });
        let (rate, concurrency) = match same_quota {
            Some(before) => (before.rate.clone(), before.concurrency.clone()),
            None => (
                c.limits.requests_per_second.map(|per_second| {
                    // One second's worth of requests may arrive at once unless `burst` says otherwise.
                    let burst = c.limits.burst.unwrap_or(per_second.ceil() as u32).max(1);
                    let quota = Quota::with_period(Duration::from_secs_f64(1.0 / per_second))
                        .expect("validated: rate > 0")
                        .allow_burst(NonZeroU32::new(burst).expect("max(1)"));
                    Arc::new(DefaultDirectRateLimiter::direct(quota))
                }),
                c.limits.max_concurrent.map(|n| Arc::new(Semaphore::new(n))),
            ),
        };
        Tenant {
            concurrency,
            rate,
            name: c.name,
            key_hashes: c.key_hashes,
            models: c.models,
            plugins: c.plugins,
            admin: c.admin,
            roboflow_api_key: c.roboflow_api_key,
            limits: c.limits,
        }
    }

    pub fn may_use_model(&self, id: &ModelId) -> bool {
        self.models.iter().any(|p| p.matches(&id.project, &id.version))
    }

    pub fn may_use_plugin(&self, name: &str) -> bool {
        self.plugins
            .as_ref()
            .is_none_or(|names| names.iter().any(|n| n == name))
    }

    /// Takes a concurrency slot and counts the request against the rate, or says why not.
    /// The slot comes first so a request refused for concurrency does not spend the rate.
    pub fn admit(&self) -> Result<Admission, Refusal> {
        let slot = match &self.concurrency {
            Some(slots) => Some(
                slots
                    .clone()
                    .try_acquire_owned()
                    .map_err(|_| Refusal::Concurrency(self.limits.max_concurrent.unwrap_or(0)))?,
            ),
            None => None,
        };
        if let Some(rate) = &self.rate {
            if let Err(not_until) = rate.check() {
                return Err(Refusal::Rate(not_until.wait_time_from(DefaultClock::default().now())));
            }
        }
        Ok(Admission::Local(slot))
    }

    /// The limits the quota store enforces (rate, burst, requests in flight).
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn max_body_bytes(&self) -> Option<usize> {
        self.limits.max_body_bytes
    }

    /// The server's input limits, tightened by this tenant's.
    pub fn input_limits(&self, server: &InputLimits) -> InputLimits {
        let l = &self.limits;
        InputLimits {
            max_image_pixels: l
                .max_image_pixels
                .map_or(server.max_image_pixels, |p| p.min(server.max_image_pixels)),
            max_batch: l.max_batch.map_or(server.max_batch, |b| b.min(server.max_batch)),
            ..server.clone()
        }
    }

    /// A plugin's call limits, tightened by this tenant's.
    pub fn call_limits(&self, plugin: &CallLimits) -> CallLimits {
        let l = &self.limits;
        CallLimits {
            deadline: l
                .plugin_timeout_ms
                .map_or(plugin.deadline, |ms| Duration::from_millis(ms).min(plugin.deadline)),
            memory_bytes: l
                .plugin_memory_mib
                .map_or(plugin.memory_bytes, |m| (m << 20).min(plugin.memory_bytes)),
            max_model_runs: l
                .max_model_runs
                .map_or(plugin.max_model_runs, |n| n.min(plugin.max_model_runs)),
            output_bytes: l
                .output_kib
                .map_or(plugin.output_bytes, |k| (k << 10).min(plugin.output_bytes)),
        }
    }
}

/// Every configured tenant.
pub struct Tenants {
    tenants: Vec<Arc<Tenant>>,
}

impl Tenants {
    pub fn load(path: &Path) -> Result<Self> {
        Ok(Self::from_configs(config::read(path)?, None))
    }

    /// The tenants of the file at `path`, keeping the quota state of those in `before` whose
    /// quota limits are unchanged.
    pub fn reload(path: &Path, before: &Tenants) -> Result<Self> {
        Ok(Self::from_configs(config::read(path)?, Some(before)))
    }

    fn from_configs(configs: Vec<TenantConfig>, before: Option<&Tenants>) -> Self {
        let previous = |name: &str| {
            before
                .and_then(|b| b.tenants.iter().find(|t| t.name == name))
                .map(|t| &**t)
        };
        Tenants {
            tenants: configs
                .into_iter()
                .map(|c| {
                    let before = previous(&c.name);
                    Arc::new(Tenant::new(c, before))
                })
                .collect(),
        }
    }

    pub fn count(&self) -> usize {
        self.tenants.len()
    }

    /// The tenant owning `key`. Every stored hash is compared, in constant time, whatever
    /// matches: how long this takes says nothing about which key (or how much of it) is right.
    pub fn authenticate(&self, key: &str) -> Option<Arc<Tenant>> {
        let presented = config::key_hash(key);
        let mut found = None;
        for tenant in &self.tenants {
            for stored in &tenant.key_hashes {
                if bool::from(stored.ct_eq(&presented)) {
                    found = Some(tenant.clone());
                }
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenants(limits: &str) -> Tenants {
        let text = format!(
            "[[tenant]]\nname = \"acme\"\napi_keys = [\"{}\", \"{}\"]\nmodels = [\"acme-*\", \"shared/2\"]\nplugins = [\"object-detection\"]\n[tenant.limits]\n{limits}\n[[tenant]]\nname = \"beta\"\napi_keys = [\"{}\"]\nmodels = [\"*\"]\nplugins = [\"*\"]",
            key_hash_text("acme-key-1"),
            key_hash_text("acme-key-2"),
            key_hash_text("beta-key"),
        );
        Tenants::from_configs(config::parse(&text).unwrap(), None)
    }

    #[test]
    fn keys_identify_their_tenant() {
        let t = tenants("");
        assert_eq!(t.authenticate("acme-key-1").unwrap().name, "acme");
        assert_eq!(t.authenticate("acme-key-2").unwrap().name, "acme");
        assert_eq!(t.authenticate("beta-key").unwrap().name, "beta");
        for wrong in ["", "acme-key-", "acme-key-1 ", "ACME-KEY-1", "beta"] {
            assert!(t.authenticate(wrong).is_none(), "{wrong:?}");
        }
    }

    #[test]
    fn namespaces_and_plugins() {
        let t = tenants("");
        let acme = t.authenticate("acme-key-1").unwrap();
        let id = |s: &str| ModelId::parse(s).unwrap();
        assert!(acme.may_use_model(&id("acme-cars/3")));
        assert!(acme.may_use_model(&id("shared/2")));
        assert!(!acme.may_use_model(&id("shared/1")));
        assert!(!acme.may_use_model(&id("beta-x/1")));
        assert!(acme.may_use_plugin("object-detection"));
        assert!(!acme.may_use_plugin("classification"));
        let beta = t.authenticate("beta-key").unwrap();
        assert!(beta.may_use_model(&id("acme-cars/3")) && beta.may_use_plugin("anything"));
    }

    #[test]
    fn rate_and_concurrency() {
        let t = tenants("requests_per_second = 0.5\nburst = 2\nmax_concurrent = 1");
        let acme = t.authenticate("acme-key-1").unwrap();
        let first = acme.admit().unwrap();
        // The one slot is taken; that refusal spends none of the rate.
        assert_eq!(acme.admit().err(), Some(Refusal::Concurrency(1)));
        drop(first);
        drop(acme.admit().unwrap());
        let Err(Refusal::Rate(wait)) = acme.admit() else {
            panic!("the burst of 2 is spent")
        };
        assert!(
            wait > Duration::from_millis(1500) && wait <= Duration::from_secs(2),
            "{wait:?}"
        );
        // Another tenant's quota is its own.
        assert!(t.authenticate("beta-key").unwrap().admit().is_ok());
    }

    #[test]
    fn a_reload_keeps_the_quota_state_of_unchanged_limits() {
        let limits = "requests_per_second = 0.5\nburst = 1\nmax_concurrent = 1";
        let before = tenants(limits);
        let acme = before.authenticate("acme-key-1").unwrap();
        let held = acme.admit().unwrap();
        let text = |limits: &str| {
            format!(
                "[[tenant]]\nname = \"acme\"\napi_keys = [\"{}\"]\nmodels = [\"*\"]\n[tenant.limits]\n{limits}",
                key_hash_text("acme-key-1")
            )
        };
        let same = Tenants::from_configs(config::parse(&text(limits)).unwrap(), Some(&before));
        let again = same.authenticate("acme-key-1").unwrap();
        // The slot held before the reload still counts; the spent burst stays spent.
        assert_eq!(again.admit().err(), Some(Refusal::Concurrency(1)));
        drop(held);
        assert!(matches!(again.admit(), Err(Refusal::Rate(_))));
        // New limits: a new quota.
        let changed = Tenants::from_configs(config::parse(&text("requests_per_second = 2")).unwrap(), Some(&same));
        assert!(changed.authenticate("acme-key-1").unwrap().admit().is_ok());
    }

    #[test]
    fn limits_only_tighten() {
        let t = tenants(
            "max_batch = 4\nmax_image_pixels = 999999999999\nplugin_timeout_ms = 100\nplugin_memory_mib = 100000",
        );
        let acme = t.authenticate("acme-key-1").unwrap();
        let server = InputLimits {
            max_image_pixels: 1000,
            max_url_bytes: 1,
            url_timeout: Duration::from_secs(1),
            max_batch: 16,
        };
        let input = acme.input_limits(&server);
        assert_eq!((input.max_batch, input.max_image_pixels), (4, 1000));
        let call = acme.call_limits(&CallLimits::default());
        assert_eq!(call.deadline, Duration::from_millis(100));
        assert_eq!(call.memory_bytes, CallLimits::default().memory_bytes);
    }
}
