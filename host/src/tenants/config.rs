//! The tenants file (`--tenants`, TOML): who may call the server, with which keys, what
//! each tenant may use and how much. Parsed strictly: an unknown field is an error, so a
//! typo never silently loosens a limit.
//!
//! ```toml
//! [defaults]                 # limits for every tenant (each may override them)
//! requests_per_second = 20
//! burst = 40
//! max_concurrent = 8
//!
//! [[tenant]]
//! name = "acme"
//! api_keys = ["sha256:<64 hex digits>"]   # `inference tenants hash-key <key>` prints one
//! models = ["acme-*", "shapes-detect"]     # projects (`*` at the end: a prefix), or `project/version`
//! plugins = ["object-detection"]           # plugin names, or "*"
//! [tenant.limits]
//! max_batch = 4
//! ```

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Limits a tenant runs under; absent ones fall back to `[defaults]`, then to the server's own.
/// Every value only tightens the server-wide limits, never loosens them.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Sustained requests per second (token bucket).
    pub requests_per_second: Option<f64>,
    /// Requests that may arrive at once before the rate applies (default: one second's worth).
    pub burst: Option<u32>,
    /// Requests of this tenant being handled at once.
    pub max_concurrent: Option<usize>,
    pub max_image_pixels: Option<u64>,
    pub max_batch: Option<usize>,
    pub max_body_bytes: Option<usize>,
    /// Per plugin call: wall-clock limit, linear memory, model runs, output size.
    pub plugin_timeout_ms: Option<u64>,
    pub plugin_memory_mib: Option<usize>,
    pub max_model_runs: Option<usize>,
    pub output_kib: Option<usize>,
    /// Per workflow run: wall-clock limit of the whole run, images it may hold (inputs, crops,
    /// slices, pictures), size of its response.
    pub workflow_timeout_ms: Option<u64>,
    pub workflow_max_images: Option<usize>,
    pub workflow_max_output_bytes: Option<usize>,
}

impl Limits {
    /// `self`, with `defaults` where `self` says nothing.
    fn or(&self, defaults: &Limits) -> Limits {
        Limits {
            requests_per_second: self.requests_per_second.or(defaults.requests_per_second),
            burst: self.burst.or(defaults.burst),
            max_concurrent: self.max_concurrent.or(defaults.max_concurrent),
            max_image_pixels: self.max_image_pixels.or(defaults.max_image_pixels),
            max_batch: self.max_batch.or(defaults.max_batch),
            max_body_bytes: self.max_body_bytes.or(defaults.max_body_bytes),
            plugin_timeout_ms: self.plugin_timeout_ms.or(defaults.plugin_timeout_ms),
            plugin_memory_mib: self.plugin_memory_mib.or(defaults.plugin_memory_mib),
            max_model_runs: self.max_model_runs.or(defaults.max_model_runs),
            output_kib: self.output_kib.or(defaults.output_kib),
            workflow_timeout_ms: self.workflow_timeout_ms.or(defaults.workflow_timeout_ms),
            workflow_max_images: self.workflow_max_images.or(defaults.workflow_max_images),
            workflow_max_output_bytes: self.workflow_max_output_bytes.or(defaults.workflow_max_output_bytes),
        }
    }

    fn validate(&self, tenant: &str) -> Result<()> {
        if let Some(rate) = self.requests_per_second {
            if !(rate.is_finite() && rate > 0.0) {
                bail!("tenant {tenant}: requests_per_second must be a positive number, got {rate}");
            }
        }
        let zero = [
            ("burst", self.burst.map(|b| b as u64)),
            ("max_concurrent", self.max_concurrent.map(|n| n as u64)),
            ("max_image_pixels", self.max_image_pixels),
            ("max_batch", self.max_batch.map(|n| n as u64)),
            ("max_body_bytes", self.max_body_bytes.map(|n| n as u64)),
            ("plugin_timeout_ms", self.plugin_timeout_ms),
            ("plugin_memory_mib", self.plugin_memory_mib.map(|n| n as u64)),
            ("max_model_runs", self.max_model_runs.map(|n| n as u64)),
            ("output_kib", self.output_kib.map(|n| n as u64)),
            ("workflow_timeout_ms", self.workflow_timeout_ms),
            ("workflow_max_images", self.workflow_max_images.map(|n| n as u64)),
            (
                "workflow_max_output_bytes",
                self.workflow_max_output_bytes.map(|n| n as u64),
            ),
        ]
        .into_iter()
        .find(|(_, v)| *v == Some(0));
        if let Some((name, _)) = zero {
            bail!("tenant {tenant}: {name} must be at least 1");
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantsFile {
    #[serde(default)]
    defaults: Limits,
    #[serde(rename = "tenant", default)]
    tenants: Vec<TenantEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantEntry {
    name: String,
    /// `sha256:<hex>` of each key: the file never holds a usable key.
    api_keys: Vec<String>,
    models: Vec<String>,
    #[serde(default)]
    plugins: Vec<String>,
    /// May read `/metrics` and clear every tenant's models.
    #[serde(default)]
    admin: bool,
    /// Roboflow API key used to download this tenant's models (the tenant's own key to this
    /// server is never sent anywhere).
    #[serde(default)]
    roboflow_api_key: Option<String>,
    #[serde(default)]
    limits: Limits,
}

/// Which models a tenant may use: a project, a project prefix (`acme-*`), one version
/// (`project/version`) or everything (`*`).
#[derive(Clone, Debug, PartialEq)]
pub enum ModelPattern {
    Any,
    Project(String),
    ProjectPrefix(String),
    Version(String, String),
}

impl ModelPattern {
    fn parse(text: &str) -> Result<Self> {
        // The rules of model ids (`models::id`), so a pattern can only name what an id can.
        let ok = crate::models::id::valid_segment;
        Ok(match text.split_once('/') {
            _ if text == "*" => ModelPattern::Any,
            Some((project, version)) if ok(project) && ok(version) => {
                ModelPattern::Version(project.into(), version.into())
            }
            None => match text.strip_suffix('*') {
                Some(prefix) if ok(prefix) => ModelPattern::ProjectPrefix(prefix.into()),
                None if ok(text) => ModelPattern::Project(text.into()),
                _ => bail!("model pattern {text:?}: use `project`, `prefix*`, `project/version` or `*`"),
            },
            _ => bail!("model pattern {text:?}: use `project`, `prefix*`, `project/version` or `*`"),
        })
    }

    pub fn matches(&self, project: &str, version: &str) -> bool {
        match self {
            ModelPattern::Any => true,
            ModelPattern::Project(p) => p == project,
            ModelPattern::ProjectPrefix(p) => project.starts_with(p.as_str()),
            ModelPattern::Version(p, v) => p == project && v == version,
        }
    }
}

/// One tenant as configured (the runtime state lives in `super::Tenant`).
#[derive(Clone, Debug)]
pub struct TenantConfig {
    pub name: String,
    pub key_hashes: Vec<[u8; 32]>,
    pub models: Vec<ModelPattern>,
    /// Plugin names; `None` means every plugin.
    pub plugins: Option<Vec<String>>,
    pub admin: bool,
    pub roboflow_api_key: Option<String>,
    /// With the file's defaults applied.
    pub limits: Limits,
}

/// The SHA-256 of an API key, as the tenants file stores it.
pub fn key_hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// `sha256:<hex>`: what to put in `api_keys` for `key`.
pub fn key_hash_text(key: &str) -> String {
    let hex: String = key_hash(key).iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn parse_key_hash(text: &str, tenant: &str) -> Result<[u8; 32]> {
    let hex = text.strip_prefix("sha256:").with_context(|| {
        format!("tenant {tenant}: api key entries are `sha256:<hex>` (see `inference tenants hash-key`), not keys")
    })?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("tenant {tenant}: {text:?} is not a sha256 digest (64 hex digits)");
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)?;
    }
    Ok(out)
}

/// Reads and validates a tenants file.
pub fn read(path: &Path) -> Result<Vec<TenantConfig>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse(&text).with_context(|| format!("invalid tenants file {}", path.display()))
}

pub fn parse(text: &str) -> Result<Vec<TenantConfig>> {
    let file: TenantsFile = toml::from_str(text)?;
    file.defaults.validate("[defaults]")?;
    if file.tenants.is_empty() {
        bail!("no [[tenant]] defined");
    }
    let mut seen_names = std::collections::HashSet::new();
    let mut seen_keys = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(file.tenants.len());
    for entry in file.tenants {
        let name = entry.name;
        if name.is_empty() || !seen_names.insert(name.clone()) {
            bail!("tenant names must be non-empty and unique ({name:?})");
        }
        if entry.api_keys.is_empty() {
            bail!("tenant {name}: no api_keys");
        }
        let key_hashes = entry
            .api_keys
            .iter()
            .map(|k| parse_key_hash(k, &name))
            .collect::<Result<Vec<_>>>()?;
        if key_hashes.iter().any(|h| !seen_keys.insert(*h)) {
            bail!("tenant {name}: an api key is listed twice (keys must identify one tenant)");
        }
        let models = entry
            .models
            .iter()
            .map(|m| ModelPattern::parse(m).with_context(|| format!("tenant {name}")))
            .collect::<Result<Vec<_>>>()?;
        let plugins = if entry.plugins.iter().any(|p| p == "*") {
            None
        } else {
            Some(entry.plugins)
        };
        entry.limits.validate(&name)?;
        out.push(TenantConfig {
            limits: entry.limits.or(&file.defaults),
            name,
            key_hashes,
            models,
            plugins,
            admin: entry.admin,
            roboflow_api_key: entry.roboflow_api_key.filter(|k| !k.is_empty()),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(extra: &str) -> Result<Vec<TenantConfig>> {
        parse(&format!(
            "[[tenant]]\nname = \"a\"\napi_keys = [\"{}\"]\nmodels = [\"acme-*\"]\n{extra}",
            key_hash_text("k1")
        ))
    }

    #[test]
    fn keys_are_stored_as_hashes() {
        let t = &one("").unwrap()[0];
        assert_eq!(t.key_hashes, vec![key_hash("k1")]);
        assert!(parse("[[tenant]]\nname = \"a\"\napi_keys = [\"k1\"]\nmodels = []").is_err());
        assert!(parse("[[tenant]]\nname = \"a\"\napi_keys = [\"sha256:abc\"]\nmodels = []").is_err());
        // The digest Python's hashlib.sha256(b"k1") gives: operators may hash keys with any tool.
        assert_eq!(
            key_hash_text("k1"),
            "sha256:6ab9f1eb8f7d3388f4f9d586f66e99fd54080df2c446f0e58668b09c08a16dd0"
        );
    }

    #[test]
    fn patterns() {
        let p = |s| ModelPattern::parse(s).unwrap();
        assert!(p("acme-*").matches("acme-cars", "3"));
        assert!(!p("acme-*").matches("beta", "3"));
        assert!(p("shapes").matches("shapes", "1") && !p("shapes").matches("shapes2", "1"));
        assert!(p("shapes/2").matches("shapes", "2") && !p("shapes/2").matches("shapes", "1"));
        assert!(p("*").matches("anything", "9"));
        for bad in ["", "a/b/c", "../x", "a*b", "a b", "/1", "x/"] {
            assert!(ModelPattern::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn strict_and_defaults_apply() {
        assert!(one("typo = 1").is_err());
        assert!(one("[limits]\nmax_batchh = 1").is_err());
        assert!(one("[limits]\nmax_batch = 0").is_err());
        assert!(one("[limits]\nrequests_per_second = -1.0").is_err());
        let text = format!(
            "[defaults]\nmax_batch = 8\nburst = 3\n[[tenant]]\nname = \"a\"\napi_keys = [\"{}\"]\nmodels = [\"*\"]\nplugins = [\"*\"]\n[tenant.limits]\nmax_batch = 2",
            key_hash_text("k")
        );
        let t = &parse(&text).unwrap()[0];
        assert_eq!((t.limits.max_batch, t.limits.burst), (Some(2), Some(3)));
        assert_eq!(t.plugins, None);
        assert!(one("[tenant.limits]\nworkflow_max_images = 0").is_err());
        let w = &one("[tenant.limits]\nworkflow_timeout_ms = 500\nworkflow_max_output_bytes = 9").unwrap()[0].limits;
        assert_eq!(
            (
                w.workflow_timeout_ms,
                w.workflow_max_output_bytes,
                w.workflow_max_images
            ),
            (Some(500), Some(9), None)
        );
    }

    #[test]
    fn names_and_keys_are_unique() {
        let h = key_hash_text("k");
        let two = |n2: &str, k2: &str| {
            parse(&format!(
                "[[tenant]]\nname = \"a\"\napi_keys = [\"{h}\"]\nmodels = []\n[[tenant]]\nname = \"{n2}\"\napi_keys = [\"{k2}\"]\nmodels = []"
            ))
        };
        assert!(two("b", &key_hash_text("other")).is_ok());
        assert!(two("a", &key_hash_text("other")).is_err());
        assert!(two("b", &h).is_err());
        assert!(parse("").is_err());
    }
}
