//! What a connection actor has accepted for writing and not yet handed to its socket, bounded
//! by `-max-send-queue` (Kamailio's `tcp_conn_wq_max`).
//!
//! A peer that stops reading (a client whose app hangs, an attacker that registers and then
//! never reads) fills the kernel's socket buffers, and then every message for it waits in
//! Roundabout's memory. Without a bound, a server sending it 60,000 MESSAGEs grew Roundabout
//! by 340 MiB. Here each connection counts the bytes waiting in its [`SendQueue`]; a message
//! that would take the count over the limit is refused ([`Refused::Full`]), and the actor
//! closes the connection (see `flow::FlowActor::overflow`), which reports the flow closed:
//! requests for a client on it then get 480.
//!
//! The queue is written out by a future spawned on the actor's context ([`SendQueue::start`])
//! that never stops the actor (actix's own writers pause the whole actor while their buffer
//! is over 16 KiB, so messages for a slow peer pile up unseen in its mailbox instead). Two
//! outlets: [`ByteOutlet`] writes `Bytes` to a TCP or TLS stream as they are (no copy;
//! several at once with vectored writes where the socket takes them), [`WsOutlet`] hands
//! WebSocket messages to tungstenite, which holds at most the one it is writing. So what waits
//! for one peer is at most `-max-send-queue` plus one message.

use actix::fut::ActorFuture;
use actix::io::WriteHandler;
use actix::prelude::*;
use async_tungstenite::tungstenite::{Error as WsError, Message};
use bytes::{Buf, Bytes};
use futures_util::Sink;
use std::collections::VecDeque;
use std::io::IoSlice;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll, Waker};
use tokio::io::AsyncWrite;

/// Why a message was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `queued` bytes wait already and this message would take them over the limit: the
    /// peer does not read fast enough (or at all).
    Full { queued: usize },
    /// The connection is closing.
    Closing,
}

/// Where a queue's messages go: a byte stream or a WebSocket.
pub trait Outlet: Unpin + 'static {
    type Item: 'static;
    type Error: 'static;

    /// The bytes an item counts for.
    fn size(item: &Self::Item) -> usize;

    /// Hands items from the front of `items` to the socket until they are all out or it
    /// takes no more: the bytes taken off the queue (an item partly written stays at the
    /// front, shortened). `Pending` when nothing could be handed over.
    fn poll_send(
        &mut self,
        cx: &mut TaskContext<'_>,
        items: &mut VecDeque<Self::Item>,
    ) -> Poll<Result<usize, Self::Error>>;

    fn poll_flush(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>>;

    fn poll_close(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>>;
}

/// A connection's messages waiting to be written, and the outlet that writes them.
pub struct SendQueue<O: Outlet> {
    outlet: O,
    items: VecDeque<O::Item>,
    /// Bytes in `items`.
    queued: usize,
    limit: usize,
    closing: bool,
    /// Written since the last flush.
    dirty: bool,
    /// The writing future, to wake when a message comes.
    waker: Option<Waker>,
}

/// An actor that owns a [`SendQueue`]: the writing future reaches it through the actor.
pub trait Sends<O: Outlet>: Actor<Context = Context<Self>> + WriteHandler<O::Error> {
    fn send_queue(&mut self) -> &mut SendQueue<O>;
}

impl<O: Outlet> SendQueue<O> {
    /// A queue of at most `limit` bytes (`-max-send-queue`) in front of `outlet`.
    pub fn new(outlet: O, limit: usize) -> SendQueue<O> {
        SendQueue {
            outlet,
            items: VecDeque::new(),
            queued: 0,
            limit,
            closing: false,
            dirty: false,
            waker: None,
        }
    }

    /// Starts the future that writes the queue of actor `A` out; call it once, from the
    /// actor's `create`. Write errors go to `A`'s [`WriteHandler`]; when the queue is closed
    /// (and written out) its `finished` is called, as with actix's writers.
    pub fn start<A: Sends<O>>(ctx: &mut Context<A>) {
        ctx.spawn(Pump::<A, O>(PhantomData));
    }

    /// Queues a message. Refused when it would take what waits over the limit; a message is
    /// always taken when nothing waits, however large (`-max-stream-message` bounds it).
    pub fn push(&mut self, item: O::Item) -> Result<(), Refused> {
        if self.closing {
            return Err(Refused::Closing);
        }
        let size = O::size(&item);
        if self.queued > 0 && self.queued + size > self.limit {
            return Err(Refused::Full {
                queued: self.queued,
            });
        }
        self.queued += size;
        self.items.push_back(item);
        if let Some(w) = &self.waker {
            w.wake_by_ref();
        }
        Ok(())
    }

    /// Bytes waiting.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Writes out what waits, then closes the outlet (a WebSocket close, a TCP shutdown).
    pub fn close(&mut self) {
        self.closing = true;
        if let Some(w) = &self.waker {
            w.wake_by_ref();
        }
    }

    /// Drops what waits and takes nothing more: the connection is being given up.
    pub fn abort(&mut self) {
        self.closing = true;
        self.items = VecDeque::new();
        self.queued = 0;
    }

    /// Writes what it can. `Ok(true)`: closed (after [`SendQueue::close`]).
    fn drive(&mut self, cx: &mut TaskContext<'_>) -> Result<bool, O::Error> {
        if !self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            self.waker = Some(cx.waker().clone());
        }
        while !self.items.is_empty() {
            match self.outlet.poll_send(cx, &mut self.items)? {
                Poll::Ready(n) => {
                    self.queued -= n;
                    self.dirty = true;
                }
                Poll::Pending => break,
            }
        }
        if self.items.is_empty() && self.items.capacity() > 0 {
            // Nothing waits: an idle connection holds no queue (most of them are idle; a
            // new one costs an allocation per message, next to its encoding and write).
            self.items = VecDeque::new();
        }
        if self.dirty && self.outlet.poll_flush(cx)?.is_ready() {
            self.dirty = false;
        }
        if self.closing && self.items.is_empty() {
            return Ok(self.outlet.poll_close(cx)?.is_ready());
        }
        Ok(false)
    }
}

/// The future that writes an actor's queue; it lives as long as the actor.
struct Pump<A, O>(PhantomData<fn() -> (A, O)>);

impl<A: Sends<O>, O: Outlet> ActorFuture<A> for Pump<A, O> {
    type Output = ();

    fn poll(
        self: Pin<&mut Self>,
        act: &mut A,
        ctx: &mut Context<A>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<()> {
        match act.send_queue().drive(cx) {
            Ok(false) => Poll::Pending,
            Ok(true) => {
                act.finished(ctx);
                Poll::Ready(())
            }
            Err(e) => {
                if act.error(e, ctx) == Running::Stop {
                    act.finished(ctx);
                    return Poll::Ready(());
                }
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }
}

/// Most messages handed to the socket in one vectored write.
const MAX_SLICES: usize = 32;

/// TCP and TLS: messages written to the stream as they are.
pub struct ByteOutlet<W>(pub W);

impl<W: AsyncWrite + Unpin + 'static> Outlet for ByteOutlet<W> {
    type Item = Bytes;
    type Error = std::io::Error;

    fn size(item: &Bytes) -> usize {
        item.len()
    }

    fn poll_send(
        &mut self,
        cx: &mut TaskContext<'_>,
        items: &mut VecDeque<Bytes>,
    ) -> Poll<std::io::Result<usize>> {
        let io = Pin::new(&mut self.0);
        let written = if items.len() > 1 && io.is_write_vectored() {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let n = items.len().min(MAX_SLICES);
            for (slice, item) in slices.iter_mut().zip(items.iter()) {
                *slice = IoSlice::new(item);
            }
            std::task::ready!(io.poll_write_vectored(cx, &slices[..n]))?
        } else {
            let Some(front) = items.front() else {
                return Poll::Ready(Ok(0));
            };
            std::task::ready!(io.poll_write(cx, front))?
        };
        if written == 0 {
            return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
        }
        let mut left = written;
        while let Some(front) = items.front_mut() {
            if left < front.len() {
                front.advance(left);
                break;
            }
            left -= front.len();
            items.pop_front();
        }
        Poll::Ready(Ok(written))
    }

    fn poll_flush(&mut self, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_close(&mut self, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// WebSocket: messages handed to tungstenite one by one, each when it is ready for one (it
/// holds at most the one it is writing).
pub struct WsOutlet<S>(pub S);

impl<S> Outlet for WsOutlet<S>
where
    S: Sink<Message, Error = WsError> + Unpin + 'static,
{
    type Item = Message;
    type Error = WsError;

    fn size(item: &Message) -> usize {
        item.len()
    }

    fn poll_send(
        &mut self,
        cx: &mut TaskContext<'_>,
        items: &mut VecDeque<Message>,
    ) -> Poll<Result<usize, WsError>> {
        std::task::ready!(Pin::new(&mut self.0).poll_ready(cx))?;
        let Some(item) = items.pop_front() else {
            return Poll::Ready(Ok(0));
        };
        let size = item.len();
        Pin::new(&mut self.0).start_send(item)?;
        Poll::Ready(Ok(size))
    }

    fn poll_flush(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), WsError>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_close(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), WsError>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::task::noop_waker;
    use tokio::io::AsyncReadExt;

    fn drive<O: Outlet>(q: &mut SendQueue<O>) -> Result<bool, O::Error> {
        let waker = noop_waker();
        q.drive(&mut TaskContext::from_waker(&waker))
    }

    #[tokio::test]
    async fn a_peer_that_does_not_read_is_refused_at_the_limit() {
        // The "socket" takes 4 KiB, then the peer must read.
        let (mut peer, ours) = tokio::io::duplex(4096);
        let mut q = SendQueue::new(ByteOutlet(ours), 10_000);
        let msg = |i: u8| Bytes::from(vec![i; 1000]);
        for i in 0..10 {
            q.push(msg(i)).unwrap();
        }
        assert_eq!(q.queued(), 10_000);
        assert_eq!(q.push(msg(10)), Err(Refused::Full { queued: 10_000 }));
        assert!(!drive(&mut q).unwrap());
        assert_eq!(
            q.queued(),
            10_000 - 4096,
            "what the socket took is not queued"
        );
        for i in 10..14 {
            q.push(msg(i)).unwrap();
        }
        assert_eq!(q.push(msg(14)), Err(Refused::Full { queued: 9904 }));
        // The peer reads: everything goes out, in order, and the queue empties.
        let mut got = Vec::new();
        let mut buf = vec![0u8; 4096];
        while got.len() < 14_000 {
            drive(&mut q).unwrap();
            let n = peer.read(&mut buf).await.unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(q.queued(), 0);
        let want: Vec<u8> = (0..14u8).flat_map(|i| vec![i; 1000]).collect();
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn one_large_message_goes_when_nothing_waits_and_close_and_abort_end_it() {
        let (mut peer, ours) = tokio::io::duplex(1 << 20);
        let mut q = SendQueue::new(ByteOutlet(ours), 4096);
        q.push(Bytes::from(vec![1u8; 60_000]))
            .expect("nothing waits");
        assert_eq!(
            q.push(Bytes::from_static(b"x")),
            Err(Refused::Full { queued: 60_000 })
        );
        q.close();
        assert_eq!(q.push(Bytes::from_static(b"x")), Err(Refused::Closing));
        assert!(drive(&mut q).unwrap(), "written out, then shut down");
        let mut all = Vec::new();
        peer.read_to_end(&mut all).await.unwrap();
        assert_eq!(all.len(), 60_000);

        let (_peer, ours) = tokio::io::duplex(16);
        let mut q = SendQueue::new(ByteOutlet(ours), 4096);
        q.push(Bytes::from(vec![2u8; 3000])).unwrap();
        q.abort();
        assert_eq!(q.queued(), 0);
        assert_eq!(q.push(Bytes::from_static(b"x")), Err(Refused::Closing));
    }

    #[tokio::test]
    async fn an_emptied_queue_holds_no_memory() {
        let (mut peer, ours) = tokio::io::duplex(1 << 16);
        let mut q = SendQueue::new(ByteOutlet(ours), 1 << 20);
        assert_eq!(
            q.items.capacity(),
            0,
            "nothing allocated before the first message"
        );
        for _ in 0..3 {
            q.push(Bytes::from_static(b"OPTIONS sip:x SIP/2.0\r\n\r\n"))
                .unwrap();
            assert!(q.items.capacity() > 0);
            assert!(!drive(&mut q).unwrap());
            assert_eq!((q.queued(), q.items.capacity()), (0, 0));
        }
        let mut got = vec![0u8; 3 * 25];
        peer.read_exact(&mut got).await.unwrap();
        assert!(got.starts_with(b"OPTIONS sip:x SIP/2.0\r\n\r\nOPTIONS"));
    }

    #[test]
    fn websocket_messages_count_their_payload() {
        assert_eq!(WsOutlet::<NoSink>::size(&Message::text("hello")), 5);
        assert_eq!(WsOutlet::<NoSink>::size(&Message::Ping(Bytes::new())), 0);
    }

    /// A sink type for naming `WsOutlet`'s size function.
    struct NoSink;

    impl Sink<Message> for NoSink {
        type Error = WsError;
        fn poll_ready(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<Result<(), WsError>> {
            Poll::Ready(Ok(()))
        }
        fn start_send(self: Pin<&mut Self>, _: Message) -> Result<(), WsError> {
            Ok(())
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<Result<(), WsError>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<Result<(), WsError>> {
            Poll::Ready(Ok(()))
        }
    }
}
