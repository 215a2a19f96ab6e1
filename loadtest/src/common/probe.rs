//! Asking the other processes of a run: a node's admin listener (`/readyz`,
//! `/metrics` in the Prometheus text format) and Redis' process id.

use std::time::Duration;

use anyhow::{anyhow, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A plain HTTP/1.0 GET to a loopback address: status and body.
pub async fn http_get(base: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let authority = base
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("`{base}` must start with http://"))?
        .trim_end_matches('/');
    let host = authority.rsplit_once(':').map(|(h, _)| h).unwrap_or(authority);
    if !super::ws::is_loopback(host) {
        bail!("`{base}`: the load generator only talks to 127.0.0.1");
    }
    let exchange = async {
        let mut stream = TcpStream::connect(authority).await?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        anyhow::Ok(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| anyhow!("GET {base}{path} timed out"))??;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("GET {base}{path}: no HTTP status"))?;
    Ok((status, body.to_string()))
}

/// A node's `/metrics` text; an error names the node and what went wrong.
pub async fn metrics(admin: &str) -> anyhow::Result<String> {
    match http_get(admin, "/metrics").await? {
        (200, body) => Ok(body),
        (status, _) => bail!("HTTP {status}"),
    }
}

/// One sample line of the Prometheus text format: `name{labels} value`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample<'a> {
    pub name: &'a str,
    /// What stands between the braces (empty without labels).
    pub labels: &'a str,
    pub value: f64,
}

impl<'a> Sample<'a> {
    /// The value of one label (`le`, `quantile`, …), if the sample has it.
    pub fn label(&self, key: &str) -> Option<&'a str> {
        self.labels.split(',').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k.trim() == key).then(|| v.trim().trim_matches('"'))
        })
    }
}

/// The samples of a `/metrics` text (comments and unreadable lines skipped).
pub fn samples(text: &str) -> impl Iterator<Item = Sample<'_>> {
    text.lines().filter(|l| !l.starts_with('#')).filter_map(|line| {
        let (name, labels, rest) = match line.split_once('{') {
            Some((name, after)) => {
                let (labels, rest) = after.rsplit_once('}')?;
                (name, labels, rest)
            }
            None => {
                let (name, rest) = line.split_once(' ')?;
                (name, "", rest)
            }
        };
        let value = rest.split_whitespace().next()?.parse::<f64>().ok()?;
        Some(Sample {
            name: name.trim(),
            labels,
            value,
        })
    })
}

/// The sum of the samples of `name` (those whose labels contain `label`, if given).
pub fn sum(text: &str, name: &str, label: Option<&str>) -> f64 {
    samples(text)
        .filter(|s| s.name == name && label.is_none_or(|want| s.labels.contains(want)))
        .map(|s| s.value)
        .sum()
}

/// A Redis command whose answer is a bulk string (`INFO …`, `CLUSTER
/// NODES`), sent inline to `addr` on 127.0.0.1; the string.
pub async fn redis_text(addr: &str, command: &str) -> anyhow::Result<String> {
    let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr);
    if !super::ws::is_loopback(host) {
        bail!("`{addr}`: the load generator only talks to 127.0.0.1");
    }
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(format!("{command}\r\n").as_bytes()).await?;
        let mut buffer = Vec::with_capacity(16 * 1024);
        let mut chunk = [0u8; 8192];
        loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                bail!("closed before the answer");
            }
            buffer.extend_from_slice(&chunk[..n]);
            if let Some(text) = bulk_string(&buffer)? {
                return Ok(text);
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| anyhow!("`{command}` to {addr} timed out"))?
}

/// A whole RESP bulk string in `buffer`, `None` if more must be read.
fn bulk_string(buffer: &[u8]) -> anyhow::Result<Option<String>> {
    let Some(line_end) = buffer.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let line = String::from_utf8_lossy(&buffer[..line_end]);
    let Some(len) = line.strip_prefix('$') else {
        bail!("not a bulk string: {line}");
    };
    let len: usize = len.parse().map_err(|_| anyhow!("bad bulk length: {line}"))?;
    let start = line_end + 2;
    if buffer.len() < start + len {
        return Ok(None);
    }
    Ok(Some(
        String::from_utf8_lossy(&buffer[start..start + len]).into_owned(),
    ))
}

/// Redis' process id (from `INFO server`), to account its CPU.
pub async fn redis_pid(addr: &str) -> Option<u32> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        stream.write_all(b"INFO server\r\n").await.ok()?;
        let mut buffer = vec![0u8; 16 * 1024];
        let mut read = 0;
        loop {
            let n = stream.read(&mut buffer[read..]).await.ok()?;
            read += n;
            let text = String::from_utf8_lossy(&buffer[..read]);
            if let Some(pid) = text
                .lines()
                .find_map(|l| l.strip_prefix("process_id:"))
                .and_then(|v| v.trim().parse().ok())
            {
                return Some(pid);
            }
            if n == 0 || read == buffer.len() {
                return None;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_strings_are_read_whole() {
        assert_eq!(bulk_string(b"$5\r\nhel").unwrap(), None);
        assert_eq!(bulk_string(b"$5\r\nhello\r\n").unwrap().as_deref(), Some("hello"));
        assert!(bulk_string(b"-ERR unknown command\r\n").is_err());
        assert_eq!(bulk_string(b"$5").unwrap(), None);
    }

    #[test]
    fn samples_are_read_with_their_labels() {
        let text = "# TYPE h histogram\n\
            h_bucket{le=\"0.005\",node=\"a\"} 3\n\
            h_sum 0.25\n\
            g 7 1700000000000\n\
            broken{le=\"1\" 5\n";
        let all: Vec<Sample> = samples(text).collect();
        assert_eq!(all.len(), 3, "{all:?}");
        assert_eq!(all[0].name, "h_bucket");
        assert_eq!(all[0].label("le"), Some("0.005"));
        assert_eq!(all[0].label("node"), Some("a"));
        assert_eq!(all[0].label("quantile"), None);
        assert_eq!((all[1].name, all[1].value), ("h_sum", 0.25));
        // A timestamp after the value is not the value.
        assert_eq!(all[2].value, 7.0);
        assert_eq!(sum(text, "h", None), 0.0);
    }
}
