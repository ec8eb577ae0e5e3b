//! The models this server can serve without a download: those in the models directory and the
//! verified ones in the cache. Read from the files alone (no ONNX Runtime), for
//! `inference models list` and `GET /models`.

use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::cache::{model_dirs, ModelCache};
use super::description::task_name;

/// Where a model's files are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location {
    /// The models directory (served first).
    ModelsDir,
    Cache,
}

/// One model on disk.
#[derive(Debug)]
pub struct OnDisk {
    /// `<project>/<version>`.
    pub id: String,
    pub location: Location,
    pub bytes: u64,
    /// Roboflow's task name when the files say which task (else the raw name they give).
    pub task: Option<String>,
    /// The models directory, or where the cached copy was downloaded from.
    pub from: String,
}

impl OnDisk {
    /// Roboflow's task name, when the files give one this server knows.
    pub fn known_task(&self) -> Option<&'static str> {
        self.task.as_deref().and_then(task_name)
    }
}

/// The models of the models directory (with `weights.onnx`), then the verified ones in the
/// cache, each sorted by id. A model in both places is listed twice: the models directory's
/// copy is the one served.
pub fn on_disk(models_dir: &Path, cache: Option<&ModelCache>) -> Vec<OnDisk> {
    let mut out = Vec::new();
    for (project, version, dir) in model_dirs(models_dir) {
        if dir.join("weights.onnx").is_file() {
            out.push(OnDisk {
                id: format!("{project}/{version}"),
                location: Location::ModelsDir,
                bytes: dir_size(&dir),
                task: task_of(&dir),
                from: models_dir.display().to_string(),
            });
        }
    }
    for model in cache.map(ModelCache::list).unwrap_or_default() {
        out.push(OnDisk {
            id: model.id.to_string(),
            location: Location::Cache,
            bytes: model.bytes,
            task: task_of(&model.dir),
            from: model.source,
        });
    }
    out
}

/// The bytes of a model directory's files (hidden files, such as `.verified`, left out).
pub fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// The task, if known: `model_type.json`, `environment.json`'s `TYPE`, or the ONNX metadata.
fn task_of(dir: &Path) -> Option<String> {
    let json = |name: &str, key: &str| -> Option<String> {
        let bytes = std::fs::read(dir.join(name)).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        v.get(key)?.as_str().map(str::to_string)
    };
    let raw = json("model_type.json", "project_task_type")
        .or_else(|| json("environment.json", "TYPE"))
        .or_else(|| onnx_metadata(&dir.join("weights.onnx"), "task").ok().flatten())?;
    Some(task_name(&raw).map(str::to_string).unwrap_or(raw))
}

fn read_varint(r: &mut impl Read) -> Result<Option<u64>> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let mut byte = [0u8];
        if r.read(&mut byte)? == 0 {
            if shift == 0 {
                return Ok(None);
            }
            bail!("truncated varint");
        }
        value |= u64::from(byte[0] & 0x7f) << shift;
        if byte[0] & 0x80 == 0 {
            return Ok(Some(value));
        }
    }
    bail!("varint too long")
}

/// Reads one `metadata_props` entry (ModelProto field 14) of an ONNX file without loading
/// the graph: top-level fields are skipped by length.
fn onnx_metadata(path: &Path, key: &str) -> Result<Option<String>> {
    let mut r = BufReader::new(std::fs::File::open(path)?);
    while let Some(tag) = read_varint(&mut r)? {
        let (field, wire) = (tag >> 3, tag & 7);
        match wire {
            0 => {
                read_varint(&mut r)?;
            }
            1 => {
                r.seek(SeekFrom::Current(8))?;
            }
            5 => {
                r.seek(SeekFrom::Current(4))?;
            }
            2 => {
                let len = read_varint(&mut r)?.context("truncated")?;
                if field == 14 && len < (1 << 20) {
                    let mut entry = vec![0u8; len as usize];
                    r.read_exact(&mut entry)?;
                    if let Some((k, v)) = string_pair(&entry) {
                        if k == key {
                            return Ok(Some(v));
                        }
                    }
                } else {
                    r.seek(SeekFrom::Current(len as i64))?;
                }
            }
            _ => bail!("not an ONNX file"),
        }
    }
    Ok(None)
}

/// A `StringStringEntryProto`: key = field 1, value = field 2.
fn string_pair(mut bytes: &[u8]) -> Option<(String, String)> {
    let (mut key, mut value) = (String::new(), String::new());
    while !bytes.is_empty() {
        let tag = read_varint(&mut bytes).ok()??;
        if tag & 7 != 2 {
            return None;
        }
        let len = read_varint(&mut bytes).ok()?? as usize;
        let text = String::from_utf8_lossy(bytes.get(..len)?).into_owned();
        bytes = &bytes[len..];
        match tag >> 3 {
            1 => key = text,
            2 => value = text,
            _ => {}
        }
    }
    Some((key, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ultralytics_task_metadata() {
        let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/models/shapes-detect.onnx");
        assert_eq!(onnx_metadata(&model, "task").unwrap().as_deref(), Some("detect"));
        assert_eq!(onnx_metadata(&model, "no-such-key").unwrap(), None);
    }

    #[test]
    fn lists_the_models_directory_with_tasks() {
        let root = std::env::temp_dir().join(format!("catalog-test-{}", uuid::Uuid::new_v4()));
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/models/shapes-detect.onnx");
        let model = root.join("shapes/3");
        std::fs::create_dir_all(&model).unwrap();
        std::fs::copy(&fixture, model.join("weights.onnx")).unwrap();
        // A directory without weights is not a model.
        std::fs::create_dir_all(root.join("empty/1")).unwrap();
        let found = on_disk(&root, None);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].id, "shapes/3");
        assert_eq!(found[0].location, Location::ModelsDir);
        assert_eq!(found[0].task.as_deref(), Some("object-detection"));
        assert_eq!(found[0].known_task(), Some("object-detection"));
        assert_eq!(found[0].bytes, std::fs::metadata(&fixture).unwrap().len());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
