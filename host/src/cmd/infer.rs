//! `inference infer`: a command-line client of a running server. Each image goes to the
//! legacy route `/<project>/<version>`, which answers with the model's own task; the JSON
//! goes to stdout and, with `--out`, the annotated picture to a file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use serde_json::Value;

use crate::cli::InferArgs;

/// File name endings read from a folder.
const IMAGE_EXTENSIONS: [&str; 9] = ["jpg", "jpeg", "png", "bmp", "webp", "gif", "tif", "tiff", "jfif"];

/// One image to send: where it came from and its bytes (read when its turn comes).
struct Input {
    name: String,
    source: Source,
}

enum Source {
    File(PathBuf),
    Url(String),
}

/// Why one image failed: `Fatal` ends the run (every other image would fail the same way).
enum Failure {
    Image(anyhow::Error),
    Fatal(anyhow::Error),
}

pub fn run(args: InferArgs) -> Result<ExitCode> {
    if args.model.split('/').count() != 2 || args.model.split('/').any(str::is_empty) {
        bail!("--model must be <project>/<version>, got {:?}", args.model);
    }
    let base = args.api_url.trim_end_matches('/').to_string();
    reqwest::Url::parse(&base).with_context(|| format!("--api-url {base:?} is not a URL"))?;
    let (inputs, folder) = inputs(&args.input)?;
    if folder {
        if let Some(dir) = &args.out {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create --out directory {}", dir.display()))?;
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(infer_all(&args, &base, inputs, folder))
}

/// The images named by `input`, and whether it was a folder.
fn inputs(input: &str) -> Result<(Vec<Input>, bool)> {
    if input.starts_with("http://") || input.starts_with("https://") {
        let url = reqwest::Url::parse(input).with_context(|| format!("{input:?} is not a URL"))?;
        let name = url
            .path_segments()
            .and_then(|mut s| s.next_back())
            .filter(|s| !s.is_empty())
            .unwrap_or("image")
            .to_string();
        let source = Source::Url(input.to_string());
        return Ok((vec![Input { name, source }], false));
    }
    let path = PathBuf::from(input);
    let meta = std::fs::metadata(&path).with_context(|| format!("cannot read {input}"))?;
    if !meta.is_dir() {
        let source = Source::File(path);
        return Ok((
            vec![Input {
                name: input.to_string(),
                source,
            }],
            false,
        ));
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&path)
        .with_context(|| format!("cannot list {input}"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && has_image_extension(p))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{input} holds no image files ({})", IMAGE_EXTENSIONS.join(", "));
    }
    let inputs = files
        .into_iter()
        .map(|p| Input {
            name: p.display().to_string(),
            source: Source::File(p),
        })
        .collect();
    Ok((inputs, true))
}

fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

async fn infer_all(args: &InferArgs, base: &str, inputs: Vec<Input>, folder: bool) -> Result<ExitCode> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(args.timeout))
        .build()
        .context("cannot build the HTTP client")?;
    let total = inputs.len();
    let started = Instant::now();
    let mut failed = 0usize;
    let mut stdout = std::io::stdout().lock();
    for (n, input) in inputs.into_iter().enumerate() {
        let out = picture_path(args.out.as_deref(), &input.name, folder);
        match infer_one(&http, args, base, &input, out.as_deref()).await {
            Ok(response) if folder => {
                let line = serde_json::json!({ "file": input.name, "response": response });
                writeln!(stdout, "{line}")?;
            }
            Ok(response) => writeln!(stdout, "{}", serde_json::to_string_pretty(&response)?)?,
            Err(Failure::Image(e)) => {
                failed += 1;
                eprintln!("error: {}: {e:#}", input.name);
            }
            Err(Failure::Fatal(e)) => return Err(e),
        }
        if folder {
            let rate = (n + 1) as f64 / started.elapsed().as_secs_f64().max(1e-3);
            eprintln!("[{}/{total}] {rate:.1} images/s {}", n + 1, input.name);
        }
    }
    if failed > 0 {
        eprintln!("{failed} of {total} images failed");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Where the annotated picture of `name` goes: `--out` itself for one image, else
/// `<out>/<stem>.jpg` for a JPEG and `<out>/<file name>.jpg` for the others, so `a.jpg` and
/// `a.png` in one folder do not overwrite each other's picture.
fn picture_path(out: Option<&Path>, name: &str, folder: bool) -> Option<PathBuf> {
    let out = out?;
    if !folder && !out.is_dir() {
        return Some(out.to_path_buf());
    }
    let path = Path::new(name);
    let is_jpeg = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("jpg") || e.eq_ignore_ascii_case("jpeg"));
    let base = if is_jpeg { path.file_stem() } else { path.file_name() };
    let base = base.and_then(|s| s.to_str()).unwrap_or("image");
    Some(out.join(format!("{base}.jpg")))
}

async fn infer_one(
    http: &reqwest::Client,
    args: &InferArgs,
    base: &str,
    input: &Input,
    out: Option<&Path>,
) -> Result<Value, Failure> {
    let bytes = match &input.source {
        Source::File(path) => {
            std::fs::read(path).map_err(|e| Failure::Image(anyhow!(e).context("cannot read the file")))?
        }
        Source::Url(url) => download(http, url).await.map_err(Failure::Image)?,
    };
    if let Err(e) = image::guess_format(&bytes) {
        return Err(Failure::Image(anyhow!(
            "not an image the server reads (JPEG, PNG, BMP, WebP, GIF, TIFF): {e}"
        )));
    }
    let mut query: Vec<(&str, String)> = vec![("format", if out.is_some() { "image_and_json" } else { "json" }.into())];
    if out.is_some() {
        query.push(("labels", args.labels.to_string()));
        query.push(("stroke", args.stroke.to_string()));
    }
    let options = [
        ("confidence", args.confidence.map(|v| v.to_string())),
        ("overlap", args.overlap.map(|v| v.to_string())),
        ("max_detections", args.max_detections.map(|v| v.to_string())),
        ("api_key", args.api_key.clone()),
    ];
    query.extend(options.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
    let url = format!("{base}/{}", args.model);
    let body = base64::engine::general_purpose::STANDARD.encode(&bytes);
    let response = http
        .post(&url)
        .query(&query)
        .header(reqwest::header::CONTENT_TYPE, "text/plain")
        .body(body)
        .send()
        .await
        .map_err(|e| {
            Failure::Fatal(anyhow!(
                "cannot reach the inference server at {base}: {} (is it running? `inference server start`)",
                root_cause(&e)
            ))
        })?;
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|e| Failure::Image(anyhow!("cannot read the server's answer: {e}")))?;
    if !status.is_success() {
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
            .unwrap_or(text);
        let error = anyhow!("the server answered {status}: {message}");
        // A missing model or a refused key fails every image alike.
        let fatal = matches!(status.as_u16(), 401 | 403 | 404 | 503);
        return Err(if fatal {
            Failure::Fatal(error.context(format!("model {}", args.model)))
        } else {
            Failure::Image(error)
        });
    }
    let mut json: Value =
        serde_json::from_str(&text).map_err(|e| Failure::Image(anyhow!("the server's answer is not JSON: {e}")))?;
    if let Some(path) = out {
        write_picture(&mut json, path).map_err(Failure::Image)?;
    }
    Ok(json)
}

/// Moves the response's base64 `visualization` into a JPEG file.
fn write_picture(json: &mut Value, path: &Path) -> Result<()> {
    let encoded = json
        .as_object_mut()
        .and_then(|o| o.remove("visualization"))
        .ok_or_else(|| anyhow!("the server sent no picture (is it older than `format=image_and_json`?)"))?;
    let jpeg = base64::engine::general_purpose::STANDARD
        .decode(encoded.as_str().unwrap_or_default())
        .context("the server's picture is not base64")?;
    std::fs::write(path, jpeg).with_context(|| format!("cannot write {}", path.display()))
}

async fn download(http: &reqwest::Client, url: &str) -> Result<Vec<u8>> {
    let response = http
        .get(url)
        .send()
        .await
        .map_err(|e| anyhow!("cannot download: {}", root_cause(&e)))?;
    if !response.status().is_success() {
        bail!("cannot download: HTTP {}", response.status());
    }
    Ok(response.bytes().await.context("cannot download")?.to_vec())
}

/// reqwest's own message is generic ("error sending request"): the cause says what happened.
fn root_cause(e: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pictures_go_where_out_says() {
        let out = Path::new("/tmp/does-not-exist/a.jpg");
        assert_eq!(picture_path(Some(out), "x/cat.png", false).unwrap(), out);
        assert_eq!(
            picture_path(Some(Path::new("pics")), "x/cat.png", true).unwrap(),
            Path::new("pics/cat.png.jpg")
        );
        assert_eq!(
            picture_path(Some(Path::new("pics")), "x/cat.JPEG", true).unwrap(),
            Path::new("pics/cat.jpg")
        );
        assert!(picture_path(None, "cat.png", true).is_none());
        assert!(has_image_extension(Path::new("a/B.JPG")) && !has_image_extension(Path::new("notes.txt")));
    }
}
