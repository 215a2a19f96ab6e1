use clap::Parser;

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
