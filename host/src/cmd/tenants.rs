//! `inference tenants hash-key|check`: what operators need to write a tenants file.

use std::io::BufRead;

use anyhow::{bail, Context, Result};

use crate::cli::TenantsAction;

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
            println!("{}", crate::tenants::key_hash_text(&key));
        }
        TenantsAction::Check { file } => {
            for t in crate::tenants::config::read(&file)? {
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
