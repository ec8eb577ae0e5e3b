//! The API's own description: the OpenAPI document (`/openapi.json`), generated from the
//! handlers' and bodies' types, and its two viewers, Swagger UI (`/docs`) and ReDoc
//! (`/redoc`), both served from the binary so they work without network access.

use std::sync::Arc;

use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::Router;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::OpenApi as OpenApiDoc;
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::{Config, SwaggerUi};

use super::context::REQUEST_ID_HEADER;
use super::error::ErrorBody;
use super::infer::InferRequest;
use super::legacy::{LegacyFormat, LegacyImageType};
use super::schemas::InferErrors;
use super::{available, infer, legacy, manage, metrics, workflows, AppState};
use crate::input::request::{ImageDeclaration, ImageType};
use crate::tasks::{self, Task};

pub const OPENAPI_PATH: &str = "/openapi.json";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "inference",
        description = "A self-hosted computer-vision inference server that speaks the Roboflow \
Inference Server's HTTP API.\n\nErrors are JSON `{\"message\": \"…\"}`. Every response carries \
an `x-request-id` header: the request's own `x-request-id` when it sent one, else a fresh UUID; \
the server's request log line carries the same id.",
    ),
    // The task routes (`/infer/object_detection`, ...) are added by `TaskPaths`.
    paths(
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
        workflows::run,
        workflows::run_stored,
        workflows::validate,
        workflows::describe_interface,
        workflows::describe_blocks,
    ),
    // Schemas that only responses and parameters name (the derive collects the bodies' own).
    components(schemas(ErrorBody, InferRequest, ImageDeclaration, ImageType, LegacyImageType, LegacyFormat)),
    tags(
        (name = "inference", description = "Run a model on images (Roboflow's `/infer/<task>` API)"),
        (name = "legacy", description = "Roboflow's hosted-API route"),
        (name = "models", description = "Load and unload models"),
        (name = "service", description = "Identity, health and metrics"),
        (name = "workflows", description = "Roboflow Workflows: definitions of steps (models, crops, filters, pictures) run in one request"),
    ),
    modifiers(&TaskPaths, &TenantErrors, &RequestIdHeader),
)]
pub struct ApiDoc;

/// Documents each task's route from its types: the shared request with the task's options, one
/// response or a list; and, on the legacy route, whichever task's response and options.
struct TaskPaths;

impl Modify for TaskPaths {
    fn modify(&self, openapi: &mut OpenApiDoc) {
        use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
        use utoipa::openapi::request_body::RequestBodyBuilder;
        use utoipa::openapi::schema::{AllOfBuilder, AnyOfBuilder, ArrayBuilder, Ref};
        use utoipa::openapi::{ContentBuilder, RefOr, Required, ResponseBuilder, ResponsesBuilder, Schema};

        #[derive(Default)]
        struct Collect {
            operations: Vec<(String, utoipa::openapi::path::Operation)>,
            schemas: Vec<(String, RefOr<Schema>)>,
            responses: Vec<RefOr<Schema>>,
            /// The tasks' own options, as legacy query parameters (name, schema, description).
            options: Vec<(String, RefOr<Schema>, Option<String>)>,
        }
        impl tasks::Visitor for Collect {
            fn visit<T: Task>(&mut self) {
                let options = <T::Options as utoipa::ToSchema>::name().to_string();
                self.schemas
                    .push((options.clone(), <T::Options as utoipa::PartialSchema>::schema()));
                <T::Options as utoipa::ToSchema>::schemas(&mut self.schemas);
                T::response_schemas(&mut self.schemas);
                if let RefOr::T(Schema::Object(object)) = <T::Options as utoipa::PartialSchema>::schema() {
                    for (name, schema) in object.properties {
                        let description = match &schema {
                            RefOr::T(Schema::Object(o)) => o.description.clone(),
                            _ => None,
                        };
                        self.options.push((name, schema, description));
                    }
                }
                let response = <T::Response as utoipa::PartialSchema>::schema();
                self.responses.push(response.clone());
                let request: RefOr<Schema> = AllOfBuilder::new()
                    .item(Ref::from_schema_name(<InferRequest as utoipa::ToSchema>::name()))
                    .item(Ref::from_schema_name(options))
                    .into();
                let reply = AnyOfBuilder::new()
                    .item(response.clone())
                    .item(ArrayBuilder::new().items(response))
                    .description(Some(
                        "One response for one image, a list (in order) for a list of images.",
                    ));
                let responses = ResponsesBuilder::new()
                    .response(
                        "200",
                        ResponseBuilder::new()
                            .description("One response for one image, a list (in order) for a list of images.")
                            .content("application/json", ContentBuilder::new().schema(Some(reply)).build()),
                    )
                    .responses_from_into_responses::<InferErrors>()
                    .build();
                for (i, route) in T::ROUTES.iter().enumerate() {
                    let summary = match i {
                        0 => T::SUMMARY.to_string(),
                        _ => format!("{} (alias)", T::SUMMARY),
                    };
                    let description = match i {
                        0 => T::DESCRIPTION.to_string(),
                        _ => format!("The same as `/infer/{}`.", T::ROUTES[0]),
                    };
                    let operation = OperationBuilder::new()
                        .tag("inference")
                        .operation_id(Some(format!("infer_{route}")))
                        .summary(Some(summary))
                        .description(Some(description))
                        .request_body(Some(
                            RequestBodyBuilder::new()
                                .content(
                                    "application/json",
                                    ContentBuilder::new().schema(Some(request.clone())).build(),
                                )
                                .required(Some(Required::True))
                                .build(),
                        ))
                        .responses(responses.clone())
                        .build();
                    self.operations.push((format!("/infer/{route}"), operation));
                }
            }
        }
        let mut all = Collect::default();
        tasks::each(&mut all);
        let components = openapi.components.get_or_insert_with(Default::default);
        for (name, schema) in all.schemas {
            components.schemas.entry(name).or_insert(schema);
        }
        for (path, operation) in all.operations {
            openapi
                .paths
                .add_path_operation(path, vec![HttpMethod::Post], operation);
        }
        // The legacy route answers with the model's own task, and reads that task's options.
        let any_task = all
            .responses
            .into_iter()
            .fold(AnyOfBuilder::new(), AnyOfBuilder::item)
            .description(Some("The response of the model's own task."))
            .build();
        if let Some(item) = openapi.paths.paths.get_mut("/{dataset}/{version}") {
            for operation in [&mut item.get, &mut item.post].into_iter().flatten() {
                if let Some(RefOr::T(ok)) = operation.responses.responses.get_mut("200") {
                    if let Some(json) = ok.content.get_mut("application/json") {
                        json.schema = Some(Schema::AnyOf(any_task.clone()).into());
                    }
                }
                let parameters = operation.parameters.get_or_insert_with(Vec::new);
                for (name, schema, description) in &all.options {
                    if parameters.iter().any(|p| &p.name == name) {
                        continue;
                    }
                    let description = description
                        .clone()
                        .map(|d| format!("{d} (models of the task that reads it)"));
                    parameters.push(
                        ParameterBuilder::new()
                            .name(name)
                            .parameter_in(ParameterIn::Query)
                            .required(Required::False)
                            .schema(Some(schema.clone()))
                            .description(description)
                            .build(),
                    );
                }
            }
        }
    }
}

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
                if super::auth::is_public(&method, path) {
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
