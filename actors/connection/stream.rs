//! One actor per stream connection (TCP or TLS, the same code): frames the byte stream with
//! [`SipStreamCodec`], answers RFC 5626 CRLF keep-alives, and writes frames the Dispatcher
//! sends.
//!
//! A connection is closed, with a log line, when it breaks the framing (a message over
//! `-max-stream-message`, an unreadable Content-Length, bytes that cannot begin a SIP
//! message), sends something that is not SIP, leaves a message unfinished for
//! `-partial-message-timeout` (slow-loris), or receives nothing at all (not even a
//! keep-alive) for `-idle-timeout`. An accepted connection that sends no SIP message within
//! [`FIRST_MESSAGE_TIMEOUT`] is closed too (both timeouts: [`super::flow`]). A request that
//! is SIP but broken is answered on the connection (see [`handle_message`]), which stays
//! open. A peer that does not read what is written to it is given up once more than
//! `-max-send-queue` bytes wait ([`SendQueue`]).
//!
//! [`FIRST_MESSAGE_TIMEOUT`]: super::flow::FIRST_MESSAGE_TIMEOUT

use super::flow::{self, Flow, FlowActor};
use super::send_queue::{ByteOutlet, Refused, SendQueue, Sends};
use super::{handle_message, Handled};
use crate::actors::messages::{RouterPool, SendFrame};
use crate::sip::framing::{FrameError, SipStreamCodec, StreamFrame};
use actix::io::WriteHandler;
use actix::prelude::*;
use bytes::{Bytes, BytesMut};
use log::debug;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, WriteHalf};
use tokio_util::codec::{Decoder, FramedRead};

pub struct StreamConnection<S: AsyncRead + AsyncWrite + Unpin + 'static> {
    /// The peer, and the timeouts (heard: a frame or the start of one).
    flow: Flow,
    routers: RouterPool,
    /// What waits to be written, at most `-max-send-queue` bytes.
    queue: SendQueue<ByteOutlet<WriteHalf<S>>>,
    /// When the message now arriving began (`None`: none is unfinished), for slow-loris.
    partial_since: Option<Instant>,
    /// Whether a slow-loris timer is pending (at most one per connection).
    partial_timer_armed: bool,
}

/// What the framer gives the actor: frames, and word that a message has begun arriving and
/// is not complete yet (once per message), so that its completion can be timed.
#[derive(Debug)]
enum Guarded {
    Frame(StreamFrame),
    PartialStarted,
}

struct GuardedCodec {
    inner: SipStreamCodec,
    partial_reported: bool,
}

impl Decoder for GuardedCodec {
    type Item = Guarded;
    type Error = FrameError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Guarded>, FrameError> {
        match self.inner.decode(buf)? {
            Some(frame) => {
                self.partial_reported = false;
                Ok(Some(Guarded::Frame(frame)))
            }
            None if !buf.is_empty() && !self.partial_reported => {
                self.partial_reported = true;
                Ok(Some(Guarded::PartialStarted))
            }
            None => Ok(None),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + 'static> StreamConnection<S> {
    /// Starts the actor on the current arbiter (see [`Flow::new`] for accepted and
    /// outbound connections).
    pub fn start(stream: S, flow: Flow, routers: RouterPool) -> Addr<Self> {
        StreamConnection::create(move |ctx| {
            let (read, write) = tokio::io::split(stream);
            let codec = GuardedCodec {
                inner: SipStreamCodec {
                    max_message: flow.guard().limits().max_stream_message,
                },
                partial_reported: false,
            };
            ctx.add_stream(FramedRead::new(read, codec));
            let limit = flow.guard().limits().max_send_queue;
            let queue = SendQueue::new(ByteOutlet(write), limit);
            SendQueue::start(ctx);
            flow.opened(ctx.address().recipient());
            StreamConnection {
                flow,
                routers,
                queue,
                partial_since: None,
                partial_timer_armed: false,
            }
        })
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + 'static> FlowActor for StreamConnection<S> {
    fn flow(&self) -> &Flow {
        &self.flow
    }

    fn end(&mut self, ctx: &mut Context<Self>) {
        ctx.stop();
    }

    fn give_up(&mut self, ctx: &mut Context<Self>) {
        self.queue.abort();
        ctx.stop();
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + 'static> Sends<ByteOutlet<WriteHalf<S>>>
    for StreamConnection<S>
{
    fn send_queue(&mut self) -> &mut SendQueue<ByteOutlet<WriteHalf<S>>> {
        &mut self.queue
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + 'static> Actor for StreamConnection<S> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        flow::watch(self, ctx);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.flow.closed();
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + 'static> StreamConnection<S> {
    /// Queues `bytes` for the peer; gives the connection up when the peer does not read.
    fn write(&mut self, bytes: Bytes, ctx: &mut Context<Self>) {
        match self.queue.push(bytes) {
            Ok(()) => {}
            Err(Refused::Full { queued }) => self.overflow(ctx, queued),
            Err(Refused::Closing) => debug!("{} is closing: message dropped", self.flow),
        }
    }

    /// Watches the message in progress: at most one timer per connection, however many
    /// reads end mid-message (one timer per partial read piles up thousands on a busy
    /// connection). It fires `after` and closes the connection when the unfinished message
    /// began `-partial-message-timeout` ago or more; a message begun later gets the rest of
    /// its own time.
    fn arm_partial_timer(&mut self, after: Duration, ctx: &mut Context<Self>) {
        self.partial_timer_armed = true;
        ctx.run_later(after, move |act, ctx| {
            act.partial_timer_armed = false;
            let Some(since) = act.partial_since else {
                return;
            };
            let limit = act.flow.guard().limits().partial_message_timeout;
            match limit.checked_sub(since.elapsed()) {
                Some(left) if !left.is_zero() => act.arm_partial_timer(left, ctx),
                _ => act.close(
                    ctx,
                    &format!(
                        "a message begun {limit:?} ago is still incomplete \
                         (-partial-message-timeout)"
                    ),
                ),
            }
        });
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + 'static> StreamHandler<Result<Guarded, FrameError>>
    for StreamConnection<S>
{
    fn handle(&mut self, item: Result<Guarded, FrameError>, ctx: &mut Context<Self>) {
        self.flow.heard();
        let frame = match item {
            Ok(Guarded::Frame(frame)) => frame,
            Ok(Guarded::PartialStarted) => {
                self.partial_since.get_or_insert_with(Instant::now);
                if !self.partial_timer_armed {
                    let limit = self.flow.guard().limits().partial_message_timeout;
                    self.arm_partial_timer(limit, ctx);
                }
                return;
            }
            Err(e) => return self.close_for(ctx, frame_error_kind(&e), &e.to_string()),
        };
        // Every frame ends whatever message was partial.
        self.partial_since = None;
        match frame {
            StreamFrame::Message(bytes) => {
                let source = self.flow.source();
                match handle_message(bytes, source, &self.routers, self.flow.guard()) {
                    Handled::Routed => self.flow.got_message(),
                    Handled::Answered(answer) => {
                        self.flow.got_message();
                        self.write(answer, ctx);
                    }
                    Handled::Unparseable => self.close_for(ctx, "not SIP", "not a SIP message"),
                    Handled::Flooding => {}
                }
            }
            StreamFrame::Ping => self.write(Bytes::from_static(b"\r\n"), ctx),
            StreamFrame::Pong => {}
        }
    }
}

/// The kind of a framing error, for the throttle of its log line.
fn frame_error_kind(e: &FrameError) -> &'static str {
    match e {
        FrameError::TooLarge { .. } => "message over -max-stream-message",
        FrameError::BadContentLength => "unreadable Content-Length",
        FrameError::NotSip(0x16) => "TLS on a plain connection",
        FrameError::NotSip(_) => "cannot begin a SIP message",
        FrameError::Io(_) => "read error",
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + 'static> Handler<SendFrame> for StreamConnection<S> {
    type Result = ();

    fn handle(&mut self, m: SendFrame, ctx: &mut Context<Self>) {
        self.write(m.0, ctx);
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + 'static> WriteHandler<std::io::Error>
    for StreamConnection<S>
{
    fn error(&mut self, e: std::io::Error, _: &mut Self::Context) -> Running {
        debug!("write to {} failed: {e}", self.flow.remote());
        Running::Stop
    }
}
