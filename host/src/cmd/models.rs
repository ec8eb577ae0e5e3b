//! `inference models pull|list|rm`: the model cache from the command line. Needs no ONNX
//! Runtime: pulling downloads and verifies, listing reads files and ONNX metadata.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::{DirArgs, ModelsAction, SourceArgs};
use crate::models::cache::{default_cache_dir, ModelCache};
use crate::models::catalog::{self, Location};
use crate::models::fetch::Progress;
use crate::models::sources::ModelSources;
use crate::models::ModelId;

/// The cache directory the arguments name (or the default), and the model cache in it.
fn cache_of(dirs: &DirArgs) -> Result<(PathBuf, ModelCache)> {
    let dir = dirs
        .cache_dir
        .clone()
        .or_else(default_cache_dir)
        .ok_or_else(|| anyhow!("no cache directory: pass --cache-dir (or set HOME)"))?;
    let cache = ModelCache::new(&dir);
    Ok((dir, cache))
}

pub fn run(action: ModelsAction) -> Result<()> {
    // Warnings only: progress has stderr's last line.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match action {
        ModelsAction::Pull {
            id,
            api_key,
            dirs,
            sources,
        } => pull(&id, api_key.as_deref(), &dirs, &sources),
        ModelsAction::List { dirs } => list(&dirs),
        ModelsAction::Rm { id, dirs } => {
            let id = ModelId::parse(&id)?;
            let (_, cache) = cache_of(&dirs)?;
            if cache.remove(&id)? {
                println!("removed {id} from {}", cache.root().display());
                Ok(())
            } else {
                bail!("{id} is not in the cache ({})", cache.root().display())
            }
        }
    }
}

/// `3.0 MiB`: binary units, as the cache's budget flag also accepts them.
fn human(bytes: u64) -> String {
    bytesize::ByteSize(bytes).display().iec().to_string()
}

/// Progress of `models pull` on stderr: a bar with size, rate and ETA per file on a terminal,
/// else plain lines (logs, CI).
#[derive(Default)]
struct PullProgress {
    bar: parking_lot::Mutex<Option<(String, ProgressBar)>>,
}

impl PullProgress {
    fn show(&self, p: &Progress<'_>) {
        if !std::io::stderr().is_terminal() {
            return print_line(p);
        }
        let mut current = self.bar.lock();
        let key = format!("{} {}", p.model, p.file);
        if current.as_ref().is_none_or(|(k, _)| *k != key) {
            let bar = match p.total {
                Some(total) => ProgressBar::new(total),
                None => ProgressBar::no_length(),
            };
            let style = ProgressStyle::with_template(
                "{prefix} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}",
            )
            .expect("a valid template")
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(key.clone());
            *current = Some((key, bar));
        }
        if let Some((_, bar)) = current.as_ref() {
            bar.set_position(p.done);
            if p.finished {
                bar.finish();
            }
        }
    }
}

fn print_line(p: &Progress<'_>) {
    let secs = p.elapsed.as_secs_f64().max(1e-3);
    let rate = human((p.done as f64 / secs) as u64);
    let of = p.total.map(|t| format!(" / {}", human(t))).unwrap_or_default();
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "\r{} {}: {}{of} ({rate}/s)\x1b[K", p.model, p.file, human(p.done));
    if p.finished {
        let _ = writeln!(err);
    }
    let _ = err.flush();
}

fn pull(raw: &str, api_key: Option<&str>, dirs: &DirArgs, args: &SourceArgs) -> Result<()> {
    let id = ModelId::parse(raw)?;
    let (cache_dir, _) = cache_of(dirs)?;
    if args.offline {
        bail!("--offline: models pull needs the network");
    }
    let progress = Arc::new(PullProgress::default());
    let sources =
        ModelSources::new(&args.config(), Some(&cache_dir))?.with_progress(Arc::new(move |p| progress.show(p)));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let started = std::time::Instant::now();
    let dir = runtime.block_on(async {
        let cache = sources.cache().expect("a cache was given");
        if let Some(dir) = cache.lookup(&id).await? {
            eprintln!("{id} is already in the cache (verified)");
            return Ok(dir);
        }
        match sources.resolve(&id, api_key).await {
            Ok(Some(dir)) => Ok(dir),
            Ok(None) if api_key.is_none() => Err(anyhow!(
                "{id} is in no model store{}; pass --api-key to download it from Roboflow",
                if args.model_stores.is_empty() {
                    " (none given)"
                } else {
                    ""
                }
            )),
            Ok(None) => Err(anyhow!("{id} was found in no model source")),
            Err(e) => Err(anyhow!(e)),
        }
    })?;
    let bytes = catalog::dir_size(&dir);
    println!(
        "{id}: {} in {} ({:.1} s)",
        human(bytes),
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn list(dirs: &DirArgs) -> Result<()> {
    let cache = cache_of(dirs).ok().map(|(_, cache)| cache);
    let models = catalog::on_disk(&dirs.models_dir, cache.as_ref());
    let width = models.iter().map(|m| m.id.len()).max().unwrap_or(5).max(5);
    println!("{:width$}  {:5}  {:>10}  {:22}  FROM", "MODEL", "WHERE", "SIZE", "TASK");
    for m in models {
        let place = match m.location {
            Location::ModelsDir => "local",
            Location::Cache => "cache",
        };
        let task = m.task.as_deref().unwrap_or("-");
        println!(
            "{:width$}  {place:5}  {:>10}  {task:22}  {}",
            m.id,
            human(m.bytes),
            m.from
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human(12), "12 B");
        assert_eq!(human(3 << 20), "3.0 MiB");
        assert_eq!(human(1536 << 20), "1.5 GiB");
    }
}
