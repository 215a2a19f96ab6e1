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
//! - `room`: offsets, each event's frame encoded once, and the broadcast
//!   (one ring per room, smaller the more rooms there are: `--ring-frames`);
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

pub use room::ring_frames_for;

use admin::Counters;
use room::{Rooms, RING_FRAMES_MAX, RING_FRAMES_MIN};

#[derive(Debug, Args)]
pub struct ReferenceArgs {
    /// Room sockets: `GET /v1/sessions/{session}/ws`.
    #[arg(long)]
    pub listen: SocketAddr,
    /// `/readyz` and `/metrics`.
    #[arg(long)]
    pub admin_listen: SocketAddr,
    /// Frames each room's ring holds (a power of two, 128 to 4096): a socket
    /// that falls this far behind is closed as too slow. The rooms held at
    /// most follow from it (156 of 4096, 5,000 of 128), so that all rings
    /// together stay within ~36 MB; `fanout --reference --rooms N` passes
    /// the largest ring N rooms fit in.
    #[arg(long, default_value_t = RING_FRAMES_MAX)]
    pub ring_frames: usize,
}

/// Serves until killed (the tool stops it with SIGTERM).
pub fn serve(args: ReferenceArgs) -> anyhow::Result<()> {
    if !args.ring_frames.is_power_of_two() || !(RING_FRAMES_MIN..=RING_FRAMES_MAX).contains(&args.ring_frames)
    {
        anyhow::bail!("--ring-frames must be a power of two from {RING_FRAMES_MIN} to {RING_FRAMES_MAX}");
    }
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
        let rooms = Arc::new(Rooms::new(args.ring_frames));
        // To the node's log: what a room refused as "too many rooms" hit.
        eprintln!(
            "reference server on {}: rings of {} frames, at most {} rooms",
            args.listen,
            args.ring_frames,
            rooms.max_rooms()
        );
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ReferenceArgs,
    }

    #[test]
    fn the_ring_the_tool_passes_is_read_and_defaults_to_the_largest() {
        let listen = ["x", "--listen=127.0.0.1:1", "--admin-listen=127.0.0.1:2"];
        assert_eq!(Cli::parse_from(listen).args.ring_frames, RING_FRAMES_MAX);
        let args = Cli::parse_from(listen.iter().copied().chain(["--ring-frames=256"])).args;
        assert_eq!(args.ring_frames, 256);
        // A ring the rooms would not fit in, or not a power of two, is refused.
        for ring in [0, 100, 64, 8192] {
            let args = ReferenceArgs {
                ring_frames: ring,
                ..Cli::parse_from(listen).args
            };
            assert!(serve(args).is_err(), "{ring}");
        }
    }
}
