//! The Postgres pool, database creation and migrations.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};

use crate::config::DatabaseSettings;

/// The forward-only migrations in `migrations/` at the repository's top level,
/// compiled into the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

fn connect_options(url: &str) -> anyhow::Result<PgConnectOptions> {
    Ok(PgConnectOptions::from_str(url)
        .with_context(|| format!("database.url `{url}` is not a valid Postgres URL"))?
        .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_millis(500)))
}

/// A pool that connects lazily, so the server starts (and reports not-ready)
/// while Postgres is down, and recovers by itself when it comes back.
///
/// Every connection bounds what a sick peer can cost the others: statements
/// and lock waits time out, a session idle inside a transaction (a frozen
/// node) is ended by Postgres, which releases its locks, and TCP keepalive
/// plus `tcp_user_timeout` notice a partitioned peer within seconds. These
/// are session parameters sent at connect time, so they need no privileges.
pub fn pool(settings: &DatabaseSettings) -> anyhow::Result<PgPool> {
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
        // sqlx pings every connection it hands out (one round trip per
        // transaction). Kept: it is what bounds a request by the acquire
        // timeout when packets to Postgres are dropped; a statement sent on
        // an unchecked connection would wait for an answer that cannot come.
        .connect_lazy_with(session_options(connect_options(&settings.url)?, settings)))
}

/// One round trip to Postgres (`select 1`): whether the pool can reach it.
/// Readiness checks call this, under their own timeout.
pub async fn ping(db: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("select 1").execute(db).await.map(|_| ())
}

fn session_options(options: PgConnectOptions, settings: &DatabaseSettings) -> PgConnectOptions {
    let keepalive_total_ms = (settings.keepalive_idle_secs + 3 * settings.keepalive_interval_secs) * 1000;
    options.options([
        ("statement_timeout", settings.statement_timeout_ms.to_string()),
        ("lock_timeout", settings.lock_timeout_ms.to_string()),
        (
            "idle_in_transaction_session_timeout",
            settings.idle_in_transaction_timeout_ms.to_string(),
        ),
        ("tcp_keepalives_idle", settings.keepalive_idle_secs.to_string()),
        (
            "tcp_keepalives_interval",
            settings.keepalive_interval_secs.to_string(),
        ),
        ("tcp_keepalives_count", "3".to_string()),
        ("tcp_user_timeout", keepalive_total_ms.to_string()),
    ])
}

/// Creates the database named in `url` if it does not exist, connecting to
/// the server's `postgres` database to do so.
pub async fn ensure_database(url: &str) -> anyhow::Result<()> {
    let options = connect_options(url)?;
    let name = options.get_database().unwrap_or("postgres").to_string();
    let mut admin = options
        .clone()
        .database("postgres")
        .connect()
        .await
        .with_context(|| format!("connecting to Postgres at {}", redact(url)))?;
    let exists: bool = sqlx::query_scalar("select exists(select 1 from pg_database where datname = $1)")
        .bind(&name)
        .fetch_one(&mut admin)
        .await?;
    if !exists {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        match sqlx::query(&format!("create database {quoted}"))
            .execute(&mut admin)
            .await
        {
            Ok(_) => tracing::info!(database = %name, "created database"),
            // Another process created it at the same moment.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
            Err(e) => return Err(e).with_context(|| format!("creating database {name}")),
        }
    }
    admin.close().await?;
    Ok(())
}

/// Applies every pending migration.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR.run(pool).await.context("applying migrations")?;
    Ok(())
}

/// The URL with its password replaced by `***`.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &credentials[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_redacted() {
        assert_eq!(super::redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(super::redact("postgres://u@h/db"), "postgres://u@h/db");
    }
}
