//! The tenants in force, re-read from the tenants file when it changes: adding a tenant, a key
//! or a limit takes effect without a restart, and a broken file is refused with a log line
//! while the previous tenants keep serving. Quotas survive a reload: in the quota store they
//! are keyed by tenant name, and this process's own state is kept for unchanged limits.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Result;
use parking_lot::{Mutex, RwLock};

use super::shared::{Decision, FailureMode, QuotaStore};
use super::{Admission, Refusal, Tenant, Tenants};

/// What identifies a version of the file without reading it.
type Stamp = Option<(SystemTime, u64)>;

pub struct Gate {
    tenants: RwLock<Arc<Tenants>>,
    path: PathBuf,
    stamp: Mutex<Stamp>,
    /// The server's body limit: bodies are read (to find a key in them) up to this.
    pub max_body_bytes: usize,
    /// `--quota-store`: quotas shared with the other replicas.
    pub store: Option<Arc<QuotaStore>>,
}

fn stamp(path: &PathBuf) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

impl Gate {
    pub fn load(path: PathBuf, max_body_bytes: usize, store: Option<Arc<QuotaStore>>) -> Result<Self> {
        let before = stamp(&path);
        let tenants = Tenants::load(&path)?;
        Ok(Gate {
            tenants: RwLock::new(Arc::new(tenants)),
            path,
            stamp: Mutex::new(before),
            max_body_bytes,
            store,
        })
    }

    /// Counts a request of `tenant` against its quota: the shared one when there is a quota
    /// store and it answers; else this process's own, or a refusal (fail-closed).
    pub async fn admit(&self, tenant: &Tenant) -> Result<Admission, Refusal> {
        let Some(store) = &self.store else {
            return tenant.admit();
        };
        match store.admit(&tenant.name, tenant.limits()).await {
            Decision::Admitted(lease) => Ok(Admission::Shared(lease)),
            Decision::Refused(refusal) => Err(refusal),
            Decision::Unreachable => match store.failure {
                FailureMode::FailOpen => {
                    crate::metrics::record_quota_fallback(store.failure.name());
                    tenant.admit()
                }
                FailureMode::FailClosed => {
                    crate::metrics::record_quota_fallback(store.failure.name());
                    Err(Refusal::StoreDown)
                }
            },
        }
    }

    /// The tenants in force now.
    pub fn tenants(&self) -> Arc<Tenants> {
        self.tenants.read().clone()
    }

    /// Re-reads the file if it changed since the last read. Quotas carry over (see the module
    /// notes). Blocking: reads a file.
    pub fn reload_if_changed(&self) {
        let now = stamp(&self.path);
        {
            let mut last = self.stamp.lock();
            if *last == now {
                return;
            }
            *last = now;
        }
        let before = self.tenants();
        match Tenants::reload(&self.path, &before) {
            Ok(tenants) => {
                tracing::info!(file = %self.path.display(), tenants = tenants.count(), "tenants file reloaded");
                *self.tenants.write() = Arc::new(tenants);
            }
            Err(e) => tracing::error!(file = %self.path.display(), error = %format!("{e:#}"),
                "tenants file refused: the previous tenants stay in force"),
        }
    }
}
