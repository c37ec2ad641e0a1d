//! [`GatherIo`]: the write side of the SDK's HTTP/2 connections, gathered into one system
//! call per round of the connection's task.
//!
//! Why: `h2` hands every DATA frame of 256 bytes or more to the socket on its own (frame head
//! and payload in one `writev`) and flushes after each batch it encodes. A producer sending
//! 1 KiB messages from many tasks at once would pay one `writev` per message, although the
//! frames of several sends are usually ready together. The proxy and the load generator solve
//! this with the `comet-coalesce` crate's `CoalescedIo`.
//!
//! Why the SDK has its own: it depends on the proto crate alone (issue 17; the crate rules in
//! `tests/tests/layering.rs` hold it to that), so that it builds, and can be published, as a
//! client of any RocketMQ 5 proxy with no Comet crate behind it. The one crate it shares with
//! the servers is no home for a socket wrapper: the proto crate is pure generated code, with
//! no I/O and no tokio. And the other way round, the proxy taking the wrapper from the SDK,
//! would make a server depend on the client library. So the write half of the technique
//! lives here a second time, written for a client: no read buffering (a client's reads on
//! this connection are its answers, which are small, while the proxy reads large bursts of
//! sends) and no tonic `Connected` impl. A fix to the flush rule below belongs in both copies.
//!
//! How: writes are copied into a buffer. The first flush that finds bytes buffered does not
//! write them: it wakes the connection task and reports success, so the task yields and
//! runs again after the tasks that were ready before it (which may add frames). The task's
//! next round begins with a read; from then on the buffered bytes are due, and the round's
//! flush writes everything in one call. A round that ends without a flush writes at its
//! first read instead.
//!
//! Invariants: bytes reach the socket in the order they were written; at most
//! [`MAX_BUFFERED`] bytes wait (a write that would exceed it first writes out what waits; a
//! write of that size or more, with nothing waiting, goes to the socket directly); a deferred
//! flush always wakes the task, so buffered bytes never wait for outside activity; shutdown
//! writes them before closing.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Most bytes kept waiting before they are written regardless of flushes.
pub(crate) const MAX_BUFFERED: usize = 64 * 1024;

/// Where the buffered bytes stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    /// No flush has been deferred.
    NotAsked,
    /// A flush was answered without writing in this round of the task.
    Deferred,
    /// The task has started a new round since: the next flush (or read) writes.
    Now,
}

/// An I/O object whose writes wait for the end of the connection task's round; see the
/// module documentation.
#[derive(Debug)]
pub(crate) struct GatherIo<S> {
    io: S,
    /// Bytes accepted from the caller; `buf[written..]` has not reached the socket yet.
    buf: Vec<u8>,
    written: usize,
    due: Due,
}

impl<S> GatherIo<S> {
    pub(crate) fn new(io: S) -> Self {
        GatherIo {
            io,
            buf: Vec::new(),
            written: 0,
            due: Due::NotAsked,
        }
    }

    /// Bytes accepted and not yet written to the socket.
    pub(crate) fn waiting(&self) -> usize {
        self.buf.len() - self.written
    }
}

impl<S: AsyncWrite + Unpin> GatherIo<S> {
    /// Writes every waiting byte; `Pending` while the socket is full (its readiness wakes the
    /// task).
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.buf.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.buf[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.buf.clear();
        self.written = 0;
        self.due = Due::NotAsked;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for GatherIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.due {
            Due::NotAsked => {}
            // The task runs again after deferring: a new round.
            Due::Deferred => this.due = Due::Now,
            // A round went by without a flush: write now. A full socket is no reason to hold
            // the read back; its readiness wakes the task.
            Due::Now => {
                if let Poll::Ready(Err(e)) = this.poll_write_out(cx) {
                    return Poll::Ready(Err(e));
                }
            }
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for GatherIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        if len == 0 {
            return Poll::Ready(Ok(0));
        }
        if this.waiting() + len > MAX_BUFFERED {
            ready!(this.poll_write_out(cx))?;
            if len >= MAX_BUFFERED {
                // Nothing waits any more, so this cannot overtake earlier bytes.
                return Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
            }
        }
        for b in bufs {
            this.buf.extend_from_slice(b);
        }
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.waiting() > 0 {
            match this.due {
                Due::NotAsked => {
                    this.due = Due::Deferred;
                    cx.waker().wake_by_ref();
                    return Poll::Ready(Ok(()));
                }
                Due::Deferred => return Poll::Ready(Ok(())),
                Due::Now => ready!(this.poll_write_out(cx))?,
            }
        }
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Wake, Waker};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// What the peer can read right now, without waiting.
    async fn readable(peer: &mut DuplexStream) -> Vec<u8> {
        let mut out = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match futures::poll!(std::pin::pin!(peer.read(&mut chunk))) {
                Poll::Ready(Ok(0)) | Poll::Pending => return out,
                Poll::Ready(Ok(n)) => out.extend_from_slice(&chunk[..n]),
                Poll::Ready(Err(e)) => panic!("peer read failed: {e}"),
            }
        }
    }

    /// Starts the connection task's next round, as h2 does: a read that finds nothing.
    async fn next_round(io: &mut GatherIo<DuplexStream>) {
        let mut byte = [0u8; 1];
        assert!(futures::poll!(std::pin::pin!(io.read(&mut byte))).is_pending());
    }

    #[tokio::test]
    async fn given_two_sends_in_one_round_when_flushed_should_leave_in_one_write_next_round() {
        let (ours, mut peer) = tokio::io::duplex(1 << 20);
        let mut io = GatherIo::new(ours);
        io.write_all(b"first").await.unwrap();
        io.flush().await.unwrap();
        io.write_all(b"second").await.unwrap();
        io.flush().await.unwrap();
        assert_eq!(readable(&mut peer).await, b"", "flushes of one round wait");
        assert_eq!(io.waiting(), 11);
        next_round(&mut io).await;
        io.write_all(b"third").await.unwrap();
        io.flush().await.unwrap();
        assert_eq!(readable(&mut peer).await, b"firstsecondthird");
        assert_eq!(io.waiting(), 0);
    }

    #[tokio::test]
    async fn given_a_deferred_flush_should_wake_the_task_once() {
        let (ours, _peer) = tokio::io::duplex(1 << 20);
        let mut io = GatherIo::new(ours);
        io.write_all(b"x").await.unwrap();
        let wakes = Arc::new(Wakes(AtomicUsize::new(0)));
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        for _ in 0..3 {
            assert!(matches!(
                Pin::new(&mut io).poll_flush(&mut cx),
                Poll::Ready(Ok(()))
            ));
        }
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn given_a_round_without_flush_should_write_at_its_read() {
        let (ours, mut peer) = tokio::io::duplex(1 << 20);
        let mut io = GatherIo::new(ours);
        io.write_all(b"late").await.unwrap();
        io.flush().await.unwrap();
        next_round(&mut io).await;
        assert_eq!(readable(&mut peer).await, b"");
        next_round(&mut io).await;
        assert_eq!(readable(&mut peer).await, b"late");
    }

    #[tokio::test]
    async fn given_writes_past_the_limit_should_keep_their_order_and_bound() {
        let (ours, mut peer) = tokio::io::duplex(8 << 20);
        let mut io = GatherIo::new(ours);
        let small = vec![1u8; 700];
        let big = vec![2u8; MAX_BUFFERED + 1];
        io.write_all(&small).await.unwrap();
        io.write_all(&big).await.unwrap();
        assert_eq!(io.waiting(), 0, "a big write goes out after what waited");
        for _ in 0..300 {
            io.write_all(&small).await.unwrap();
            assert!(io.waiting() <= MAX_BUFFERED);
        }
        io.shutdown().await.unwrap();
        let mut got = Vec::new();
        peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), 700 + MAX_BUFFERED + 1 + 300 * 700);
        assert!(got[..700].iter().all(|&b| b == 1));
        assert!(got[700..700 + MAX_BUFFERED + 1].iter().all(|&b| b == 2));
        assert!(got[700 + MAX_BUFFERED + 1..].iter().all(|&b| b == 1));
    }

    #[tokio::test]
    async fn given_reads_should_pass_through() {
        let (ours, mut peer) = tokio::io::duplex(1 << 20);
        let mut io = GatherIo::new(ours);
        peer.write_all(b"answer").await.unwrap();
        let mut got = [0u8; 6];
        io.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"answer");
    }
}
