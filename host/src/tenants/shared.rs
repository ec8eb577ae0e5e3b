//! Tenant quotas shared by every replica (`--quota-store redis://…`): each tenant's token
//! bucket and its requests in flight are kept in Redis (or Valkey) and changed by one
//! server-side Lua script per request, so N replicas together admit exactly what one would.
//!
//! In-flight slots are leases (a sorted set of lease ids scored by their expiry, on Redis's
//! clock), renewed while the request runs: the slots of a replica that dies expire with their
//! leases instead of being held forever. The store's state is keyed by tenant name, so a reload
//! of the tenants file (or a restart of every replica) does not reset anybody's quota.
//!
//! When the store cannot be reached the replica falls back to `--quota-store-failure`: its own
//! per-process limits (`fail-open`) or a 503 (`fail-closed`). The change is logged once each way,
//! and a monitor pings the store every second so the replica rejoins as soon as it answers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Script};

use super::config::Limits;
use super::Refusal;
use crate::metrics;

/// What a replica does while the store cannot be reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FailureMode {
    /// Keep serving, each replica enforcing the tenants' limits on its own.
    FailOpen,
    /// Refuse the requests of limited tenants with 503 and Retry-After.
    FailClosed,
}

impl FailureMode {
    pub fn name(self) -> &'static str {
        match self {
            FailureMode::FailOpen => "fail-open",
            FailureMode::FailClosed => "fail-closed",
        }
    }
}

/// Longest wait for one answer of the store before it counts as unreachable: a quota check is
/// on every request's path.
const STORE_TIMEOUT: Duration = Duration::from_millis(500);
/// How long an in-flight lease lives without renewal; a dead replica's slots free after this.
pub const LEASE: Duration = Duration::from_secs(10);
/// How often a running request renews its lease.
const RENEW: Duration = Duration::from_secs(3);
/// How often the store is pinged (to notice it went away while idle, and to rejoin).
const PING: Duration = Duration::from_secs(1);

/// Token bucket and in-flight leases of one tenant, checked and changed atomically.
/// KEYS[1]: the bucket (hash: tokens, ts in ms); KEYS[2]: the leases (sorted set: id → expiry ms).
/// ARGV: requests per second (0: unlimited), burst, max in flight (0: unlimited), lease id,
/// lease ms. Returns {0, ""} admitted, {1, wait ms} over the rate, {2, ""} too many in flight.
/// Time is Redis's own (TIME), so the replicas' clocks do not matter.
const ADMIT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate, burst, max = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local lease, ttl = ARGV[4], tonumber(ARGV[5])
if max > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) >= max then return {2, ''} end
end
if rate > 0 then
  local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
  local tokens, ts = tonumber(b[1]), tonumber(b[2])
  if tokens == nil or ts == nil then tokens, ts = burst, now end
  tokens = math.min(burst, tokens + math.max(0, now - ts) * rate / 1000)
  local admitted = tokens >= 1
  if admitted then tokens = tokens - 1 end
  redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
  -- Once full again the bucket is the same as no bucket.
  redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
  if not admitted then return {1, tostring(math.ceil((1 - tokens) * 1000 / rate))} end
end
if max > 0 then
  redis.call('ZADD', KEYS[2], now + ttl, lease)
  redis.call('PEXPIRE', KEYS[2], ttl * 2)
end
return {0, ''}
"#;

/// Extends a lease that is still held. KEYS[1]: the leases; ARGV: lease id, lease ms.
const RENEW_LEASE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
  return 1
end
return 0
"#;

pub struct QuotaStore {
    client: redis::Client,
    connection: Mutex<Option<MultiplexedConnection>>,
    up: AtomicBool,
    pub failure: FailureMode,
    /// The URL without its password, for logs and /readiness.
    pub shown: String,
    admit: Script,
    renew: Script,
}

/// What the store said about a request.
pub enum Decision {
    Admitted(Option<Lease>),
    Refused(Refusal),
    /// The store could not be asked: apply `failure`.
    Unreachable,
}

/// A request's in-flight slot in the store; released when dropped.
pub struct Lease {
    store: Arc<QuotaStore>,
    key: String,
    id: String,
    renewing: tokio::task::JoinHandle<()>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewing.abort();
        let (store, key, id) = (
            self.store.clone(),
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.id),
        );
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                // A release that fails leaves the lease to expire (LEASE).
                let _ = store
                    .call(|mut c| async move { redis::cmd("ZREM").arg(&key).arg(&id).query_async::<i64>(&mut c).await })
                    .await;
            });
        }
    }
}

fn shown_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_password(None);
            let _ = u.set_username("");
            u.to_string()
        }
        Err(_) => "redis://?".into(),
    }
}

impl QuotaStore {
    /// Connects lazily: a store that is down at start-up is the failure mode, not a failed start.
    pub fn new(url: &str, failure: FailureMode) -> Result<Arc<Self>> {
        let client = redis::Client::open(url).with_context(|| format!("bad --quota-store URL {}", shown_url(url)))?;
        let store = Arc::new(QuotaStore {
            client,
            connection: Mutex::new(None),
            // Until the first answer says otherwise; the first failure is then logged.
            up: AtomicBool::new(true),
            failure,
            shown: shown_url(url),
            admit: Script::new(ADMIT),
            renew: Script::new(RENEW_LEASE),
        });
        metrics::set_quota_store_up(true);
        Ok(store)
    }

    /// Pings the store every second, marking it up or down (and so rejoining when it is back).
    pub fn monitor(self: &Arc<Self>) {
        let store = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PING);
            loop {
                tick.tick().await;
                let Some(store) = store.upgrade() else { return };
                let _ = store
                    .call(|mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await })
                    .await;
            }
        });
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    fn mark(&self, up: bool, why: Option<&str>) {
        if self.up.swap(up, Ordering::AcqRel) != up {
            metrics::set_quota_store_up(up);
            if up {
                tracing::info!(store = %self.shown, "quota store reachable again: shared tenant quotas resume");
            } else {
                tracing::error!(store = %self.shown, mode = self.failure.name(), why = why.unwrap_or(""),
                    "quota store unreachable: tenant quotas are per replica (fail-open) or refused (fail-closed) until it is back");
            }
        }
    }

    async fn connection(&self) -> redis::RedisResult<MultiplexedConnection> {
        if let Some(c) = self.connection.lock().clone() {
            return Ok(c);
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(STORE_TIMEOUT))
            .set_response_timeout(Some(STORE_TIMEOUT));
        let c = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        *self.connection.lock() = Some(c.clone());
        Ok(c)
    }

    /// Runs one exchange with the store, bounded by STORE_TIMEOUT; a failure marks it down and
    /// drops the connection (the next call reconnects).
    async fn call<T, F, Fut>(&self, exchange: F) -> Option<T>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let result = tokio::time::timeout(STORE_TIMEOUT, async {
            let c = self.connection().await?;
            exchange(c).await
        })
        .await;
        let why = match result {
            Ok(Ok(value)) => {
                self.mark(true, None);
                return Some(value);
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {STORE_TIMEOUT:?}"),
        };
        metrics::record_quota_store_error();
        *self.connection.lock() = None;
        self.mark(false, Some(&why));
        None
    }

    /// Checks and counts one request of `tenant` against its shared quota.
    pub async fn admit(self: &Arc<Self>, tenant: &str, limits: &Limits) -> Decision {
        if limits.requests_per_second.is_none() && limits.max_concurrent.is_none() {
            return Decision::Admitted(None);
        }
        // While down, only the monitor knocks: requests do not each wait for a timeout.
        if !self.is_up() {
            return Decision::Unreachable;
        }
        let rate = limits.requests_per_second.unwrap_or(0.0);
        let burst = limits.burst.unwrap_or(rate.ceil() as u32).max(1);
        let max = limits.max_concurrent.unwrap_or(0);
        let (bucket, leases) = keys(tenant);
        let lease = uuid::Uuid::new_v4().simple().to_string();
        let ttl = LEASE.as_millis() as u64;
        let answer = self
            .call(|mut c| {
                let mut invocation = self.admit.key(&bucket);
                invocation
                    .key(&leases)
                    .arg(rate)
                    .arg(burst)
                    .arg(max)
                    .arg(&lease)
                    .arg(ttl);
                async move { invocation.invoke_async::<(i64, String)>(&mut c).await }
            })
            .await;
        match answer {
            None => Decision::Unreachable,
            Some((0, _)) => Decision::Admitted((max > 0).then(|| self.lease(leases, lease))),
            Some((1, wait_ms)) => Decision::Refused(Refusal::Rate(Duration::from_millis(
                wait_ms.parse::<f64>().unwrap_or(1000.0).max(1.0) as u64,
            ))),
            Some(_) => Decision::Refused(Refusal::Concurrency(max)),
        }
    }

    /// A held lease, renewed every RENEW until dropped.
    fn lease(self: &Arc<Self>, key: String, id: String) -> Lease {
        let store = Arc::downgrade(self);
        let (k, i) = (key.clone(), id.clone());
        let renewing = tokio::spawn(async move {
            let mut tick = tokio::time::interval(RENEW);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(store) = store.upgrade() else { return };
                let (k, i) = (k.clone(), i.clone());
                let renew = &store.renew;
                let _ = store
                    .call(|mut c| {
                        let mut invocation = renew.key(&k);
                        invocation.arg(&i).arg(LEASE.as_millis() as u64);
                        async move { invocation.invoke_async::<i64>(&mut c).await }
                    })
                    .await;
            }
        });
        Lease {
            store: self.clone(),
            key,
            id,
            renewing,
        }
    }
}

/// The store keys of a tenant's bucket and leases; the hash tag keeps both in one cluster slot.
fn keys(tenant: &str) -> (String, String) {
    (
        format!("inference:quota:{{{tenant}}}:rate"),
        format!("inference:quota:{{{tenant}}}:inflight"),
    )
}
