//! A minimal HTTP/1.1 keep-alive client for one request shape: a POST
//! whose answer is a JSON body with a `Content-Length`. A general client
//! (hyper, reqwest) costs several times more CPU per request, and the
//! generator shares two cores with the server, Redis and Postgres.

use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use memchr::memmem;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Built once: `memmem::find` builds its searcher on every call.
static HEAD_END: std::sync::LazyLock<memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memmem::Finder::new(b"\r\n\r\n"));

/// One keep-alive connection.
pub struct Conn {
    addr: String,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    /// Bytes of `buf` holding data not consumed yet.
    filled: usize,
    pub reconnects: u64,
    /// Answers read on the current connection.
    pub answered: u64,
}

/// A parsed answer; `body` borrows the connection's buffer.
pub struct Answer<'a> {
    pub status: u16,
    pub body: &'a [u8],
}

impl Conn {
    pub fn new(addr: &str) -> Self {
        Conn {
            addr: addr.to_string(),
            stream: None,
            buf: vec![0; 16 * 1024],
            filled: 0,
            reconnects: 0,
            answered: 0,
        }
    }

    /// Opens the connection now (before the clock starts), if it is not open.
    pub async fn connect(&mut self) -> anyhow::Result<()> {
        self.stream().await.map(|_| ())
    }

    async fn stream(&mut self) -> anyhow::Result<&mut TcpStream> {
        if self.stream.is_none() {
            let tcp = TcpStream::connect(&self.addr)
                .await
                .with_context(|| format!("connecting to {}", self.addr))?;
            tcp.set_nodelay(true)?;
            self.stream = Some(tcp);
            self.filled = 0;
            self.reconnects += 1;
            self.answered = 0;
        }
        self.stream.as_mut().ok_or_else(|| anyhow!("no stream"))
    }

    /// Forgets the connection (after an error or `Connection: close`).
    pub fn reset(&mut self) {
        self.stream = None;
        self.filled = 0;
    }

    /// Sends `request` (a whole HTTP/1.1 request) and reads the answer.
    pub async fn exchange(&mut self, request: &[u8], timeout: Duration) -> anyhow::Result<Answer<'_>> {
        match tokio::time::timeout(timeout, self.exchange_inner(request)).await {
            Ok(Ok((status, start, end, close))) => {
                self.answered += 1;
                if close {
                    // The body stays readable: the buffer is only cleared on reuse.
                    self.stream = None;
                }
                Ok(Answer {
                    status,
                    body: &self.buf[start..end],
                })
            }
            Ok(Err(e)) => {
                self.reset();
                Err(e)
            }
            Err(_) => {
                let first = self.answered == 0;
                self.reset();
                if first {
                    bail!("timeout (first request of its connection)")
                }
                bail!("timeout")
            }
        }
    }

    /// Returns (status, body start, body end, server closes).
    async fn exchange_inner(&mut self, request: &[u8]) -> anyhow::Result<(u16, usize, usize, bool)> {
        // A keep-alive server never sends unasked, so leftovers mean a broken exchange.
        if self.filled != 0 {
            self.reset();
        }
        let stream = self.stream().await?;
        stream.write_all(request).await.context("write")?;
        let mut filled = 0usize;
        let head_end = loop {
            if let Some(at) = HEAD_END.find(&self.buf[..filled]) {
                break at + 4;
            }
            if filled == self.buf.len() {
                bail!("response head larger than {} bytes", self.buf.len());
            }
            let stream = self.stream.as_mut().ok_or_else(|| anyhow!("no stream"))?;
            let n = stream.read(&mut self.buf[filled..]).await.context("read")?;
            if n == 0 {
                bail!("connection closed by the server");
            }
            filled += n;
        };
        let (status, length, close) = parse_head(&self.buf[..head_end])?;
        let end = head_end + length;
        if end > self.buf.len() {
            self.buf.resize(end, 0);
        }
        while filled < end {
            let stream = self.stream.as_mut().ok_or_else(|| anyhow!("no stream"))?;
            let n = stream
                .read(&mut self.buf[filled..end])
                .await
                .context("read body")?;
            if n == 0 {
                bail!("connection closed inside a body");
            }
            filled += n;
        }
        self.filled = filled.saturating_sub(end);
        Ok((status, head_end, end, close))
    }
}

/// Status, `Content-Length` and whether the server closes the connection.
fn parse_head(head: &[u8]) -> anyhow::Result<(u16, usize, bool)> {
    let status = head
        .get(9..12)
        .filter(|_| head.starts_with(b"HTTP/1."))
        .and_then(|s| std::str::from_utf8(s).ok())
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| anyhow!("not an HTTP/1.x status line"))?;
    let mut length = None;
    let mut close = false;
    for line in head.split(|b| *b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"content-length") {
            length = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<usize>().ok());
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            bail!("chunked answers are not supported by this client");
        } else if name.eq_ignore_ascii_case(b"connection") && value.eq_ignore_ascii_case(b"close") {
            close = true;
        }
    }
    Ok((status, length.unwrap_or(0), close))
}

/// The string value of `"field":"…"` in a flat JSON body, without building JSON.
pub fn string_field<'a>(body: &'a [u8], field: &str) -> Option<&'a str> {
    string_fields(body, field).next()
}

/// Whether `body` has `"field":"value"` anywhere.
pub fn has_string_field(body: &[u8], field: &str, value: &str) -> bool {
    string_fields(body, field).any(|v| v == value)
}

/// Each `"field":"…"` of `body`, in order. No allocation and no searcher
/// to build: the bodies are short and this runs once or more per answer.
fn string_fields<'a, 'f>(body: &'a [u8], field: &'f str) -> impl Iterator<Item = &'a str> + use<'a, 'f> {
    let field = field.as_bytes();
    let mut from = 0;
    std::iter::from_fn(move || {
        while let Some(quote) = memchr::memchr(b'"', body.get(from..)?) {
            let name = from + quote + 1;
            from = name;
            let rest = &body[name..];
            if rest.starts_with(field) && rest[field.len()..].starts_with(b"\":\"") {
                let value = name + field.len() + 3;
                let len = memchr::memchr(b'"', &body[value..])?;
                from = value + len + 1;
                if let Ok(text) = std::str::from_utf8(&body[value..value + len]) {
                    return Some(text);
                }
            }
        }
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_parsed() {
        let head = b"HTTP/1.1 409 Conflict\r\ncontent-type: application/json\r\nContent-Length: 52\r\n\r\n";
        assert_eq!(parse_head(head).unwrap(), (409, 52, false));
        let head = b"HTTP/1.1 201 Created\r\nconnection: close\r\ncontent-length: 3\r\n\r\n";
        assert_eq!(parse_head(head).unwrap(), (201, 3, true));
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").is_err());
        assert!(parse_head(b"garbage\r\n\r\n").is_err());
    }

    #[test]
    fn fields_are_found() {
        let body = br#"{"error":"sold_out","message":"the deal is sold out"}"#;
        assert_eq!(string_field(body, "error"), Some("sold_out"));
        assert_eq!(string_field(body, "order_id"), None);
        // A name that ends another (`deal_id`), a value that looks like a
        // field, and the second of two occurrences.
        let body = br#"{"data":{"deal_id":"d","note":"\"id\":\"x\""},"id":"7","id":"8","type":"ack"}"#;
        assert_eq!(string_field(body, "id"), Some("7"));
        assert!(has_string_field(body, "id", "8"));
        assert!(!has_string_field(body, "id", "d"));
        assert!(!has_string_field(body, "id", "x"));
        assert_eq!(string_field(body, "type"), Some("ack"));
        assert_eq!(string_field(br#"{"id":"#, "id"), None);
        assert_eq!(string_field(br#"{"id":"unterminated"#, "id"), None);
    }
}
