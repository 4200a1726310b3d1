//! One actor per stream connection (TCP or TLS, the same code): frames the byte stream with
//! [`SipStreamCodec`], answers RFC 5626 CRLF keep-alives, and writes frames the Dispatcher
//! sends. A framing error closes this connection only, and so does silence: an accepted
//! connection that sends no SIP message within [`FIRST_MESSAGE_TIMEOUT`] is closed.

use super::{parse_and_route, FIRST_MESSAGE_TIMEOUT};
use crate::actors::messages::{ConnectionEvents, FlowClosed, FlowOpened, RouterPool, SendFrame};
use crate::routing::{FlowId, Source};
use crate::sip::framing::{FrameError, SipStreamCodec, StreamFrame};
use crate::sip::Transport;
use actix::io::{FramedWrite, WriteHandler};
use actix::prelude::*;
use bytes::Bytes;
use log::{debug, info};
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncWrite, WriteHalf};
use tokio_util::codec::{BytesCodec, FramedRead};

pub struct StreamConnection<S: AsyncRead + AsyncWrite + Unpin + 'static> {
    flow: FlowId,
    transport: Transport,
    remote: SocketAddr,
    routers: RouterPool,
    events: ConnectionEvents,
    writer: FramedWrite<Bytes, WriteHalf<S>, BytesCodec>,
    /// Accepted by a listener (not opened by Roundabout): held to the first-message rule.
    accepted: bool,
    got_message: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin + 'static> StreamConnection<S> {
    /// Starts the actor on the current arbiter. `accepted`: it came in through a listener, so
    /// it reports itself to the Dispatcher and must send SIP soon; the connector reports
    /// outbound ones itself.
    pub fn start(
        stream: S,
        flow: FlowId,
        transport: Transport,
        remote: SocketAddr,
        routers: RouterPool,
        events: ConnectionEvents,
        accepted: bool,
    ) -> Addr<Self> {
        StreamConnection::create(move |ctx| {
            let (read, write) = tokio::io::split(stream);
            ctx.add_stream(FramedRead::new(read, SipStreamCodec::default()));
            let writer = FramedWrite::new(write, BytesCodec::new(), ctx);
            if accepted {
                events.opened.do_send(FlowOpened {
                    flow,
                    transport,
                    remote,
                    writer: ctx.address().recipient(),
                });
            }
            StreamConnection {
                flow,
                transport,
                remote,
                routers,
                events,
                writer,
                accepted,
                got_message: false,
            }
        })
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + 'static> Actor for StreamConnection<S> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        debug!("{} connection {} with {} open", self.transport, self.flow, self.remote);
        if self.accepted {
            ctx.run_later(FIRST_MESSAGE_TIMEOUT, |act, ctx| {
                if !act.got_message {
                    info!(
                        "closing {} connection {} from {}: no SIP message within {:?}",
                        act.transport, act.flow, act.remote, FIRST_MESSAGE_TIMEOUT
                    );
                    ctx.stop();
                }
            });
        }
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        debug!("{} connection {} with {} closed", self.transport, self.flow, self.remote);
        let closed = FlowClosed {
            flow: self.flow,
            transport: self.transport,
            remote: self.remote,
        };
        for r in &self.events.closed {
            r.do_send(closed);
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + 'static> StreamHandler<Result<StreamFrame, FrameError>> for StreamConnection<S> {
    fn handle(&mut self, item: Result<StreamFrame, FrameError>, ctx: &mut Context<Self>) {
        match item {
            Ok(StreamFrame::Message(bytes)) => {
                let source = Source {
                    transport: self.transport,
                    remote: self.remote,
                    flow: self.flow,
                };
                self.got_message |= parse_and_route(bytes, source, &self.routers);
            }
            Ok(StreamFrame::Ping) => self.writer.write(Bytes::from_static(b"\r\n")),
            Ok(StreamFrame::Pong) => {}
            Err(e) => {
                info!("closing {} connection from {}: {e}", self.transport, self.remote);
                ctx.stop();
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + 'static> Handler<SendFrame> for StreamConnection<S> {
    type Result = ();

    fn handle(&mut self, m: SendFrame, _: &mut Context<Self>) {
        self.writer.write(m.0);
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + 'static> WriteHandler<std::io::Error> for StreamConnection<S> {
    fn error(&mut self, e: std::io::Error, _: &mut Self::Context) -> Running {
        debug!("write to {} failed: {e}", self.remote);
        Running::Stop
    }
}
