//! The `-metrics-addr` listener: a deliberately tiny HTTP/1.1 server with two pages.
//!
//! - `GET /metrics`: the Prometheus text of [`super::metrics::Metrics::render`], with the
//!   counts the actors hold gathered for this scrape (the SIGUSR1 `stats:` line's source).
//! - `GET /health`: `200 ok` while the listeners run, `503 draining` once SIGTERM or SIGINT
//!   came (a load balancer then stops sending new calls while those in flight finish).
//!
//! One request per connection (`Connection: close`); `HEAD` is accepted too. What a client
//! may cost is bounded: [`MAX_CLIENTS`] connections at once (more are closed at once), a
//! request head of at most [`MAX_HEAD`] bytes that must arrive within [`READ_TIMEOUT`], and
//! the answer must be written within the same time. It runs on the actors' thread, so a
//! scrape asks the actors like the SIGUSR1 handler does.

use crate::actors::stats::StatsSources;
use log::{debug, info, warn};
use std::rc::Rc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Connections served at once; a scraper and a health checker or two need no more.
pub const MAX_CLIENTS: usize = 8;
/// Largest request head read.
pub const MAX_HEAD: usize = 8 * 1024;
/// How long reading the request, and then writing the answer, may take each.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `listener` forever (until the process exits).
pub async fn serve(listener: TcpListener, sources: Rc<StatsSources>) {
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CLIENTS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of descriptors, say: wait instead of spinning.
                warn!("metrics listener: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            debug!("metrics listener: {peer} closed, {MAX_CLIENTS} clients already served");
            continue;
        };
        let sources = sources.clone();
        actix::spawn(async move {
            if let Err(e) = answer(stream, &sources).await {
                debug!("metrics listener: {peer}: {e}");
            }
            drop(permit);
        });
    }
}

async fn answer(mut stream: TcpStream, sources: &StatsSources) -> Result<(), String> {
    let head = tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream))
        .await
        .map_err(|_| format!("no request within {READ_TIMEOUT:?}"))??;
    let (method, path) = request_line(&head);
    let (status, content_type, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => {
            let stats = sources.gather().await;
            (
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                super::metrics::metrics().render(&stats),
            )
        }
        ("GET" | "HEAD", "/health") if super::metrics::metrics().draining() => (
            "503 Service Unavailable",
            "text/plain; charset=utf-8",
            "draining\n".to_string(),
        ),
        ("GET" | "HEAD", "/health") => ("200 OK", "text/plain; charset=utf-8", "ok\n".to_string()),
        ("GET" | "HEAD", _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "only /metrics and /health are here\n".to_string(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "use GET\n".to_string(),
        ),
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n",
        body.len()
    );
    if status.starts_with("405") {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    if method != "HEAD" {
        out.push_str(&body);
    }
    tokio::time::timeout(READ_TIMEOUT, async {
        stream.write_all(out.as_bytes()).await?;
        stream.shutdown().await
    })
    .await
    .map_err(|_| "the answer could not be written in time".to_string())?
    .map_err(|e| e.to_string())
}

/// Reads until the blank line that ends the head (a body, if any, is ignored).
async fn read_head(stream: &mut TcpStream) -> Result<String, String> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed before a whole request".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
            return Ok(String::from_utf8_lossy(&buf).into_owned());
        }
        if buf.len() > MAX_HEAD {
            return Err(format!("request head over {MAX_HEAD} bytes"));
        }
    }
}

/// `(method, path)` of the request line; the query string is ignored.
fn request_line(head: &str) -> (&str, &str) {
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let method = parts.next().unwrap_or("");
    let target = parts.next().unwrap_or("");
    (method, target.split('?').next().unwrap_or(""))
}

/// Binds `addr` and serves it on the current actix System. A port that cannot be bound is a
/// start-up error, like a SIP listener's.
pub async fn start(
    addr: std::net::SocketAddr,
    sources: Rc<StatsSources>,
) -> std::io::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    info!("metrics and health on http://{bound}/metrics and /health");
    actix::spawn(serve(listener, sources));
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::request_line;

    #[test]
    fn request_line_takes_method_and_path() {
        assert_eq!(
            request_line("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            ("GET", "/metrics")
        );
        assert_eq!(
            request_line("HEAD /health?x=1 HTTP/1.0\r\n\r\n"),
            ("HEAD", "/health")
        );
        assert_eq!(request_line(""), ("", ""));
    }
}
