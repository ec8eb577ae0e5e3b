//! Why a model cannot be served, as the layers above need to tell it (each maps to a status).

#[derive(Clone, Debug, thiserror::Error)]
pub enum ModelError {
    #[error("Model {0} not found (no {1})")]
    NotFound(String, String),
    #[error("Model {id} cannot be loaded: {reason}")]
    Broken { id: String, reason: String },
    /// Offline, or no source could be reached: 503 with Retry-After.
    #[error("Model {id} is not available: {reason}")]
    Unavailable { id: String, reason: String },
    /// A source refused (Roboflow's 401/403/404): its status, passed through.
    #[error("Model {id}: {message}")]
    Upstream { id: String, status: u16, message: String },
    /// A malformed answer or a file that failed verification (deleted, never loaded): 502.
    #[error("Model {id} could not be downloaded: {reason}")]
    BadDownload { id: String, reason: String },
}
