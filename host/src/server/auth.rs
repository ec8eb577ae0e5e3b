//! The gate in front of every non-public route when tenants are configured: find the key,
//! find its tenant (401 if none), apply the tenant's body cap (413) and quota (429), then
//! handle the request with the tenant in its extensions (for `context::Ctx`).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::context::bearer;
use super::error::ApiError;
use crate::metrics::RequestLabels;
use crate::tenants::{Admission, Gate, Refusal};

/// Routes anyone may call: liveness, readiness, identity, documentation and the try-it page
/// (whose API calls carry the user's key).
pub(crate) fn is_public(method: &Method, path: &str) -> bool {
    // CORS preflights carry no credentials; the CORS layer answers them.
    method == Method::OPTIONS
        || (method == Method::GET || method == Method::HEAD)
            && (matches!(
                path,
                "/" | "/healthz" | "/readiness" | "/info" | "/openapi.json" | "/redoc"
            ) || path.starts_with("/docs")
                || path.starts_with("/static/"))
}

/// Routes only an admin tenant may call.
fn is_admin_only(path: &str) -> bool {
    path == "/metrics"
}

fn query_key(query: Option<&str>) -> Option<String> {
    #[derive(Deserialize)]
    struct KeyQuery {
        api_key: Option<String>,
    }
    let q: KeyQuery = serde_urlencoded::from_str(query?).ok()?;
    q.api_key.filter(|k| !k.is_empty())
}

fn body_key(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct KeyBody {
        api_key: Option<String>,
    }
    // Only a JSON object can carry one; anything else is the handler's to reject.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    let b: KeyBody = serde_json::from_slice(body).ok()?;
    b.api_key.filter(|k| !k.is_empty())
}

pub async fn authenticate(State(gate): State<Arc<Gate>>, request: Request, next: Next) -> Response {
    if is_public(request.method(), request.uri().path()) {
        return next.run(request).await;
    }
    match admit(&gate, request).await {
        Ok((admission, request)) => {
            let response = next.run(request).await;
            drop(admission);
            response
        }
        Err(e) => e.into_response(),
    }
}

/// The request, with its tenant, admitted; the admission is held while it is handled.
async fn admit(gate: &Gate, request: Request) -> Result<(Admission, Request), ApiError> {
    let (parts, body) = request.into_parts();
    let tenants = gate.tenants();
    let declared = super::declared_length(&parts.headers).and_then(|n| usize::try_from(n).ok());
    let unauthorized = || {
        ApiError::Unauthorized(
            "A valid API key is required: pass api_key (query or JSON body) or Authorization: Bearer <key>".into(),
        )
    };
    // A key in the header or query is checked before the body is read, so a request with a
    // wrong one costs no body, and a known tenant's body is read only up to its own cap.
    let early = match bearer(&parts.headers).or_else(|| query_key(parts.uri.query())) {
        Some(key) => Some(tenants.authenticate(&key).ok_or_else(unauthorized)?),
        None => None,
    };
    let cap = early
        .as_ref()
        .and_then(|t| t.max_body_bytes())
        .map_or(gate.max_body_bytes, |m| m.min(gate.max_body_bytes));
    if let Some(size) = declared.filter(|n| *n > cap) {
        return Err(too_large(size, cap));
    }
    // The body's `api_key` may be the credential. Bounded by the cap.
    let bytes: Bytes = axum::body::to_bytes(body, cap)
        .await
        .map_err(|e| match std::error::Error::source(&e) {
            Some(s) if s.is::<http_body_util::LengthLimitError>() => too_large(cap + 1, cap),
            _ => ApiError::BadRequest(format!("Cannot read request body: {e}")),
        })?;
    let tenant = match early {
        Some(tenant) => tenant,
        None => body_key(&bytes)
            .and_then(|k| tenants.authenticate(&k))
            .ok_or_else(unauthorized)?,
    };
    if is_admin_only(parts.uri.path()) && !tenant.admin {
        return Err(ApiError::Forbidden(format!(
            "{} needs an admin tenant's key",
            parts.uri.path()
        )));
    }
    if let Some(max) = tenant.max_body_bytes() {
        if bytes.len() > max {
            return Err(too_large(bytes.len(), max));
        }
    }
    let admission = gate.admit(&tenant).await.map_err(|refusal| {
        if refusal != Refusal::StoreDown {
            tracing::info!(tenant = %tenant.name, ?refusal, "request over quota");
        }
        match refusal {
            Refusal::Rate(wait) => ApiError::TooManyRequests {
                message: format!("Rate limit of tenant {} exceeded", tenant.name),
                retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
            },
            Refusal::Concurrency(n) => ApiError::TooManyRequests {
                message: format!("Tenant {} already has {n} requests in flight", tenant.name),
                retry_after_secs: 1,
            },
            Refusal::StoreDown => ApiError::QuotaStoreDown(format!(
                "The quota store is unreachable; requests of tenant {} are refused until it is back (--quota-store-failure fail-closed)",
                tenant.name
            )),
        }
    })?;
    tracing::Span::current().record("tenant", tenant.name.as_str());
    if let Some(labels) = parts.extensions.get::<Arc<RequestLabels>>() {
        labels.note_tenant(&tenant.name);
    }
    let mut request = Request::from_parts(parts, Body::from(bytes));
    request.extensions_mut().insert(tenant);
    Ok((admission, request))
}

fn too_large(size: usize, max: usize) -> ApiError {
    ApiError::PayloadTooLarge(format!(
        "Request body of {size} bytes or more is larger than the limit of {max} bytes"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_found_where_clients_put_them() {
        assert_eq!(query_key(Some("api_key=abc&confidence=0.5")).as_deref(), Some("abc"));
        assert_eq!(query_key(Some("api_key=a%2Bb")).as_deref(), Some("a+b"));
        assert_eq!(query_key(Some("api_key=")), None);
        assert_eq!(query_key(None), None);
        assert_eq!(
            body_key(br#" {"model_id": "x/1", "api_key": "k"}"#).as_deref(),
            Some("k")
        );
        assert_eq!(body_key(br#"{"api_key": 5}"#), None);
        assert_eq!(body_key(b"\xff\xd8 jpeg bytes"), None);
    }

    #[test]
    fn public_routes_are_reads_of_service_and_docs() {
        assert!(is_public(&Method::GET, "/healthz"));
        assert!(is_public(&Method::GET, "/docs/index.html"));
        assert!(!is_public(&Method::POST, "/healthz"));
        assert!(is_public(&Method::OPTIONS, "/infer/object_detection"));
        assert!(!is_public(&Method::GET, "/model/registry"));
        assert!(!is_public(&Method::GET, "/metrics"));
        assert!(!is_public(&Method::GET, "/shapes-detect/1"));
    }
}
