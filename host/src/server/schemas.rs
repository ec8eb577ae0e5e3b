//! What the handlers' documentation names that has no Rust type of its own: bodies read as
//! bytes, and each route family's error responses. Apart from `docs`, so that the handlers and
//! the document that lists them do not import each other.

use utoipa::{IntoResponses, ToSchema};

use super::error::ErrorBody;

/// A JPEG picture.
#[allow(dead_code)]
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct Jpeg(Vec<u8>);

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

/// The errors of the inference routes (`/infer/<task>`, custom routes, the legacy route).
#[allow(dead_code)]
#[derive(IntoResponses)]
pub enum InferErrors {
    /// No image or a bad one (undecodable, too large, unfetchable URL), bad parameters (e.g.
    /// `visualization_stroke_width` or `stroke` out of range), a malformed model id, too many
    /// images, or a model of another task (the message names its route).
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
    /// The body is not the expected JSON (or `model_id` is missing), or `confidence` is
    /// neither a number nor `best`/`default`.
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
