//! The API's own description: the OpenAPI document (`/openapi.json`), generated from the
//! handlers' and bodies' types, and its two viewers, Swagger UI (`/docs`) and ReDoc
//! (`/redoc`), both served from the binary so they work without network access.

use std::sync::Arc;

use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::Router;
use serde::Serialize;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::OpenApi as OpenApiDoc;
use utoipa::{IntoResponses, Modify, OpenApi, ToSchema};
use utoipa_swagger_ui::{Config, SwaggerUi};

use super::error::ErrorBody;
use super::responses::{ClassificationResponse, DetectionsResponse, MultiLabelClassificationResponse};
use super::{available, infer, legacy, manage, metrics, AppState};

pub const OPENAPI_PATH: &str = "/openapi.json";
pub const REQUEST_ID_HEADER: &str = "x-request-id";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "inference",
        description = "A self-hosted computer-vision inference server that speaks the Roboflow \
Inference Server's HTTP API.\n\nErrors are JSON `{\"message\": \"…\"}`. Every response carries \
an `x-request-id` header: the request's own `x-request-id` when it sent one, else a fresh UUID; \
the server's request log line carries the same id.",
    ),
    paths(
        infer::object_detection,
        infer::instance_segmentation,
        infer::segmentation,
        infer::classification,
        infer::keypoints_detection,
        legacy::legacy_get,
        legacy::legacy_post,
        manage::registry,
        available::models,
        manage::add,
        manage::remove,
        manage::clear,
        manage::info,
        manage::healthz,
        manage::readiness,
        metrics::render,
        infer::custom,
        manage::plugins,
    ),
    // Schemas that only responses and parameters name (the derive collects the bodies' own).
    components(schemas(ErrorBody, LegacyImageType, LegacyFormat)),
    tags(
        (name = "inference", description = "Run a model on images (Roboflow's `/infer/<task>` API)"),
        (name = "legacy", description = "Roboflow's hosted-API route"),
        (name = "models", description = "Load and unload models"),
        (name = "service", description = "Identity, health and metrics"),
    ),
    modifiers(&TenantErrors, &RequestIdHeader),
)]
pub struct ApiDoc;

/// Declares what the tenants gate (`--tenants`) may answer on every route it guards: 401 without
/// a valid key, 429 over the tenant's quota (and 403 for admin-only routes, 413 over its body cap).
struct TenantErrors;

impl Modify for TenantErrors {
    fn modify(&self, openapi: &mut OpenApiDoc) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let error = |description: &str, retry_after: bool| {
            let mut response = ResponseBuilder::new().description(description).content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            );
            if retry_after {
                response = response.header(
                    "Retry-After",
                    HeaderBuilder::new()
                        .schema(ObjectBuilder::new().schema_type(Type::String))
                        .description(Some("Seconds to wait"))
                        .build(),
                );
            }
            response.build()
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            let operations = [
                (axum::http::Method::GET, &mut item.get),
                (axum::http::Method::POST, &mut item.post),
            ];
            for (method, operation) in operations {
                let Some(operation) = operation else { continue };
                if crate::tenants::middleware::is_public(&method, path) {
                    continue;
                }
                let responses = &mut operation.responses.responses;
                let statuses = [
                    (
                        "401",
                        "With --tenants: no valid API key (api_key or Authorization: Bearer).",
                        false,
                    ),
                    (
                        "413",
                        "The body is larger than the server's (or the tenant's) limit.",
                        false,
                    ),
                    (
                        "429",
                        "With --tenants: over the tenant's request rate or concurrency cap.",
                        true,
                    ),
                ];
                for (status, description, retry_after) in statuses {
                    responses
                        .entry(status.to_string())
                        .or_insert_with(|| error(description, retry_after).into());
                }
                if path == "/metrics" {
                    responses.entry("403".to_string()).or_insert_with(|| {
                        error("With --tenants: only an admin tenant may read metrics.", false).into()
                    });
                }
            }
        }
    }
}

/// Declares the `x-request-id` header on every response of every operation.
struct RequestIdHeader;

impl Modify for RequestIdHeader {
    fn modify(&self, openapi: &mut OpenApiDoc) {
        let header = HeaderBuilder::new()
            .schema(ObjectBuilder::new().schema_type(Type::String))
            .description(Some(
                "The request's `x-request-id` if it sent one, else a UUID; also in the server's log.",
            ))
            .build();
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.options,
                &mut item.head,
                &mut item.patch,
                &mut item.trace,
            ];
            for operation in operations.into_iter().flatten() {
                for response in operation.responses.responses.values_mut() {
                    if let utoipa::openapi::RefOr::T(response) = response {
                        response.headers.insert(REQUEST_ID_HEADER.to_string(), header.clone());
                    }
                }
            }
        }
    }
}

// Schema-only types: the wire values of string fields, and the shapes of bodies that the
// handlers read as bytes. They describe what the handlers accept; serde does not use them.

/// How an image is given.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ImageType {
    Base64,
    Url,
    Numpy,
}

/// How the legacy route's body image is encoded.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LegacyImageType {
    Base64,
    Numpy,
}

/// The legacy route's answer: JSON, the annotated picture (JPEG), or JSON carrying the
/// picture as base64 `visualization`.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LegacyFormat {
    Json,
    Image,
    ImageAndJson,
}

/// A JPEG picture.
#[allow(dead_code)]
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct Jpeg(Vec<u8>);

/// How instance masks are computed.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MaskDecodeMode {
    Accurate,
    Fast,
    Tradeoff,
}

/// How instance masks are returned.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MaskFormat {
    Polygon,
    Rle,
}

/// A multipart upload for the legacy route.
#[allow(dead_code)]
#[derive(ToSchema)]
pub struct LegacyUpload {
    /// The image file (a numpy pickle or `.npy` with `image_type=numpy`).
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

/// The raw image file (or numpy pickle with `image_type=numpy`).
#[allow(dead_code)]
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct RawImage(Vec<u8>);

/// Detections (object detection, instance segmentation, keypoints): one response for one
/// image, a list for a list.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum DetectionsReply {
    One(DetectionsResponse),
    Many(Vec<DetectionsResponse>),
}

/// One image's classification: single-label or multi-label, by the model.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum ClassificationResult {
    SingleLabel(ClassificationResponse),
    MultiLabel(MultiLabelClassificationResponse),
}

/// Classification: one response for one image, a list for a list.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum ClassificationReply {
    One(ClassificationResult),
    Many(Vec<ClassificationResult>),
}

/// The errors of the `/infer/<task>` routes.
#[allow(dead_code)]
#[derive(IntoResponses)]
pub enum InferErrors {
    /// A bad image (undecodable, too large, unfetchable URL), bad parameters (e.g.
    /// `visualization_stroke_width` out of range), a malformed model id, too many images, or a model of another task (the message names its route).
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// Roboflow refused the `api_key` while downloading the model.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// Roboflow refused access to the model while downloading it.
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// No such model (here, nor at Roboflow with the request's `api_key`).
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// The body is larger than the server's limit.
    #[response(status = 413)]
    PayloadTooLarge(ErrorBody),
    /// The body is not the expected JSON (or `model_id` is missing).
    #[response(status = 422)]
    Unprocessable(ErrorBody),
    /// The plugin trapped or failed, or the model cannot be loaded; the message says why.
    #[response(status = 500)]
    Internal(ErrorBody),
    /// A model download was malformed or failed verification.
    #[response(status = 502)]
    BadGateway(ErrorBody),
    /// No plugin is installed for the model's task, the model's source cannot be reached
    /// (or the server is offline), or the server is shutting down.
    #[response(status = 503, headers(("Retry-After" = String, description = "Seconds")))]
    Unavailable(ErrorBody),
    /// The plugin exceeded its time limit.
    #[response(status = 504)]
    Timeout(ErrorBody),
}

/// The errors of the legacy route.
#[allow(dead_code)]
#[derive(IntoResponses)]
pub enum LegacyErrors {
    /// No image, a bad image, bad query parameters (e.g. `stroke` out of range) or a malformed model id.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// Roboflow refused the `api_key` while downloading the model.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// Roboflow refused access to the model while downloading it.
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// No such model (here, nor at Roboflow with the request's `api_key`).
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// The body is larger than the server's limit.
    #[response(status = 413)]
    PayloadTooLarge(ErrorBody),
    /// `confidence` is neither a number nor `best`/`default`.
    #[response(status = 422)]
    Unprocessable(ErrorBody),
    /// The plugin trapped or failed, or the model cannot be loaded; the message says why.
    #[response(status = 500)]
    Internal(ErrorBody),
    /// A model download was malformed or failed verification.
    #[response(status = 502)]
    BadGateway(ErrorBody),
    /// No plugin is installed for the model's task, the model's source cannot be reached
    /// (or the server is offline), or the server is shutting down.
    #[response(status = 503, headers(("Retry-After" = String, description = "Seconds")))]
    Unavailable(ErrorBody),
    /// The plugin exceeded its time limit.
    #[response(status = 504)]
    Timeout(ErrorBody),
}

/// The errors of `/model/add`.
#[allow(dead_code)]
#[derive(IntoResponses)]
pub enum AddModelErrors {
    /// A malformed model id.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// Roboflow refused the `api_key` while downloading the model.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// Roboflow refused access to the model while downloading it.
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// No such model (here, nor at Roboflow with the request's `api_key`).
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// The body is larger than the server's limit.
    #[response(status = 413)]
    PayloadTooLarge(ErrorBody),
    /// The body is not the expected JSON.
    #[response(status = 422)]
    Unprocessable(ErrorBody),
    /// The model's files cannot be loaded; the message says why.
    #[response(status = 500)]
    Internal(ErrorBody),
    /// A model download was malformed or failed verification.
    #[response(status = 502)]
    BadGateway(ErrorBody),
    /// The model's source cannot be reached (or the server is offline).
    #[response(status = 503, headers(("Retry-After" = String, description = "Seconds")))]
    Unavailable(ErrorBody),
}

/// The errors of `/model/remove`.
#[allow(dead_code)]
#[derive(IntoResponses)]
pub enum RemoveModelErrors {
    /// A malformed model id.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// The body is larger than the server's limit.
    #[response(status = 413)]
    PayloadTooLarge(ErrorBody),
    /// The body is not the expected JSON.
    #[response(status = 422)]
    Unprocessable(ErrorBody),
}

const REDOC_JS: &[u8] = include_bytes!("../../assets/redoc.standalone.js");

/// Relative URLs, so the page also works behind a reverse proxy's path prefix.
const REDOC_PAGE: &str = r#"<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>inference API</title>
  <style>body { margin: 0; padding: 0; }</style>
</head>
<body>
  <redoc spec-url="openapi.json"></redoc>
  <script src="redoc/redoc.standalone.js"></script>
</body>
</html>
"#;

/// Only this server's own resources: the bundle's "powered by" logo would come from a CDN.
const REDOC_CSP: &str = "default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval' blob:; \
style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; font-src 'self' data:; \
worker-src 'self' blob:; connect-src 'self'";

async fn redoc_page() -> impl IntoResponse {
    ([(header::CONTENT_SECURITY_POLICY, REDOC_CSP)], Html(REDOC_PAGE))
}

async fn redoc_js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        REDOC_JS,
    )
}

/// `/openapi.json`, `/docs` (Swagger UI) and `/redoc`.
pub fn routes() -> Router<Arc<AppState>> {
    // Swagger UI's default validator badge would send the document to swagger.io.
    let config = Config::new([OPENAPI_PATH]).validator_url("none");
    let swagger = SwaggerUi::new("/docs")
        .url(OPENAPI_PATH, ApiDoc::openapi())
        .config(config);
    Router::new()
        .merge(swagger)
        .route("/redoc", get(redoc_page))
        .route("/redoc/redoc.standalone.js", get(redoc_js))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented() {
        let doc = ApiDoc::openapi();
        for path in [
            "/infer/object_detection",
            "/infer/instance_segmentation",
            "/infer/segmentation",
            "/infer/classification",
            "/infer/keypoints_detection",
            "/{dataset}/{version}",
            "/model/registry",
            "/models",
            "/model/add",
            "/model/remove",
            "/model/clear",
            "/info",
            "/healthz",
            "/readiness",
            "/metrics",
        ] {
            assert!(
                doc.paths.paths.contains_key(path),
                "{path} is not in the OpenAPI document"
            );
        }
    }

    /// Every `$ref` names a schema of the document.
    #[test]
    fn references_resolve() {
        fn walk(value: &serde_json::Value, schemas: &serde_json::Map<String, serde_json::Value>) {
            match value {
                serde_json::Value::Object(map) => {
                    if let Some(serde_json::Value::String(target)) = map.get("$ref") {
                        let name = target.strip_prefix("#/components/schemas/").unwrap_or(target);
                        assert!(schemas.contains_key(name), "dangling reference {target}");
                    }
                    map.values().for_each(|v| walk(v, schemas));
                }
                serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, schemas)),
                _ => {}
            }
        }
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let schemas = doc["components"]["schemas"].as_object().unwrap().clone();
        walk(&doc, &schemas);
    }

    #[test]
    fn redoc_page_uses_no_cdn() {
        assert!(!REDOC_PAGE.contains("http"));
        assert!(REDOC_JS.starts_with(b"/*! For license information"));
    }
}
