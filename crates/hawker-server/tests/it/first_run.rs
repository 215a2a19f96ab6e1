//! `make run` on a fresh machine: a development server on an empty database
//! seeds the demo once; never on a database that has data, never in test
//! or production.

use hawker_server::config::Environment;
use sqlx::PgPool;
use uuid::Uuid;

use crate::support::fixtures::insert_agency;
use crate::support::{settings_with, spawn_app_with, test_database_url};

async fn agencies(db: &PgPool) -> Vec<Uuid> {
    sqlx::query_scalar("select agency_id from agency order by agency_id")
        .fetch_all(db)
        .await
        .unwrap()
}

fn settings(url: &str, environment: Environment) -> hawker_server::config::Settings {
    let mut settings = settings_with(&[("HAWKER__DATABASE__URL", url)]);
    settings.environment = environment;
    settings
}

#[tokio::test]
async fn a_development_server_on_an_empty_database_seeds_the_demo() {
    let app = spawn_app_with(settings(&test_database_url(), Environment::Development)).await;
    assert_eq!(agencies(&app.db).await, vec![hawker_server::seed::AGENCY_ID]);
    let sessions: i64 = sqlx::query_scalar("select count(*) from live_session where session_id = $1")
        .bind(hawker_server::seed::SESSION_ID)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(sessions, 1);
}

#[tokio::test]
async fn a_development_server_on_a_database_with_data_does_not_seed_again() {
    let url = test_database_url();
    let mut first = spawn_app_with(settings(&url, Environment::Test)).await;
    let own = insert_agency(&first.db).await;
    first.stop().await.unwrap();
    let app = spawn_app_with(settings(&url, Environment::Development)).await;
    assert_eq!(agencies(&app.db).await, vec![own], "the demo was not added");
}

#[tokio::test]
async fn test_and_production_servers_on_an_empty_database_do_not_seed() {
    for environment in [Environment::Test, Environment::Production] {
        let app = spawn_app_with(settings(&test_database_url(), environment)).await;
        assert!(agencies(&app.db).await.is_empty(), "{environment:?}");
    }
}
