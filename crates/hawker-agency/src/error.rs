//! What can go wrong on the agency side, with the stable codes clients see.

/// An agency-side failure. The HTTP layer maps each variant to a status.
#[derive(Debug, thiserror::Error)]
pub enum AgencyError {
    /// No such thing, or the caller may not know it exists.
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    #[error("{message}")]
    Forbidden { message: String },
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("{what} is unavailable; retry shortly")]
    Unavailable { what: &'static str },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl AgencyError {
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        AgencyError::Invalid {
            code,
            message: message.into(),
        }
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        AgencyError::Conflict {
            code,
            message: message.into(),
        }
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        AgencyError::Forbidden {
            message: message.into(),
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            AgencyError::NotFound(_) => "not_found",
            AgencyError::Invalid { code, .. } | AgencyError::Conflict { code, .. } => code,
            AgencyError::Forbidden { .. } => "forbidden",
            AgencyError::Unavailable { .. } => "unavailable",
            AgencyError::Internal(_) => "internal",
        }
    }
}

impl From<sqlx::Error> for AgencyError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                AgencyError::Unavailable { what: "the database" }
            }
            sqlx::Error::Database(ref db)
                if db
                    .code()
                    .as_deref()
                    .is_some_and(|c| c.starts_with("08") || c == "57P01") =>
            {
                AgencyError::Unavailable { what: "the database" }
            }
            other => AgencyError::Internal(other.into()),
        }
    }
}

pub type AgencyResult<T> = Result<T, AgencyError>;

/// The name of the constraint a database error violated, if any.
pub(crate) fn violated_constraint(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(db) => db.constraint().map(str::to_string),
        _ => None,
    }
}
