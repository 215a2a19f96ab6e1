//! `hawker-loadtest`: load generation for hawker. `fanout` measures the
//! real-time hub: how fast one event reaches every viewer, whether any is
//! lost, duplicated or reordered, and what each socket and delivery costs
//! the server. See loadtest/README.md.

mod common;
mod fanout;
mod live;
mod reference;
mod stampede;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "hawker-loadtest", version, about = "Load generator for hawker")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// V viewers over K nodes; host events and chat at fixed rates; latency, loss and cost.
    Fanout(Box<fanout::FanoutArgs>),
    /// A group of viewers for a `fanout --procs N` coordinator (reads stdin, writes stdout).
    #[command(hide = true)]
    FanoutWorker,
    /// B buyers press buy on one flash deal: committed orders/s, rejections/s, latency, invariants.
    Stampede(Box<stampede::StampedeArgs>),
    /// An auction's last-seconds bid storm and a giveaway's entries: bids/s, entries/s, latency, checks.
    Live(Box<live::LiveArgs>),
    /// Times a fixed CPU-bound loop (ms): how fast this core is right now.
    Calibrate,
    /// The bare fan-out server `fanout --reference` compares hawker with (runs until killed).
    #[command(hide = true)]
    ReferenceServer(reference::ReferenceArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let command = match cli.command {
        Command::Calibrate => {
            println!("{:.1}", common::procfs::calibrate_ms());
            return std::process::ExitCode::SUCCESS;
        }
        // A server, with hawker's runtime rather than the generator's.
        Command::ReferenceServer(args) => {
            return match reference::serve(args) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    std::process::ExitCode::FAILURE
                }
            };
        }
        command => command,
    };
    // One thread per process: the generator is pinned to one core, and a
    // current-thread runtime with a LocalSet needs no locks at all.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let local = tokio::task::LocalSet::new();
    let outcome = local.block_on(&runtime, async move {
        match command {
            Command::Fanout(args) => fanout::run(*args).await,
            Command::FanoutWorker => fanout::serve_worker().await,
            Command::Stampede(args) => stampede::run(*args).await,
            Command::Live(args) => live::run(*args).await,
            Command::Calibrate | Command::ReferenceServer(_) => Ok(()),
        }
    });
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
