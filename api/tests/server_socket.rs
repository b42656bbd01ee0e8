//! The connection layer over a real socket (in-memory backend; `protocol::serve` as `server::run`
//! uses it): requests hyper refuses before routing still get the JSON error body of DESIGN.md §7,
//! and a client that trickles its request head, or sends nothing, is cut.
#![allow(clippy::unwrap_used, clippy::panic)] // test crate: unwrap is how tests assert

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum_server::Handle;
use common::{Harness, Options};
use hyperion_vault_api::memory::MemoryBackend;
use hyperion_vault_api::protocol;
use hyperion_vault_api::state::AppState;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn start(header_read_timeout: Duration) -> (SocketAddr, Arc<AppState>) {
    let h = Harness::new(Arc::new(MemoryBackend::new()), Options::default()).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = hyperion_vault_api::app(h.state.clone());
    let metrics = h.state.metrics.clone();
    tokio::spawn(protocol::serve(listener, None, app, Handle::new(), header_read_timeout, metrics));
    (addr, h.state)
}

/// Sends `raw` on a fresh connection and reads until the server closes it.
async fn exchange(addr: SocketAddr, raw: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before it has read everything (431): keep what it said.
    let _ = s.write_all(raw).await;
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "no answer and no close within 10 s; got {:?}", String::from_utf8_lossy(&out));
    out
}

struct Resp {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// Splits one or more responses (no chunked bodies here: every answer has a content-length).
fn responses(mut raw: &[u8]) -> Vec<Resp> {
    let mut out = Vec::new();
    while !raw.is_empty() {
        let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = std::str::from_utf8(&raw[..end]).unwrap();
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
        let headers: HashMap<String, String> = lines
            .map(|l| l.split_once(':').unwrap())
            .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let len: usize = headers["content-length"].parse().unwrap();
        let body = raw[end + 4..end + 4 + len].to_vec();
        raw = &raw[end + 4 + len..];
        out.push(Resp { status, headers, body });
    }
    out
}

fn assert_json_error(r: &Resp, status: u16, what: &str) {
    assert_eq!(r.status, status, "{what}");
    assert_eq!(r.headers.get("content-type").map(String::as_str), Some("application/json"), "{what}");
    assert_eq!(r.headers.get("cache-control").map(String::as_str), Some("no-store"), "{what}");
    let body: serde_json::Value = serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("{what}: body is not JSON ({e}): {:?}", String::from_utf8_lossy(&r.body)));
    assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{what}: {body}");
}

#[tokio::test]
async fn requests_hyper_refuses_get_the_json_error_body() {
    let (addr, state) = start(protocol::HEADER_READ_TIMEOUT).await;
    let many_headers: Vec<u8> = (0..150).flat_map(|i| format!("X-H-{i}: 1\r\n").into_bytes()).collect();
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("raw 0xFF in the path", b"GET /v1/secrets/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 400),
        (
            "control byte in a header value",
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 1\x01\r\n\r\n".to_vec(),
            400,
        ),
        ("0xFF in a header name", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-\xff: 1\r\n\r\n".to_vec(), 400),
        ("NUL in the method", b"G\x00T /healthz HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 400),
        ("not HTTP at all", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n".to_vec(), 400),
        (
            "150 header fields",
            [&b"GET /healthz HTTP/1.1\r\nHost: x\r\n"[..], &many_headers, b"\r\n"].concat(),
            431,
        ),
        (
            "a 500 KB header",
            [&b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: "[..], &vec![b'a'; 500_000], b"\r\n\r\n"].concat(),
            431,
        ),
        (
            "a 70 KB request target",
            [&b"GET /"[..], &vec![b'a'; 70_000], b" HTTP/1.1\r\nHost: x\r\n\r\n"].concat(),
            414,
        ),
    ];
    for (what, raw, status) in &cases {
        let out = exchange(addr, raw).await;
        let rs = responses(&out);
        assert_eq!(rs.len(), 1, "{what}: {:?}", String::from_utf8_lossy(&out));
        assert_json_error(&rs[0], *status, what);
        assert_eq!(rs[0].headers.get("connection").map(String::as_str), Some("close"), "{what}");
    }
    assert_eq!(state.metrics.protocol_rejections.get(), cases.len() as u64);

    // On a keep-alive connection the good request is answered by the router, the bad one after it
    // by hyper — as JSON too.
    let out =
        exchange(addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /\xff HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
    let rs = responses(&out);
    assert_eq!(rs.len(), 2, "{:?}", String::from_utf8_lossy(&out));
    assert_eq!(rs[0].status, 200);
    assert!(rs[0].headers.contains_key("x-request-id"));
    assert_json_error(&rs[1], 400, "bad request after a good one");

    // The router's own errors pass through unchanged (they carry a request id).
    let rs = responses(&exchange(addr, b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await);
    assert_json_error(&rs[0], 404, "unknown route");
    assert!(rs[0].headers.contains_key("x-request-id"));
    let rs = responses(
        &exchange(addr, b"GET /v1/secrets/a%2F..%2Fb HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await,
    );
    assert!(rs[0].status == 400 && rs[0].headers.contains_key("x-request-id"), "{}", rs[0].status);
    assert_eq!(state.metrics.protocol_rejections.get(), cases.len() as u64 + 1);
}

/// Opens a connection, sends `head` and then one more header byte every 100 ms; returns how long
/// the server kept the connection open (`None`: still open after `give_up`). Fails if the server
/// answers anything.
async fn trickle(addr: SocketAddr, head: &[u8], give_up: Duration) -> Option<Duration> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    s.write_all(head).await.unwrap();
    let mut buf = [0u8; 1024];
    while started.elapsed() < give_up {
        if s.write_all(b"a").await.is_err() {
            return Some(started.elapsed());
        }
        match tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
            Err(_) => {}                                              // nothing yet: still open
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()), // closed or reset
            Ok(Ok(n)) => {
                panic!("server answered a request it never got: {:?}", String::from_utf8_lossy(&buf[..n]))
            }
        }
    }
    None
}

#[tokio::test]
async fn a_client_trickling_its_request_head_is_cut() {
    let slow = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    // With a long timeout the trickle holds the connection (so the cut below is the timeout's).
    let (patient, _) = start(Duration::from_secs(60)).await;
    assert_eq!(
        trickle(patient, slow, Duration::from_secs(2)).await,
        None,
        "connection closed without a timeout"
    );

    let (addr, _) = start(Duration::from_millis(700)).await;
    let held =
        trickle(addr, slow, Duration::from_secs(10)).await.expect("slow client still connected after 10 s");
    assert!(held >= Duration::from_millis(600) && held < Duration::from_secs(3), "cut after {held:?}");
    // A request line trickled from its first byte, and a connection that sends nothing at all
    // (before hyper has even seen which protocol this is), are cut too.
    let held = trickle(addr, b"", Duration::from_secs(10)).await;
    assert!(held.is_some_and(|d| d < Duration::from_secs(3)), "{held:?}");
    let mut idle = TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf)).await;
    assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "an idle connection was not closed: {n:?}");

    // A keep-alive connection waiting for its next request is closed after the same time.
    let mut ka = TcpStream::connect(addr).await.unwrap();
    ka.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 4096];
    let n = ka.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&buf[..n]));
    let idle_from = Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(5), ka.read(&mut buf)).await;
    assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "an idle keep-alive connection was not closed: {n:?}");
    assert!(idle_from.elapsed() >= Duration::from_millis(600), "closed too early: {:?}", idle_from.elapsed());

    // A client sending its head at once is not affected.
    let rs =
        responses(&exchange(addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await);
    assert_eq!(rs[0].status, 200);
}
