//! A TCP forwarder that can blackhole its path: packets stop flowing both
//! ways but no connection is closed or refused, as in a network partition
//! (unlike [`super::proxy::TcpProxy::cut`], which closes and refuses).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// Forwards to a target until [`BlackholeProxy::blackhole`]; then holds
/// every byte (and every new connection) until [`BlackholeProxy::restore`].
pub struct BlackholeProxy {
    pub addr: SocketAddr,
    flowing: Arc<watch::Sender<bool>>,
}

impl BlackholeProxy {
    pub async fn start(target: &'static str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind blackhole proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let flowing = Arc::new(watch::Sender::new(true));
        let flowing2 = flowing.clone();
        tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    return;
                };
                let flowing = flowing2.clone();
                tokio::spawn(async move {
                    // A connection opened during the blackhole waits, open, for the restore.
                    wait_flowing(&mut flowing.subscribe()).await;
                    let Ok(outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (in_read, in_write) = inbound.into_split();
                    let (out_read, out_write) = outbound.into_split();
                    tokio::join!(
                        pump(in_read, out_write, flowing.subscribe()),
                        pump(out_read, in_write, flowing.subscribe()),
                    );
                });
            }
        });
        BlackholeProxy { addr, flowing }
    }

    /// Stops forwarding, closing nothing.
    pub fn blackhole(&self) {
        self.flowing.send_replace(false);
    }

    /// Forwards again, including what was held.
    pub fn restore(&self) {
        self.flowing.send_replace(true);
    }
}

async fn wait_flowing(flowing: &mut watch::Receiver<bool>) {
    let _ = flowing.wait_for(|up| *up).await;
}

/// Copies one direction; while blackholed, neither reads nor writes.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut flowing: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        wait_flowing(&mut flowing).await;
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            // Blackholed while waiting to read: stop reading.
            _ = flowing.wait_for(|up| !*up) => continue,
        };
        // Bytes read just before the blackhole are held with the rest.
        wait_flowing(&mut flowing).await;
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
