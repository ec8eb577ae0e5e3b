//! `inference benchmark`: measuring the raw native pipeline and a running server.

use anyhow::Result;

#[derive(Debug, clap::Subcommand)]
pub enum BenchAction {}

pub fn run(action: BenchAction) -> Result<()> {
    match action {}
}
