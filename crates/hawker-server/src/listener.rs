//! A TCP listener with a cap on open connections, in all and per client address.
//!
//! Like mini-redis, the overall cap is a semaphore: a permit is taken before
//! `accept`, so at the cap new connections wait in the kernel's backlog
//! instead of being accepted and starved. The permit travels with the
//! connection (also through a WebSocket upgrade) and is returned when it closes.
//!
//! The per-address cap closes a new connection at once when its peer
//! address already holds `server.max_connections_per_ip`, so one host cannot
//! take every slot. Trusted proxies (`server.trusted_proxies`), behind which
//! every client shares one address, are exempt; their clients' sockets are
//! capped per client address on the socket route instead (`client_ip.rs`).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::client_ip::{AddressSlot, PerAddress};

pub struct LimitedListener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
    per_ip: Arc<PerAddress>,
}

impl LimitedListener {
    /// `max_connections` in all; `max_per_ip` from one peer address, except
    /// from the `trusted` proxies.
    pub fn new(inner: TcpListener, max_connections: usize, max_per_ip: usize, trusted: Vec<IpAddr>) -> Self {
        LimitedListener {
            inner,
            permits: Arc::new(Semaphore::new(max_connections)),
            per_ip: PerAddress::new(max_per_ip, trusted),
        }
    }

    /// The next admitted connection and its peer address.
    pub async fn accept(&mut self) -> (LimitedStream, SocketAddr) {
        <Self as axum::serve::Listener>::accept(self).await
    }
}

/// A connection holding one permit of its listener.
pub struct LimitedStream {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    _per_ip: AddressSlot,
    _gauge: OpenConnection,
}

struct OpenConnection;

impl OpenConnection {
    fn new() -> Self {
        metrics::gauge!("hawker_tcp_connections").increment(1.0);
        OpenConnection
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        metrics::gauge!("hawker_tcp_connections").decrement(1.0);
    }
}

impl axum::serve::Listener for LimitedListener {
    type Io = LimitedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // The semaphore is never closed, so acquiring only waits.
        let permit = loop {
            match self.permits.clone().acquire_owned().await {
                Ok(permit) => break permit,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    let Some(slot) = self.per_ip.admit(addr.ip()) else {
                        // Closed at once; the permit stays for the next one.
                        metrics::counter!("hawker_tcp_refused_per_ip_total").increment(1);
                        drop(stream);
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    return (
                        LimitedStream {
                            stream,
                            _permit: permit,
                            _per_ip: slot,
                            _gauge: OpenConnection::new(),
                        },
                        addr,
                    );
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning (as axum::serve does).
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

impl AsyncRead for LimitedStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Binds `addr` with a listen backlog of `backlog` (tokio's `TcpListener::bind`
/// uses mio's 128, so a burst of new connections overflows the accept queue
/// and clients wait for a SYN retransmission, about a second). The kernel
/// caps the backlog at `net.core.somaxconn`.
pub fn bind(addr: std::net::SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}
