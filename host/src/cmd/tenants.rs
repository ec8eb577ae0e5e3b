//! `inference tenants hash-key|check`: what operators need to write a tenants file.

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum TenantsAction {
    /// Print the `sha256:<hex>` entry for an API key (read from stdin when not given, so the
    /// key stays out of the shell history).
    HashKey { key: Option<String> },
    /// Validate a tenants file and summarise it.
    Check { file: PathBuf },
}

pub fn run(action: TenantsAction) -> Result<()> {
    match action {
        TenantsAction::HashKey { key } => {
            let key = match key {
                Some(k) => k,
                None => {
                    let mut line = String::new();
                    std::io::stdin()
                        .lock()
                        .read_line(&mut line)
                        .context("cannot read the key from stdin")?;
                    line.trim_end_matches(['\r', '\n']).to_string()
                }
            };
            if key.is_empty() {
                bail!("empty key");
            }
            println!("{}", super::key_hash_text(&key));
        }
        TenantsAction::Check { file } => {
            for t in super::config::read(&file)? {
                println!(
                    "{}: {} key(s), models {:?}, plugins {}, admin {}",
                    t.name,
                    t.key_hashes.len(),
                    t.models,
                    t.plugins.map_or("all".to_string(), |p| format!("{p:?}")),
                    t.admin
                );
            }
        }
    }
    Ok(())
}
