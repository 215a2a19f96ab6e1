//! The one domain error of hawker's crates, with the stable codes clients
//! see, and the one classification of database and Redis failures.
//!
//! Every crate (hub, commerce, agency) returns [`Error`]; the HTTP layer maps
//! it to a status in one place (`hawker-server/src/http/error.rs`), the hub
//! maps it to an error frame. A database error is classified once, here
//! ([`DbFailure::of`]): a failure to reach Postgres, a timeout or a lost
//! serialization race is *unavailable* (retry), a constraint violation is a
//! *conflict*, a missing row is *not found*, anything else is *internal*.

/// A failure of a domain operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No such thing, or the caller may not know it exists.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The request itself is wrong (HTTP 400).
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    /// The caller may not do this (HTTP 403).
    #[error("{message}")]
    Forbidden { message: String },
    /// The request conflicts with the current state (HTTP 409).
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// A dependency (Postgres, Redis) cannot answer now; retry shortly (HTTP 503).
    #[error("{what} is unavailable; retry shortly")]
    Unavailable { what: &'static str },
    /// A bug or an unexpected failure; logged, never shown (HTTP 500).
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// A result whose error is the domain [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Error::Invalid {
            code,
            message: message.into(),
        }
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Error::Conflict {
            code,
            message: message.into(),
        }
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Error::Forbidden {
            message: message.into(),
        }
    }

    /// The stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Error::NotFound(_) => "not_found",
            Error::Invalid { code, .. } | Error::Conflict { code, .. } => code,
            Error::Forbidden { .. } => "forbidden",
            Error::Unavailable { .. } => "unavailable",
            Error::Internal(_) => "internal",
        }
    }

    /// Whether retrying the same request later may succeed.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }
}

/// What a database error means to the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbFailure {
    /// Postgres cannot be reached or cannot answer in time (connection lost,
    /// pool timed out, statement or lock timeout, shutdown, serialization
    /// failure or deadlock): retrying later may succeed.
    Unavailable,
    /// A constraint refused the write; carries the constraint's name when
    /// Postgres reported one.
    Conflict { constraint: Option<String> },
    /// A query that must return a row returned none.
    NotFound,
    /// Anything else: a bug.
    Internal,
}

impl DbFailure {
    /// Classifies a database error. The only place hawker does so.
    pub fn of(e: &sqlx::Error) -> DbFailure {
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                DbFailure::Unavailable
            }
            sqlx::Error::RowNotFound => DbFailure::NotFound,
            sqlx::Error::Database(db) => {
                let code = db.code();
                let code = code.as_deref().unwrap_or("");
                // 08: connection exception; 57P0x: shutdown / cannot connect now;
                // 57014: statement timeout or cancel; 55P03: lock timeout;
                // 40001 / 40P01: serialization failure / deadlock; 53: resources.
                if code.starts_with("08")
                    || code.starts_with("57P")
                    || code.starts_with("53")
                    || matches!(code, "57014" | "55P03" | "40001" | "40P01")
                {
                    DbFailure::Unavailable
                } else if code.starts_with("23") {
                    DbFailure::Conflict {
                        constraint: db.constraint().map(str::to_string),
                    }
                } else {
                    DbFailure::Internal
                }
            }
            _ => DbFailure::Internal,
        }
    }
}

/// The name of the constraint a database error violated, if any.
pub fn violated_constraint(e: &sqlx::Error) -> Option<String> {
    match DbFailure::of(e) {
        DbFailure::Conflict { constraint } => constraint,
        _ => None,
    }
}

/// Logs that a dependency is unavailable at most once a second per
/// dependency, with how many such failures the summary stands for: an outage
/// fails every request, and a line for each would flood the log.
fn warn_unavailable(what: &'static str, error: &dyn std::fmt::Display) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static DB: (AtomicU64, AtomicU64) = (AtomicU64::new(0), AtomicU64::new(0));
    static REDIS: (AtomicU64, AtomicU64) = (AtomicU64::new(0), AtomicU64::new(0));
    let (last_second, suppressed) = if what == "redis" { &REDIS } else { &DB };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let last = last_second.load(Ordering::Relaxed);
    if now > last
        && last_second
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        let failures = suppressed.swap(0, Ordering::Relaxed) + 1;
        tracing::warn!(%error, dependency = what, failures, "dependency unavailable");
    } else {
        suppressed.fetch_add(1, Ordering::Relaxed);
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        match DbFailure::of(&e) {
            DbFailure::Unavailable => {
                warn_unavailable("postgres", &e);
                Error::Unavailable { what: "the database" }
            }
            DbFailure::NotFound => Error::NotFound("row"),
            DbFailure::Conflict { constraint } => Error::Conflict {
                code: "conflict",
                message: match constraint {
                    Some(c) => format!("the request conflicts with existing data ({c})"),
                    None => "the request conflicts with existing data".to_string(),
                },
            },
            DbFailure::Internal => Error::Internal(e.into()),
        }
    }
}

impl From<redis::RedisError> for Error {
    fn from(e: redis::RedisError) -> Self {
        warn_unavailable("redis", &e);
        Error::Unavailable { what: "redis" }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_timeout_and_closed_pool_are_unavailable() {
        assert_eq!(DbFailure::of(&sqlx::Error::PoolTimedOut), DbFailure::Unavailable);
        assert_eq!(DbFailure::of(&sqlx::Error::PoolClosed), DbFailure::Unavailable);
        let io = sqlx::Error::Io(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset"));
        assert_eq!(DbFailure::of(&io), DbFailure::Unavailable);
    }

    #[test]
    fn missing_row_is_not_found_and_maps_to_not_found_code() {
        assert_eq!(DbFailure::of(&sqlx::Error::RowNotFound), DbFailure::NotFound);
        assert_eq!(Error::from(sqlx::Error::RowNotFound).code(), "not_found");
    }

    #[test]
    fn unavailable_database_maps_to_unavailable_code() {
        let e = Error::from(sqlx::Error::PoolTimedOut);
        assert_eq!(e.code(), "unavailable");
        assert!(e.is_unavailable());
    }

    #[test]
    fn codes_of_constructed_errors_are_the_given_codes() {
        assert_eq!(Error::invalid("bad_quantity", "x").code(), "bad_quantity");
        assert_eq!(Error::conflict("sold_out", "x").code(), "sold_out");
        assert_eq!(Error::forbidden("x").code(), "forbidden");
        assert_eq!(Error::Internal(anyhow::anyhow!("x")).code(), "internal");
    }
}
