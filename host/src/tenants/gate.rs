//! The tenants in force, re-read from the tenants file when it changes: adding a tenant, a key
//! or a limit takes effect without a restart, and a broken file is refused with a log line
//! while the previous tenants keep serving.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Result;
use parking_lot::{Mutex, RwLock};

use super::Tenants;

/// What identifies a version of the file without reading it.
type Stamp = Option<(SystemTime, u64)>;

pub struct Gate {
    tenants: RwLock<Arc<Tenants>>,
    path: PathBuf,
    stamp: Mutex<Stamp>,
    /// The server's body limit: bodies are read (to find a key in them) up to this.
    pub max_body_bytes: usize,
}

fn stamp(path: &PathBuf) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

impl Gate {
    pub fn load(path: PathBuf, max_body_bytes: usize) -> Result<Self> {
        let before = stamp(&path);
        let tenants = Tenants::load(&path)?;
        Ok(Gate {
            tenants: RwLock::new(Arc::new(tenants)),
            path,
            stamp: Mutex::new(before),
            max_body_bytes,
        })
    }

    /// The tenants in force now.
    pub fn tenants(&self) -> Arc<Tenants> {
        self.tenants.read().clone()
    }

    /// Re-reads the file if it changed since the last read. Quotas start afresh for the new set
    /// (requests in flight keep the slots they hold). Blocking: reads a file.
    pub fn reload_if_changed(&self) {
        let now = stamp(&self.path);
        {
            let mut last = self.stamp.lock();
            if *last == now {
                return;
            }
            *last = now;
        }
        match Tenants::load(&self.path) {
            Ok(tenants) => {
                tracing::info!(file = %self.path.display(), tenants = tenants.count(), "tenants file reloaded");
                *self.tenants.write() = Arc::new(tenants);
            }
            Err(e) => tracing::error!(file = %self.path.display(), error = %format!("{e:#}"),
                "tenants file refused: the previous tenants stay in force"),
        }
    }
}
