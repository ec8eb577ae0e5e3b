//! The image part of a request body: `{"image": {"type": …, "value": …}}` or a list of them,
//! counted before it is parsed and turned into sources of bytes. Kept free of the server's other
//! types (like `error.rs` and the decoders) so that a fuzz target (host/fuzz, `parse_request`)
//! runs the same code from the JSON body down to the decoder.

use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use utoipa::ToSchema;

use super::InputError;

/// Where an image's bytes come from.
#[derive(Debug)]
pub enum ImageSource {
    /// An encoded image file (JPEG, PNG, ...).
    Encoded(Vec<u8>),
    /// A pickled numpy array or .npy file.
    Numpy(Vec<u8>),
    /// An http(s) URL to fetch.
    Url(String),
}

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
    /// Kept raw: a type outside the set (in any case, `BASE64` too) is refused with a 400 naming
    /// it rather than a 422 for the whole body.
    #[serde(rename = "type")]
    #[schema(value_type = ImageType)]
    pub kind: Value,
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

/// Refuses a body whose `image` list is longer than `max` before the body is parsed into
/// values: parsing materialises every element (twice, with the task's flattened options), and a
/// million-element list of tiny images took hundreds of MB. The count skips the elements
/// without allocating. A body that does not parse is left to the parser to report.
pub fn check_image_count(body: &[u8], max: usize) -> Result<(), InputError> {
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
        }) if got > max => Err(InputError::TooManyImages { got, max }),
        _ => Ok(()),
    }
}

/// Turns an image declaration into a source of bytes.
pub fn image_source(decl: ImageDeclaration) -> Result<ImageSource, InputError> {
    let unknown = |raw: &Value| InputError::UnknownType(raw.as_str().map_or_else(|| raw.to_string(), str::to_string));
    let kind = match &decl.kind {
        Value::String(s) => {
            ImageType::deserialize(Value::String(s.to_ascii_lowercase())).map_err(|_| unknown(&decl.kind))?
        }
        other => return Err(unknown(other)),
    };
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

/// Decodes base64 text, tolerating a `data:...;base64,` prefix, whitespace and missing padding.
pub fn decode_base64(text: &str) -> Result<Vec<u8>, InputError> {
    let text = text.trim();
    let payload = match text.strip_prefix("data:") {
        Some(rest) => rest
            .split_once(',')
            .map(|(_, data)| data)
            .ok_or_else(|| InputError::Base64("data URI without ','".into()))?,
        None => text,
    };
    let cleaned: Vec<u8> = payload.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    engine
        .decode(&cleaned)
        .or_else(|_| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(cleaned.iter().copied().filter(|b| *b != b'=').collect::<Vec<_>>())
        })
        .map_err(|e| InputError::Base64(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_variants() {
        assert_eq!(decode_base64("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(decode_base64("aGVsbG8").unwrap(), b"hello");
        assert_eq!(decode_base64("data:image/jpeg;base64,aGVs\nbG8=").unwrap(), b"hello");
        assert_eq!(decode_base64("_-8").unwrap(), vec![0xff, 0xef]);
        assert!(decode_base64("not base64 !!").is_err());
        assert!(decode_base64("data:image/png;base64").is_err());
    }

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

    #[test]
    fn image_types_in_any_case_and_unknown_ones_named() {
        let decl = |kind: Value| ImageDeclaration {
            kind,
            value: Some(Value::String("aGVsbG8=".into())),
        };
        assert!(matches!(image_source(decl("BASE64".into())), Ok(ImageSource::Encoded(b)) if b == b"hello"));
        assert!(matches!(image_source(decl("Url".into())), Ok(ImageSource::Url(_))));
        let err = image_source(decl("file".into())).unwrap_err().to_string();
        assert!(err.contains("\"file\""), "{err}");
        let err = image_source(decl(Value::from(3))).unwrap_err().to_string();
        assert!(err.contains("\"3\""), "{err}");
    }
}
