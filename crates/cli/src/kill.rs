//! Abrupt in-process stops ("kill -9" of a [`crate::server::Node`] inside a test process).
//!
//! A tonic server that stops gracefully drains its connections; a killed process instead drops
//! every connection at once, and its peers see resets. [`Killable`] wraps each accepted
//! connection: once the node's kill token is cancelled, every read and write fails with
//! `ConnectionAborted`, so the connection tasks end and drop their sockets wherever they run.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use comet_auth::MaybeTls;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// A connection that fails every I/O call once its node is killed.
pub struct Killable {
    inner: MaybeTls,
    killed: Pin<Box<WaitForCancellationFutureOwned>>,
    dead: bool,
}

impl Killable {
    /// Wraps `inner`; cancelling `kill` kills it.
    pub fn new(inner: MaybeTls, kill: CancellationToken) -> Self {
        Killable {
            inner,
            killed: Box::pin(kill.cancelled_owned()),
            dead: false,
        }
    }

    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if !self.dead && self.killed.as_mut().poll(cx).is_ready() {
            self.dead = true;
        }
        if self.dead {
            Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the node was killed",
            ))
        } else {
            Ok(())
        }
    }
}

impl AsyncRead for Killable {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Err(e) = self.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Killable {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Err(e) = self.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Err(e) = self.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Err(e) = self.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Err(e) = self.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl Connected for Killable {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    #[tokio::test]
    async fn given_a_killed_switch_when_reading_should_fail_and_the_peer_should_see_eof() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let kill = CancellationToken::new();
        let mut k = Killable::new(MaybeTls::Plain(server), kill.clone());
        client.write_all(b"hi").await.unwrap();
        let mut buf = [0u8; 2];
        k.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hi");
        let blocked = tokio::spawn(async move {
            let mut b = [0u8; 1];
            let r = k.read(&mut b).await;
            drop(k);
            r
        });
        kill.cancel();
        let err = blocked.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
        let mut b = [0u8; 1];
        assert_eq!(client.read(&mut b).await.unwrap(), 0, "peer sees the close");
    }
}
