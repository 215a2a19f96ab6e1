//! Every pooled Postgres connection bounds what a sick peer can cost the
//! others: statement and lock timeouts, and Postgres ending a session that
//! sits idle inside a transaction (a frozen node) so its locks go.

use std::time::{Duration, Instant};

use hawker_core::DbFailure;

use crate::support::{settings_with, spawn_app_with};

#[tokio::test]
async fn every_pooled_connection_carries_the_configured_timeouts() {
    let app = spawn_app_with(settings_with(&[
        ("HAWKER__DATABASE__STATEMENT_TIMEOUT_MS", "4000"),
        ("HAWKER__DATABASE__LOCK_TIMEOUT_MS", "1500"),
        ("HAWKER__DATABASE__IDLE_IN_TRANSACTION_TIMEOUT_MS", "2500"),
        ("HAWKER__DATABASE__KEEPALIVE_IDLE_SECS", "7"),
    ]))
    .await;
    for (setting, expected) in [
        ("statement_timeout", "4s"),
        ("lock_timeout", "1500ms"),
        ("idle_in_transaction_session_timeout", "2500ms"),
    ] {
        let value: String = sqlx::query_scalar(&format!("show {setting}"))
            .fetch_one(&app.db)
            .await
            .unwrap();
        assert_eq!(value, expected, "{setting}");
    }
}

#[tokio::test]
async fn a_statement_over_the_statement_timeout_is_cancelled_as_unavailable() {
    let app = spawn_app_with(settings_with(&[(
        "HAWKER__DATABASE__STATEMENT_TIMEOUT_MS",
        "300",
    )]))
    .await;
    let started = Instant::now();
    let e = sqlx::query("select pg_sleep(3)")
        .execute(&app.db)
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(DbFailure::of(&e), DbFailure::Unavailable, "{e}");
}

#[tokio::test]
async fn a_transaction_left_idle_by_a_frozen_node_releases_its_lock_within_the_idle_timeout() {
    let app = spawn_app_with(settings_with(&[
        ("HAWKER__DATABASE__IDLE_IN_TRANSACTION_TIMEOUT_MS", "1000"),
        ("HAWKER__DATABASE__LOCK_TIMEOUT_MS", "8000"),
    ]))
    .await;
    sqlx::query("create table frozen_probe (id int primary key, n int not null)")
        .execute(&app.db)
        .await
        .unwrap();
    sqlx::query("insert into frozen_probe values (1, 0)")
        .execute(&app.db)
        .await
        .unwrap();
    // The "frozen node": takes the row lock, then never speaks again.
    let mut frozen = app.db.begin().await.unwrap();
    sqlx::query("select n from frozen_probe where id = 1 for update")
        .execute(&mut *frozen)
        .await
        .unwrap();
    let started = Instant::now();
    let healthy = tokio::time::timeout(
        Duration::from_secs(6),
        sqlx::query("update frozen_probe set n = n + 1 where id = 1").execute(&app.db),
    )
    .await
    .expect("the healthy writer is still blocked after 6 s")
    .unwrap();
    assert_eq!(healthy.rows_affected(), 1);
    // Idle timeout (1 s) plus at most 1 s.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "blocked for {:?}",
        started.elapsed()
    );
    // The frozen transaction was ended by Postgres: it cannot commit.
    assert!(frozen.commit().await.is_err());
}
