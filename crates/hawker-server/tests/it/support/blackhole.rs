//! A TCP forwarder that can go silent: while blackholed it keeps every
//! connection open and accepts new ones, but forwards nothing in either
//! direction (as a network path that drops packets does, unlike a refused
//! or reset connection). Restored, it forwards what it held, as TCP
//! retransmissions would after a partition heals.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct BlackholeProxy {
    pub addr: SocketAddr,
    silent: Arc<AtomicBool>,
}

impl BlackholeProxy {
    /// Forwards to `target` (e.g. a private Redis).
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let silent = Arc::new(AtomicBool::new(false));
        let flag = silent.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let flag = flag.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (in_read, in_write) = inbound.into_split();
                    let (out_read, out_write) = outbound.into_split();
                    tokio::join!(
                        pump(in_read, out_write, flag.clone()),
                        pump(out_read, in_write, flag)
                    );
                });
            }
        });
        BlackholeProxy { addr, silent }
    }

    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    /// Stops forwarding; connections stay open.
    pub fn blackhole(&self) {
        self.silent.store(true, Ordering::SeqCst);
    }

    /// Forwards again, starting with what was held.
    pub fn restore(&self) {
        self.silent.store(false, Ordering::SeqCst);
    }
}

async fn pump(mut from: impl AsyncRead + Unpin, mut to: impl AsyncWrite + Unpin, silent: Arc<AtomicBool>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        wait_while(&silent).await;
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Read while forwarding, then blackholed: held, not delivered.
        wait_while(&silent).await;
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

async fn wait_while(silent: &AtomicBool) {
    while silent.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
