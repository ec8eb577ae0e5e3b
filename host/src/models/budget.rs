//! The operator's limits on models: cache size, loaded count, and the pinned (preloaded) set.
//!
//! Policy:
//! * `--max-loaded-models N`: after a model is loaded, the least recently requested loaded
//!   models beyond N are unloaded (never a pinned one, never the one just loaded). Their files
//!   stay in the cache. Requests already holding an unloaded model finish with it.
//! * `--cache-max-bytes`: at start-up and after a model is loaded, the least recently used models of the
//!   download cache are deleted until the cache fits. A model's last use is the modification
//!   time of its `.verified` record, set when it is downloaded, loaded from the cache, or
//!   unloaded (so it survives restarts). Never deleted: pinned models, models loaded or being
//!   loaded by this server, models another process is downloading (their lock is held). When
//!   only such models remain the cache stays over budget (logged).
//! * `--preload`: loaded at start (readiness answers 503 until they are) and pinned: no budget
//!   unloads or deletes them. `/model/remove` and `/model/clear` still unload them on request.

use std::str::FromStr;

/// `500MB`, `2GiB`, `1.5 GB` or a plain number of bytes.
pub fn parse_bytes(raw: &str) -> Result<u64, String> {
    bytesize::ByteSize::from_str(raw.trim())
        .map(|b| b.as_u64())
        .map_err(|e| format!("{raw:?} is not a size (e.g. 500MB, 2GiB): {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("500MB"), Ok(500_000_000));
        assert_eq!(parse_bytes("2GiB"), Ok(2 << 30));
        assert_eq!(parse_bytes("1024"), Ok(1024));
        assert!(parse_bytes("lots").is_err());
    }
}
