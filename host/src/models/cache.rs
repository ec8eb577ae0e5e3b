//! The model download cache: `<cache>/models/<project>/<version>/`.
//!
//! A download writes every file as `<name>.part` in the model's directory, hashing as it
//! goes; each part is checked (size, sha256) as it completes, and only when all are good are
//! they renamed into place and `.verified` (sizes and sha256 of every file) written last, by
//! rename. A directory without `.verified` is an interrupted download: it is never loaded and
//! is wiped by the next download. A cached model is re-hashed against `.verified` whenever it
//! is loaded; a copy that no longer matches is deleted. A lock file per model
//! (`<project>/.<version>.lock`, flock) keeps two processes (replicas sharing the cache, a server
//! and `models pull`) from downloading one model at once: the others wait, then find the verified
//! copy. A second lock file (`<project>/.<version>.use.lock`) is held shared by every process
//! using the model (from before its lookup until it is unloaded); eviction takes it exclusively
//! without waiting, so it never deletes a model that a replica on the same volume uses or is
//! downloading.

use std::collections::{BTreeMap, HashSet};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::id::ModelId;

pub const VERIFIED: &str = ".verified";
const PART: &str = ".part";

/// `$XDG_CACHE_HOME/inference`, else `~/.cache/inference` (as `serve` computes it).
pub fn default_cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("inference"))
}

/// A file name a manifest or `.verified` may use: one plain path segment.
pub fn safe_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && !name.ends_with(PART)
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    pub size: u64,
    pub sha256: String,
}

/// `.verified`: what was downloaded, from where, and each file's size and sha256.
#[derive(Debug, Serialize, Deserialize)]
pub struct Verified {
    pub source: String,
    pub files: BTreeMap<String, FileRecord>,
    /// Seconds since the epoch.
    #[serde(default)]
    pub downloaded_at: u64,
}

/// One model in the cache, for `models list`.
#[derive(Debug)]
pub struct CachedModel {
    pub id: ModelId,
    pub dir: PathBuf,
    pub bytes: u64,
    pub source: String,
}

#[derive(Clone)]
pub struct ModelCache {
    root: PathBuf,
}

impl ModelCache {
    /// The cache of models under `<cache_dir>/models`.
    pub fn new(cache_dir: &Path) -> Self {
        Self {
            root: cache_dir.join("models"),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn dir(&self, id: &ModelId) -> PathBuf {
        self.root.join(&id.project).join(&id.version)
    }

    /// The verified copy of `id`, re-hashed now. A copy that fails verification is deleted
    /// (and `Ok(None)` returned, so that it is fetched again); an interrupted download is
    /// ignored.
    pub async fn lookup(&self, id: &ModelId) -> io::Result<Option<PathBuf>> {
        let dir = self.dir(id);
        let name = id.to_string();
        tokio::task::spawn_blocking(move || -> io::Result<Option<PathBuf>> {
            let Some(record) = read_verified(&dir)? else {
                return Ok(None);
            };
            match verify_files(&dir, &record.files) {
                Ok(()) => {
                    mark_used(&dir);
                    Ok(Some(dir))
                }
                Err(why) => {
                    tracing::warn!(model = %name, dir = %dir.display(), %why,
                        "cached model failed verification: deleted");
                    remove_dir(&dir)?;
                    Ok(None)
                }
            }
        })
        .await
        .map_err(io::Error::other)?
    }

    fn lock_file(&self, id: &ModelId, suffix: &str) -> io::Result<std::fs::File> {
        let parent = self.root.join(&id.project);
        std::fs::create_dir_all(&parent)?;
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(parent.join(format!(".{}{suffix}", id.version)))
    }

    /// Takes the model's cross-process download lock (released on drop).
    pub async fn lock(&self, id: &ModelId) -> io::Result<CacheLock> {
        let file = self.lock_file(id, DOWNLOAD_LOCK)?;
        flock_blocking(file, libc::LOCK_EX).await
    }

    /// The model's download lock if nobody holds it now.
    pub fn try_lock(&self, id: &ModelId) -> io::Result<Option<CacheLock>> {
        try_flock(self.lock_file(id, DOWNLOAD_LOCK)?)
    }

    /// Marks `id` as used by this process until the guard is dropped (a shared lock, which
    /// any number of replicas hold together): no process evicts it meanwhile. Taken before the
    /// lookup, so a model is never evicted between being found and being loaded.
    pub async fn in_use(&self, id: &ModelId) -> io::Result<CacheLock> {
        let file = self.lock_file(id, USE_LOCK)?;
        flock_blocking(file, libc::LOCK_SH).await
    }

    /// The right to delete `id`'s files, if no process uses it now.
    fn try_unused(&self, id: &ModelId) -> io::Result<Option<CacheLock>> {
        try_flock(self.lock_file(id, USE_LOCK)?)
    }

    /// Records a use of `id` now (the modification time of its `.verified`): eviction order.
    pub fn touch(&self, id: &ModelId) {
        mark_used(&self.dir(id));
    }

    /// Total size of the verified models.
    pub fn total_bytes(&self) -> u64 {
        self.list().iter().map(|m| m.bytes).sum()
    }

    /// Deletes least recently used models until the cache holds at most `max` bytes, skipping
    /// `keep` and models any process (a replica on the same volume) is downloading or using.
    /// Returns the deleted ids and sizes.
    pub fn evict(&self, max: u64, keep: &HashSet<ModelId>) -> io::Result<Vec<(ModelId, u64)>> {
        let mut models = self.list();
        let mut total: u64 = models.iter().map(|m| m.bytes).sum();
        models.sort_by_key(|m| last_used(&m.dir));
        let mut evicted = Vec::new();
        for model in models {
            if total <= max {
                break;
            }
            if keep.contains(&model.id) {
                continue;
            }
            let Some(_lock) = self.try_lock(&model.id)? else {
                continue;
            };
            let Some(_unused) = self.try_unused(&model.id)? else {
                continue;
            };
            remove_dir(&model.dir)?;
            total -= model.bytes;
            evicted.push((model.id, model.bytes));
        }
        if total > max {
            tracing::warn!(
                bytes = total,
                max,
                "model cache over its budget: the rest is pinned or in use"
            );
        }
        Ok(evicted)
    }

    /// Starts a download of `id`: wipes whatever is in its directory (an old copy, `.part`
    /// files of an interrupted download) and returns the staging area.
    pub fn begin(&self, id: &ModelId) -> io::Result<Staging> {
        let dir = self.dir(id);
        remove_dir(&dir)?;
        std::fs::create_dir_all(&dir)?;
        Ok(Staging {
            dir,
            parts: BTreeMap::new(),
            committed: false,
        })
    }

    /// Deletes `id` from the cache. Returns whether there was anything to delete.
    pub fn remove(&self, id: &ModelId) -> io::Result<bool> {
        let dir = self.dir(id);
        let existed = dir.exists();
        remove_dir(&dir)?;
        // Leave the project directory if it is now empty (but for lock files).
        if let Some(parent) = dir.parent() {
            let only_locks = std::fs::read_dir(parent)
                .map(|entries| {
                    entries
                        .flatten()
                        .all(|e| e.file_name().to_string_lossy().ends_with(".lock"))
                })
                .unwrap_or(false);
            if only_locks {
                let _ = std::fs::remove_dir_all(parent);
            }
        }
        Ok(existed)
    }

    /// The verified models in the cache (not re-hashed).
    pub fn list(&self) -> Vec<CachedModel> {
        let mut out = Vec::new();
        for (project, version, dir) in model_dirs(&self.root) {
            let Ok(id) = ModelId::parse(&format!("{project}/{version}")) else {
                continue;
            };
            if let Ok(Some(record)) = read_verified(&dir) {
                out.push(CachedModel {
                    id,
                    dir,
                    bytes: record.files.values().map(|f| f.size).sum(),
                    source: record.source,
                });
            }
        }
        out
    }
}

/// Sets the modification time of `dir/.verified` to now (a missing record is left alone).
fn mark_used(dir: &Path) {
    if let Ok(file) = std::fs::File::options().append(true).open(dir.join(VERIFIED)) {
        let _ = file.set_modified(std::time::SystemTime::now());
    }
}

/// When a cached model was last used (see `ModelCache::touch`).
fn last_used(dir: &Path) -> std::time::SystemTime {
    std::fs::metadata(dir.join(VERIFIED))
        .and_then(|m| m.modified())
        .unwrap_or(std::time::UNIX_EPOCH)
}

/// `<root>/<project>/<version>` directories (names starting with '.' are skipped).
pub fn model_dirs(root: &Path) -> Vec<(String, String, PathBuf)> {
    let mut out = Vec::new();
    let Ok(projects) = std::fs::read_dir(root) else {
        return out;
    };
    for project in projects.flatten() {
        let pname = project.file_name().to_string_lossy().into_owned();
        if pname.starts_with('.') || !project.path().is_dir() {
            continue;
        }
        let Ok(versions) = std::fs::read_dir(project.path()) else {
            continue;
        };
        for version in versions.flatten() {
            let vname = version.file_name().to_string_lossy().into_owned();
            if vname.starts_with('.') || !version.path().is_dir() {
                continue;
            }
            out.push((pname.clone(), vname, version.path()));
        }
    }
    out.sort();
    out
}

const DOWNLOAD_LOCK: &str = ".lock";
const USE_LOCK: &str = ".use.lock";

/// Holds one of a model's locks (download: exclusive; use: shared), released on drop.
pub struct CacheLock(#[allow(dead_code)] std::fs::File);

/// Waits for `flock(file, how)` off the async threads.
async fn flock_blocking(file: std::fs::File, how: libc::c_int) -> io::Result<CacheLock> {
    tokio::task::spawn_blocking(move || {
        // SAFETY: flock on a file descriptor we own; the lock goes with the file.
        if unsafe { libc::flock(file.as_raw_fd(), how) } == 0 {
            Ok(CacheLock(file))
        } else {
            Err(io::Error::last_os_error())
        }
    })
    .await
    .map_err(io::Error::other)?
}

/// An exclusive lock on `file` if nobody holds any lock on it now.
fn try_flock(file: std::fs::File) -> io::Result<Option<CacheLock>> {
    // SAFETY: as in `flock_blocking`; LOCK_NB returns at once.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        Ok(Some(CacheLock(file)))
    } else {
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::WouldBlock => Ok(None),
            _ => Err(e),
        }
    }
}

/// A download in progress. Dropped without `commit`, it deletes the model's directory.
pub struct Staging {
    dir: PathBuf,
    parts: BTreeMap<String, FileRecord>,
    committed: bool,
}

impl Staging {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Opens `<name>.part` for writing.
    pub async fn create(&self, name: &str) -> io::Result<PartFile> {
        debug_assert!(safe_file_name(name));
        let path = self.dir.join(format!("{name}{PART}"));
        let file = tokio::fs::File::create(&path).await?;
        Ok(PartFile {
            file: tokio::io::BufWriter::with_capacity(1 << 20, file),
            hasher: Sha256::new(),
            size: 0,
        })
    }

    /// Records a finished part (checked by the caller).
    pub fn add(&mut self, name: &str, record: FileRecord) {
        self.parts.insert(name.to_string(), record);
    }

    /// Writes a small file (metadata we derive) as a part.
    pub async fn write_small(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let mut part = self.create(name).await?;
        part.write(bytes).await?;
        let record = part.finish().await?;
        self.add(name, record);
        Ok(())
    }

    /// Renames every part into place, then writes `.verified`: from here on the model is cached.
    pub fn commit(mut self, source: &str) -> io::Result<PathBuf> {
        for name in self.parts.keys() {
            std::fs::rename(self.dir.join(format!("{name}{PART}")), self.dir.join(name))?;
        }
        let record = Verified {
            source: source.to_string(),
            files: std::mem::take(&mut self.parts),
            downloaded_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        let tmp = self.dir.join(format!("{VERIFIED}{PART}"));
        {
            let mut file = std::fs::File::create(&tmp)?;
            serde_json::to_writer_pretty(&mut file, &record)?;
            file.sync_all()?;
        }
        std::fs::rename(&tmp, self.dir.join(VERIFIED))?;
        if let Ok(dir) = std::fs::File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        self.committed = true;
        Ok(self.dir.clone())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = remove_dir(&self.dir);
        }
    }
}

/// A file being downloaded: `<name>.part`, hashed as written.
pub struct PartFile {
    file: tokio::io::BufWriter<tokio::fs::File>,
    hasher: Sha256,
    size: u64,
}

impl PartFile {
    pub fn size(&self) -> u64 {
        self.size
    }

    pub async fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.hasher.update(chunk);
        self.size += chunk.len() as u64;
        self.file.write_all(chunk).await
    }

    /// Flushes to disk; returns the size and sha256 written.
    pub async fn finish(mut self) -> io::Result<FileRecord> {
        self.file.flush().await?;
        self.file.get_mut().sync_all().await?;
        Ok(FileRecord {
            size: self.size,
            sha256: hex(&self.hasher.finalize()),
        })
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn read_verified(dir: &Path) -> io::Result<Option<Verified>> {
    match std::fs::read(dir.join(VERIFIED)) {
        Ok(bytes) => match serde_json::from_slice::<Verified>(&bytes) {
            Ok(v) => Ok(Some(v)),
            // An unreadable record: treat the copy as unverified (it is wiped on the next fetch).
            Err(_) => Ok(None),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Checks every file's size and sha256.
fn verify_files(dir: &Path, files: &BTreeMap<String, FileRecord>) -> Result<(), String> {
    if !files.contains_key("weights.onnx") {
        return Err("the record lists no weights.onnx".into());
    }
    for (name, expected) in files {
        if !safe_file_name(name) {
            return Err(format!("the record lists an odd file name {name:?}"));
        }
        let path = dir.join(name);
        let actual = sha256_file(&path).map_err(|e| format!("{name}: {e}"))?;
        if actual.size != expected.size {
            return Err(format!("{name}: {} bytes, {} recorded", actual.size, expected.size));
        }
        if !actual.sha256.eq_ignore_ascii_case(&expected.sha256) {
            return Err(format!(
                "{name}: sha256 {}, {} recorded",
                actual.sha256, expected.sha256
            ));
        }
    }
    Ok(())
}

pub fn sha256_file(path: &Path) -> io::Result<FileRecord> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok(FileRecord {
        size,
        sha256: hex(&hasher.finalize()),
    })
}

fn remove_dir(dir: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> ModelId {
        ModelId::parse("proj/1").unwrap()
    }

    #[tokio::test]
    async fn commit_verify_and_tamper() {
        let tmp = std::env::temp_dir().join(format!("cache-test-{}", uuid::Uuid::new_v4()));
        let cache = ModelCache::new(&tmp);
        assert!(cache.lookup(&id()).await.unwrap().is_none());

        let mut staging = cache.begin(&id()).unwrap();
        staging.write_small("weights.onnx", b"model bytes").await.unwrap();
        staging.write_small("class_names.txt", b"a\nb\n").await.unwrap();
        // Before commit: only parts, never a hit.
        assert!(cache.dir(&id()).join("weights.onnx.part").is_file());
        assert!(cache.lookup(&id()).await.unwrap().is_none());
        let dir = staging.commit("test").unwrap();
        assert!(dir.join("weights.onnx").is_file() && !dir.join("weights.onnx.part").exists());
        assert_eq!(cache.lookup(&id()).await.unwrap(), Some(dir.clone()));
        assert_eq!(cache.list().len(), 1);

        // Tampering: the copy is deleted on the next lookup.
        std::fs::write(dir.join("weights.onnx"), b"model bytez").unwrap();
        assert!(cache.lookup(&id()).await.unwrap().is_none());
        assert!(!dir.exists());

        // A dropped (failed) download leaves nothing.
        let mut staging = cache.begin(&id()).unwrap();
        staging.write_small("weights.onnx", b"x").await.unwrap();
        drop(staging);
        assert!(!cache.dir(&id()).exists());
        let _lock = cache.lock(&id()).await.unwrap();
        assert!(!cache.remove(&id()).unwrap());
        let _ = std::fs::remove_dir_all(&tmp);
    }

    #[tokio::test]
    async fn eviction_skips_models_in_use_by_any_process() {
        let tmp = std::env::temp_dir().join(format!("cache-test-{}", uuid::Uuid::new_v4()));
        let cache = ModelCache::new(&tmp);
        let mut staging = cache.begin(&id()).unwrap();
        staging.write_small("weights.onnx", b"model bytes").await.unwrap();
        staging.commit("test").unwrap();
        // flock belongs to the open file: a lock taken through another open of the file
        // conflicts exactly as another process's would.
        let used = cache.in_use(&id()).await.unwrap();
        let also = cache.in_use(&id()).await.unwrap();
        assert!(cache.evict(0, &HashSet::new()).unwrap().is_empty());
        drop(used);
        assert!(
            cache.evict(0, &HashSet::new()).unwrap().is_empty(),
            "still used by the other"
        );
        drop(also);
        // Being downloaded (the download lock held) also keeps it.
        let downloading = cache.lock(&id()).await.unwrap();
        assert!(cache.evict(0, &HashSet::new()).unwrap().is_empty());
        drop(downloading);
        assert_eq!(cache.evict(0, &HashSet::new()).unwrap().len(), 1);
        assert!(cache.list().is_empty());
        let _ = std::fs::remove_dir_all(&tmp);
    }

    #[test]
    fn file_names() {
        assert!(safe_file_name("weights.onnx"));
        assert!(safe_file_name("environment.json"));
        for bad in ["", ".verified", "../x", "a/b", "x.part", "-a", "a b"] {
            assert!(!safe_file_name(bad), "{bad:?}");
        }
    }
}
