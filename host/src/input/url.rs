//! Fetching images from http(s) URLs with a time limit and a size cap.

use futures_util::StreamExt;

use super::{InputError, InputLimits};

pub async fn fetch(http: &reqwest::Client, raw: &str, limits: &InputLimits) -> Result<Vec<u8>, InputError> {
    let url = reqwest::Url::parse(raw.trim()).map_err(|e| InputError::Url(format!("{raw:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(InputError::Url(format!(
            "scheme {:?} is not allowed (http and https only)",
            url.scheme()
        )));
    }
    let response = http
        .get(url.clone())
        .timeout(limits.url_timeout)
        .send()
        .await
        .map_err(|e| InputError::Url(format!("{url}: {e}")))?;
    if !response.status().is_success() {
        return Err(InputError::Url(format!("{url} answered {}", response.status())));
    }
    if response
        .content_length()
        .is_some_and(|n| n > limits.max_url_bytes as u64)
    {
        return Err(InputError::Url(format!(
            "{url} is larger than the {} byte limit",
            limits.max_url_bytes
        )));
    }
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| InputError::Url(format!("{url}: {e}")))?;
        if body.len() + chunk.len() > limits.max_url_bytes {
            return Err(InputError::Url(format!(
                "{url} is larger than the {} byte limit",
                limits.max_url_bytes
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
