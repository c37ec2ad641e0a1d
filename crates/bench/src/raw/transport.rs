//! The bench's HTTP/2 transport: hyper client connections called directly.
//!
//! tonic's `Channel` puts a buffer task between its callers and the connection, so every call
//! is handed from the caller's task to the buffer task and then to the connection task. The
//! bench shares its machine with the server it measures, and that extra hand-off (a task
//! wake-up, often on the other core) was a visible share of the bench's CPU per message. A
//! [`Conn`] sends straight into the connection task, as a hyper HTTP/2 client does.
//!
//! The socket is wrapped in a [`CoalescedIo`]: `h2` writes every DATA frame of 256 bytes
//! or more in its own `writev`, so without it each 1 KiB send was a system call of its own.
//!
//! Invariant: a `Conn` is cheap to clone (all clones share one TCP connection); the
//! connection task ends when the last clone is dropped or the peer closes.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::Context;
use hyper::body::Incoming;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use comet_coalesce::CoalescedIo;

/// One HTTP/2 connection to the proxy, usable as a tonic transport.
#[derive(Debug, Clone)]
pub(crate) struct Conn {
    send: SendRequest<tonic::body::Body>,
}

type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<Incoming>, hyper::Error>> + Send>>;

impl tower::Service<http::Request<tonic::body::Body>> for Conn {
    type Response = http::Response<Incoming>;
    type Error = hyper::Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.send.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.send.send_request(request))
    }
}

/// Flow-control window of each stream (a receive of a 4 MiB message fits).
pub(crate) const STREAM_WINDOW: u32 = 4 << 20;

/// Flow-control window of each connection.
pub(crate) const CONNECTION_WINDOW: u32 = 16 << 20;

/// Opens one HTTP/2 connection to `authority` (`host:port`) within `timeout` (see [`dial`]):
/// fixed flow-control windows and keep-alive pings like the official clients'.
pub(crate) async fn open(authority: &str, timeout: Duration) -> anyhow::Result<Conn> {
    let send = dial(authority, timeout, |io| {
        http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            // Fixed windows, large enough for the in-flight sends of one connection: an
            // adaptive window estimates bandwidth with PING frames, about one per round trip,
            // and on loopback those pings cost the server almost as much as requests do.
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .handshake(TokioIo::new(io))
    })
    .await?;
    Ok(Conn { send })
}

/// Connects to `authority` within `timeout` (TCP with `TCP_NODELAY`, writes gathered per
/// round of the connection task), runs the HTTP/2 `handshake` over it, spawns the connection
/// task the handshake returns and returns its request handle.
pub(crate) async fn dial<H, C, CE, HE, F>(
    authority: &str,
    timeout: Duration,
    handshake: impl FnOnce(CoalescedIo<TcpStream>) -> F,
) -> anyhow::Result<H>
where
    F: Future<Output = Result<(H, C), HE>>,
    HE: std::error::Error + Send + Sync + 'static,
    C: Future<Output = Result<(), CE>> + Send + 'static,
    CE: std::fmt::Display,
{
    let connect = async {
        let tcp = TcpStream::connect(authority).await?;
        tcp.set_nodelay(true)?;
        let (handle, connection) = handshake(CoalescedIo::new(tcp))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "bench connection ended");
            }
        });
        Ok::<_, std::io::Error>(handle)
    };
    tokio::time::timeout(timeout, connect)
        .await
        .map_err(|_| anyhow::anyhow!("connecting took longer than {timeout:?}"))?
        .with_context(|| format!("connecting to {authority}"))
}
