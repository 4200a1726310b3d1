//! Header rewriting for forwarded requests and responses, as pure functions.
//!
//! A proxy changes only what RFC 3261 section 16.6 and the transport bridge require:
//! the Request-URI (retargeting), Max-Forwards, Route (loose routing), Record-Route, its own
//! Via (plus received/rport on the sender's Via, RFC 3581) and Contact where the transport
//! changes. Everything else is left to [`SipMessage::render`] to copy byte for byte.

use super::contact_token::{ContactTokens, TokenKey, PARAM};
use super::transaction::OutgoingHop;
use crate::routing::{LocalIdentity, Source};
use crate::sip::header::iter_values;
use crate::sip::uri::{find_param, push_decimal, push_ip, NameAddr, SipUri};
use crate::sip::via::Via;
use crate::sip::{HeaderName, Rewrite, SipMessage, Transport};
use std::net::IpAddr;

/// How Roundabout writes its own address, per transport.
#[derive(Debug, Clone)]
pub struct ProxyAddress {
    pub identity: LocalIdentity,
    /// IP as written in a URI (IPv6 in brackets).
    pub ip_host: String,
    /// Host written into rewritten Contacts: the IP, or the FQDN with -contact-header-fqdn.
    pub contact_host: String,
}

impl ProxyAddress {
    pub fn new(identity: LocalIdentity, contact_fqdn: bool) -> ProxyAddress {
        let ip_host = uri_host(identity.ip);
        let contact_host = match (&identity.fqdn, contact_fqdn) {
            (Some(f), true) => f.clone(),
            _ => ip_host.clone(),
        };
        ProxyAddress {
            identity,
            ip_host,
            contact_host,
        }
    }

    /// The transport and port Roundabout names for itself towards a peer reached over `t`:
    /// `t` and its listener's port, or, when that listener is off (`-tls-port 0` while a
    /// trusted server is reached over TLS), the closest listener that is on
    /// ([`crate::config::Ports::advertised`]: TLS -> TCP -> UDP, WSS -> WS -> TLS, ...). So
    /// nothing Roundabout writes names port 0, or a port it does not listen on and would not
    /// recognise as itself when a request comes back with it ([`LocalIdentity::is_us`]).
    pub fn advertised(&self, t: Transport) -> (Transport, u16) {
        // Only with every listener off (nothing comes in, so nothing is written).
        self.identity
            .ports
            .advertised(t)
            .unwrap_or((t, t.default_port()))
    }

    /// The port written for a side on transport `t` (see [`ProxyAddress::advertised`]).
    pub fn port(&self, t: Transport) -> u16 {
        self.advertised(t).1
    }

    /// A Via value for a request Roundabout sends on `t`. The sent-protocol is the transport
    /// actually used (RFC 3261 18.1.1; responses come back on the connection); the port is
    /// [`ProxyAddress::port`], one Roundabout listens on, so that loop detection recognises
    /// the Via as ours even when the listener for `t` is off.
    pub fn via(&self, t: Transport, branch: &str) -> String {
        // One buffer sized up front (runs per forwarded request; `format!` regrew it).
        let mut out = String::with_capacity(24 + self.ip_host.len() + branch.len());
        out.push_str("SIP/2.0/");
        out.push_str(t.via_token());
        out.push(' ');
        out.push_str(&self.ip_host);
        push_port(&mut out, self.port(t));
        out.push_str(";branch=");
        out.push_str(branch);
        out
    }

    /// A Record-Route value that brings in-dialog requests back from a peer on transport `t`
    /// (over [`ProxyAddress::advertised`] when `t`'s listener is off). On TLS and WSS it
    /// names the FQDN when there is one: peers that open a new TLS connection for in-dialog
    /// requests check the certificate against this host.
    pub fn record_route(&self, t: Transport) -> String {
        let (t, port) = self.advertised(t);
        let host = match (&self.identity.fqdn, t.is_secure()) {
            (Some(fqdn), true) => fqdn.as_str(),
            _ => self.ip_host.as_str(),
        };
        let mut out = String::with_capacity(32 + host.len());
        out.push_str("<sip:");
        out.push_str(host);
        push_port(&mut out, port);
        push_transport_param(&mut out, t);
        out.push_str(";lr>");
        out
    }

    /// Roundabout's Contact URI on transport `t` for `user`, with extra parameters.
    pub fn contact_uri(&self, t: Transport, user: Option<&str>, extra: &str) -> String {
        let mut out = String::with_capacity(
            32 + self.contact_host.len() + user.map_or(0, str::len) + extra.len(),
        );
        self.push_contact_uri(&mut out, t, user);
        out.push_str(extra);
        out
    }

    /// [`ProxyAddress::contact_uri`] without the extra parameters, appended to `out`. Like
    /// Record-Route it names [`ProxyAddress::advertised`] for `t`.
    pub fn push_contact_uri(&self, out: &mut String, t: Transport, user: Option<&str>) {
        let (t, port) = self.advertised(t);
        out.push_str("sip:");
        if let Some(u) = user {
            out.push_str(u);
            out.push('@');
        }
        out.push_str(&self.contact_host);
        push_port(out, port);
        push_transport_param(out, t);
    }

    pub fn is_us(&self, uri: &SipUri<'_>) -> bool {
        self.identity.is_us(uri.host, uri.port)
    }
}

pub fn uri_host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => format!("[{v6}]"),
        v4 => v4.to_string(),
    }
}

/// `:port`, appended without `format!`.
fn push_port(out: &mut String, port: u16) {
    out.push(':');
    push_decimal(out, port.into());
}

/// `;transport=x` for transports other than UDP, appended.
fn push_transport_param(out: &mut String, t: Transport) {
    if let Some(p) = t.uri_param() {
        out.push_str(";transport=");
        out.push_str(p);
    }
}

/// Methods whose out-of-dialog request creates a dialog, so Roundabout must Record-Route.
pub fn creates_dialog(msg: &SipMessage) -> bool {
    matches!(msg.method(), "INVITE" | "SUBSCRIBE" | "REFER" | "NOTIFY") && to_tag(msg).is_none()
}

pub fn to_tag(msg: &SipMessage) -> Option<&str> {
    msg.first_value(HeaderName::To)
        .and_then(|v| NameAddr::parse(v).ok())
        .and_then(|n| n.tag())
}

/// The sender's Via value with `received` and `rport` filled in (RFC 3261 18.2.1, RFC 3581).
/// `None` when nothing needs to change.
pub fn via_with_received(via_value: &str, source: &Source) -> Option<String> {
    let via = Via::parse(via_value).ok()?;
    let ip = source.remote.ip();
    let wants_rport = matches!(via.rport(), Some(None));
    let sent_by_is_source = crate::sip::uri::host_ip(via.host) == Some(ip);
    if !wants_rport && sent_by_is_source {
        return None;
    }
    // Rebuild the parameter list without any old received/rport, then add ours.
    let head_len = via_value.len() - via.params.len();
    let mut out = String::with_capacity(via_value.len() + 40);
    out.push_str(via_value[..head_len].trim_end());
    for p in via
        .params
        .split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let name = p.split('=').next().unwrap_or("").trim();
        if name.eq_ignore_ascii_case("received") || name.eq_ignore_ascii_case("rport") {
            continue;
        }
        out.push(';');
        out.push_str(p);
    }
    // Written into `out` directly: no temporary String per parameter.
    if wants_rport {
        out.push_str(";rport=");
        push_decimal(&mut out, source.remote.port().into());
    }
    out.push_str(";received=");
    push_ip(&mut out, ip);
    Some(out)
}

/// Removes the first `n` values of a header that may be spread over lines and comma lists
/// (Route on loose routing, Via on responses).
pub fn remove_first_values(msg: &SipMessage, name: HeaderName, mut n: usize, rw: &mut Rewrite) {
    for (i, h) in msg.headers().iter().enumerate() {
        if n == 0 {
            return;
        }
        if h.name != name {
            continue;
        }
        let value = msg.value(h);
        let mut parts = iter_values(value).skip(n);
        match parts.next() {
            // Fewer values than to remove (or exactly as many): the whole line goes.
            None => {
                n -= iter_values(value).count();
                rw.remove(i);
            }
            Some(first_kept) => {
                let rest_start = first_kept.start;
                rw.replace(i, value[rest_start..].to_string());
                n = 0;
            }
        }
    }
}

/// How many Route values on top point at Roundabout (two after double Record-Route), and
/// the first one that does not.
pub fn our_routes_on_top<'m>(
    msg: &'m SipMessage,
    local: &ProxyAddress,
) -> (usize, Option<&'m str>) {
    let mut count = 0;
    for value in msg.values(HeaderName::Route) {
        let is_ours = NameAddr::parse(value)
            .ok()
            .and_then(|n| n.uri().ok())
            .is_some_and(|u| local.is_us(&u));
        if !is_ours {
            return (count, Some(value));
        }
        count += 1;
    }
    (count, None)
}

/// Whether a Route after the first `skip` values names Roundabout: the request will come
/// back through us (a spiral through a Record-Routing server).
pub fn routes_return_to_us(msg: &SipMessage, local: &ProxyAddress, skip: usize) -> bool {
    msg.values(HeaderName::Route).skip(skip).any(|value| {
        NameAddr::parse(value)
            .ok()
            .and_then(|n| n.uri().ok())
            .is_some_and(|u| local.is_us(&u))
    })
}

/// The contact token to restore into the Request-URI of a request being forwarded (compare
/// Kamailio's `handle_ruri_alias`): a Request-URI that is one of Roundabout's own Contacts is
/// put back to the client's Contact on every pass, also when a Route remains (a
/// Record-Routing server further on must never have to reach Roundabout over a transport it
/// lacks, TLS or WS). Kept only while a remaining Route brings the request back through
/// Roundabout: the last pass restores it.
pub fn token_to_restore<'m>(
    msg: &'m SipMessage,
    ruri: &SipUri<'m>,
    local: &ProxyAddress,
    our_routes: usize,
) -> Option<&'m str> {
    let token = token_in_uri(ruri, local)?;
    (!routes_return_to_us(msg, local, our_routes)).then_some(token)
}

/// Max-Forwards decremented, or set to 70 when absent (RFC 3261 16.6 step 3).
pub fn decrement_max_forwards(msg: &SipMessage, rw: &mut Rewrite) {
    match msg.first(HeaderName::MaxForwards) {
        Some((i, v)) => {
            let n: u32 = v.parse().unwrap_or(70);
            rw.replace(i, n.saturating_sub(1).to_string());
        }
        None => rw.append.push("Max-Forwards: 70".into()),
    }
}

/// Rewrites every Contact value (except `*` and non-SIP URIs) with `f(name_addr, uri)`.
fn rewrite_contacts(
    msg: &SipMessage,
    rw: &mut Rewrite,
    mut f: impl FnMut(&NameAddr<'_>, &SipUri<'_>) -> Option<String>,
) {
    for (i, h) in msg.headers().iter().enumerate() {
        if h.name != HeaderName::Contact {
            continue;
        }
        let value = msg.value(h);
        // Built only once a value changes: most messages have one Contact, left as is or
        // rewritten once, and need no list of copies.
        let mut out: Option<String> = None;
        let mut copied_up_to = 0;
        for r in iter_values(value) {
            let v = &value[r.clone()];
            let new = NameAddr::parse(v)
                .ok()
                .and_then(|na| na.uri().ok().and_then(|u| f(&na, &u)));
            if let Some(n) = new {
                if out.is_none() && r.start == 0 && r.end == value.len() {
                    // The one value is the whole line (the usual single Contact): the new
                    // value is the line, no second copy.
                    out = Some(n);
                    copied_up_to = r.end;
                    continue;
                }
                let o = out.get_or_insert_with(|| String::with_capacity(value.len() + 96));
                o.push_str(&value[copied_up_to..r.start]);
                o.push_str(&n);
                copied_up_to = r.end;
            }
        }
        if let Some(mut o) = out {
            o.push_str(&value[copied_up_to..]);
            rw.replace(i, o);
        }
    }
}

/// Dialog Contacts: Roundabout's address on the side the message leaves on, carrying a token
/// for the original target (the sender, reached as it reached us).
pub fn rewrite_dialog_contact(
    msg: &SipMessage,
    rw: &mut Rewrite,
    local: &ProxyAddress,
    out: Transport,
    sender: &Source,
    tokens: &ContactTokens,
) {
    rewrite_contacts(msg, rw, |na, uri| {
        if local.is_us(uri) && uri.param(PARAM).is_some() {
            return None; // already ours (a hairpin through Roundabout): keep one token
        }
        // Written straight into the new value (no separate token, URI and value strings).
        let original = na.uri_str();
        let hint = local.contact_host.len() + uri.user.map_or(0, str::len) + 2 * original.len();
        Some(na.with_uri_written(hint + 160, |s| {
            local.push_contact_uri(s, out, uri.user);
            s.push(';');
            s.push_str(PARAM);
            s.push('=');
            tokens.encode_into(s, sender, original);
        }))
    });
}

/// The URI parameter that names one client in the Contact Roundabout registers for it.
pub const CLIENT_PARAM: &str = "rbc";

/// One Contact of a REGISTER as the client wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredContact {
    pub user: String,
    /// The client token written as `;rbc=` (see [`client_token`]).
    pub client: String,
    /// The whole Contact value (URI and parameters such as +sip.instance, reg-id).
    pub original_value: String,
    pub original_uri: String,
}

/// The token that names one client: a MAC of its address-of-record and its `+sip.instance`
/// (RFC 5626), or its Contact URI when it sends none. Stable for the same client, so a
/// re-REGISTER (after a reconnect too) yields the same Contact at the server and replaces
/// its binding there instead of piling up stale ones; different for every other client, so
/// two clients with the same Contact user (bob registering `alice`, extension 100 on two
/// PBXs) never share a binding.
pub fn client_token(key: &TokenKey, aor: &str, instance_or_uri: &str) -> String {
    // Always 16 hex digits (once per REGISTER: `format!` is fine here).
    format!(
        "{:016x}",
        key.mac64(&[b"client", aor.as_bytes(), instance_or_uri.as_bytes()])
    )
}

/// The address-of-record of a REGISTER: its To URI without parameters (`user@host`).
pub fn address_of_record(msg: &SipMessage) -> String {
    msg.first_value(HeaderName::To)
        .and_then(|v| NameAddr::parse(v).ok())
        .and_then(|na| {
            let u = na.uri().ok()?;
            Some(match u.user {
                Some(user) => [user, "@", u.host].concat(),
                None => u.host.to_string(),
            })
        })
        .unwrap_or_default()
}

/// REGISTER Contacts: Roundabout's address on the server's side, same user, and `;rbc=` with
/// the token of that client. Returns what was replaced, to restore it in the 2xx and to bind
/// the client.
pub fn rewrite_register_contact(
    msg: &SipMessage,
    rw: &mut Rewrite,
    local: &ProxyAddress,
    out: Transport,
    key: &TokenKey,
) -> Vec<RegisteredContact> {
    let aor = address_of_record(msg);
    let mut replaced = Vec::new();
    rewrite_contacts(msg, rw, |na, uri| {
        let user = uri.user.filter(|u| !u.is_empty())?;
        let instance = na.param("+sip.instance").flatten();
        let client = client_token(key, &aor, instance.unwrap_or(na.uri_str()));
        let extra = [";", CLIENT_PARAM, "=", &client].concat();
        let new = na.with_uri(&local.contact_uri(out, Some(user), &extra));
        replaced.push(RegisteredContact {
            user: user.to_string(),
            client,
            original_value: na.value.to_string(),
            original_uri: na.uri_str().to_string(),
        });
        Some(new)
    });
    replaced
}

/// In a 2xx to REGISTER: puts each client's own Contact back (RFC 3261 10.3: the client looks
/// for its Contact there), with the expiry the server granted. Returns `(user, expires)` for
/// each restored binding (by client token), `expires` from the Contact's parameter or the
/// Expires header.
pub fn restore_register_contacts(
    msg: &SipMessage,
    rw: &mut Rewrite,
    local: &ProxyAddress,
    registered: &[RegisteredContact],
) -> Vec<(String, Option<u32>)> {
    let expires_header = msg
        .first_value(HeaderName::Expires)
        .and_then(|v| v.parse::<u32>().ok());
    let mut granted = Vec::new();
    rewrite_contacts(msg, rw, |na, uri| {
        if !local.is_us(uri) {
            return None;
        }
        // By token; a server that dropped the parameter is matched by user.
        let token = find_param(uri.params, CLIENT_PARAM).flatten();
        let reg = registered.iter().find(|r| match token {
            Some(t) => r.client == t,
            None => Some(r.user.as_str()) == uri.user,
        })?;
        let expires = na
            .param("expires")
            .flatten()
            .and_then(|e| e.parse().ok())
            .or(expires_header);
        granted.push((reg.client.clone(), expires));
        let original = NameAddr::parse(&reg.original_value).ok()?;
        Some(match expires {
            Some(e) => with_param(&original, "expires", &e.to_string()),
            None => reg.original_value.clone(),
        })
    });
    granted
}

/// A name-addr value with one header parameter set (replaced if present).
fn with_param(na: &NameAddr<'_>, name: &str, value: &str) -> String {
    let uri_part = if na.bracketed {
        na.value[..na.uri_range.end + 1].to_string()
    } else {
        format!("<{}>", na.uri_str())
    };
    let mut out = uri_part;
    for p in na
        .params
        .split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let n = p.split('=').next().unwrap_or("").trim();
        if !n.eq_ignore_ascii_case(name) {
            out.push(';');
            out.push_str(p);
        }
    }
    out.push_str(&format!(";{name}={value}"));
    out
}

/// The expiry a REGISTER asks for: the Contact's parameter, else the Expires header.
pub fn requested_expires(msg: &SipMessage) -> Option<u32> {
    msg.values(HeaderName::Contact)
        .find_map(|v| {
            NameAddr::parse(v)
                .ok()?
                .param("expires")
                .flatten()?
                .parse()
                .ok()
        })
        .or_else(|| msg.first_value(HeaderName::Expires)?.parse().ok())
}

/// Whether a REGISTER's Contact is the wildcard `*` (remove all bindings).
pub fn is_wildcard_contact(msg: &SipMessage) -> bool {
    msg.values(HeaderName::Contact).any(|v| v == "*")
}

/// The user part of the To URI (the address-of-record being registered).
pub fn to_user(msg: &SipMessage) -> Option<String> {
    let v = msg.first_value(HeaderName::To)?;
    let na = NameAddr::parse(v).ok()?;
    na.uri().ok()?.user.map(String::from)
}

/// `;rbt=` in a URI that names Roundabout: the value of its contact token.
pub fn token_in_uri<'a>(uri: &SipUri<'a>, local: &ProxyAddress) -> Option<&'a str> {
    if !local.is_us(uri) {
        return None;
    }
    find_param(uri.params, PARAM).flatten()
}

/// The first Via value with received/rport filled in, for responses Roundabout makes and
/// for the forwarded request.
pub fn top_via_with_received(msg: &SipMessage, source: &Source) -> Option<String> {
    let line = msg.first_value(HeaderName::Via)?;
    let first = iter_values(line).next()?;
    let value = &line[first];
    Some(via_with_received(value, source).unwrap_or_else(|| value.to_string()))
}

/// A request as Roundabout forwards it, and what it needs later.
#[derive(Debug)]
pub struct BuiltRequest {
    pub bytes: bytes::Bytes,
    /// To build ACK (for a non-2xx final) and CANCEL for the same hop.
    pub hop: OutgoingHop,
    /// For REGISTER: the Contacts that were replaced.
    pub register_contacts: Option<Vec<RegisteredContact>>,
}

/// The forwarded copy of a request (RFC 3261 16.6): our Via on top (and the sender's with
/// received/rport), Record-Route for dialog-creating requests (two when the transport
/// changes, RFC 5658), our own Routes popped, Max-Forwards decremented, the Request-URI
/// replaced when `request_uri` is set, and Contact rewritten (REGISTER: for the server's
/// side, without token; otherwise with a token naming the sender). `routes` (a trusted
/// server's route-list, issue 15) go on top as Route values: the request is sent to the
/// first of them (RFC 3261 loose routing), and its CANCEL and ACK carry them too.
#[allow(clippy::too_many_arguments)]
pub fn build_request(
    msg: &SipMessage,
    local: &ProxyAddress,
    tokens: &ContactTokens,
    source: &Source,
    // the sender's top Via with received/rport ([`top_via_with_received`])
    source_via: Option<&str>,
    out: Transport,
    branch: &str,
    request_uri: Option<&str>,
    our_routes: usize,
    routes: &[String],
    register: bool,
) -> BuiltRequest {
    // Lines are joined with `concat` (one exact-size allocation) rather than `format!`,
    // which grows its buffer piece by piece: this runs for every forwarded request.
    let mut rw = Rewrite::default();
    if let Some(u) = request_uri {
        rw.start_line = Some([msg.method(), " ", u, " SIP/2.0"].concat());
    }
    let via = local.via(out, branch);
    rw.prepend.push(["Via: ", &via].concat());
    if creates_dialog(msg) {
        // Two entries when the transport changes (RFC 5658); one when both sides name the
        // same listener (a listener that is off stands in for another).
        let inbound = local.record_route(source.transport);
        if out != source.transport {
            let outbound = local.record_route(out);
            if outbound != inbound {
                rw.prepend.push(["Record-Route: ", &outbound].concat());
            }
        }
        rw.prepend.push(["Record-Route: ", &inbound].concat());
    }
    remove_first_values(msg, HeaderName::Route, our_routes, &mut rw);
    if !routes.is_empty() {
        rw.prepend.push(["Route: ", &routes.join(", ")].concat());
    }
    if let (Some(v), Some((i, line))) = (source_via, msg.first(HeaderName::Via)) {
        if let Some(first) = iter_values(line).next() {
            if v != &line[first.clone()] {
                rw.replace(i, [v, &line[first.end..]].concat());
            }
        }
    }
    decrement_max_forwards(msg, &mut rw);
    let register_contacts = if register {
        Some(rewrite_register_contact(
            msg,
            &mut rw,
            local,
            out,
            tokens.key(),
        ))
    } else {
        rewrite_dialog_contact(msg, &mut rw, local, out, source, tokens);
        None
    };
    let request_uri = request_uri.unwrap_or_else(|| msg.request_uri()).to_string();
    // Only an INVITE is ever CANCELled or ACKed hop by hop: other requests keep just
    // their Request-URI (for logs and for unbinding a client whose flow is gone).
    let hop = if msg.method() == "INVITE" {
        OutgoingHop {
            request_uri,
            via,
            routes: routes
                .iter()
                .map(String::as_str)
                .chain(msg.values(HeaderName::Route).skip(our_routes))
                .map(String::from)
                .collect(),
            from: msg.first_value(HeaderName::From).unwrap_or("").to_string(),
            to: msg.first_value(HeaderName::To).unwrap_or("").to_string(),
            call_id: msg.call_id().unwrap_or("").to_string(),
            cseq: msg.cseq().map_or(0, |c| c.0),
        }
    } else {
        OutgoingHop {
            request_uri,
            ..OutgoingHop::default()
        }
    };
    BuiltRequest {
        bytes: msg.render(&rw),
        hop,
        register_contacts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Ports;
    use crate::routing::FlowId;
    use bytes::Bytes;

    fn local() -> ProxyAddress {
        ProxyAddress::new(
            LocalIdentity {
                ip: "203.0.113.5".parse().unwrap(),
                fqdn: Some("proxya.example.com".into()),
                bind_ip: "203.0.113.5".parse().unwrap(),
                ports: Ports {
                    udp: 5060,
                    tcp: 5060,
                    tls: 5061,
                    ws: 8080,
                    wss: 0,
                },
            },
            false,
        )
    }

    fn msg(s: &str) -> SipMessage {
        SipMessage::parse(Bytes::copy_from_slice(s.as_bytes())).unwrap()
    }

    fn src(t: Transport, a: &str) -> Source {
        Source {
            transport: t,
            remote: a.parse().unwrap(),
            flow: FlowId(3),
        }
    }

    #[test]
    fn token_is_restored_unless_a_route_comes_back_to_us() {
        let l = local();
        let req = |routes: &str| {
            msg(&format!("BYE sip:bob@203.0.113.5:5061;transport=tls;rbt=tok SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKa\r\n{routes}Call-ID: c\r\nCSeq: 2 BYE\r\n\r\n"))
        };
        let check = |m: &SipMessage| {
            let (ours, _) = our_routes_on_top(m, &l);
            let ruri = SipUri::parse(m.request_uri()).unwrap();
            token_to_restore(m, &ruri, &l, ours).map(str::to_string)
        };
        // Last hop: restored.
        assert_eq!(check(&req("")).as_deref(), Some("tok"));
        // A Record-Routing server follows: restored too (it cannot reach us over TLS).
        let via_server = req("Route: <sip:203.0.113.5;transport=tls;lr>, <sip:203.0.113.5;lr>, <sip:198.51.100.9;lr>\r\n");
        assert_eq!(check(&via_server).as_deref(), Some("tok"));
        // A spiral: the server sends it back to us; the last pass restores it.
        let spiral = req("Route: <sip:203.0.113.5;lr>\r\nRoute: <sip:198.51.100.9;lr>, <sip:203.0.113.5:5060;lr>\r\n");
        assert_eq!(check(&spiral), None);
        // Not our URI: nothing to restore.
        let foreign = msg("BYE sip:bob@198.51.100.9;rbt=tok SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKa\r\nCall-ID: c\r\nCSeq: 2 BYE\r\n\r\n");
        assert_eq!(check(&foreign), None);
    }

    #[test]
    fn own_addresses() {
        let l = local();
        assert_eq!(
            l.via(Transport::Tcp, "z9hG4bKx"),
            "SIP/2.0/TCP 203.0.113.5:5060;branch=z9hG4bKx"
        );
        assert_eq!(
            l.record_route(Transport::Ws),
            "<sip:203.0.113.5:8080;transport=ws;lr>"
        );
        assert_eq!(l.record_route(Transport::Udp), "<sip:203.0.113.5:5060;lr>");
        // The WSS listener is off: the WS listener stands in (see the tests below).
        assert_eq!(
            l.record_route(Transport::Wss),
            "<sip:203.0.113.5:8080;transport=ws;lr>"
        );
        assert_eq!(
            l.record_route(Transport::Tls),
            "<sip:proxya.example.com:5061;transport=tls;lr>"
        );
        assert_eq!(
            l.contact_uri(Transport::Tls, Some("bob"), ""),
            "sip:bob@203.0.113.5:5061;transport=tls"
        );
        let fq = ProxyAddress::new(l.identity.clone(), true);
        assert_eq!(
            fq.contact_uri(Transport::Udp, None, ""),
            "sip:proxya.example.com:5060"
        );
    }

    fn with_ports(udp: u16, tcp: u16, tls: u16, ws: u16, wss: u16) -> ProxyAddress {
        let mut identity = local().identity;
        identity.ports = Ports {
            udp,
            tcp,
            tls,
            ws,
            wss,
        };
        ProxyAddress::new(identity, false)
    }

    /// Issue 11, rule 1: for every set of listeners that are on and every transport a
    /// message may leave on, Via, Record-Route and Contact name a listener that is on (the
    /// transport's own when it is on), with that listener's port, and Roundabout recognises
    /// each of them as itself.
    #[test]
    fn written_addresses_name_listeners_that_are_on() {
        let port_of = [5060, 5070, 5061, 8080, 8443];
        for mask in 1u32..32 {
            let p = |i: usize| if mask & (1 << i) != 0 { port_of[i] } else { 0 };
            let l = with_ports(p(0), p(1), p(2), p(3), p(4));
            let ports = l.identity.ports;
            for t in Transport::ALL {
                let case = format!("{ports:?}, side {t}");
                let (stand_in, port) = l.advertised(t);
                assert_ne!(port, 0, "{case}");
                assert_eq!(ports.get(stand_in), port, "{case}");
                if ports.get(t) != 0 {
                    assert_eq!(stand_in, t, "{case}");
                }
                let written_transport =
                    |uri: &SipUri<'_>| uri.transport().unwrap_or(Transport::Udp).uri_param();
                let rr = l.record_route(t);
                let na = NameAddr::parse(&rr).unwrap();
                let uri = na.uri().unwrap();
                assert!(l.is_us(&uri), "{case}: {rr}");
                assert_eq!(uri.port, Some(port), "{case}: {rr}");
                assert_eq!(
                    written_transport(&uri),
                    stand_in.uri_param(),
                    "{case}: {rr}"
                );
                let contact = l.contact_uri(t, Some("bob"), "");
                let uri = SipUri::parse(&contact).unwrap();
                assert!(l.is_us(&uri), "{case}: {contact}");
                assert_eq!(uri.port, Some(port), "{case}: {contact}");
                assert_eq!(
                    written_transport(&uri),
                    stand_in.uri_param(),
                    "{case}: {contact}"
                );
                // Via keeps the transport actually used, with a port that is ours.
                let via_value = l.via(t, "z9hG4bKx");
                let via = Via::parse(&via_value).unwrap();
                assert_eq!(via.transport, Some(t), "{case}: {via_value}");
                assert_eq!(via.port, Some(port), "{case}: {via_value}");
                assert!(l.identity.is_us(via.host, via.port), "{case}: {via_value}");
            }
        }
    }

    /// The stand-ins chosen when a listener is off (README, "Proxy behaviour").
    #[test]
    fn listener_off_names_the_closest_listener_that_is_on() {
        // TLS off (Roundabout still opens TLS connections to trusted servers): TCP, with the
        // IP (no certificate to match), never 5061.
        let l = with_ports(5060, 5060, 0, 8080, 8443);
        assert_eq!(
            l.record_route(Transport::Tls),
            "<sip:203.0.113.5:5060;transport=tcp;lr>"
        );
        assert_eq!(
            l.contact_uri(Transport::Tls, Some("bob"), ""),
            "sip:bob@203.0.113.5:5060;transport=tcp"
        );
        assert_eq!(
            l.via(Transport::Tls, "z9hG4bKx"),
            "SIP/2.0/TLS 203.0.113.5:5060;branch=z9hG4bKx"
        );
        // TLS and TCP off: UDP.
        let l = with_ports(5060, 0, 0, 0, 8443);
        assert_eq!(l.record_route(Transport::Tls), "<sip:203.0.113.5:5060;lr>");
        // WSS off: the WS listener's port, still `;transport=ws` (the server's requests come
        // over the WebSocket connection Roundabout opened).
        let l = with_ports(5060, 5060, 5061, 8080, 0);
        assert_eq!(
            l.record_route(Transport::Wss),
            "<sip:203.0.113.5:8080;transport=ws;lr>"
        );
        // WSS and WS off: TLS keeps it secure, with the FQDN for certificate checks.
        let l = with_ports(5060, 5060, 5061, 0, 0);
        assert_eq!(
            l.record_route(Transport::Wss),
            "<sip:proxya.example.com:5061;transport=tls;lr>"
        );
        assert_eq!(
            l.via(Transport::Wss, "z9hG4bKx"),
            "SIP/2.0/WSS 203.0.113.5:5061;branch=z9hG4bKx"
        );
        // WS off: WSS (secure, so the FQDN).
        let l = with_ports(5060, 5060, 5061, 0, 8443);
        assert_eq!(
            l.record_route(Transport::Ws),
            "<sip:proxya.example.com:8443;transport=ws;lr>"
        );
        // TCP off: UDP; UDP off: TCP.
        let l = with_ports(5060, 0, 5061, 0, 0);
        assert_eq!(
            l.contact_uri(Transport::Tcp, None, ""),
            "sip:203.0.113.5:5060"
        );
        let l = with_ports(0, 5070, 5061, 0, 0);
        assert_eq!(
            l.contact_uri(Transport::Udp, None, ""),
            "sip:203.0.113.5:5070;transport=tcp"
        );
    }

    #[test]
    fn received_and_rport() {
        let s = src(Transport::Udp, "192.0.2.35:40000");
        assert_eq!(
            via_with_received("SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport", &s).unwrap(),
            "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport=40000;received=192.0.2.35"
        );
        assert_eq!(
            via_with_received("SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1", &s).unwrap(),
            "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;received=192.0.2.35"
        );
        assert_eq!(
            via_with_received("SIP/2.0/UDP 192.0.2.35:5060;branch=z9hG4bK1", &s),
            None
        );
        // The rport flag forces received even when the address matches (RFC 3581 section 4).
        assert!(
            via_with_received("SIP/2.0/UDP 192.0.2.35;branch=z9hG4bK1;rport", &s)
                .unwrap()
                .ends_with(";rport=40000;received=192.0.2.35")
        );
    }

    #[test]
    fn loose_routing_pops_our_double_record_route() {
        let m = msg("BYE sip:a@192.0.2.35 SIP/2.0\r\nRoute: <sip:203.0.113.5:5060;transport=tcp;lr>, <sip:203.0.113.5:5060;lr>\r\nRoute: <sip:198.51.100.9;lr>\r\n\r\n");
        let (n, next) = our_routes_on_top(&m, &local());
        assert_eq!((n, next), (2, Some("<sip:198.51.100.9;lr>")));
        let mut rw = Rewrite::default();
        remove_first_values(&m, HeaderName::Route, n, &mut rw);
        let out = String::from_utf8(m.render(&rw).to_vec()).unwrap();
        assert!(!out.contains("203.0.113.5"), "{out}");
        assert!(out.contains("Route: <sip:198.51.100.9;lr>"));
        let m = msg(
            "BYE sip:a@x SIP/2.0\r\nRoute: <sip:203.0.113.5;lr>, <sip:198.51.100.9;lr>\r\n\r\n",
        );
        let mut rw = Rewrite::default();
        remove_first_values(&m, HeaderName::Route, 1, &mut rw);
        assert!(String::from_utf8(m.render(&rw).to_vec())
            .unwrap()
            .contains("Route: <sip:198.51.100.9;lr>\r\n"));
    }

    #[test]
    fn max_forwards() {
        let m = msg("OPTIONS sip:a@x SIP/2.0\r\nMax-Forwards: 10\r\n\r\n");
        let mut rw = Rewrite::default();
        decrement_max_forwards(&m, &mut rw);
        assert!(String::from_utf8(m.render(&rw).to_vec())
            .unwrap()
            .contains("Max-Forwards: 9\r\n"));
        let m = msg("OPTIONS sip:a@x SIP/2.0\r\n\r\n");
        let mut rw = Rewrite::default();
        decrement_max_forwards(&m, &mut rw);
        assert!(String::from_utf8(m.render(&rw).to_vec())
            .unwrap()
            .contains("Max-Forwards: 70\r\n"));
    }

    #[test]
    fn dialog_contact_gets_token_that_leads_back() {
        let key = ContactTokens::new(TokenKey::default());
        let m = msg("INVITE sip:b@x SIP/2.0\r\nContact: \"Al\" <sip:alice@10.0.0.1:5062;ob>;+sip.instance=\"<urn:x>\"\r\n\r\n");
        let sender = src(Transport::Udp, "192.0.2.35:40000");
        let mut rw = Rewrite::default();
        rewrite_dialog_contact(&m, &mut rw, &local(), Transport::Tcp, &sender, &key);
        let out = m.render(&rw);
        let fwd = SipMessage::parse(out).unwrap();
        let contact = fwd.first_value(HeaderName::Contact).unwrap();
        assert!(
            contact.starts_with("\"Al\" <sip:alice@203.0.113.5:5060;transport=tcp;rbt="),
            "{contact}"
        );
        assert!(
            contact.ends_with(">;+sip.instance=\"<urn:x>\""),
            "{contact}"
        );
        let na = NameAddr::parse(contact).unwrap();
        let uri = na.uri().unwrap();
        let tok = key.decode(token_in_uri(&uri, &local()).unwrap()).unwrap();
        assert_eq!(tok.source, sender);
        assert_eq!(tok.original_uri, "sip:alice@10.0.0.1:5062;ob");
        assert!(creates_dialog(&m));
    }

    #[test]
    fn register_contact_round_trip() {
        let l = local();
        let key = TokenKey::default();
        let reg = msg("REGISTER sip:server.example.com SIP/2.0\r\nTo: <sip:alice@server.example.com>\r\nContact: <sip:alice@df7.invalid;transport=ws>;+sip.instance=\"<urn:uuid:1>\";reg-id=1;expires=600\r\n\r\n");
        let mut rw = Rewrite::default();
        let saved = rewrite_register_contact(&reg, &mut rw, &l, Transport::Udp, &key);
        let fwd = String::from_utf8(reg.render(&rw).to_vec()).unwrap();
        let client = &saved[0].client;
        assert_eq!(client.len(), 16, "{client}");
        assert!(fwd.contains(&format!("Contact: <sip:alice@203.0.113.5:5060;rbc={client}>;+sip.instance=\"<urn:uuid:1>\";reg-id=1;expires=600\r\n")), "{fwd}");
        assert_eq!(saved[0].user, "alice");
        assert_eq!(requested_expires(&reg), Some(600));
        let ok = msg(&format!("SIP/2.0 200 OK\r\nContact: <sip:alice@203.0.113.5:5060;rbc={client}>;expires=300;+sip.instance=\"<urn:uuid:1>\";reg-id=1, <sip:alice@198.51.100.1>;expires=100\r\n\r\n"));
        let mut rw = Rewrite::default();
        let granted = restore_register_contacts(&ok, &mut rw, &l, &saved);
        assert_eq!(granted, vec![(client.clone(), Some(300))]);
        let back = String::from_utf8(ok.render(&rw).to_vec()).unwrap();
        assert!(back.contains("Contact: <sip:alice@df7.invalid;transport=ws>;+sip.instance=\"<urn:uuid:1>\";reg-id=1;expires=300, <sip:alice@198.51.100.1>;expires=100\r\n"), "{back}");
        assert_eq!(to_user(&reg).as_deref(), Some("alice"));
        // A server that drops the parameter is matched by user.
        let bare =
            msg("SIP/2.0 200 OK\r\nContact: <sip:alice@203.0.113.5:5060>;expires=60\r\n\r\n");
        let granted = restore_register_contacts(&bare, &mut Rewrite::default(), &l, &saved);
        assert_eq!(granted, vec![(client.clone(), Some(60))]);
    }

    #[test]
    fn client_tokens_name_one_client() {
        let key = TokenKey::default();
        let token = |to: &str, contact: &str| {
            let m = msg(&format!(
                "REGISTER sip:s SIP/2.0\r\nTo: <{to}>\r\nContact: {contact}\r\n\r\n"
            ));
            rewrite_register_contact(&m, &mut Rewrite::default(), &local(), Transport::Udp, &key)[0]
                .client
                .clone()
        };
        let alice = token("sip:alice@pbx", "<sip:alice@192.0.2.1:5060>");
        assert_eq!(
            alice,
            token("sip:alice@pbx", "<sip:alice@192.0.2.1:5060>"),
            "stable"
        );
        assert_ne!(
            alice,
            token("sip:bob@pbx", "<sip:alice@192.0.2.1:5060>"),
            "bob posing as alice"
        );
        assert_ne!(
            alice,
            token("sip:alice@pbx2", "<sip:alice@192.0.2.1:5060>"),
            "same extension, other PBX"
        );
        // With +sip.instance the token survives a new address (a reconnect).
        let inst = |addr: &str| {
            token(
                "sip:alice@pbx",
                &format!("<sip:alice@{addr}>;+sip.instance=\"<urn:uuid:7>\""),
            )
        };
        assert_eq!(inst("192.0.2.1:5060"), inst("192.0.2.9:40000"));
        assert_eq!(
            address_of_record(&msg(
                "REGISTER sip:s SIP/2.0\r\nTo: \"A\" <sip:alice@pbx;x=1>;tag=1\r\n\r\n"
            )),
            "alice@pbx"
        );
    }
}
