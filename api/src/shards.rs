//! Serving threads (`VAULT_API_THREADS`): each runs its own current-thread runtime, accepts from a
//! duplicate of the one listening socket, and is pinned to its share of the store's reader
//! connections ([`ReadShard`]). A request, the database read it makes and the tokio-postgres task
//! driving that connection then stay on one thread. On one multi-thread runtime every read woke a
//! task on another thread twice, which cost about a third of the read throughput on 2 cores
//! (`store/examples/read_bench`: 0.65–0.67× pgbench at 8 tasks, 0.87–0.90× sharded).
//!
//! One socket, not `SO_REUSEPORT`: binding fails as before when the port is taken, and no other
//! process of the same user can join the listening group.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use axum_server::Handle;
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use hyperion_vault_store::read_shard::ReadShard;
use tokio::sync::oneshot;

/// The running serving threads.
pub struct Shards {
    handles: Vec<Handle<SocketAddr>>,
    done: Vec<oneshot::Receiver<io::Result<()>>>,
}

/// Starts `count` threads, each calling `serve` with its own copy of `listener` (non-blocking) and
/// its own shutdown handle, inside its own runtime.
pub fn spawn<S, F>(count: usize, listener: &std::net::TcpListener, serve: S) -> io::Result<Shards>
where
    S: FnOnce(tokio::net::TcpListener, Handle<SocketAddr>) -> F + Clone + Send + 'static,
    F: Future<Output = io::Result<()>>,
{
    listener.set_nonblocking(true)?;
    let mut shards = Shards { handles: Vec::with_capacity(count), done: Vec::with_capacity(count) };
    for index in 0..count {
        let shard = ReadShard::new(index, count).ok_or_else(|| io::Error::other("invalid shard index"))?;
        let listener = listener.try_clone()?;
        let handle = Handle::new();
        let (tx, rx) = oneshot::channel();
        let (serve, h) = (serve.clone(), handle.clone());
        std::thread::Builder::new().name(format!("hv-api-{index}")).spawn(move || {
            shard.pin_current_thread();
            let result = tokio::runtime::Builder::new_current_thread().enable_all().build().and_then(|rt| {
                rt.block_on(async move { serve(tokio::net::TcpListener::from_std(listener)?, h).await })
            });
            let _ = tx.send(result);
        })?;
        shards.handles.push(handle);
        shards.done.push(rx);
    }
    Ok(shards)
}

impl Shards {
    /// Graceful shutdown of every thread: in-flight requests get `grace`.
    pub fn shutdown_handle(&self) -> impl Fn(Duration) + Send + 'static {
        let handles = self.handles.clone();
        move |grace| handles.iter().for_each(|h| h.graceful_shutdown(Some(grace)))
    }

    /// Waits for every thread to finish. The first one that fails (or panics) shuts the others
    /// down with `grace`, and its error is returned.
    pub async fn wait(self, grace: Duration) -> io::Result<()> {
        let shutdown = self.shutdown_handle();
        let mut pending: FuturesUnordered<_> = self.done.into_iter().collect();
        let mut first = Ok(());
        while let Some(done) = pending.next().await {
            let result = done.unwrap_or_else(|_| Err(io::Error::other("a serving thread panicked")));
            if let Err(e) = result
                && first.is_ok()
            {
                shutdown(grace);
                first = Err(e);
            }
        }
        first
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read as _, Write as _};

    fn thread_name() -> String {
        std::thread::current().name().unwrap_or("unnamed").to_owned()
    }

    fn get(addr: SocketAddr) -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[tokio::test]
    async fn requests_are_answered_on_the_serving_threads_until_shutdown() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shards = spawn(2, &listener, |l, handle| async move {
            let app = axum::Router::new().route("/", axum::routing::get(|| async { thread_name() }));
            axum_server::Server::from_listener(l).handle(handle).serve(app.into_make_service()).await
        })
        .unwrap();
        let answers = tokio::task::spawn_blocking(move || (0..20).map(|_| get(addr)).collect::<Vec<_>>())
            .await
            .unwrap();
        for a in &answers {
            assert!(
                a.starts_with("HTTP/1.1 200") && (a.ends_with("hv-api-0") || a.ends_with("hv-api-1")),
                "{a}"
            );
        }
        shards.shutdown_handle()(Duration::from_secs(1));
        tokio::time::timeout(Duration::from_secs(10), shards.wait(Duration::ZERO))
            .await
            .expect("every thread stops on shutdown")
            .unwrap();
    }

    #[tokio::test]
    async fn one_failing_thread_stops_the_others_and_its_error_is_returned() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let shards = spawn(3, &listener, |l, handle| async move {
            if thread_name() == "hv-api-1" {
                return Err(io::Error::other("bind went wrong"));
            }
            let app = axum::Router::new();
            axum_server::Server::from_listener(l).handle(handle).serve(app.into_make_service()).await
        })
        .unwrap();
        let e = tokio::time::timeout(Duration::from_secs(10), shards.wait(Duration::ZERO))
            .await
            .expect("the failure stops every thread")
            .unwrap_err();
        assert_eq!(e.to_string(), "bind went wrong");
    }
}
