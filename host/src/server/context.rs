//! The request's caller, as the pipeline takes it (an extractor): its tenant (put there by the
//! tenants gate, `auth`), the Roboflow key it carries in `Authorization: Bearer` (a body's
//! `api_key` is added by the handler that reads the body), its request id and its metric labels.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};

use crate::metrics::RequestLabels;
use crate::pipeline::Caller;
use crate::tenants::Tenant;

/// The header carrying a request's id: the client's own, else a UUID we set.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The caller of the request being handled.
pub struct Ctx(pub Caller);

impl<S: Send + Sync> FromRequestParts<S> for Ctx {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Ctx(Caller {
            tenant: parts.extensions.get::<Arc<Tenant>>().cloned(),
            api_key: bearer(&parts.headers),
            request_id: parts
                .headers
                .get(REQUEST_ID_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string(),
            labels: parts
                .extensions
                .get::<Arc<RequestLabels>>()
                .cloned()
                .unwrap_or_default(),
        }))
    }
}

/// The bearer token of `Authorization: Bearer <key>`.
pub fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_key_from_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert(header::AUTHORIZATION, "Bearer k1".parse().unwrap());
        assert_eq!(bearer(&headers).as_deref(), Some("k1"));
        headers.insert(header::AUTHORIZATION, "Basic xyz".parse().unwrap());
        assert_eq!(bearer(&headers), None);
    }
}
