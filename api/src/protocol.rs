//! The HTTP connection layer under the router: hyper's settings (how long a client may take to
//! send its request head) and the answers hyper gives by itself, made to follow DESIGN.md §7.
//!
//! hyper refuses a request it cannot parse before any service runs — a byte that is not allowed in
//! the request line or a header (raw `0xFF` in the path, a control character in a header value),
//! more than 100 header fields or a head over its buffer limit (~400 KiB), a request-target over
//! 65,534 bytes — and answers it itself: `400`, `431` or `414` with an empty body, then closes the
//! connection. No hook changes that answer, so every connection's writes pass through
//! [`JsonRejections`], which recognises exactly that response (a status line, `connection: close`,
//! `content-length: 0`, `date`, nothing else — every answer of the router carries `x-request-id`,
//! `content-type` and a body) and writes in its place the same status with the JSON error body,
//! `content-type: application/json` and `cache-control: no-store`.
//!
//! A client that trickles its request head is cut after [`HEADER_READ_TIMEOUT`] (hyper closes the
//! connection without an answer); the same bound applies before the first request (protocol
//! detection) and to an idle keep-alive connection.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum_server::Handle;
use axum_server::accept::{Accept, DefaultAcceptor};
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use futures::TryFutureExt;
use futures::future::MapOk;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::metrics::Metrics;

/// How long a client may take to send a request line and headers, and how long a connection may
/// stay idle waiting for its next request. A real client sends its head in one packet; ten seconds
/// matches the body-read bound (`router::BODY_READ_TIMEOUT`).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` (over TLS when `tls` is given) until `handle` shuts it down. Request
/// heads must arrive within `header_read_timeout`; hyper's own parse-error answers get the JSON error
/// body (counted in `metrics.protocol_rejections`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<RustlsConfig>,
    app: Router,
    handle: Handle<SocketAddr>,
    header_read_timeout: Duration,
    metrics: Arc<Metrics>,
) -> io::Result<()> {
    let server = axum_server::Server::from_listener(listener)
        .handle(handle)
        // Also bounds protocol detection before the first request, which the header timeout does not.
        .first_request_timeout(header_read_timeout);
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    match tls {
        None => {
            let mut server =
                server.acceptor(JsonRejectionsAcceptor { inner: DefaultAcceptor::new(), metrics });
            // axum-server installs a timer but turns hyper's header timeout off; turn it on.
            server.http_builder().http1().header_read_timeout(header_read_timeout);
            server.serve(app).await
        }
        Some(tls) => {
            let acceptor = JsonRejectionsAcceptor { inner: RustlsAcceptor::new(tls), metrics };
            let mut server = server.acceptor(acceptor);
            server.http_builder().http1().header_read_timeout(header_read_timeout);
            server.serve(app).await
        }
    }
}

/// Wraps another acceptor's streams in [`JsonRejections`].
#[derive(Clone)]
pub struct JsonRejectionsAcceptor<A> {
    inner: A,
    metrics: Arc<Metrics>,
}

type Wrap<S, Svc> = Box<dyn FnOnce((S, Svc)) -> (JsonRejections<S>, Svc) + Send>;

impl<A, I, S> Accept<I, S> for JsonRejectionsAcceptor<A>
where
    A: Accept<I, S>,
    A::Stream: 'static,
    A::Service: 'static,
{
    type Stream = JsonRejections<A::Stream>;
    type Service = A::Service;
    type Future = MapOk<A::Future, Wrap<A::Stream, A::Service>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let metrics = self.metrics.clone();
        let wrap: Wrap<A::Stream, A::Service> =
            Box::new(move |(io, svc)| (JsonRejections::new(io, Some(metrics)), svc));
        self.inner.accept(stream, service).map_ok(wrap)
    }
}

/// An IO stream whose writes of hyper's bare parse-error answer are replaced by the JSON one.
pub struct JsonRejections<IO> {
    inner: IO,
    metrics: Option<Arc<Metrics>>,
    pending: Option<Replacement>,
}

struct Replacement {
    bytes: Vec<u8>,
    written: usize,
    /// How many of the caller's bytes the replacement stands for.
    replaces: usize,
}

impl<IO> JsonRejections<IO> {
    pub fn new(inner: IO, metrics: Option<Arc<Metrics>>) -> Self {
        Self { inner, metrics, pending: None }
    }

    /// Starts replacing `buf` if it is hyper's automatic answer.
    fn intercept(&mut self, buf: &[u8]) {
        if self.pending.is_none()
            && let Some((status, bytes)) = json_rejection(buf)
        {
            if let Some(m) = &self.metrics {
                m.protocol_rejections.inc();
            }
            tracing::debug!(status, "Refused an unparseable request");
            self.pending = Some(Replacement { bytes, written: 0, replaces: buf.len() });
        }
    }
}

impl<IO: AsyncWrite + Unpin> JsonRejections<IO> {
    /// Writes the pending replacement to the end; then reports the replaced bytes as written.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Option<Poll<io::Result<usize>>> {
        let r = self.pending.as_mut()?;
        while r.written < r.bytes.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &r.bytes[r.written..]) {
                Poll::Pending => return Some(Poll::Pending),
                Poll::Ready(Err(e)) => return Some(Poll::Ready(Err(e))),
                Poll::Ready(Ok(0)) => return Some(Poll::Ready(Err(io::ErrorKind::WriteZero.into()))),
                Poll::Ready(Ok(n)) => r.written += n,
            }
        }
        let replaces = r.replaces;
        self.pending = None;
        Some(Poll::Ready(Ok(replaces)))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for JsonRejections<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for JsonRejections<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.intercept(buf);
        if let Some(p) = this.poll_replacement(cx) {
            return p;
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // hyper's answer is a head without a body: the first non-empty slice, written alone.
        if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
            this.intercept(first);
        }
        if let Some(p) = this.poll_replacement(cx) {
            return p;
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(p) = this.poll_replacement(cx) {
            ready!(p)?;
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(p) = this.poll_replacement(cx) {
            ready!(p)?;
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// If `buf` is exactly hyper's automatic answer to an unparseable request, the JSON answer to send
/// instead. hyper writes it as one head with these fields only:
/// `HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: ...\r\n\r\n`.
fn json_rejection(buf: &[u8]) -> Option<(&'static str, Vec<u8>)> {
    let head = buf.strip_suffix(b"\r\n\r\n")?;
    let head = std::str::from_utf8(head).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let (version, status) = status_line.split_once(' ')?;
    if !matches!(version, "HTTP/1.1" | "HTTP/1.0") {
        return None;
    }
    let (code, message) = match status.get(..3)? {
        "400" => ("400", "malformed HTTP request: the request line or a header field is not valid HTTP/1.1"),
        "414" => ("414", "request target is too long"),
        "431" => ("431", "request header fields are too large (at most 100 fields and about 400 KiB)"),
        _ => return None,
    };
    let (mut close, mut empty, mut date) = (false, false, None);
    for line in lines {
        let (name, value) = line.split_once(':')?;
        match (name.to_ascii_lowercase().as_str(), value.trim()) {
            ("connection", "close") => close = true,
            ("content-length", "0") => empty = true,
            ("date", d) => date = Some(d),
            _ => return None,
        }
    }
    if !(close && empty) {
        return None;
    }
    let body = serde_json::json!({ "error": message }).to_string();
    let date = date.map(|d| format!("date: {d}\r\n")).unwrap_or_default();
    Some((
        code,
        format!(
            "{status_line}\r\nconnection: close\r\ncontent-type: application/json\r\ncache-control: no-store\r\n\
             content-length: {}\r\n{date}\r\n{body}",
            body.len()
        )
        .into_bytes(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const HYPER_400: &[u8] =
        b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: Mon, 23 Nov 2026 15:55:03 GMT\r\n\r\n";

    fn split(resp: &[u8]) -> (String, serde_json::Value) {
        let text = String::from_utf8(resp.to_vec()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        (head.to_owned(), serde_json::from_str(body).unwrap())
    }

    #[test]
    fn hyper_answers_become_json() {
        for (raw, status) in [
            (HYPER_400.to_vec(), "400"),
            (b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: x\r\n\r\n".to_vec(), "431"),
            (b"HTTP/1.1 414 URI Too Long\r\nconnection: close\r\ncontent-length: 0\r\ndate: x\r\n\r\n".to_vec(), "414"),
        ] {
            let (code, out) = json_rejection(&raw).unwrap();
            assert_eq!(code, status);
            let (head, body) = split(&out);
            assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{head}");
            assert!(head.contains("content-type: application/json"), "{head}");
            assert!(head.contains("cache-control: no-store"), "{head}");
            assert!(head.contains(&format!("content-length: {}", out.len() - head.len() - 4)), "{head}");
            assert!(body["error"].is_string(), "{body}");
        }
        assert!(
            split(&json_rejection(HYPER_400).unwrap().1).0.contains("date: Mon, 23 Nov 2026 15:55:03 GMT")
        );
    }

    #[test]
    fn the_routers_answers_are_left_alone() {
        for raw in [
            // a router 400: more fields, a body
            &b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nx-request-id: 1\r\ncontent-length: 9\r\n\r\n{\"a\":\"b\"}"[..],
            // a router 400 head written without its body
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nx-request-id: 1\r\ncontent-length: 9\r\n\r\n",
            // other statuses, 100-continue
            b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\ndate: x\r\n\r\n",
            b"HTTP/1.1 100 Continue\r\n\r\n",
            // hyper's head followed by more bytes, or cut short
            b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: x\r\n\r\nHTTP/1.1",
            b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n",
            b"{\"error\":\"x\"}",
            b"",
        ] {
            assert!(json_rejection(raw).is_none(), "{}", String::from_utf8_lossy(raw));
        }
    }

    /// A writer that takes at most 7 bytes per call and is Pending every other call.
    struct Dribble {
        out: Vec<u8>,
        ready: bool,
    }

    impl AsyncWrite for Dribble {
        fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            this.ready = !this.ready;
            if !this.ready {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let n = buf.len().min(7);
            this.out.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncRead for Dribble {
        fn poll_read(self: Pin<&mut Self>, _: &mut Context<'_>, _: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn partial_writes_still_send_the_whole_replacement() {
        let mut io = JsonRejections::new(Dribble { out: Vec::new(), ready: false }, None);
        // The caller sees its own buffer written in full, once.
        let n = futures::future::poll_fn(|cx| Pin::new(&mut io).poll_write(cx, HYPER_400)).await.unwrap();
        assert_eq!(n, HYPER_400.len());
        io.write_all(b"next").await.unwrap();
        let out = io.inner.out.clone();
        let (head, body) = split(out.strip_suffix(b"next").unwrap());
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
        assert!(body["error"].as_str().unwrap().contains("malformed"), "{body}");
        let mut rest = Vec::new();
        io.read_to_end(&mut rest).await.unwrap();
    }
}
