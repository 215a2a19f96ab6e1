//! The socket against RFC 6455, as browsers and WebSocket libraries expect
//! it: the closing handshake, fragmentation, control frames and UTF-8.
//! Autobahn|Testsuite is not installable here; these are hawker's
//! conformance checks, with a raw-frame client where a library would refuse
//! to send what the test needs.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hawker_core::Role;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::support::fixtures::insert_agency_and_session;
use crate::support::socket::{connect, join};
use crate::support::{spawn_app, TestApp};

const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CONTINUATION: u8 = 0x0;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

async fn app_and_session() -> (TestApp, Uuid) {
    let app = spawn_app().await;
    let (_, session) = insert_agency_and_session(&app.db).await;
    (app, session)
}

/// A WebSocket client that writes frames byte by byte as the test says.
struct Raw {
    tcp: TcpStream,
    buf: Vec<u8>,
}

/// One frame as read: FIN, opcode, payload.
#[derive(Debug)]
struct RawFrame {
    fin: bool,
    opcode: u8,
    payload: Vec<u8>,
}

impl RawFrame {
    fn close_code(&self) -> Option<u16> {
        (self.opcode == CLOSE && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).expect("text frames are JSON")
    }
}

/// A frame as a client sends it: masked unless told otherwise.
fn frame(fin: bool, opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | opcode];
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= 0xFFFF => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

impl Raw {
    /// Upgrades a TCP connection by hand, then waits for the first frame (`welcome`).
    async fn join(addr: SocketAddr, session: Uuid, token: &str) -> Raw {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        let request = format!(
            "GET /v1/sessions/{session}/ws?access_token={token} HTTP/1.1\r\nHost: {addr}\r\n\
             Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        );
        tcp.write_all(request.as_bytes()).await.expect("handshake");
        let mut buf = Vec::new();
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 1024];
            let n = tcp.read(&mut chunk).await.expect("handshake answer");
            assert!(n > 0, "closed during the handshake");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let mut raw = Raw {
            tcp,
            buf: buf[end..].to_vec(),
        };
        let first = raw.next_of(TEXT).await;
        assert_eq!(first.json()["type"], "welcome");
        raw
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.tcp.write_all(bytes).await.expect("send");
    }

    /// Sends one masked frame.
    async fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        self.send(&frame(fin, opcode, payload, true)).await;
    }

    async fn fill(&mut self, at_least: usize) -> bool {
        while self.buf.len() < at_least {
            let mut chunk = [0u8; 4096];
            match self.tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
        true
    }

    /// The next frame from the server (unmasked), or `None` at the end of
    /// the connection.
    async fn read_frame(&mut self) -> Option<RawFrame> {
        if !self.fill(2).await {
            return None;
        }
        let (b0, b1) = (self.buf[0], self.buf[1]);
        assert_eq!(b1 & 0x80, 0, "server frames are not masked");
        let (len, header) = match b1 & 0x7f {
            126 => {
                self.fill(4).await;
                (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
            }
            127 => {
                self.fill(10).await;
                let mut n = [0u8; 8];
                n.copy_from_slice(&self.buf[2..10]);
                (u64::from_be_bytes(n) as usize, 10)
            }
            n => (n as usize, 2),
        };
        if !self.fill(header + len).await {
            return None;
        }
        let payload = self.buf[header..header + len].to_vec();
        self.buf.drain(..header + len);
        Some(RawFrame {
            fin: b0 & 0x80 != 0,
            opcode: b0 & 0x0f,
            payload,
        })
    }

    /// The next frame of `opcode`, skipping others (room events, server pings).
    async fn next_of(&mut self, opcode: u8) -> RawFrame {
        let wanted = async {
            loop {
                match self.read_frame().await {
                    Some(f) if f.opcode == opcode => return f,
                    Some(_) => continue,
                    None => panic!("connection ended before a frame of opcode {opcode:#x}"),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wanted)
            .await
            .expect("frame in time")
    }

    /// The server's close code; panics if the connection ends without a close frame.
    async fn close_code(&mut self) -> Option<u16> {
        self.next_of(CLOSE).await.close_code()
    }

    /// The reply to the command with `id`.
    async fn reply(&mut self, id: &str) -> Value {
        loop {
            let text = self.next_of(TEXT).await.json();
            if text["id"] == id {
                return text;
            }
        }
    }

    /// Whether the server ends the TCP connection within `within`.
    async fn ends_within(&mut self, within: Duration) -> bool {
        let end = async { while self.read_frame().await.is_some() {} };
        tokio::time::timeout(within, end).await.is_ok()
    }
}

#[tokio::test]
async fn a_client_close_is_answered_with_a_close_echoing_its_code() {
    let (app, session) = app_and_session().await;
    for code in [1000u16, 1001, 4100] {
        let mut ws = join(app.addr, session, &app.token("closer", Role::Viewer)).await;
        ws.stream
            .send(Message::Close(Some(CloseFrame {
                code: CloseCode::from(code),
                reason: "bye".into(),
            })))
            .await
            .unwrap();
        // The echo, then a clean end (not a reset: browsers report wasClean).
        let echoed = loop {
            match tokio::time::timeout(Duration::from_secs(5), ws.stream.next()).await {
                Ok(Some(Ok(Message::Close(frame)))) => break frame.map(|f| u16::from(f.code)),
                Ok(Some(Ok(_))) => continue,
                other => panic!("no close frame for {code}: {other:?}"),
            }
        };
        assert_eq!(echoed, Some(code));
        let end = tokio::time::timeout(Duration::from_secs(5), ws.stream.next()).await;
        assert!(matches!(end, Ok(None)), "clean end after {code}: {end:?}");
    }

    // A close without a code is answered with one without a code.
    let mut raw = Raw::join(app.addr, session, &app.token("raw", Role::Viewer)).await;
    raw.send_frame(true, CLOSE, &[]).await;
    let answer = raw.next_of(CLOSE).await;
    assert!(answer.payload.is_empty(), "{answer:?}");
    assert!(raw.ends_within(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn a_close_with_a_code_not_allowed_on_the_wire_is_answered_with_1002() {
    let (app, session) = app_and_session().await;
    // 1005 and 1006 are reserved for reporting; 999 is not a close code.
    for code in [1005u16, 1006, 999] {
        let mut raw = Raw::join(app.addr, session, &app.token("raw", Role::Viewer)).await;
        raw.send_frame(true, CLOSE, &code.to_be_bytes()).await;
        assert_eq!(raw.close_code().await, Some(1002), "{code}");
    }
}

#[tokio::test]
async fn a_server_close_completes_the_handshake() {
    let (app, session) = app_and_session().await;
    let mut ws = join(app.addr, session, &app.token("v", Role::Viewer)).await;
    app.shutdown.cancel();
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.stream.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => break frame.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => continue,
            other => panic!("no close frame: {other:?}"),
        }
    };
    assert_eq!(code, Some(1001));
    // The client's answer is read, then the server ends the connection.
    let end = tokio::time::timeout(Duration::from_secs(5), ws.stream.next()).await;
    assert!(matches!(end, Ok(None)), "{end:?}");
}

#[tokio::test]
async fn a_fragmented_command_is_read_as_one_message() {
    let (app, session) = app_and_session().await;
    let mut raw = Raw::join(app.addr, session, &app.token("frag", Role::Viewer)).await;
    raw.send_frame(false, TEXT, br#"{"id":"f1","#).await;
    raw.send_frame(false, CONTINUATION, br#""type":"pi"#).await;
    raw.send_frame(true, CONTINUATION, br#"ng"}"#).await;
    let reply = raw.reply("f1").await;
    assert_eq!(reply["type"], "ack", "{reply}");
    assert!(reply["data"]["pong"].is_i64(), "{reply}");

    // A multi-byte character split across fragments is still one character.
    let text = r#"{"id":"f2","type":"chat.send","data":{"text":"héllo 😀"}}"#.as_bytes();
    let split = text.iter().position(|&b| b == 0xF0).unwrap() + 2;
    raw.send_frame(false, TEXT, &text[..split]).await;
    raw.send_frame(true, CONTINUATION, &text[split..]).await;
    let reply = raw.reply("f2").await;
    assert_eq!(reply["type"], "ack", "{reply}");
}

#[tokio::test]
async fn pings_are_answered_with_pongs_even_inside_a_fragmented_message() {
    let (app, session) = app_and_session().await;
    let mut raw = Raw::join(app.addr, session, &app.token("pinger", Role::Viewer)).await;
    raw.send_frame(true, PING, b"plain").await;
    let pong = raw.next_of(PONG).await;
    assert_eq!((pong.fin, pong.payload.as_slice()), (true, &b"plain"[..]));

    raw.send_frame(false, TEXT, br#"{"id":"p1","type""#).await;
    raw.send_frame(true, PING, b"mid-message").await;
    let pong = raw.next_of(PONG).await;
    assert_eq!(pong.payload, b"mid-message");
    raw.send_frame(true, CONTINUATION, br#":"ping"}"#).await;
    assert_eq!(raw.reply("p1").await["type"], "ack");

    // An unsolicited pong is ignored.
    raw.send_frame(true, PONG, b"whatever").await;
    raw.send_frame(true, TEXT, br#"{"id":"p2","type":"ping"}"#).await;
    assert_eq!(raw.reply("p2").await["type"], "ack");
}

#[tokio::test]
async fn protocol_violations_close_with_1002() {
    let (app, session) = app_and_session().await;
    let token = app.token("breaker", Role::Viewer);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a ping over 125 bytes", frame(true, PING, &[b'x'; 126], true)),
        ("a fragmented ping", frame(false, PING, b"x", true)),
        (
            "an unmasked text frame",
            frame(true, TEXT, br#"{"type":"ping"}"#, false),
        ),
        ("a reserved opcode", frame(true, 0x3, b"x", true)),
        ("a reserved bit", {
            let mut f = frame(true, TEXT, br#"{"type":"ping"}"#, true);
            f[0] |= 0x40;
            f
        }),
        (
            "a continuation with nothing to continue",
            frame(true, CONTINUATION, b"x", true),
        ),
        ("a new message inside a fragmented one", {
            let mut f = frame(false, TEXT, b"{", true);
            f.extend(frame(true, TEXT, b"{}", true));
            f
        }),
    ];
    for (what, bytes) in cases {
        let mut raw = Raw::join(app.addr, session, &token).await;
        raw.send(&bytes).await;
        assert_eq!(raw.close_code().await, Some(1002), "{what}");
        assert!(raw.ends_within(Duration::from_secs(5)).await, "{what}");
    }
}

#[tokio::test]
async fn invalid_utf8_in_a_text_frame_closes_with_1007() {
    let (app, session) = app_and_session().await;
    let token = app.token("garbler", Role::Viewer);

    let mut raw = Raw::join(app.addr, session, &token).await;
    raw.send_frame(true, TEXT, b"{\"type\":\"ping\",\"id\":\"\xff\xfe\"}")
        .await;
    assert_eq!(raw.close_code().await, Some(1007));
    assert!(raw.ends_within(Duration::from_secs(5)).await);

    // Split across fragments: a character cut in two is fine, an invalid one is not.
    let mut raw = Raw::join(app.addr, session, &token).await;
    raw.send_frame(false, TEXT, b"{\"type\":\"ping\",\"id\":\"\xe2\x82")
        .await;
    raw.send_frame(true, CONTINUATION, b"\x28\"}").await;
    assert_eq!(raw.close_code().await, Some(1007));

    // A binary frame is not text: it is refused, and the socket stays open.
    let mut raw = Raw::join(app.addr, session, &token).await;
    raw.send_frame(true, BINARY, b"\xff\xfe").await;
    let refusal = loop {
        let text = raw.next_of(TEXT).await.json();
        if text["type"] == "error" {
            break text;
        }
    };
    assert_eq!(refusal["code"], "binary_unsupported", "{refusal}");
    raw.send_frame(true, TEXT, br#"{"id":"after","type":"ping"}"#)
        .await;
    assert_eq!(raw.reply("after").await["type"], "ack");
}

#[tokio::test]
async fn a_frame_above_the_hard_limit_closes_with_1009() {
    let (app, session) = app_and_session().await;
    let mut raw = Raw::join(app.addr, session, &app.token("big", Role::Viewer)).await;
    // Only the header is sent: the size alone is refused.
    let mut header = frame(true, TEXT, &[], true);
    header[1] = 0x80 | 127;
    header.splice(2..2, (70_000u64).to_be_bytes());
    raw.send(&header).await;
    assert_eq!(raw.close_code().await, Some(1009));
}

#[tokio::test]
async fn the_tungstenite_client_sees_every_close_code_it_is_sent() {
    // The library a Rust client would use reads the codes above as codes,
    // not as a reset: the 1007 arrives as a close frame.
    let (app, session) = app_and_session().await;
    let mut ws = connect(app.addr, session, &app.token("lib", Role::Viewer), None).await;
    ws.expect("welcome").await;
    ws.stream
        .send(Message::Frame(
            tokio_tungstenite::tungstenite::protocol::frame::Frame::message(
                b"\xc3\x28".to_vec(),
                tokio_tungstenite::tungstenite::protocol::frame::coding::OpCode::Data(
                    tokio_tungstenite::tungstenite::protocol::frame::coding::Data::Text,
                ),
                true,
            ),
        ))
        .await
        .unwrap();
    assert_eq!(
        ws.closed(Duration::from_secs(5)).await,
        crate::support::socket::Ended::Closed(Some(1007))
    );
}
