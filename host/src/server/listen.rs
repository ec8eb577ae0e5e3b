//! The accept loop: our own rather than `axum::serve`, for the connection discipline a public
//! server needs. A client that sends nothing, half a request line, or half a body is closed
//! after a timeout; open connections are capped below the file-descriptor limit (the idlest
//! one makes room for a new one, so a flood of silent connections cannot starve real requests);
//! a body announced larger than the limit is refused before `100 Continue`; and shutdown waits
//! for in-flight requests only up to a deadline.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, Request, Response, StatusCode};
use axum::Router;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tower::ServiceExt;

/// The most a connection's read buffer grows to (hyper's default is 400 KiB). The request line
/// and headers must fit in it: larger ones get 431 (a URI too long for it too, as no 414 can
/// be told apart before the line ends).
const READ_BUFFER_BYTES: usize = 32 << 10;

/// How connections are treated.
#[derive(Clone, Copy, Debug)]
pub struct Discipline {
    /// A request's head (line and headers) must arrive within this; it also closes idle
    /// keep-alive connections.
    pub header_read_timeout: Duration,
    /// A request body that sends nothing for this long fails (400) and its connection closes.
    pub body_read_timeout: Duration,
    /// At most this many open connections.
    pub max_connections: usize,
    /// A `Content-Length` above this is answered 413 before the body is read.
    pub max_body_bytes: usize,
    /// How long in-flight requests may take to finish once shutdown starts.
    pub shutdown_timeout: Duration,
}

/// File descriptors kept for everything but client connections (models, plugins, the log,
/// URL fetches, Roboflow downloads, ONNX Runtime's and wasmtime's own), and for connections
/// accepted while evicted ones are still closing: half the limit plus a few.
pub fn connection_cap(fd_limit: u64) -> usize {
    (fd_limit / 2).saturating_sub(32).max(8) as usize
}

/// The soft limit on open files, raised to the hard limit first (the default soft limit of
/// 1024 is far below what a server needs; the hard limit is the operator's choice).
pub fn raise_fd_limit() -> u64 {
    #[cfg(unix)]
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        let mut rl = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 {
            if rl.rlim_cur < rl.rlim_max {
                let raised = libc::rlimit {
                    rlim_cur: rl.rlim_max,
                    rlim_max: rl.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    rl.rlim_cur = rl.rlim_max;
                }
            }
            return rl.rlim_cur;
        }
    }
    1024
}

/// One open connection, as the accept loop sees it.
struct Entry {
    /// Requests being answered on it (head read, response body not yet finished).
    busy: Arc<AtomicUsize>,
    /// Wakes its task to drop it.
    evict: Arc<Notify>,
}

#[derive(Default)]
struct Connections {
    /// By accept order, so the first idle entry is the longest-open idle connection.
    open: Mutex<BTreeMap<u64, Entry>>,
    /// Signalled when a connection closes (shutdown waits for none to be left).
    closed: Notify,
}

impl Connections {
    /// Makes room for one more connection: `false` when every open one is answering a request.
    fn make_room(&self, max: usize) -> bool {
        let mut open = self.open.lock();
        if open.len() < max {
            return true;
        }
        let idlest = open
            .iter()
            .find(|(_, e)| e.busy.load(Ordering::Acquire) == 0)
            .map(|(id, _)| *id);
        match idlest.and_then(|id| open.remove(&id)) {
            Some(entry) => {
                entry.evict.notify_one();
                true
            }
            None => false,
        }
    }

    fn len(&self) -> usize {
        self.open.lock().len()
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then lets in-flight requests finish
/// for at most `shutdown_timeout`.
pub async fn serve(listener: TcpListener, app: Router, discipline: Discipline, shutdown: impl Future<Output = ()>) {
    let connections = Arc::new(Connections::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut next_id = 0u64;
    let mut refused_logged = Instant::now() - Duration::from_secs(60);
    tokio::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors (EMFILE) and the like: wait rather than spin.
                    if refused_logged.elapsed() > Duration::from_secs(5) {
                        tracing::warn!(error = %e, "accept error");
                        refused_logged = Instant::now();
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if !connections.make_room(discipline.max_connections) {
            if refused_logged.elapsed() > Duration::from_secs(5) {
                tracing::warn!(
                    max = discipline.max_connections,
                    "connection refused: every open connection is answering a request"
                );
                refused_logged = Instant::now();
            }
            drop(stream);
            continue;
        }
        // Lets an evicted connection's task close it before the next accept.
        tokio::task::yield_now().await;
        let _ = stream.set_nodelay(true);
        let id = next_id;
        next_id += 1;
        let entry = Entry {
            busy: Arc::default(),
            evict: Arc::default(),
        };
        let (busy, evict) = (entry.busy.clone(), entry.evict.clone());
        connections.open.lock().insert(id, entry);
        let (app, connections, stop_rx) = (app.clone(), connections.clone(), stop_rx.clone());
        tokio::spawn(async move {
            serve_connection(stream, app, discipline, busy, evict, stop_rx).await;
            connections.open.lock().remove(&id);
            connections.closed.notify_waiters();
        });
    }
    drop(listener);
    let open = connections.len();
    tracing::info!(
        open,
        timeout_s = discipline.shutdown_timeout.as_secs_f64(),
        "shutting down: finishing in-flight requests"
    );
    let _ = stop_tx.send(true);
    let all_closed = async {
        loop {
            let closed = connections.closed.notified();
            if connections.len() == 0 {
                return;
            }
            closed.await;
        }
    };
    if tokio::time::timeout(discipline.shutdown_timeout, all_closed)
        .await
        .is_err()
    {
        tracing::warn!(
            open = connections.len(),
            "shutdown timeout: closing the connections still open"
        );
    }
}

async fn serve_connection(
    stream: TcpStream,
    app: Router,
    discipline: Discipline,
    busy: Arc<AtomicUsize>,
    evict: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    // hyper's header timeout runs once the first byte is in: a connection that sends nothing
    // at all is closed here.
    let mut first = [0u8; 1];
    tokio::select! {
        first = tokio::time::timeout(discipline.header_read_timeout, stream.peek(&mut first)) => {
            if !matches!(first, Ok(Ok(n)) if n > 0) {
                return;
            }
        }
        _ = evict.notified() => return,
        _ = stop.changed() => return,
    }
    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        let app = app.clone();
        let guard = Busy::new(busy.clone());
        async move {
            if let Some(refusal) = refuse_early(&request, discipline.max_body_bytes) {
                return Ok::<_, std::convert::Infallible>(refusal);
            }
            let request = request.map(|body| Body::new(IdleBody::new(Body::new(body), discipline.body_read_timeout)));
            let response = app.oneshot(request).await.unwrap_or_else(|never| match never {});
            // The connection counts as busy until the response body is sent, not only until
            // the handler returns.
            Ok(response.map(|body| {
                Body::new(Guarded {
                    inner: body,
                    _busy: guard,
                })
            }))
        }
    });
    // HTTP/1 only (as axum's default features served): with HTTP/2 as well, the builder first
    // waits for bytes to tell the versions apart, and that wait has no timeout.
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(discipline.header_read_timeout)
        // hyper's read buffer grows to 400 KiB while a large body arrives and keeps that size
        // for the connection's life (body chunks share it); under a flood of photo bodies on
        // hundreds of keep-alive connections that, not the budgeted bodies, was the peak.
        .max_buf_size(READ_BUFFER_BYTES);
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(JsonErrors::new(stream)), service);
    tokio::pin!(connection);
    let mut stopping = false;
    loop {
        tokio::select! {
            _ = connection.as_mut() => return,
            // Dropping the connection closes it.
            _ = evict.notified() => return,
            changed = stop.changed(), if !stopping => {
                stopping = true;
                if changed.is_ok() {
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Answers at once what must not reach the handlers: a body announced larger than the limit
/// (before hyper sends `100 Continue`, which it does only when the body is first read).
fn refuse_early<B>(request: &Request<B>, max_body_bytes: usize) -> Option<Response<Body>> {
    let length = super::declared_length(request.headers())?;
    (length > max_body_bytes as u64).then(|| {
        json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("Request body of {length} bytes is larger than the server's limit of {max_body_bytes} bytes"),
        )
    })
}

fn json_error(status: StatusCode, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "message": message }).to_string();
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Counts a request on its connection while it lives.
struct Busy(Arc<AtomicUsize>);

impl Busy {
    fn new(count: Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Busy(count)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its connection marked busy until it is sent or dropped.
struct Guarded {
    inner: Body,
    _busy: Busy,
}

impl HttpBody for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that fails when its client sends nothing for `timeout` while it is being
/// read (a handler busy with other work is not waiting on it, so that time does not count).
struct IdleBody {
    inner: Body,
    timeout: Duration,
    idle: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl IdleBody {
    fn new(inner: Body, timeout: Duration) -> Self {
        IdleBody {
            inner,
            timeout,
            idle: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the client sent no body data for {0:.0?}")]
struct BodyTimeout(Duration);

impl HttpBody for IdleBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.idle = None;
                Poll::Ready(frame)
            }
            Poll::Pending => {
                let timeout = this.timeout;
                let idle = this.idle.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if idle.as_mut().poll(cx).is_ready() {
                    this.idle = None;
                    return Poll::Ready(Some(Err(axum::Error::new(BodyTimeout(timeout)))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The socket, with hyper's own answers to requests it cannot parse (400, 414, 431: written
/// with an empty body before any handler sees the request) given a `{"message": ...}` body
/// like every other error.
struct JsonErrors {
    inner: TcpStream,
    /// A replacement being written, and how much of it is out.
    pending: Option<(Vec<u8>, usize)>,
}

impl JsonErrors {
    fn new(inner: TcpStream) -> Self {
        JsonErrors { inner, pending: None }
    }
}

/// The JSON version of hyper's automatic error answer in `head`, if `head` is one: a whole
/// head, nothing after it, status 400/414/431, `content-length: 0` (our handlers never send
/// such an error: theirs carry JSON).
fn json_protocol_error(head: &[u8]) -> Option<Vec<u8>> {
    let message = if head.starts_with(b"HTTP/1.1 400 ") {
        "Malformed HTTP request".to_string()
    } else if head.starts_with(b"HTTP/1.1 414 ") {
        "Request URI is too long".to_string()
    } else if head.starts_with(b"HTTP/1.1 431 ") {
        format!(
            "Request line and headers are too large (the limit is {} KiB)",
            READ_BUFFER_BYTES >> 10
        )
    } else {
        return None;
    };
    let text = std::str::from_utf8(head).ok()?;
    let text = text.strip_suffix("\r\n\r\n")?;
    if text.contains("\r\n\r\n") || !text.to_ascii_lowercase().contains("\r\ncontent-length: 0") {
        return None;
    }
    let body = serde_json::json!({ "message": message }).to_string();
    let mut out = String::with_capacity(text.len() + body.len() + 64);
    for line in text.split("\r\n") {
        if line.to_ascii_lowercase().starts_with("content-length:") {
            out.push_str(&format!("content-length: {}", body.len()));
        } else {
            out.push_str(line);
        }
        out.push_str("\r\n");
    }
    out.push_str("content-type: application/json\r\nconnection: close\r\n\r\n");
    out.push_str(&body);
    Some(out.into_bytes())
}

impl AsyncRead for JsonErrors {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for JsonErrors {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.pending.is_none() {
            match json_protocol_error(buf) {
                Some(replacement) => this.pending = Some((replacement, 0)),
                None => return Pin::new(&mut this.inner).poll_write(cx, buf),
            }
        }
        // Writing the replacement; hyper sees its own bytes written once all of it is out.
        let (replacement, written) = this.pending.as_mut().expect("set above");
        while *written < replacement.len() {
            match Pin::new(&mut this.inner).poll_write(cx, &replacement[*written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        this.pending = None;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    // Not vectored: hyper then writes a head in one buffer, which `json_protocol_error` can see.
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_errors_get_a_json_body() {
        let head = b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\ndate: Wed, 02 Dec 2026 13:00:00 GMT\r\n\r\n";
        let out = String::from_utf8(json_protocol_error(head).unwrap()).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{head}");
        assert!(head.contains(&format!("content-length: {}", body.len())), "{head}");
        assert!(head.contains("content-type: application/json"), "{head}");
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(body["message"].as_str().unwrap().contains("too long"));
    }

    #[test]
    fn handler_answers_are_left_alone() {
        for head in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 20\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\n\r\n{}",
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n",
        ] {
            assert!(json_protocol_error(head).is_none(), "{}", String::from_utf8_lossy(head));
        }
    }

    #[test]
    fn cap_leaves_descriptors_for_the_rest() {
        assert_eq!(connection_cap(1024), 480);
        assert_eq!(connection_cap(100), 18);
        assert_eq!(connection_cap(10), 8);
    }
}
