//! The `hawker` command line.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hawker_core::{Claims, Role};
use uuid::Uuid;

use crate::app::{shutdown_signal, Application};
use crate::config::{default_config_dir, Environment, LogFormat, Settings};
use crate::{db, http, seed, telemetry};

#[derive(Debug, Parser)]
#[command(name = "hawker", version, about = "Backend for livestream commerce")]
pub struct Cli {
    /// Directory holding default.toml and the per-environment files.
    #[arg(long, global = true, env = "HAWKER_CONFIG_DIR")]
    pub config_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the server (public and admin listeners).
    Serve,
    /// Create the database if needed and apply pending migrations.
    Migrate,
    /// Mint a signed token for development and testing.
    Token {
        /// The user id (`sub`): a host's UUID, or any id for a viewer.
        #[arg(long)]
        user: String,
        /// viewer, host, agency, brand or admin.
        #[arg(long)]
        role: Role,
        #[arg(long)]
        agency: Option<Uuid>,
        #[arg(long)]
        brand: Option<Uuid>,
        /// Lifetime, e.g. `30m`, `12h`, `7d` (default: auth.default_token_ttl_secs).
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
    },
    /// Insert idempotent demo data: an agency with two hosts, a brand with products, a session today.
    Seed,
    /// Print the OpenAPI document.
    Openapi,
    /// Recompute a giveaway's draw from its revealed seed and its published
    /// entry list (docs/protocol.md, "Giveaway draws"); prints the winners.
    /// Needs no server, database or configuration.
    VerifyDraw {
        /// The seed revealed in `giveaway.drawn` (64 hex digits).
        #[arg(long)]
        seed: String,
        /// The entry list: the body of `GET /v1/giveaways/{id}/entries` saved
        /// to a file, or one entry id per line.
        #[arg(long)]
        entries: PathBuf,
        /// How many winners the giveaway had.
        #[arg(long)]
        winners: usize,
        /// Entry ids skipped as absent (`absent` in `giveaway.drawn`), comma-separated or repeated.
        #[arg(long, value_delimiter = ',')]
        absent: Vec<String>,
        /// With --user: the giveaway's id, to derive that entrant's entry id
        /// and check the list holds it.
        #[arg(long, requires = "user")]
        giveaway: Option<uuid::Uuid>,
        /// With --giveaway: your subject (the `sub` of your token, as `GET /v1/me` shows it).
        #[arg(long, requires = "giveaway")]
        user: Option<String>,
    },
}

impl Cli {
    pub fn load_settings(&self) -> anyhow::Result<Settings> {
        let dir = self.config_dir.clone().unwrap_or_else(default_config_dir);
        let environment = Environment::from_env()?;
        Ok(Settings::load(&dir, environment)?)
    }
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Openapi = cli.command {
        println!("{}", serde_json::to_string_pretty(&http::openapi_document())?);
        return Ok(());
    }
    if let Command::VerifyDraw {
        seed,
        entries,
        winners,
        absent,
        giveaway,
        user,
    } = &cli.command
    {
        let text =
            std::fs::read_to_string(entries).with_context(|| format!("reading {}", entries.display()))?;
        let me = giveaway.zip(user.as_deref());
        let report = hawker_live::giveaways::fair::verify(seed, &text, *winners, absent, me)
            .map_err(anyhow::Error::msg)?;
        print!("{report}");
        return Ok(());
    }
    let settings = cli.load_settings()?;
    match cli.command {
        Command::Serve => serve(settings).await,
        Command::Migrate => {
            db::ensure_database(&settings.database.url).await?;
            let pool = db::pool(&settings.database)?;
            db::migrate(&pool).await?;
            println!("migrations applied to {}", db::redact(&settings.database.url));
            Ok(())
        }
        Command::Token {
            user,
            role,
            agency,
            brand,
            ttl,
        } => {
            let ttl = ttl.unwrap_or(Duration::from_secs(settings.auth.default_token_ttl_secs));
            let ttl = chrono::Duration::from_std(ttl).context("--ttl is too long")?;
            let mut claims = Claims::new(user, role, ttl);
            claims.agency_id = agency;
            claims.brand_id = brand;
            let token = settings.token_keys()?.sign(&claims).map_err(anyhow::Error::msg)?;
            println!("{token}");
            Ok(())
        }
        Command::Seed => {
            db::ensure_database(&settings.database.url).await?;
            let pool = db::pool(&settings.database)?;
            db::migrate(&pool).await?;
            let seeded = seed::seed(&pool).await?;
            println!("agency   {}", seeded.agency_id);
            println!(
                "hosts    {} (mia_live), {} (leo_deals)",
                seeded.host_ids[0], seeded.host_ids[1]
            );
            println!("brand    {}", seeded.brand_id);
            println!("session  {}", seeded.session_id);
            Ok(())
        }
        Command::Openapi | Command::VerifyDraw { .. } => Ok(()),
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    telemetry::init_tracing(&settings.log);
    let environment = settings.environment;
    let log_format = settings.log.format;
    let public_url = settings.server.public_url.clone();
    let app = Application::build(settings).await?;
    let (public, admin) = (app.local_addr(), app.admin_addr());
    tracing::info!(%public, %admin, %public_url, environment = environment.as_str(), "hawker serving");
    if log_format == LogFormat::Pretty {
        // For people; JSON logs already carry the addresses above.
        println!(
            "hawker ({}) serving on http://{public} (public URL {public_url})",
            environment.as_str()
        );
        println!("  console    http://{public}/console/   (docs/console.md)");
        if environment == Environment::Development {
            println!("    viewer   http://{public}/console/viewer.html   (each tab is a new viewer)");
            println!("    host     http://{public}/console/host.html");
            println!("    planner  http://{public}/console/planner.html");
            println!(
                "    brand    http://{public}/console/brand.html   (catalog, import, campaigns, reports)"
            );
            println!("    live now http://{public}/console/live.html   (sessions on air and upcoming)");
            println!("    orders   http://{public}/console/orders.html   (a viewer's orders)");
        }
        println!("  API docs   http://{public}/docs   OpenAPI http://{public}/openapi.json");
        println!("  sockets    ws://{public}/v1/sessions/{{session_id}}/ws");
        println!("  health     http://{public}/healthz   http://{public}/readyz");
        println!("  metrics    http://{admin}/metrics");
    }
    let token = app.shutdown_token();
    tokio::spawn(async move {
        shutdown_signal().await;
        token.cancel();
    });
    app.run_until_stopped().await
}
