//! A JSON request body through the request layer as `/infer/<task>` reads it: the image count
//! taken before parsing, the body parsed, each declaration turned into a source (base64 / numpy
//! decoded, URLs kept), and each source's bytes decoded.
#![no_main]

use inference_host_fuzz::decode::{decode_image, decode_numpy_image};
use inference_host_fuzz::request::{check_image_count, image_source, ImageDeclaration, OneOrMany};
use inference_host_fuzz::{check, ImageSource, InputError, MAX_PIXELS};
use libfuzzer_sys::fuzz_target;

/// The server's default image-list limit is larger; a small one makes the fuzzer cross it.
const MAX_IMAGES: usize = 8;

/// The fields of the server's request body that lead to images (the rest are task options).
#[derive(serde::Deserialize)]
struct Body {
    #[serde(default)]
    #[allow(dead_code)]
    model_id: Option<String>,
    image: OneOrMany<ImageDeclaration>,
}

fuzz_target!(|data: &[u8]| {
    let counted = check_image_count(data, MAX_IMAGES);
    let Ok(body) = serde_json::from_slice::<Body>(data) else {
        return;
    };
    let (declarations, is_list) = body.image.into_vec();
    // The count taken without parsing must agree with the parser: a list it let through is
    // within the limit, and one it refused is as long as it said.
    match counted {
        Ok(()) => assert!(declarations.len() <= MAX_IMAGES, "{} images let through", declarations.len()),
        Err(InputError::TooManyImages { got, .. }) => {
            assert_eq!(got, declarations.len(), "miscounted");
            return;
        }
        Err(other) => panic!("unexpected error from the image count: {other:?}"),
    }
    assert!(is_list || declarations.len() == 1);
    for declaration in declarations {
        match image_source(declaration) {
            Ok(ImageSource::Encoded(bytes)) => check(decode_image(&bytes, MAX_PIXELS), false),
            Ok(ImageSource::Numpy(bytes)) => check(decode_numpy_image(&bytes, MAX_PIXELS), true),
            Ok(ImageSource::Url(_)) => {}
            Err(InputError::UnknownType(_) | InputError::MissingValue | InputError::Base64(_)) => {}
            Err(other) => panic!("unexpected error from an image declaration: {other:?}"),
        }
    }
});
