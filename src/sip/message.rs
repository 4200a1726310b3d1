//! A SIP message as received: the raw bytes plus an index of where each part is.
//!
//! Roundabout forwards what it does not understand, so it never rebuilds a message from a
//! model. It indexes the start line and header lines, reads the few values a proxy needs,
//! and renders the outgoing copy from the original bytes plus a small [`Rewrite`]: untouched
//! headers go out byte for byte and the body is never altered.

use super::header::{iter_values, HeaderName};
use super::via::Via;
use bytes::{BufMut, Bytes, BytesMut};
use std::fmt;
use std::ops::Range;

/// At most this many header lines by default; more is treated as an attack (RFC 4475 has none
/// near it). `-max-headers` sets the limit the connections use ([`SipMessage::parse_limited`]).
pub const MAX_HEADERS: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    Empty,
    BadStartLine(String),
    BadHeaderLine(usize),
    TooManyHeaders,
    NoEndOfHeaders,
    NotUtf8,
    BadContentLength(String),
    BodyTruncated { declared: usize, received: usize },
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Empty => write!(f, "empty message"),
            ParseError::BadStartLine(l) => write!(f, "invalid start line '{l}'"),
            ParseError::BadHeaderLine(n) => write!(f, "invalid header line {n}"),
            ParseError::TooManyHeaders => write!(f, "too many header lines"),
            ParseError::NoEndOfHeaders => write!(f, "no empty line after the headers"),
            ParseError::NotUtf8 => write!(f, "header section is not UTF-8"),
            ParseError::BadContentLength(v) => write!(f, "invalid Content-Length '{v}'"),
            ParseError::BodyTruncated { declared, received } => write!(
                f,
                "Content-Length {declared} but only {received} body bytes"
            ),
        }
    }
}

impl std::error::Error for ParseError {}

#[derive(Debug, Clone, PartialEq, Eq)]
enum StartLine {
    Request {
        method: Range<usize>,
        uri: Range<usize>,
    },
    Response {
        code: u16,
    },
}

/// Where one header line sits in the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderField {
    pub name: HeaderName,
    /// The whole line (name, colon, value, any folded continuation lines), without CRLF.
    line: Range<usize>,
    /// The name as written, e.g. `v` or `VIA`.
    raw_name: Range<usize>,
    value: FieldValue,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum FieldValue {
    Raw(Range<usize>),
    /// A folded value, unfolded once at parse time (index into `unfolded`).
    Unfolded(usize),
}

#[derive(Debug, Clone)]
pub struct SipMessage {
    buf: Bytes,
    start: StartLine,
    headers: Vec<HeaderField>,
    unfolded: Vec<String>,
    body: Range<usize>,
}

impl SipMessage {
    /// Parses one complete message (a datagram, or a frame cut by the stream framer).
    /// Leading CRLFs are skipped (RFC 3261 section 7.5). A body longer than Content-Length
    /// is cut to it; a shorter one is an error.
    pub fn parse(buf: Bytes) -> Result<SipMessage, ParseError> {
        SipMessage::parse_limited(buf, MAX_HEADERS)
    }

    /// [`SipMessage::parse`] with at most `max_headers` header lines.
    pub fn parse_limited(buf: Bytes, max_headers: usize) -> Result<SipMessage, ParseError> {
        let start_at = buf
            .iter()
            .position(|&b| b != b'\r' && b != b'\n')
            .ok_or(ParseError::Empty)?;
        let head_end = find_end_of_headers(&buf[start_at..])
            .map(|e| e + start_at)
            .ok_or(ParseError::NoEndOfHeaders)?;
        // head_end points at the blank line's CRLF (or LF); the body begins after it.
        let body_start = if buf[head_end..].starts_with(b"\r\n") {
            head_end + 2
        } else {
            head_end + 1
        };
        let head =
            std::str::from_utf8(&buf[start_at..head_end]).map_err(|_| ParseError::NotUtf8)?;

        let mut lines = LineIter::new(head, start_at);
        let (first, first_range) = lines.next().ok_or(ParseError::Empty)?;
        let start = parse_start_line(first, first_range.start)?;

        let mut headers = Vec::with_capacity(16);
        let mut unfolded = Vec::new();
        let mut content_length = None;
        for (n, (line, range)) in lines.enumerate() {
            if headers.len() == max_headers {
                return Err(ParseError::TooManyHeaders);
            }
            // A plain byte loop: the name is a few bytes long, too short for memchr's set-up.
            let colon = line
                .bytes()
                .position(|b| b == b':')
                .ok_or(ParseError::BadHeaderLine(n + 1))?;
            let name_str = line[..colon].trim_end();
            if name_str.is_empty() || !name_str.bytes().all(is_token_char) {
                return Err(ParseError::BadHeaderLine(n + 1));
            }
            let name = HeaderName::parse(name_str.as_bytes());
            let raw_value = &line[colon + 1..];
            // Trimmed once from each end (the offset below reuses the start trim).
            let start_trimmed = raw_value.trim_start();
            let trimmed = start_trimmed.trim_end();
            // memchr2, not a char-set pattern: same result, a fraction of the cost.
            let value = if memchr::memchr2(b'\r', b'\n', trimmed.as_bytes()).is_some() {
                unfolded.push(unfold(trimmed));
                FieldValue::Unfolded(unfolded.len() - 1)
            } else {
                let off = range.start + colon + 1 + (raw_value.len() - start_trimmed.len());
                FieldValue::Raw(off..off + trimmed.len())
            };
            if name == HeaderName::ContentLength && content_length.is_none() {
                let v = trimmed.trim();
                content_length = Some(
                    v.parse::<usize>()
                        .map_err(|_| ParseError::BadContentLength(v.to_string()))?,
                );
            }
            headers.push(HeaderField {
                name,
                line: range.clone(),
                raw_name: range.start..range.start + name_str.len(),
                value,
            });
        }

        let received = buf.len() - body_start;
        let body_len = match content_length {
            Some(declared) if declared > received => {
                return Err(ParseError::BodyTruncated { declared, received })
            }
            Some(declared) => declared,
            None => received,
        };
        Ok(SipMessage {
            body: body_start..body_start + body_len,
            buf,
            start,
            headers,
            unfolded,
        })
    }

    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    /// The request method, or `""` for a response.
    pub fn method(&self) -> &str {
        match &self.start {
            StartLine::Request { method, .. } => self.str_at(method.clone()),
            StartLine::Response { .. } => "",
        }
    }

    /// The Request-URI as written, or `""` for a response.
    pub fn request_uri(&self) -> &str {
        match &self.start {
            StartLine::Request { uri, .. } => self.str_at(uri.clone()),
            StartLine::Response { .. } => "",
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { code } => Some(code),
            StartLine::Request { .. } => None,
        }
    }

    pub fn headers(&self) -> &[HeaderField] {
        &self.headers
    }

    /// The value of a header, unfolded, without surrounding white space.
    pub fn value(&self, h: &HeaderField) -> &str {
        match &h.value {
            FieldValue::Raw(r) => self.str_at(r.clone()),
            FieldValue::Unfolded(i) => &self.unfolded[*i],
        }
    }

    /// A header's name as written (e.g. `v`, `VIA`, `X-Custom`).
    pub fn raw_name(&self, h: &HeaderField) -> &str {
        self.str_at(h.raw_name.clone())
    }

    /// The first header of that name, with its index.
    pub fn first(&self, name: HeaderName) -> Option<(usize, &str)> {
        self.headers
            .iter()
            .position(|h| h.name == name)
            .map(|i| (i, self.value(&self.headers[i])))
    }

    pub fn first_value(&self, name: HeaderName) -> Option<&str> {
        self.first(name).map(|(_, v)| v)
    }

    /// Every value of a header, across lines and comma-separated lists, in order.
    pub fn values(&self, name: HeaderName) -> impl Iterator<Item = &str> {
        self.headers
            .iter()
            .filter(move |h| h.name == name)
            .flat_map(move |h| {
                let v = self.value(h);
                iter_values(v).map(move |r| &v[r])
            })
    }

    /// The first Via value (the topmost), parsed.
    pub fn top_via(&self) -> Option<Via<'_>> {
        let v = self.first_value(HeaderName::Via)?;
        let first = iter_values(v).next()?;
        Via::parse(&v[first]).ok()
    }

    pub fn call_id(&self) -> Option<&str> {
        self.first_value(HeaderName::CallId)
            .filter(|v| !v.is_empty())
    }

    /// CSeq number and method.
    pub fn cseq(&self) -> Option<(u32, &str)> {
        let v = self.first_value(HeaderName::CSeq)?;
        let mut it = v.split_whitespace();
        let num = it.next()?.parse().ok()?;
        let method = it.next()?;
        it.next().is_none().then_some((num, method))
    }

    pub fn max_forwards(&self) -> Option<Result<u32, ()>> {
        self.first_value(HeaderName::MaxForwards)
            .map(|v| v.parse().map_err(|_| ()))
    }

    pub fn body(&self) -> Bytes {
        self.buf.slice(self.body.clone())
    }

    pub fn has_content_length(&self) -> bool {
        self.headers
            .iter()
            .any(|h| h.name == HeaderName::ContentLength)
    }

    /// The message exactly as it arrived (for logs at trace level).
    pub fn raw(&self) -> &Bytes {
        &self.buf
    }

    fn str_at(&self, r: Range<usize>) -> &str {
        // The header section was checked to be UTF-8 at parse time and all ranges fall on
        // character boundaries we found by ASCII delimiters.
        std::str::from_utf8(&self.buf[r]).unwrap_or("")
    }

    /// Writes the outgoing copy: new start line if any, added headers first, then every
    /// original header line (replaced or removed as asked), Content-Length when the original
    /// had none (required on streams), the blank line and the untouched body.
    pub fn render(&self, rw: &Rewrite) -> Bytes {
        let mut out = BytesMut::with_capacity(self.buf.len() + rw.extra_len() + 64);
        match &rw.start_line {
            Some(l) => out.put_slice(l.as_bytes()),
            None => {
                let first = &self.headers.first().map(|h| h.line.start);
                let start_line_end = self.start_line_end(first.unwrap_or(self.body.start));
                out.put_slice(&self.buf[self.start_line_start()..start_line_end]);
            }
        }
        out.put_slice(b"\r\n");
        for line in &rw.prepend {
            out.put_slice(line.as_bytes());
            out.put_slice(b"\r\n");
        }
        for (i, h) in self.headers.iter().enumerate() {
            match rw.edits.iter().find(|(idx, _)| *idx == i) {
                Some((_, None)) => {}
                Some((_, Some(v))) => {
                    out.put_slice(&self.buf[h.raw_name.clone()]);
                    out.put_slice(b": ");
                    out.put_slice(v.as_bytes());
                    out.put_slice(b"\r\n");
                }
                None => {
                    out.put_slice(&self.buf[h.line.clone()]);
                    out.put_slice(b"\r\n");
                }
            }
        }
        for line in &rw.append {
            out.put_slice(line.as_bytes());
            out.put_slice(b"\r\n");
        }
        if !self.has_content_length() {
            out.put_slice(format!("Content-Length: {}\r\n", self.body.len()).as_bytes());
        }
        out.put_slice(b"\r\n");
        out.put_slice(&self.buf[self.body.clone()]);
        out.freeze()
    }

    fn start_line_start(&self) -> usize {
        self.buf
            .iter()
            .position(|&b| b != b'\r' && b != b'\n')
            .unwrap_or(0)
    }

    fn start_line_end(&self, next: usize) -> usize {
        let s = self.start_line_start();
        self.buf[s..next]
            .iter()
            .position(|&b| b == b'\r' || b == b'\n')
            .map(|p| s + p)
            .unwrap_or(next)
    }
}

/// What to change when rendering a message onwards. Built by the proxy's rewrite functions.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rewrite {
    pub start_line: Option<String>,
    /// Whole header lines (without CRLF) to put above the original headers, in order.
    pub prepend: Vec<String>,
    /// Header index -> new value, or `None` to remove the line.
    pub edits: Vec<(usize, Option<String>)>,
    /// Whole header lines to put below the original headers.
    pub append: Vec<String>,
}

impl Rewrite {
    pub fn replace(&mut self, index: usize, value: String) {
        self.edits.retain(|(i, _)| *i != index);
        self.edits.push((index, Some(value)));
    }

    pub fn remove(&mut self, index: usize) {
        self.edits.retain(|(i, _)| *i != index);
        self.edits.push((index, None));
    }

    fn extra_len(&self) -> usize {
        self.prepend.iter().map(|l| l.len() + 2).sum::<usize>()
            + self.start_line.as_ref().map_or(0, |l| l.len())
            + self
                .edits
                .iter()
                .map(|(_, v)| v.as_ref().map_or(0, |v| v.len()))
                .sum::<usize>()
    }
}

/// RFC 3261 token characters, allowed in header names and methods.
pub fn is_token_char(b: u8) -> bool {
    // A table lookup: this runs for every byte of every header name.
    TOKEN_CHARS[usize::from(b)]
}

const TOKEN_CHARS: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
            );
        b += 1;
    }
    t
};

/// Index of the blank line that ends the header section (CRLFCRLF or a bare LFLF).
pub fn find_end_of_headers(buf: &[u8]) -> Option<usize> {
    // memchr jumps from line break to line break (a dozen per message) instead of testing
    // every byte: this scan was ~20,000 instructions per call under callgrind.
    memchr::memchr_iter(b'\n', buf).find_map(|i| {
        let rest = &buf[i + 1..];
        (rest.starts_with(b"\r\n") || rest.starts_with(b"\n")).then_some(i + 1)
    })
}

fn parse_start_line(line: &str, offset: usize) -> Result<StartLine, ParseError> {
    let bad = || ParseError::BadStartLine(line.chars().take(80).collect());
    // No control characters (a bare CR, NUL...): the grammar has none, and the line is
    // copied out up to the first CR when rendered.
    if line.bytes().any(|b| b.is_ascii_control()) {
        return Err(bad());
    }
    if let Some(rest) = line.strip_prefix("SIP/2.0 ") {
        let code_str = rest.split(' ').next().unwrap_or("");
        let code: u16 = code_str.parse().map_err(|_| bad())?;
        if !(100..=699).contains(&code) || code_str.len() != 3 {
            return Err(bad());
        }
        return Ok(StartLine::Response { code });
    }
    let mut parts = line.split(' ');
    let (method, uri, version) = (parts.next(), parts.next(), parts.next());
    match (method, uri, version, parts.next()) {
        (Some(m), Some(u), Some("SIP/2.0"), None)
            if !m.is_empty() && m.bytes().all(is_token_char) && !u.is_empty() =>
        {
            let uri_start = offset + m.len() + 1;
            Ok(StartLine::Request {
                method: offset..offset + m.len(),
                uri: uri_start..uri_start + u.len(),
            })
        }
        _ => Err(bad()),
    }
}

/// Folding (a line break followed by white space) means a single space (RFC 3261 7.3.1).
fn unfold(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut pending_space = false;
    for part in v.split(['\r', '\n']) {
        if part.is_empty() {
            continue;
        }
        let trimmed = if out.is_empty() {
            part
        } else {
            part.trim_start()
        };
        if pending_space && !out.is_empty() {
            out.push(' ');
        }
        out.push_str(trimmed.trim_end_matches([' ', '\t']));
        pending_space = true;
    }
    out
}

/// Iterates logical header lines, joining folded continuation lines; yields each with its
/// byte range in the original buffer (without the final line break).
struct LineIter<'a> {
    text: &'a str,
    pos: usize,
    base: usize,
}

impl<'a> LineIter<'a> {
    fn new(text: &'a str, base: usize) -> Self {
        LineIter { text, pos: 0, base }
    }
}

impl<'a> Iterator for LineIter<'a> {
    type Item = (&'a str, Range<usize>);

    fn next(&mut self) -> Option<Self::Item> {
        let bytes = self.text.as_bytes();
        if self.pos >= bytes.len() {
            return None;
        }
        let start = self.pos;
        let mut i = start;
        loop {
            // memchr: this walks the whole header section of every message.
            match memchr::memchr(b'\n', &bytes[i..]) {
                None => {
                    self.pos = bytes.len();
                    let end = trim_cr(bytes, bytes.len());
                    return Some((&self.text[start..end], self.base + start..self.base + end));
                }
                Some(p) => {
                    let nl = i + p;
                    // A following line that starts with white space continues this one.
                    if matches!(bytes.get(nl + 1), Some(b' ') | Some(b'\t')) {
                        i = nl + 1;
                        continue;
                    }
                    self.pos = nl + 1;
                    let end = trim_cr(bytes, nl);
                    return Some((&self.text[start..end], self.base + start..self.base + end));
                }
            }
        }
    }
}

fn trim_cr(bytes: &[u8], end: usize) -> usize {
    if end > 0 && bytes[end - 1] == b'\r' {
        end - 1
    } else {
        end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:bob@203.0.113.20 SIP/2.0\r\n\
        v: SIP/2.0/UDP 192.0.2.35:5060;branch=z9hG4bK776asdhds;rport\r\n\
        Max-Forwards: 70\r\n\
        t: Bob <sip:bob@203.0.113.20>\r\n\
        f: Alice <sip:alice@192.0.2.35>;tag=1928301774\r\n\
        i: a84b4c76e66710\r\n\
        CSeq: 314159 INVITE\r\n\
        m: <sip:alice@192.0.2.35>\r\n\
        Subject: folded\r\n  across lines\r\n\
        X-Custom:   keep   me   \r\n\
        l: 4\r\n\r\nbodyEXTRA";

    fn msg(s: &str) -> SipMessage {
        SipMessage::parse(Bytes::copy_from_slice(s.as_bytes())).unwrap()
    }

    #[test]
    fn parses_request_with_compact_and_folded_headers() {
        let m = msg(INVITE);
        assert!(m.is_request());
        assert_eq!(m.method(), "INVITE");
        assert_eq!(m.request_uri(), "sip:bob@203.0.113.20");
        assert_eq!(m.call_id(), Some("a84b4c76e66710"));
        assert_eq!(m.cseq(), Some((314159, "INVITE")));
        assert_eq!(m.max_forwards(), Some(Ok(70)));
        assert_eq!(m.top_via().unwrap().branch(), Some("z9hG4bK776asdhds"));
        let subject = m
            .headers()
            .iter()
            .find(|h| m.value(h).starts_with("folded"))
            .unwrap();
        assert_eq!(m.value(subject), "folded across lines");
        assert_eq!(&m.body()[..], b"body");
    }

    #[test]
    fn render_without_edits_keeps_headers_byte_for_byte() {
        let m = msg(INVITE);
        let out = m.render(&Rewrite::default());
        let text = std::str::from_utf8(&out).unwrap();
        assert!(text.contains("Subject: folded\r\n  across lines\r\n"));
        assert!(text.contains("X-Custom:   keep   me   \r\n"));
        assert!(text.ends_with("\r\n\r\nbody"), "{text}");
        assert_eq!(msg(text).headers().len(), m.headers().len());
    }

    #[test]
    fn render_applies_edits() {
        let m = msg(INVITE);
        let (mf, _) = m.first(HeaderName::MaxForwards).unwrap();
        let (via, _) = m.first(HeaderName::Via).unwrap();
        let mut rw = Rewrite {
            start_line: Some("INVITE sip:bob@x SIP/2.0".into()),
            prepend: vec!["Via: SIP/2.0/TCP 203.0.113.5;branch=z9hG4bKrb1".into()],
            ..Default::default()
        };
        rw.replace(mf, "69".into());
        rw.remove(via);
        let out = m.render(&rw);
        let text = std::str::from_utf8(&out).unwrap();
        assert!(text.starts_with("INVITE sip:bob@x SIP/2.0\r\nVia: SIP/2.0/TCP 203.0.113.5;branch=z9hG4bKrb1\r\nMax-Forwards: 69\r\n"), "{text}");
        assert!(!text.contains("776asdhds"));
    }

    #[test]
    fn adds_content_length_when_missing() {
        let m = msg("OPTIONS sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\r\nab");
        let out = m.render(&Rewrite::default());
        assert!(std::str::from_utf8(&out)
            .unwrap()
            .ends_with("Content-Length: 2\r\n\r\nab"));
    }

    #[test]
    fn parses_response_and_extension_method() {
        let m = msg("SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(m.status(), Some(180));
        assert!(!m.is_request());
        let m = msg("\r\n\r\nFOO sip:x@y SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\n\n");
        assert_eq!(m.method(), "FOO");
    }

    #[test]
    fn parse_errors() {
        let p = |s: &str| SipMessage::parse(Bytes::copy_from_slice(s.as_bytes())).unwrap_err();
        assert_eq!(p(""), ParseError::Empty);
        assert_eq!(p("\r\n\r\n"), ParseError::Empty);
        assert!(matches!(
            p("INVITE sip:x SIP/2.0\r\nVia: x\r\n"),
            ParseError::NoEndOfHeaders
        ));
        assert!(matches!(
            p("INVITE  sip:x SIP/2.0\r\n\r\n"),
            ParseError::BadStartLine(_)
        ));
        assert!(matches!(
            p("SIP/2.0 20 OK\r\n\r\n"),
            ParseError::BadStartLine(_)
        ));
        assert!(matches!(
            p("INVITE sip:x SIP/2.0\r\nNoColon\r\n\r\n"),
            ParseError::BadHeaderLine(1)
        ));
        assert!(matches!(
            p("INVITE sip:x SIP/2.0\r\nl: x\r\n\r\n"),
            ParseError::BadContentLength(_)
        ));
        assert!(matches!(
            p("INVITE sip:x SIP/2.0\r\nl: 10\r\n\r\nabc"),
            ParseError::BodyTruncated {
                declared: 10,
                received: 3
            }
        ));
        let mut many = String::from("OPTIONS sip:x SIP/2.0\r\n");
        for i in 0..=MAX_HEADERS {
            many.push_str(&format!("X-{i}: y\r\n"));
        }
        many.push_str("\r\n");
        assert_eq!(p(&many), ParseError::TooManyHeaders);
        let bad_utf8 = SipMessage::parse(Bytes::from_static(
            b"OPTIONS sip:x SIP/2.0\r\nX: \xff\r\n\r\n",
        ));
        assert_eq!(bad_utf8.unwrap_err(), ParseError::NotUtf8);
    }

    #[test]
    fn token_char_table_matches_the_grammar() {
        for b in 0..=255u8 {
            let expected = b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b);
            assert_eq!(is_token_char(b), expected, "{b}");
        }
    }

    #[test]
    fn values_split_across_lines_and_commas() {
        let m = msg("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2\r\nv: SIP/2.0/TCP c;branch=z9hG4bK3\r\n\r\n");
        let vias: Vec<&str> = m.values(HeaderName::Via).collect();
        assert_eq!(vias.len(), 3);
        assert_eq!(m.top_via().unwrap().host, "a");
    }
}
