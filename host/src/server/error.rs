//! The one place errors become HTTP responses: `{"message": ...}` with the right status.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::input::InputError;
use crate::models::{InvalidModelId, ModelError};
use crate::pipeline;
use crate::plugins::{CallError, PluginErrorKind};
use crate::tasks::BadOptions;

/// Every error's body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for people.
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("Could not load input image. Cause: {0}")]
    Image(#[from] InputError),
    #[error(transparent)]
    ModelId(#[from] InvalidModelId),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Plugin(#[from] CallError),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{message}")]
    TooManyRequests { message: String, retry_after_secs: u64 },
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Unavailable(String),
    /// The shared quota store is unreachable and the server fails closed: 503, logged once by
    /// the store (not per request).
    #[error("{0}")]
    QuotaStoreDown(String),
    #[error("Internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::Image(_) | ApiError::ModelId(_) => StatusCode::BAD_REQUEST,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Model(ModelError::NotFound(..)) | ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Model(ModelError::Broken { .. }) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Model(ModelError::Unavailable { .. }) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Model(ModelError::BadDownload { .. }) => StatusCode::BAD_GATEWAY,
            ApiError::Model(ModelError::Upstream { status, .. }) => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY)
            }
            ApiError::Plugin(CallError::Timeout { .. }) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Plugin(CallError::Plugin {
                kind: PluginErrorKind::InvalidInput,
                ..
            }) => StatusCode::BAD_REQUEST,
            ApiError::Plugin(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) | ApiError::QuotaStoreDown(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let retry_after = match &self {
            ApiError::TooManyRequests { retry_after_secs, .. } => Some(*retry_after_secs),
            _ if status == StatusCode::SERVICE_UNAVAILABLE => Some(1),
            _ => None,
        };
        let challenge = matches!(self, ApiError::Unauthorized(_));
        let message = self.to_string();
        if status.is_server_error() && !matches!(self, ApiError::QuotaStoreDown(_)) {
            tracing::error!(status = status.as_u16(), %message, "request failed");
        } else {
            tracing::debug!(status = status.as_u16(), %message, "request rejected");
        }
        let mut response = (status, Json(ErrorBody { message })).into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if challenge {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<pipeline::Error> for ApiError {
    fn from(e: pipeline::Error) -> Self {
        use pipeline::Error as E;
        match e {
            E::Invalid(m) => ApiError::BadRequest(m),
            E::Draw(e) => ApiError::BadRequest(e.to_string()),
            E::Image(e) => ApiError::Image(e),
            E::ModelId(e) => ApiError::ModelId(e),
            E::Model(e) => ApiError::Model(e),
            E::Plugin(e) => ApiError::Plugin(e),
            E::NotFound(m) => ApiError::NotFound(m),
            E::Unavailable(m) | E::Overloaded(m) => ApiError::Unavailable(m),
            E::Internal(m) => ApiError::Internal(m),
        }
    }
}

impl From<BadOptions> for ApiError {
    fn from(e: BadOptions) -> Self {
        match e {
            BadOptions::Invalid(m) => ApiError::BadRequest(m),
            BadOptions::Unprocessable(m) => ApiError::Unprocessable(m),
        }
    }
}

impl From<axum::extract::rejection::BytesRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::BytesRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge("Request body is larger than the server's limit".into())
        } else {
            ApiError::BadRequest(format!("Cannot read request body: {}", rejection.body_text()))
        }
    }
}
