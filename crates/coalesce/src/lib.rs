//! [`CoalescedIo`]: an I/O wrapper that gathers the writes of an HTTP/2 connection into
//! one system call per round of the connection's task, and reads in large chunks.
//!
//! The `h2` crate writes each DATA frame of 256 bytes or more straight from its payload
//! buffer: it hands the frame head and the payload to the socket in one `writev`, and flushes
//! before it encodes the next frame. On a connection that carries many small messages (1 KiB
//! sends from a client, the messages of a ReceiveMessage stream from a server) that is one
//! `writev` per message, however many messages were ready together. Netty has the same
//! problem and solves it the same way (`FlushConsolidationHandler`).
//!
//! The wrapper copies writes into its own buffer and answers the flush that follows at once;
//! it wakes the connection's task, so the bytes go out when the task next runs. By then the
//! other tasks that were ready (handlers finishing calls, producers queueing requests) have
//! added their frames, and everything leaves in one write.
//!
//! Reads: `h2` reads into what is left of an 8 KiB buffer, so a peer's 64 KiB write took
//! eight `recvfrom` calls. Once a read fills the caller's buffer (the peer is busy), the
//! wrapper reads up to [`READ_CHUNK`] at a time and serves the small reads from that chunk.
//! It lets go of the chunk after a short read, so a quiet connection holds no read buffer.
//!
//! # Invariants
//!
//! - Bytes leave in the order they were written; a large write when nothing is held goes to
//!   the socket directly, never around held bytes.
//! - At most [`HOLD_LIMIT`] bytes are held; a write that would go over it first writes out
//!   what is held.
//! - Held bytes are never forgotten: a flush that is put off wakes the task, and the next
//!   round writes them (in its flush, or in its first read if no flush comes); shutdown
//!   writes them before closing.
//!
//! # Users
//!
//! The proxy wraps its accepted connections in it (with the `tonic` feature, which implements
//! tonic's `Connected` so connection info still reaches the handlers); the load generator
//! (`comet-bench`) wraps its client connections. It depends on no workspace crate, so neither
//! user reaches into the other.
#![forbid(unsafe_code)]

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Most bytes held before a write goes to the socket regardless of flushes.
pub const HOLD_LIMIT: usize = 64 * 1024;

/// Bytes asked of the socket by one buffered read.
pub const READ_CHUNK: usize = 64 * 1024;

/// A chunk read shorter than this means the peer is not busy: the chunk is let go.
const QUIET_READ: usize = 4 * 1024;

/// An I/O object whose writes are gathered and written once per task round; see the
/// module documentation.
#[derive(Debug)]
pub struct CoalescedIo<S> {
    inner: S,
    /// Bytes written by the caller and not yet by the socket: `held[sent..]`.
    held: Vec<u8>,
    sent: usize,
    flush: Flush,
    /// The read chunk, while the peer is busy. Bytes read from the socket and not yet by
    /// the caller: `chunk[taken..filled]`.
    chunk: Option<Box<[u8]>>,
    taken: usize,
    filled: usize,
}

/// Where a put-off flush stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flush {
    /// No flush put off.
    Idle,
    /// A flush was answered without writing and the task was woken. `next_round` turns true
    /// at the first read after that: the task has run again, so the next flush writes.
    PutOff { next_round: bool },
}

impl<S> CoalescedIo<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        CoalescedIo {
            inner,
            held: Vec::new(),
            sent: 0,
            flush: Flush::Idle,
            chunk: None,
            taken: 0,
            filled: 0,
        }
    }

    /// The wrapped I/O object.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Bytes held and not yet written to the socket.
    pub fn held(&self) -> usize {
        self.held.len() - self.sent
    }
}

#[cfg(feature = "tonic")]
impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected
    for CoalescedIo<S>
{
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl<S: AsyncWrite + Unpin> CoalescedIo<S> {
    /// Writes everything held. `Pending` when the socket is full (its readiness wakes the
    /// task).
    fn poll_write_held(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.held.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.held[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.held.clear();
        self.sent = 0;
        self.flush = Flush::Idle;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for CoalescedIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.flush {
            Flush::Idle => {}
            Flush::PutOff { next_round: false } => {
                this.flush = Flush::PutOff { next_round: true };
            }
            // A whole round went by without a flush: write now rather than hold the bytes
            // for another. A full socket is fine here; its readiness wakes the task.
            Flush::PutOff { next_round: true } => {
                if let Poll::Ready(Err(e)) = this.poll_write_held(cx) {
                    return Poll::Ready(Err(e));
                }
            }
        }
        if this.taken == this.filled {
            let Some(chunk) = this.chunk.as_deref_mut() else {
                // No chunk (a quiet connection): read into the caller's buffer. If that came
                // back full, the peer may be sending more: read in chunks from now on.
                let before = buf.filled().len();
                ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
                if buf.remaining() == 0 && buf.filled().len() > before {
                    this.chunk = Some(vec![0; READ_CHUNK].into_boxed_slice());
                }
                return Poll::Ready(Ok(()));
            };
            if buf.remaining() >= READ_CHUNK {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            let mut into = ReadBuf::new(chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut into))?;
            this.filled = into.filled().len();
            this.taken = 0;
        }
        if let Some(chunk) = this.chunk.as_deref() {
            let n = buf.remaining().min(this.filled - this.taken);
            buf.put_slice(&chunk[this.taken..this.taken + n]);
            this.taken += n;
        }
        if this.taken == this.filled && this.filled < QUIET_READ {
            // The last chunk read was small: the peer is not busy, so hold no buffer.
            this.chunk = None;
            this.taken = 0;
            this.filled = 0;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CoalescedIo<S> {
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
        if this.held() + len > HOLD_LIMIT {
            ready!(this.poll_write_held(cx))?;
            if len >= HOLD_LIMIT {
                return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
            }
        }
        for b in bufs {
            this.held.extend_from_slice(b);
        }
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.held() > 0 {
            match this.flush {
                Flush::Idle => {
                    // Answer now, write when the task runs again: whatever the tasks ahead
                    // of it add goes out in the same write.
                    this.flush = Flush::PutOff { next_round: false };
                    cx.waker().wake_by_ref();
                    return Poll::Ready(Ok(()));
                }
                Flush::PutOff { next_round: false } => return Poll::Ready(Ok(())),
                Flush::PutOff { next_round: true } => ready!(this.poll_write_held(cx))?,
            }
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_held(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Wake, Waker};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A waker that counts its wakes.
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn count_waker() -> (Waker, Arc<Count>) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        (Waker::from(count.clone()), count)
    }

    /// Reads whatever is available on `rx` without waiting for more.
    async fn available(rx: &mut tokio::io::DuplexStream) -> Vec<u8> {
        let mut out = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match futures::poll!(std::pin::pin!(rx.read(&mut chunk))) {
                Poll::Ready(Ok(0)) | Poll::Pending => return out,
                Poll::Ready(Ok(n)) => out.extend_from_slice(&chunk[..n]),
                Poll::Ready(Err(e)) => panic!("read failed: {e}"),
            }
        }
    }

    #[tokio::test]
    async fn a_flush_is_put_off_until_the_next_round() {
        let (a, mut b) = tokio::io::duplex(1 << 20);
        let mut w = CoalescedIo::new(a);
        w.write_all(b"one").await.unwrap();
        w.flush().await.unwrap();
        w.write_all(b"two").await.unwrap();
        w.flush().await.unwrap();
        assert_eq!(
            available(&mut b).await,
            b"",
            "the first round's flushes write nothing"
        );
        assert_eq!(w.held(), 6);
        // The next round starts with a read (as the HTTP/2 connection's does) and ends with a
        // flush, which writes everything held, in order.
        let mut none = [0u8; 1];
        assert!(futures::poll!(std::pin::pin!(w.read(&mut none))).is_pending());
        w.write_all(b"three").await.unwrap();
        w.flush().await.unwrap();
        assert_eq!(available(&mut b).await, b"onetwothree");
        assert_eq!(w.held(), 0);
    }

    #[tokio::test]
    async fn a_put_off_flush_wakes_the_task() {
        let (a, _b) = tokio::io::duplex(1 << 20);
        let mut w = CoalescedIo::new(a);
        w.write_all(b"x").await.unwrap();
        let (waker, count) = count_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(matches!(
            Pin::new(&mut w).poll_flush(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "the task must run again to write the held bytes"
        );
        assert!(matches!(
            Pin::new(&mut w).poll_flush(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "one wake per put-off flush"
        );
    }

    #[tokio::test]
    async fn a_round_without_a_flush_writes_at_its_first_read() {
        let (a, mut b) = tokio::io::duplex(1 << 20);
        let mut w = CoalescedIo::new(a);
        w.write_all(b"held").await.unwrap();
        w.flush().await.unwrap();
        let mut none = [0u8; 1];
        assert!(futures::poll!(std::pin::pin!(w.read(&mut none))).is_pending());
        assert_eq!(available(&mut b).await, b"", "the next round has begun");
        assert!(futures::poll!(std::pin::pin!(w.read(&mut none))).is_pending());
        assert_eq!(
            available(&mut b).await,
            b"held",
            "the round after that writes"
        );
    }

    /// Counts the reads that reach the socket.
    struct Counted<S> {
        inner: S,
        reads: usize,
    }

    impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
            if polled.is_ready() {
                self.reads += 1;
            }
            polled
        }
    }

    impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.inner).poll_write(cx, buf)
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    #[tokio::test]
    async fn a_busy_peer_is_read_in_chunks_and_a_quiet_one_without() {
        let (a, mut b) = tokio::io::duplex(1 << 20);
        let mut r = CoalescedIo::new(Counted { inner: a, reads: 0 });
        let mut small = [0u8; 8 * 1024];

        // Quiet: one short read, straight into the caller's buffer, and no chunk kept.
        b.write_all(&[9u8; 100]).await.unwrap();
        assert_eq!(r.read(&mut small).await.unwrap(), 100);
        assert!(r.chunk.is_none());

        // Busy: 256 KiB read 8 KiB at a time takes one socket read per 64 KiB chunk (after
        // the first read, which shows the peer is busy), and comes out in order.
        let sent: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8).collect();
        b.write_all(&sent).await.unwrap();
        let before = r.get_ref().reads;
        let mut got = Vec::new();
        while got.len() < sent.len() {
            let n = r.read(&mut small).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&small[..n]);
        }
        assert_eq!(got, sent);
        let reads = r.get_ref().reads - before;
        assert!(reads <= 1 + 4, "{reads} socket reads for 256 KiB");
        assert!(r.chunk.is_some(), "a busy connection keeps its chunk");

        // Quiet again: the chunk goes after a short read.
        b.write_all(&[1u8; 10]).await.unwrap();
        assert_eq!(r.read(&mut small).await.unwrap(), 10);
        assert!(r.chunk.is_none());

        // End of stream.
        drop(b);
        assert_eq!(r.read(&mut small).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn writes_over_the_limit_go_out_in_order() {
        let (a, mut b) = tokio::io::duplex(4 << 20);
        let mut w = CoalescedIo::new(a);
        let small = vec![1u8; 1000];
        let large = vec![2u8; HOLD_LIMIT + 10];
        w.write_all(&small).await.unwrap();
        w.write_all(&large).await.unwrap();
        assert_eq!(
            w.held(),
            0,
            "a large write goes straight out, after what was held"
        );
        let got = available(&mut b).await;
        assert_eq!(got.len(), small.len() + large.len());
        assert_eq!(&got[..1000], &small[..]);
        assert!(got[1000..].iter().all(|&x| x == 2));
        // Many small writes never hold more than the limit.
        for _ in 0..200 {
            w.write_all(&small).await.unwrap();
            assert!(w.held() <= HOLD_LIMIT);
        }
        w.shutdown().await.unwrap();
        let mut rest = Vec::new();
        b.read_to_end(&mut rest).await.unwrap();
        assert_eq!(got.len() + rest.len(), 1000 + HOLD_LIMIT + 10 + 200 * 1000);
        assert!(
            rest.iter().all(|&x| x == 1),
            "shutdown writes everything held"
        );
    }

    #[tokio::test]
    async fn a_full_socket_holds_the_writer_back() {
        let (a, mut b) = tokio::io::duplex(1024);
        let mut w = CoalescedIo::new(a);
        let chunk = vec![7u8; 8 * 1024];
        let mut accepted = 0usize;
        let (waker, _count) = count_waker();
        let mut cx = Context::from_waker(&waker);
        for _ in 0..64 {
            match Pin::new(&mut w).poll_write(&mut cx, &chunk) {
                Poll::Ready(Ok(n)) => accepted += n,
                Poll::Ready(Err(e)) => panic!("write failed: {e}"),
                Poll::Pending => break,
            }
        }
        assert!(
            accepted <= HOLD_LIMIT + 1024,
            "accepted {accepted} bytes with a 1 KiB socket"
        );
        drop(w);
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        assert!(got.iter().all(|&x| x == 7));
    }
}
