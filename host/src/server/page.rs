//! The "try a model" page at `/`: plain HTML, CSS and JavaScript compiled into the binary, so
//! it works without network access and needs no build step.

use std::sync::Arc;

use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::Router;

use super::AppState;

const INDEX: &str = include_str!("../../assets/page/index.html");
const SCRIPT: &str = include_str!("../../assets/page/app.js");
const STYLE: &str = include_str!("../../assets/page/style.css");

/// Three path segments: the legacy `/{dataset}/{version}` route keeps every two-segment path.
/// Under `/static/`, which needs no API key when the server has tenants.
const SCRIPT_PATH: &str = "/static/page/app.js";
const STYLE_PATH: &str = "/static/page/style.css";

/// This server's own resources only; images are shown from `data:` and `blob:` URLs.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

async fn index() -> impl IntoResponse {
    ([(header::CONTENT_SECURITY_POLICY, CSP)], Html(INDEX))
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // Short: a new server version must not run against an old script for long.
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
}

/// `/` and its script and style sheet.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(index))
        .route(
            SCRIPT_PATH,
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(STYLE_PATH, get(|| async { asset("text/css; charset=utf-8", STYLE) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page loads its own files, by relative URL (so a path prefix works), and nothing else.
    #[test]
    fn page_uses_only_its_own_files() {
        assert!(INDEX.contains(&format!("src=\"{}\"", &SCRIPT_PATH[1..])));
        assert!(INDEX.contains(&format!("href=\"{}\"", &STYLE_PATH[1..])));
        for text in [INDEX, SCRIPT, STYLE] {
            assert!(
                !text.contains("http://") && !text.contains("//cdn"),
                "an absolute URL in the page"
            );
        }
    }
}
