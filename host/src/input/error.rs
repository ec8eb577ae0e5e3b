//! What can be wrong with a request's image. Kept free of the server's other types so the
//! fuzz targets (host/fuzz) can compile the decoders on their own.

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("image type {0:?} is not supported (use base64, url or numpy)")]
    UnknownType(String),
    #[error("image value is missing or not a string")]
    MissingValue,
    #[error("invalid base64 data: {0}")]
    Base64(String),
    #[error("cannot decode image: {0}")]
    Decode(String),
    #[error("image of {width}x{height} pixels exceeds the limit of {max} pixels")]
    TooManyPixels { width: u64, height: u64, max: u64 },
    #[error("invalid numpy array: {0}")]
    Numpy(String),
    #[error("cannot fetch image URL: {0}")]
    Url(String),
    #[error("too many images in one request: {got} (limit {max})")]
    TooManyImages { got: usize, max: usize },
}
