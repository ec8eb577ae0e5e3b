//! `POST /infer/<task>` (one handler, generic over the task) and `POST /infer/{route}` for
//! custom-task plugins; the request body shapes they share with the other routes.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::context::Ctx;
use super::error::ApiError;
use super::AppState;
use crate::input::{decode_base64, ImageSource, InputError};
use crate::pipeline::check_task;
use crate::tasks::{Choice, CommonOptions, Task};

/// How an image is given.
#[derive(Clone, Copy, Debug, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ImageType {
    /// An image file, base64 (a `data:` prefix is allowed).
    Base64,
    /// An image fetched by the server.
    Url,
    /// Base64 of a pickled or `.npy` H×W×3 uint8 BGR array.
    Numpy,
}

/// One image declaration: `{"type": "base64" | "url" | "numpy", "value": ...}`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ImageDeclaration {
    #[serde(rename = "type")]
    #[schema(value_type = ImageType)]
    pub kind: Choice<ImageType>,
    /// The image: base64 text (a `data:` prefix is allowed) or the URL.
    #[serde(default)]
    #[schema(value_type = String, required = true)]
    pub value: Option<Value>,
}

/// One item, or a list of them (answered with a list, in order).
#[derive(Debug)]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for OneOrMany<T> {
    // By hand, not `untagged`: an error inside one image must keep its own message.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        match Value::deserialize(deserializer)? {
            Value::Array(items) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| T::deserialize(v).map_err(|e| D::Error::custom(format!("item {i}: {e}"))))
                .collect::<Result<_, _>>()
                .map(OneOrMany::Many),
            one => T::deserialize(one).map(OneOrMany::One).map_err(D::Error::custom),
        }
    }
}

impl<T> OneOrMany<T> {
    /// The items, and whether they came as a list.
    pub fn into_vec(self) -> (Vec<T>, bool) {
        match self {
            OneOrMany::One(one) => (vec![one], false),
            OneOrMany::Many(many) => (many, true),
        }
    }
}

/// The body of every `/infer/<task>` route: Roboflow's request fields, those every task shares,
/// and (in the same object) the task's own options. Unknown fields are ignored.
#[derive(Debug, Deserialize, ToSchema)]
pub struct InferRequest {
    /// `<project>/<version>`, a directory of the models directory. Required, as in Roboflow's
    /// schema (null is allowed by the schema but useless).
    #[serde(default)]
    #[schema(example = "shapes-detect/1")]
    pub model_id: Option<String>,
    /// One image, or a list of images (answered with a list, in order).
    #[schema(schema_with = one_or_many_images)]
    pub image: OneOrMany<ImageDeclaration>,
    /// Roboflow API key: a model not on this server is downloaded from Roboflow with it.
    #[serde(default)]
    pub api_key: Option<String>,
    /// Echoed as `inference_id` (default: a fresh UUID).
    #[serde(default)]
    pub id: Option<String>,
    #[serde(flatten)]
    pub common: CommonOptions,
}

/// The schema of `OneOrMany<ImageDeclaration>` (read by hand, so not derived).
fn one_or_many_images() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{ArrayBuilder, OneOfBuilder, Ref};
    let one = Ref::from_schema_name(<ImageDeclaration as ToSchema>::name());
    OneOfBuilder::new()
        .item(one.clone())
        .item(ArrayBuilder::new().items(one))
        .description(Some("One image, or a list of images (answered with a list, in order)."))
        .into()
}

/// A task's body: the shared request and the task's own options, side by side in one object.
#[derive(Deserialize)]
struct InferBody<O> {
    #[serde(flatten)]
    request: InferRequest,
    #[serde(flatten)]
    options: O,
}

/// Parses a JSON body into `T`, answering 422 with the reason when it does not fit.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::Unprocessable(format!("Invalid request body: {e}")))
}

/// Refuses a body whose `image` list is longer than `max` before the body is parsed into
/// values: parsing materialises every element (twice, with the task's flattened options), and a
/// million-element list of tiny images took hundreds of MB. The count skips the elements
/// without allocating. A body that does not parse is left to `parse_json` to report.
pub fn check_image_count(body: &[u8], max: usize) -> Result<(), ApiError> {
    /// How many images `image` holds (1 unless it is a list).
    struct Count(usize);
    impl<'de> Deserialize<'de> for Count {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct Visit;
            impl<'de> serde::de::Visitor<'de> for Visit {
                type Value = Count;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("an image or a list of images")
                }
                fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Count, A::Error> {
                    let mut n = 0;
                    while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                        n += 1;
                    }
                    Ok(Count(n))
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Count, A::Error> {
                    serde::de::IgnoredAny::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                    Ok(Count(1))
                }
                fn visit_str<E>(self, _: &str) -> Result<Count, E> {
                    Ok(Count(1))
                }
            }
            deserializer.deserialize_any(Visit)
        }
    }
    #[derive(Deserialize)]
    struct Peek {
        #[serde(default)]
        image: Option<Count>,
    }
    match serde_json::from_slice::<Peek>(body) {
        Ok(Peek {
            image: Some(Count(got)),
        }) if got > max => Err(InputError::TooManyImages { got, max }.into()),
        _ => Ok(()),
    }
}

/// Turns an image declaration into a source of bytes.
pub fn image_source(decl: ImageDeclaration) -> Result<ImageSource, InputError> {
    let kind = decl
        .kind
        .resolve(true)
        .map_err(|raw| InputError::UnknownType(raw.as_str().map_or_else(|| raw.to_string(), str::to_string)))?;
    let text = match decl.value {
        Some(Value::String(s)) => s,
        _ => return Err(InputError::MissingValue),
    };
    match kind {
        ImageType::Base64 => Ok(ImageSource::Encoded(decode_base64(&text)?)),
        ImageType::Url => Ok(ImageSource::Url(text)),
        ImageType::Numpy => Ok(ImageSource::Numpy(decode_base64(&text)?)),
    }
}

/// One response for one image, an array for a list (in order).
pub fn respond<R: Serialize>(mut responses: Vec<R>, is_list: bool) -> Response {
    if is_list {
        Json(responses).into_response()
    } else {
        Json(responses.remove(0)).into_response()
    }
}

/// `POST /infer/<route>` of task `T` (documented in `docs::TaskPaths`).
pub async fn infer<T: Task>(
    State(state): State<Arc<AppState>>,
    Ctx(caller): Ctx,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body?;
    check_image_count(&body, state.pipeline.input_limits.max_batch)?;
    let InferBody { request, options } = parse_json::<InferBody<T::Options>>(&body)?;
    let model_id = request
        .model_id
        .ok_or_else(|| ApiError::Unprocessable("model_id is required".into()))?;
    let (declarations, is_list) = request.image.into_vec();
    let sources = declarations
        .into_iter()
        .map(image_source)
        .collect::<Result<Vec<_>, _>>()?;
    let common = request.common.resolve()?;
    let params = T::params(&common, &options).map_err(ApiError::BadRequest)?;
    let visualize = request.common.visualization().map_err(ApiError::BadRequest)?;
    let caller = caller.with_api_key(request.api_key);
    let pipeline = &state.pipeline;
    let model = pipeline.model(&caller, &model_id).await?;
    check_task::<T>(&model)?;
    let inference_id = request.id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let responses = pipeline
        .infer::<T>(&caller, model, sources, common, params, inference_id, visualize)
        .await?;
    Ok(respond(responses, is_list))
}

/// `POST /infer/{route}` for plugins with a task of their own: the body's `model_id` and
/// `image` as for the task routes; every other field is passed to the plugin as JSON.
#[utoipa::path(
    post,
    path = "/infer/{route}",
    tag = "inference",
    summary = "A plugin's own task",
    description = "Served by the custom-task plugin whose manifest names `route` (see `GET /plugins`). The body \
        carries `model_id` and `image` as for the task routes; every other field goes to the plugin as its parameters.",
    params(("route" = String, Path, description = "The route the plugin's manifest names")),
    request_body(content = Object, content_type = "application/json"),
    responses(
        (status = 200, description = "The plugin's JSON document, as `result`.", body = crate::tasks::custom::CustomResponse),
        super::schemas::InferErrors,
    ),
)]
pub async fn custom(
    State(state): State<Arc<AppState>>,
    Ctx(caller): Ctx,
    Path(route): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body?;
    check_image_count(&body, state.pipeline.input_limits.max_batch)?;
    let mut fields: serde_json::Map<String, Value> = parse_json(&body)?;
    let model_id = match fields.get("model_id") {
        Some(Value::String(id)) => id.clone(),
        _ => return Err(ApiError::Unprocessable("model_id is required".into())),
    };
    let image = fields
        .remove("image")
        .ok_or_else(|| ApiError::Unprocessable("image is required".into()))?;
    let (declarations, _) = serde_json::from_value::<OneOrMany<ImageDeclaration>>(image)
        .map_err(|e| ApiError::Unprocessable(format!("Invalid image: {e}")))?
        .into_vec();
    let sources = declarations
        .into_iter()
        .map(image_source)
        .collect::<Result<Vec<_>, _>>()?;
    let inference_id = match fields.get("id") {
        Some(Value::String(id)) => id.clone(),
        _ => uuid::Uuid::new_v4().to_string(),
    };
    let pipeline = &state.pipeline;
    if pipeline.custom_plugin(&caller, &route).is_none() {
        return Err(ApiError::NotFound(format!("no plugin serves /infer/{route}")));
    }
    // The api key is for the model download, never for the plugin.
    let api_key = match fields.remove("api_key") {
        Some(Value::String(key)) => Some(key),
        _ => None,
    };
    let caller = caller.with_api_key(api_key);
    let model = pipeline.model(&caller, &model_id).await?;
    let params = Value::Object(fields).to_string();
    let response = pipeline
        .custom(&caller, &route, model, sources, params, inference_id)
        .await?;
    Ok(Json(response).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_image_lists_are_counted_without_parsing_them() {
        let list = |n: usize| {
            format!(
                r#"{{"model_id": "m/1", "image": [{}]}}"#,
                vec![r#"{"type": "url", "value": "x"}"#; n].join(",")
            )
        };
        assert!(check_image_count(list(64).as_bytes(), 64).is_ok());
        let err = check_image_count(list(65).as_bytes(), 64).unwrap_err().to_string();
        assert!(err.contains("65"), "{err}");
        assert!(check_image_count(br#"{"image": {"type": "url", "value": "x"}}"#, 1).is_ok());
        // Malformed bodies are left to the parser to report.
        assert!(check_image_count(b"{not json", 1).is_ok());
    }
}
