//! Request bodies in flight, bounded. A body is read into memory and parsed (a base64 image is
//! held as the bytes read, then as the parsed string) before the pipeline's admission sees the
//! request; under a flood those bodies, not the images, are what grows the server. So each
//! request reserves twice its `Content-Length` here, before its body is read, until it is
//! answered, and is refused with 503 and `Retry-After` when the budget is full.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

use super::error::ApiError;
use super::AppState;
use crate::pipeline::{Counted, MemoryBudget};

/// What a body of unknown length (chunked) is counted for.
const UNKNOWN_LENGTH_COST: u64 = 1 << 20;

/// The budget of the request bodies being read and parsed.
pub struct BodyBudget {
    budget: MemoryBudget,
    max_body_bytes: u64,
}

impl BodyBudget {
    pub fn new(limit: u64, max_body_bytes: usize) -> Self {
        Self {
            budget: MemoryBudget::new(limit, Counted::Bodies),
            max_body_bytes: max_body_bytes as u64,
        }
    }

    /// What reading and parsing this request's body costs. A body over the server's limit is
    /// not counted: it is refused with 413 from its length, unread.
    fn cost(&self, method: &Method, headers: &HeaderMap) -> u64 {
        match super::declared_length(headers) {
            Some(n) if n > self.max_body_bytes => 0,
            // The bytes read, and what is parsed from them (strings, decoded base64).
            Some(n) => 2 * n,
            None if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::DELETE) => 0,
            None => UNKNOWN_LENGTH_COST,
        }
    }
}

pub async fn admit(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let bodies = &state.bodies;
    let cost = bodies.cost(request.method(), request.headers());
    if cost == 0 {
        return next.run(request).await;
    }
    match bodies.budget.reserve(cost) {
        Ok(held) => {
            let response = next.run(request).await;
            drop(held);
            response
        }
        Err(refused) => {
            drain(request, bodies.max_body_bytes).await;
            ApiError::from(refused).into_response()
        }
    }
}

/// Reads a refused request's body and drops it as it comes (memory stays flat), so that the
/// client, still sending, reads the 503 instead of a connection reset. A client waiting for
/// `100 Continue` has sent nothing yet and gets the 503 at once. The connection's idle timeout
/// ends a client that stops sending.
async fn drain(request: Request, max_body_bytes: u64) {
    let waits_to_send = request
        .headers()
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if waits_to_send {
        return;
    }
    let mut left = max_body_bytes;
    let mut body = request.into_body().into_data_stream();
    while let Some(Ok(chunk)) = body.next().await {
        match left.checked_sub(chunk.len() as u64) {
            Some(rest) => left = rest,
            None => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (k.clone(), v.parse().unwrap())).collect()
    }

    #[test]
    fn a_body_costs_twice_its_length_and_one_over_the_limit_is_left_to_the_413() {
        let bodies = BodyBudget::new(1 << 20, 1000);
        let post = Method::POST;
        assert_eq!(bodies.cost(&post, &headers(&[(header::CONTENT_LENGTH, "300")])), 600);
        assert_eq!(bodies.cost(&post, &headers(&[(header::CONTENT_LENGTH, "1001")])), 0);
        assert_eq!(bodies.cost(&Method::GET, &headers(&[])), 0);
        assert_eq!(
            bodies.cost(&post, &headers(&[(header::TRANSFER_ENCODING, "chunked")])),
            UNKNOWN_LENGTH_COST
        );
    }
}
