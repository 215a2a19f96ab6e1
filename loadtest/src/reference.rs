//! `hawker-loadtest reference-server`: the floor hawker's fan-out is
//! compared with (`fanout --reference`; loadtest/README.md, "Reference
//! server"), as pgbench is for orders. Absolute figures on a shared machine
//! move by 2x from one day to the next; the ratio to a bare server measured
//! minutes apart, on the same core with the same generator, does not.
//!
//! It is a bare tokio-tungstenite fan-out: no Redis, no database, no auth
//! (any token is accepted), no history. It speaks just enough of hawker's
//! room protocol for the `fanout` generator: the socket path, a `welcome`
//! frame, `host.announce` and `chat.send` answered with an `ack`, and room
//! events in hawker's frame format (offset and epoch first).
//!
//! - `room`: offsets, each event's frame encoded once, and the broadcast;
//! - `socket`: one connection: handshake, greeting, commands, writes;
//! - `admin`: `/readyz` and `/metrics`, which the generator polls.

mod admin;
mod room;
mod socket;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use tokio::net::TcpListener;

use admin::Counters;
use room::Rooms;

#[derive(Debug, Args)]
pub struct ReferenceArgs {
    /// Room sockets: `GET /v1/sessions/{session}/ws`.
    #[arg(long)]
    pub listen: SocketAddr,
    /// `/readyz` and `/metrics`.
    #[arg(long)]
    pub admin_listen: SocketAddr,
}

/// Serves until killed (the tool stops it with SIGTERM).
pub fn serve(args: ReferenceArgs) -> anyhow::Result<()> {
    // As hawker's `#[tokio::main]`: a multi-thread runtime with one worker
    // per CPU the process may use, so the same `taskset` pinning and
    // `TOKIO_WORKER_THREADS` give both servers the same threads.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let sockets = TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        let admin = TcpListener::bind(args.admin_listen)
            .await
            .with_context(|| format!("binding {}", args.admin_listen))?;
        let rooms = Arc::new(Rooms::new());
        let counters = Arc::new(Counters::default());
        tokio::spawn(admin::serve(admin, counters.clone()));
        loop {
            match sockets.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(socket::serve(stream, rooms.clone(), counters.clone()));
                }
                // Out of files, most likely: wait for some sockets to close.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    })
}
