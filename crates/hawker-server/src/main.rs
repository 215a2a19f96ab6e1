use clap::Parser;

/// mimalloc instead of glibc's malloc: on the purchase path glibc's
/// allocator took a fifth of the node's CPU (free-list consolidation across
/// threads); see docs/benchmarks.md, "Stampede".
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = hawker_server::cli::Cli::parse();
    match hawker_server::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hawker: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
