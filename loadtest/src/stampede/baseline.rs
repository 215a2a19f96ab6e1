//! The baseline measured in the same run: `pgbench` committing one Postgres
//! transaction per order against one hot deal row (loadtest/pgbench/).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context};
use serde::Serialize;
use sqlx::PgPool;

pub struct BaselineConfig {
    pub setup: PathBuf,
    pub script: PathBuf,
    pub clients: u32,
    pub threads: u32,
    pub seconds: u32,
    /// host, port, user and database for pgbench (from the database URL).
    pub target: PgTarget,
}

#[derive(Debug, Clone, Serialize)]
pub struct PgTarget {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub database: String,
}

impl PgTarget {
    /// `postgres://user@host:port/db` (no password: loopback trust, as the dev setup).
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let rest = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
            .ok_or_else(|| anyhow!("`{url}` is not a postgres:// URL"))?;
        let (authority, database) = rest
            .split_once('/')
            .ok_or_else(|| anyhow!("`{url}` names no database"))?;
        let database = database.split('?').next().unwrap_or("").to_string();
        let (user, hostport) = authority.rsplit_once('@').unwrap_or(("postgres", authority));
        let user = user.split(':').next().unwrap_or("postgres").to_string();
        let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "5432"));
        if !crate::common::ws::is_loopback(host) {
            bail!("the database must be on 127.0.0.1");
        }
        Ok(PgTarget {
            host: host.to_string(),
            port: port.parse().context("database port")?,
            user,
            database,
        })
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct BaselineResult {
    pub command: String,
    pub tps: f64,
    pub latency_avg_ms: f64,
    pub transactions: u64,
    pub failed: u64,
    /// Orders the baseline deal holds afterwards (= committed transactions).
    pub orders_in_postgres: i64,
    pub loadavg_before: String,
    pub output: String,
}

pub async fn run(db: &PgPool, config: &BaselineConfig) -> anyhow::Result<BaselineResult> {
    let setup = std::fs::read_to_string(&config.setup)
        .with_context(|| format!("reading {}", config.setup.display()))?;
    sqlx::raw_sql(&setup)
        .execute(db)
        .await
        .with_context(|| format!("running {}", config.setup.display()))?;
    sqlx::raw_sql("vacuum analyze deal, customer_order")
        .execute(db)
        .await?;
    let t = &config.target;
    let args: Vec<String> = vec![
        "-n".into(),
        "-h".into(),
        t.host.clone(),
        "-p".into(),
        t.port.to_string(),
        "-U".into(),
        t.user.clone(),
        "-c".into(),
        config.clients.to_string(),
        "-j".into(),
        config.threads.to_string(),
        "-T".into(),
        config.seconds.to_string(),
        "-f".into(),
        display(&config.script),
        t.database.clone(),
    ];
    let command = format!("pgbench {}", args.join(" "));
    let loadavg_before = crate::common::procfs::loadavg();
    let output = Command::new("pgbench")
        .args(&args)
        .output()
        .context("running pgbench (is it installed?)")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if !output.status.success() {
        bail!("`{command}` failed: {text}");
    }
    let number_after = |prefix: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    let tps = number_after("tps =").ok_or_else(|| anyhow!("no tps in pgbench's output: {text}"))?;
    let orders: i64 = sqlx::query_scalar(
        "select count(*) from customer_order where deal_id = '00000000-0000-4000-8000-0000000bb002'",
    )
    .fetch_one(db)
    .await?;
    Ok(BaselineResult {
        command,
        tps,
        latency_avg_ms: number_after("latency average =").unwrap_or(0.0),
        transactions: number_after("number of transactions actually processed:").unwrap_or(0.0) as u64,
        failed: number_after("number of failed transactions:").unwrap_or(0.0) as u64,
        orders_in_postgres: orders,
        loadavg_before,
        output: text,
    })
}

fn display(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_are_split_for_pgbench() {
        let t = PgTarget::parse("postgres://postgres@127.0.0.1:5432/hawker_stampede").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.user.as_str()),
            ("127.0.0.1", 5432, "postgres")
        );
        assert_eq!(t.database, "hawker_stampede");
        assert!(PgTarget::parse("postgres://u@10.1.2.3:5432/x").is_err());
    }
}
