//! One actor per stream connection (TCP now, TLS with the same code): frames the byte
//! stream with [`SipStreamCodec`], answers RFC 5626 CRLF keep-alives, and writes frames the
//! Dispatcher sends. A framing error closes this connection only.

use super::parse_and_route;
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
}

impl<S: AsyncRead + AsyncWrite + Unpin + 'static> StreamConnection<S> {
    /// Starts the actor on the current arbiter. `announce` makes it report itself to the
    /// Dispatcher (accepted connections); the connector reports outbound ones itself.
    pub fn start(
        stream: S,
        flow: FlowId,
        transport: Transport,
        remote: SocketAddr,
        routers: RouterPool,
        events: ConnectionEvents,
        announce: bool,
    ) -> Addr<Self> {
        StreamConnection::create(move |ctx| {
            let (read, write) = tokio::io::split(stream);
            ctx.add_stream(FramedRead::new(read, SipStreamCodec::default()));
            let writer = FramedWrite::new(write, BytesCodec::new(), ctx);
            if announce {
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
            }
        })
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + 'static> Actor for StreamConnection<S> {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Context<Self>) {
        debug!("{} connection {} with {} open", self.transport, self.flow, self.remote);
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
                parse_and_route(bytes, source, &self.routers);
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
