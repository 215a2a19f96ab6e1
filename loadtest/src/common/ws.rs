//! Opening a room socket: node addresses (127.0.0.1 only), tokens, the
//! handshake and the first frame.

use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use futures_util::StreamExt;
use hawker_core::{Claims, Role, TokenKeys};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use uuid::Uuid;

pub type Ws = WebSocketStream<TcpStream>;

/// A hub node to connect to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Node {
    /// `ws://127.0.0.1:8080`
    pub url: String,
    /// `127.0.0.1:8080`
    pub addr: String,
}

impl Node {
    /// Parses `ws://HOST:PORT`; the host must be the loopback interface.
    pub fn parse(text: &str) -> anyhow::Result<Node> {
        let text = text.trim();
        let rest = text
            .strip_prefix("ws://")
            .ok_or_else(|| anyhow!("node `{text}` must start with ws://"))?;
        let authority = rest.split('/').next().unwrap_or("");
        let (host, port) = authority
            .rsplit_once(':')
            .ok_or_else(|| anyhow!("node `{text}` needs a port, as in ws://127.0.0.1:8080"))?;
        port.parse::<u16>()
            .with_context(|| format!("node `{text}`: bad port"))?;
        if !is_loopback(host) {
            bail!("node `{text}`: the load generator only talks to 127.0.0.1");
        }
        Ok(Node {
            url: format!("ws://{authority}"),
            addr: authority.to_string(),
        })
    }
}

/// `127.0.0.1`, `localhost` or `[::1]`.
pub fn is_loopback(host: &str) -> bool {
    matches!(host, "127.0.0.1" | "localhost" | "[::1]")
}

/// Mints tokens the way `hawker token` does.
pub struct Minter {
    keys: TokenKeys,
}

impl Minter {
    pub fn new(secret: &str) -> Self {
        Minter {
            keys: TokenKeys::hs256(secret.as_bytes()),
        }
    }

    pub fn token(&self, sub: &str, role: Role, agency: Option<Uuid>) -> anyhow::Result<String> {
        let mut claims = Claims::new(sub, role, chrono::Duration::hours(12));
        claims.agency_id = agency;
        self.keys
            .sign(&claims)
            .map_err(|e| anyhow!("signing a token: {e}"))
    }
}

/// The first frame of a room socket.
#[derive(Debug, Clone, Deserialize)]
pub struct Greeting {
    /// `welcome`, `resumed` or `reset`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub epoch: String,
    #[serde(default)]
    pub offset: u64,
}

/// The read buffer of a viewer's socket: room events come in batches.
pub const VIEWER_READ_BUFFER: usize = 16 * 1024;

/// Client side buffers: small, so 10,000 sockets in one process stay cheap.
/// tungstenite zeroes the free part of the read buffer before each read, so
/// a socket that reads one small answer at a time (a buyer's) is given a
/// small one; a larger frame grows it.
fn client_config(read_buffer: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(read_buffer)
        .write_buffer_size(0)
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20))
}

/// Connects, upgrades and reads the first frame (`welcome`, `resumed`,
/// `reset`); an `error` frame or an HTTP refusal is an error.
pub async fn open(
    node: &Node,
    session: Uuid,
    token: &str,
    resume: Option<(&str, u64)>,
    timeout: Duration,
) -> anyhow::Result<(Ws, Greeting)> {
    open_with_buffer(node, session, token, resume, timeout, VIEWER_READ_BUFFER).await
}

/// [`open`] with a read buffer of `read_buffer` bytes.
pub async fn open_with_buffer(
    node: &Node,
    session: Uuid,
    token: &str,
    resume: Option<(&str, u64)>,
    timeout: Duration,
    read_buffer: usize,
) -> anyhow::Result<(Ws, Greeting)> {
    let resume = resume
        .map(|(epoch, offset)| format!("&resume={epoch}:{offset}"))
        .unwrap_or_default();
    let url = format!(
        "{}/v1/sessions/{session}/ws?access_token={token}{resume}",
        node.url
    );
    let attempt = async {
        let tcp = TcpStream::connect(&node.addr)
            .await
            .with_context(|| format!("connecting to {}", node.addr))?;
        tcp.set_nodelay(true)?;
        let (mut ws, _) =
            tokio_tungstenite::client_async_with_config(url, tcp, Some(client_config(read_buffer)))
                .await
                .map_err(|e| match e {
                    tokio_tungstenite::tungstenite::Error::Http(response) => {
                        let body = response
                            .body()
                            .as_deref()
                            .map(String::from_utf8_lossy)
                            .unwrap_or_default()
                            .into_owned();
                        anyhow!("refused with HTTP {}: {body}", response.status())
                    }
                    other => anyhow!("websocket handshake: {other}"),
                })?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    let greeting: Greeting =
                        serde_json::from_str(text.as_str()).context("reading the first frame")?;
                    if greeting.kind == "error" {
                        bail!("refused by the room: {}", text.as_str());
                    }
                    return Ok((ws, greeting));
                }
                Some(Ok(Message::Close(frame))) => {
                    bail!("closed before the welcome: {frame:?}")
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.into()),
                None => bail!("closed before the welcome"),
            }
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| anyhow!("no welcome within {timeout:?}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_nodes_are_accepted() {
        let node = Node::parse("ws://127.0.0.1:8081/").unwrap();
        assert_eq!(node.addr, "127.0.0.1:8081");
        assert_eq!(node.url, "ws://127.0.0.1:8081");
        assert!(Node::parse("ws://localhost:8080").is_ok());
        assert!(Node::parse("ws://10.0.0.1:8080").is_err());
        assert!(Node::parse("http://127.0.0.1:8080").is_err());
        assert!(Node::parse("ws://127.0.0.1").is_err());
    }
}
