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

use clap::Args;

use super::id::ModelId;

#[derive(Debug, Args, Clone, Default)]
pub struct BudgetArgs {
    /// Largest total size of the downloaded models in the cache (e.g. 500MB, 2GiB); beyond it the
    /// least recently used models' files are deleted (never pinned or loaded ones). Default: no limit.
    #[arg(long, env = "INFERENCE_CACHE_MAX_BYTES", value_parser = parse_bytes)]
    pub cache_max_bytes: Option<u64>,
    /// Most models loaded at once; beyond it the least recently requested unpinned model is
    /// unloaded (its files stay). Default: no limit.
    #[arg(long, env = "INFERENCE_MAX_LOADED_MODELS", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_loaded_models: Option<u64>,
    /// Models to load at start and keep (pinned): `<project>/<version>`, comma-separated.
    /// `/readiness` answers 503 until they are loaded.
    #[arg(long, env = "INFERENCE_PRELOAD", value_delimiter = ',')]
    pub preload: Vec<String>,
    /// Roboflow API key for preloading models that only Roboflow has (never logged).
    #[arg(long, env = "ROBOFLOW_API_KEY", hide_env_values = true)]
    pub preload_api_key: Option<String>,
}

impl BudgetArgs {
    /// The preloaded (pinned) model ids, validated.
    pub fn pinned(&self) -> anyhow::Result<Vec<ModelId>> {
        let mut ids = Vec::new();
        for raw in self.preload.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
            let id = ModelId::parse(raw).map_err(|e| anyhow::anyhow!("--preload: {e}"))?;
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        Ok(ids)
    }
}

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

    #[test]
    fn pinned_ids() {
        let args = BudgetArgs {
            preload: vec!["a/1".into(), " b/2".into(), "a/1".into()],
            ..Default::default()
        };
        assert_eq!(args.pinned().unwrap().len(), 2);
        let bad = BudgetArgs {
            preload: vec!["../x".into()],
            ..Default::default()
        };
        assert!(bad.pinned().is_err());
    }
}
