//! Cuts a byte stream (TCP or TLS) into SIP messages and RFC 5626 keep-alives.
//!
//! Framing only finds boundaries: the end of the header section and Content-Length. It knows
//! nothing else about headers, so a message with bad headers is still cut out whole and can be
//! answered with a 400 by the parser's caller, and the stream stays in sync.

use super::message::{find_end_of_headers, is_token_char};
use bytes::{Buf, Bytes, BytesMut};
use std::fmt;
use tokio_util::codec::Decoder;

/// Default limit for one message on a stream (issue: stream default 64 KiB).
pub const DEFAULT_MAX_STREAM_MESSAGE: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamFrame {
    Message(Bytes),
    /// CRLFCRLF from a client; answer with a single CRLF (RFC 5626 section 4.4.1).
    Ping,
    /// A single CRLF: the answer to our ping.
    Pong,
}

#[derive(Debug)]
pub enum FrameError {
    TooLarge {
        limit: usize,
    },
    BadContentLength,
    /// A message cannot begin with this byte (a SIP message begins with a method token or
    /// `SIP/2.0`): the peer speaks something else, e.g. TLS or binary garbage.
    NotSip(u8),
    Io(std::io::Error),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLarge { limit } => {
                write!(f, "message larger than the stream limit of {limit} bytes")
            }
            FrameError::BadContentLength => write!(f, "unreadable Content-Length"),
            FrameError::NotSip(0x16) => {
                write!(
                    f,
                    "not SIP: a TLS handshake (byte 0x16) on a plain connection"
                )
            }
            FrameError::NotSip(b) => {
                write!(f, "not SIP: a message cannot begin with byte {b:#04x}")
            }
            FrameError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for FrameError {}

impl From<std::io::Error> for FrameError {
    fn from(e: std::io::Error) -> Self {
        FrameError::Io(e)
    }
}

#[derive(Debug, Clone)]
pub struct SipStreamCodec {
    pub max_message: usize,
}

impl Default for SipStreamCodec {
    fn default() -> Self {
        SipStreamCodec {
            max_message: DEFAULT_MAX_STREAM_MESSAGE,
        }
    }
}

impl Decoder for SipStreamCodec {
    type Item = StreamFrame;
    type Error = FrameError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<StreamFrame>, FrameError> {
        if buf.starts_with(b"\r\n") {
            if buf.starts_with(b"\r\n\r\n") {
                buf.advance(4);
                return Ok(Some(StreamFrame::Ping));
            }
            if buf.len() < 4 && b"\r\n\r\n".starts_with(&buf[..]) {
                return Ok(None); // maybe the first half of a ping
            }
            buf.advance(2);
            return Ok(Some(StreamFrame::Pong));
        }
        if buf.starts_with(b"\n") {
            buf.advance(1); // stray LF between messages: tolerated, like Kamailio does
            return Ok(Some(StreamFrame::Pong));
        }
        if let Some(&first) = buf.first() {
            if first == b'\r' && buf.len() == 1 {
                return Ok(None); // maybe the first half of a CRLF
            }
            if !is_token_char(first) {
                return Err(FrameError::NotSip(first));
            }
        }
        let Some(head_end) = find_end_of_headers(buf) else {
            if buf.len() > self.max_message {
                return Err(FrameError::TooLarge {
                    limit: self.max_message,
                });
            }
            return Ok(None);
        };
        let body_start = head_end
            + if buf[head_end..].starts_with(b"\r\n") {
                2
            } else {
                1
            };
        let content_length = content_length(&buf[..head_end])?;
        let total = body_start
            .checked_add(content_length)
            .ok_or(FrameError::BadContentLength)?;
        if total > self.max_message {
            return Err(FrameError::TooLarge {
                limit: self.max_message,
            });
        }
        if buf.len() < total {
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        // Copied out so the message does not pin the connection's read buffer (which is
        // then reused in place): idle connections stay small.
        let message = Bytes::copy_from_slice(&buf[..total]);
        buf.advance(total);
        Ok(Some(StreamFrame::Message(message)))
    }
}

/// Reads Content-Length (or compact `l`) from a header section; 0 when absent.
pub fn content_length(head: &[u8]) -> Result<usize, FrameError> {
    for line in head.split(|&b| b == b'\n').skip(1) {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = trim_ascii(&line[..colon]);
        if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l") {
            let v = trim_ascii(&line[colon + 1..]);
            return std::str::from_utf8(v)
                .ok()
                .and_then(|v| v.parse().ok())
                .ok_or(FrameError::BadContentLength);
        }
    }
    Ok(0)
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> (Vec<StreamFrame>, BytesMut) {
        let mut codec = SipStreamCodec::default();
        let mut buf = BytesMut::from(input);
        let mut out = vec![];
        while let Some(f) = codec.decode(&mut buf).unwrap() {
            out.push(f);
        }
        (out, buf)
    }

    #[test]
    fn cuts_messages_and_keepalives() {
        let input = b"\r\n\r\nOPTIONS sip:a SIP/2.0\r\nl: 3\r\n\r\nabcSIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n\r\nREGISTER";
        let (frames, rest) = decode_all(input);
        assert_eq!(frames.len(), 4);
        assert_eq!(frames[0], StreamFrame::Ping);
        assert!(matches!(&frames[1], StreamFrame::Message(m) if m.ends_with(b"\r\n\r\nabc")));
        assert!(matches!(&frames[2], StreamFrame::Message(m) if m.starts_with(b"SIP/2.0 200")));
        assert_eq!(frames[3], StreamFrame::Pong);
        assert_eq!(&rest[..], b"REGISTER");
    }

    #[test]
    fn waits_for_whole_body_and_half_ping() {
        let input = b"MESSAGE sip:a SIP/2.0\r\nContent-Length: 10\r\n\r\nabc";
        let (frames, rest) = decode_all(input);
        assert!(frames.is_empty());
        assert_eq!(rest.len(), input.len());
        let (frames, _) = decode_all(b"\r\n\r");
        assert!(frames.is_empty());
    }

    #[test]
    fn rejects_oversize_and_bad_length() {
        let mut codec = SipStreamCodec { max_message: 100 };
        let mut buf = BytesMut::from(&[b'x'; 101][..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(FrameError::TooLarge { .. })
        ));
        let mut buf = BytesMut::from(&b"INVITE sip:a SIP/2.0\r\nl: 1000\r\n\r\n"[..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(FrameError::TooLarge { .. })
        ));
        let mut buf = BytesMut::from(&b"INVITE sip:a SIP/2.0\r\nContent-Length: -1\r\n\r\n"[..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(FrameError::BadContentLength)
        ));
        let mut buf = BytesMut::from(
            &b"INVITE sip:a SIP/2.0\r\nContent-Length: 99999999999999999999999\r\n\r\n"[..],
        );
        assert!(codec.decode(&mut buf).is_err());
    }

    #[test]
    fn rejects_what_cannot_begin_a_message() {
        let mut codec = SipStreamCodec::default();
        for start in [
            &b"\x16\x03\x01\x00\xa5\x01"[..],
            b"\x00\x00",
            b"<html>",
            b" INVITE",
        ] {
            let mut buf = BytesMut::from(start);
            assert!(
                matches!(codec.decode(&mut buf), Err(FrameError::NotSip(_))),
                "{start:?}"
            );
        }
        let mut buf = BytesMut::from(&b"\r\n\r\nI"[..]);
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(StreamFrame::Ping));
        assert_eq!(codec.decode(&mut buf).unwrap(), None, "a method may follow");
    }
}
