//! SIP text helpers for the load generators (`examples/wss_*.rs`): reading header values
//! out of a whole message and building simple responses. Messages are small and made by
//! known peers (the proxies under test, SIPp), so plain string scanning is enough here;
//! Roundabout's own parser lives in `src/sip/`.

/// Header values by name (long or compact form), in order; comma-separated values of
/// Via / Record-Route / Route / Path are not split here.
pub fn headers<'a>(msg: &'a str, name: &str, compact: Option<&str>) -> Vec<&'a str> {
    let head = msg.split("\r\n\r\n").next().unwrap_or("");
    head.split("\r\n")
        .skip(1)
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            let n = n.trim();
            (n.eq_ignore_ascii_case(name) || compact.is_some_and(|c| n.eq_ignore_ascii_case(c)))
                .then_some(v.trim())
        })
        .collect()
}

pub fn header<'a>(msg: &'a str, name: &str, compact: Option<&str>) -> Option<&'a str> {
    headers(msg, name, compact).into_iter().next()
}

/// Splits a header value list at commas outside <> and quotes.
pub fn split_list(v: &str) -> Vec<String> {
    let (mut out, mut cur, mut angle, mut quote) = (vec![], String::new(), false, false);
    for ch in v.chars() {
        match ch {
            '"' => quote = !quote,
            '<' if !quote => angle = true,
            '>' if !quote => angle = false,
            ',' if !quote && !angle => {
                out.push(cur.trim().to_string());
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(ch);
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

/// Every value of a header, lists split, in message order.
pub fn all_values(msg: &str, name: &str, compact: Option<&str>) -> Vec<String> {
    headers(msg, name, compact)
        .into_iter()
        .flat_map(split_list)
        .collect()
}

/// The URI of a name-addr (`<...>`) or addr-spec value.
pub fn uri_of(v: &str) -> &str {
    match (v.find('<'), v.find('>')) {
        (Some(a), Some(b)) if b > a => &v[a + 1..b],
        _ => v.split(';').next().unwrap_or(v).trim(),
    }
}

/// The user part of a SIP URI.
pub fn user_of(uri: &str) -> &str {
    let rest = uri.split_once(':').map(|x| x.1).unwrap_or(uri);
    match rest.split_once('@') {
        Some((u, _)) => u.split(';').next().unwrap_or(u),
        None => "",
    }
}

/// The status code of a response, `None` for a request.
pub fn status_of(msg: &str) -> Option<u16> {
    let l = msg.split("\r\n").next()?;
    l.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
}

/// The method of a request, `""` for a response.
pub fn method_of(msg: &str) -> &str {
    if msg.starts_with("SIP/2.0") {
        ""
    } else {
        msg.split(' ').next().unwrap_or("")
    }
}

pub fn request_uri(msg: &str) -> &str {
    msg.split("\r\n")
        .next()
        .unwrap_or("")
        .split(' ')
        .nth(1)
        .unwrap_or("")
}

/// The method named in CSeq (what a response answers).
pub fn cseq_method(msg: &str) -> &str {
    header(msg, "CSeq", None)
        .and_then(|v| v.split_whitespace().nth(1))
        .unwrap_or("")
}

/// A response to `req`: every Via, Record-Route (for 1xx/2xx to INVITE, which set up the
/// dialog), From, To (a tag added when it has none), Call-ID and CSeq copied, plus `extra`
/// lines and an optional body (`(content type, body)`).
pub fn response(
    req: &str,
    code: u16,
    reason: &str,
    to_tag: &str,
    extra: &[String],
    body: Option<(&str, &str)>,
) -> String {
    let mut r = format!("SIP/2.0 {code} {reason}\r\n");
    for v in headers(req, "Via", Some("v")) {
        r += &format!("Via: {v}\r\n");
    }
    if code / 100 <= 2 && code > 100 && method_of(req) == "INVITE" {
        for v in headers(req, "Record-Route", None) {
            r += &format!("Record-Route: {v}\r\n");
        }
    }
    let to = header(req, "To", Some("t")).unwrap_or("");
    let to = if to.contains(";tag=") {
        to.to_string()
    } else {
        format!("{to};tag={to_tag}")
    };
    r += &format!(
        "From: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\n",
        header(req, "From", Some("f")).unwrap_or(""),
        header(req, "Call-ID", Some("i")).unwrap_or(""),
        header(req, "CSeq", None).unwrap_or("")
    );
    for e in extra {
        r += e;
        r += "\r\n";
    }
    match body {
        Some((ctype, b)) => {
            r += &format!(
                "Content-Type: {ctype}\r\nContent-Length: {}\r\n\r\n{b}",
                b.len()
            )
        }
        None => r += "Content-Length: 0\r\n\r\n",
    }
    r
}
