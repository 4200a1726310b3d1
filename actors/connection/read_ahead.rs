//! Socket reads in bursts under TLS and WebSocket, with nothing held while a peer is idle.
//!
//! OpenSSL (read-ahead off, and native-tls gives no way to turn it on) reads a TLS record
//! in two calls, its 5-byte header and then its body, and asks once more before it knows
//! the socket is empty; tungstenite reads a WebSocket into a small buffer
//! ([`super::ws::WS_READ_BUFFER`]). Straight on the socket each of those calls is a
//! `recvfrom`: three or more system calls for one SIP message. [`ReadAhead`] makes it one:
//! a short read takes up to [`READ_AHEAD`] bytes from the socket and serves the next reads
//! from them. The buffer exists only while it holds unread bytes (it is freed when they
//! are used up and before waiting on the socket), so an idle connection keeps no memory
//! for it: with tens of thousands of WSS clients a permanent buffer would cost
//! `READ_AHEAD` each.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes taken from the socket at once for a short read: a SIP message over TLS or
/// WebSocket, and usually all that arrived with it, in one system call.
pub const READ_AHEAD: usize = 4096;

/// A stream whose short reads are served from one burst read off `inner` (see the module).
#[derive(Debug)]
pub struct ReadAhead<S> {
    inner: S,
    /// Read from the socket and not yet handed out: `buf[start..end]`; empty when none.
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl<S> ReadAhead<S> {
    pub fn new(inner: S) -> ReadAhead<S> {
        ReadAhead {
            inner,
            buf: Box::default(),
            start: 0,
            end: 0,
        }
    }

    /// Whether unread bytes are held (for tests: none once they are used up).
    #[cfg(test)]
    fn holds_memory(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Hands out what is held; frees the buffer once it is used up.
    fn serve(&mut self, out: &mut ReadBuf<'_>) {
        let n = out.remaining().min(self.end - self.start);
        out.put_slice(&self.buf[self.start..self.start + n]);
        self.start += n;
        if self.start == self.end {
            self.release();
        }
    }

    fn release(&mut self) {
        self.buf = Box::default();
        (self.start, self.end) = (0, 0);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.start < this.end {
            this.serve(out);
            return Poll::Ready(Ok(()));
        }
        if out.remaining() >= READ_AHEAD {
            // A large read gains nothing from a copy in between.
            return Pin::new(&mut this.inner).poll_read(cx, out);
        }
        if this.buf.is_empty() {
            this.buf = vec![0; READ_AHEAD].into_boxed_slice();
        }
        let mut burst = ReadBuf::new(&mut this.buf);
        match Pin::new(&mut this.inner).poll_read(cx, &mut burst) {
            Poll::Ready(Ok(())) => {
                this.end = burst.filled().len();
                this.start = 0;
                if this.end == 0 {
                    this.release(); // end of stream: an empty read says so
                } else {
                    this.serve(out);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => {
                this.release();
                Poll::Ready(Err(e))
            }
            Poll::Pending => {
                this.release(); // nothing held while waiting
                Poll::Pending
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadAhead<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Counts the reads that reach the inner stream.
    struct Counted<S> {
        inner: S,
        reads: usize,
    }

    impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            out: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            this.reads += 1;
            Pin::new(&mut this.inner).poll_read(cx, out)
        }
    }

    #[tokio::test]
    async fn small_reads_take_one_burst_and_hold_nothing_after() {
        let (mut peer, ours) = tokio::io::duplex(64 * 1024);
        let message: Vec<u8> = (0..1500u32).map(|i| (i % 251) as u8).collect();
        peer.write_all(&message).await.unwrap();
        let mut r = ReadAhead::new(Counted {
            inner: ours,
            reads: 0,
        });
        // As OpenSSL reads a record: 5 bytes, then the rest in pieces.
        let mut got = vec![0u8; 5];
        r.read_exact(&mut got).await.unwrap();
        for chunk in [512, 512, 471] {
            let mut part = vec![0u8; chunk];
            r.read_exact(&mut part).await.unwrap();
            got.extend_from_slice(&part);
        }
        assert_eq!(got, message);
        assert_eq!(
            r.inner.reads, 1,
            "one read of the socket for the whole message"
        );
        assert!(!r.holds_memory(), "the burst is freed once used up");
    }

    #[tokio::test]
    async fn large_reads_pass_through_and_end_of_stream_is_kept() {
        let (mut peer, ours) = tokio::io::duplex(64 * 1024);
        let data = vec![7u8; 3 * READ_AHEAD];
        peer.write_all(&data).await.unwrap();
        drop(peer);
        let mut r = ReadAhead::new(ours);
        let mut all = Vec::new();
        let mut big = vec![0u8; 2 * READ_AHEAD];
        loop {
            let n = r.read(&mut big).await.unwrap();
            if n == 0 {
                break;
            }
            all.extend_from_slice(&big[..n]);
            assert!(!r.holds_memory(), "no copy for a large read");
        }
        assert_eq!(all, data);
        let mut small = [0u8; 10];
        assert_eq!(r.read(&mut small).await.unwrap(), 0, "end of stream again");
    }

    #[tokio::test]
    async fn nothing_is_held_while_waiting_and_writes_go_through() {
        let (mut peer, ours) = tokio::io::duplex(1024);
        let mut r = ReadAhead::new(ours);
        let mut small = [0u8; 16];
        // Nothing to read yet: the read waits, holding no buffer.
        let waited =
            tokio::time::timeout(std::time::Duration::from_millis(20), r.read(&mut small)).await;
        assert!(waited.is_err());
        assert!(!r.holds_memory());
        r.write_all(b"hello").await.unwrap();
        let mut echo = [0u8; 5];
        peer.read_exact(&mut echo).await.unwrap();
        assert_eq!(&echo, b"hello");
    }
}
