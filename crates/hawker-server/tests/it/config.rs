use std::collections::HashMap;

use hawker_server::config::{ConfigError, Environment, Settings, DEV_JWT_SECRET};

use crate::support::config_dir;

fn load(env: Environment, vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Settings::load_with(&config_dir(), env, vars)
}

const PROD_SECRETS: [(&str, &str); 4] = [
    (
        "HAWKER__AUTH__JWT_SECRET",
        "a-production-secret-of-at-least-32-bytes!",
    ),
    ("HAWKER__PAYMENTS__WEBHOOK_SECRET", "a-production-webhook-secret"),
    ("HAWKER__AUTH__ISSUER", "https://id.example"),
    ("HAWKER__AUTH__AUDIENCE", "hawker"),
];

#[test]
fn development_defaults_load() {
    let settings = load(Environment::Development, &[]).unwrap();
    assert_eq!(settings.server.listen.port(), 8080);
    assert_eq!(settings.auth.jwt_secret, DEV_JWT_SECRET);
}

#[test]
fn an_environment_variable_overrides_the_files() {
    let settings = load(
        Environment::Development,
        &[("HAWKER__SERVER__MAX_CONNECTIONS", "7")],
    )
    .unwrap();
    assert_eq!(settings.server.max_connections, 7);
}

#[test]
fn a_value_of_the_wrong_type_names_the_key() {
    let err = load(
        Environment::Development,
        &[("HAWKER__SERVER__MAX_CONNECTIONS", "lots")],
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("server.max_connections"), "{text}");
}

#[test]
fn an_unparseable_address_names_the_key() {
    let err = load(
        Environment::Development,
        &[("HAWKER__SERVER__LISTEN", "localhost:eighty")],
    )
    .unwrap_err();
    assert!(err.to_string().contains("server.listen"), "{err}");
}

#[test]
fn an_unknown_key_is_refused_by_name() {
    let err = load(
        Environment::Development,
        &[("HAWKER__SERVER__LISTN", "127.0.0.1:1")],
    )
    .unwrap_err();
    assert!(err.to_string().contains("listn"), "{err}");
}

#[test]
fn a_value_out_of_range_names_the_key_and_reason() {
    let err = load(
        Environment::Development,
        &[("HAWKER__SERVER__MAX_CONNECTIONS", "0")],
    )
    .unwrap_err();
    match err {
        ConfigError::Invalid { key, reason } => {
            assert_eq!(key, "server.max_connections");
            assert!(reason.contains("at least 1"));
        }
        other => panic!("unexpected {other}"),
    }
    let err = load(Environment::Development, &[("HAWKER__REDIS__URL", "http://nope")]).unwrap_err();
    assert!(err.to_string().contains("redis.url"), "{err}");
    let err = load(Environment::Development, &[("HAWKER__AUTH__JWT_SECRET", "short")]).unwrap_err();
    assert!(err.to_string().contains("auth.jwt_secret"), "{err}");
}

#[test]
fn production_refuses_to_start_without_secrets() {
    let err = load(Environment::Production, &[]).unwrap_err();
    assert!(err.to_string().contains("auth.jwt_secret"), "{err}");
}

#[test]
fn production_refuses_the_development_jwt_secret() {
    let err = load(
        Environment::Production,
        &[("HAWKER__AUTH__JWT_SECRET", DEV_JWT_SECRET), PROD_SECRETS[1]],
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("production refuses the development secret"),
        "{err}"
    );
}

#[test]
fn production_refuses_the_development_webhook_secret() {
    let err = load(
        Environment::Production,
        &[
            PROD_SECRETS[0],
            (
                "HAWKER__PAYMENTS__WEBHOOK_SECRET",
                "hawker-development-webhook-secret",
            ),
        ],
    )
    .unwrap_err();
    assert!(err.to_string().contains("payments.webhook_secret"), "{err}");
}

#[test]
fn production_requires_the_tokens_issuer_and_audience() {
    let err = load(Environment::Production, &PROD_SECRETS[..3]).unwrap_err();
    assert!(err.to_string().contains("auth.audience"), "{err}");
    let err = load(
        Environment::Production,
        &[PROD_SECRETS[0], PROD_SECRETS[1], PROD_SECRETS[3]],
    )
    .unwrap_err();
    assert!(err.to_string().contains("auth.issuer"), "{err}");
}

#[test]
fn production_starts_with_its_own_secrets() {
    let settings = load(Environment::Production, &PROD_SECRETS).unwrap();
    assert_eq!(settings.log.format, hawker_server::config::LogFormat::Json);
}

#[test]
fn an_unknown_environment_name_is_refused() {
    let err = "staging".parse::<Environment>().unwrap_err();
    assert!(err.to_string().contains("HAWKER_ENV"), "{err}");
}

#[test]
fn eddsa_needs_a_readable_key_file() {
    let err = load(
        Environment::Development,
        &[
            ("HAWKER__AUTH__ALGORITHM", "EdDSA"),
            ("HAWKER__AUTH__ED25519_PUBLIC_KEY_FILE", "/nonexistent.pem"),
        ],
    )
    .unwrap_err();
    assert!(err.to_string().contains("auth.ed25519_public_key_file"), "{err}");
}
