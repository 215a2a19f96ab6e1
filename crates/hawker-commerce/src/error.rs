//! What can go wrong in commerce, with the stable codes clients see.

#[derive(Debug, thiserror::Error)]
pub enum CommerceError {
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

impl CommerceError {
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        CommerceError::Invalid {
            code,
            message: message.into(),
        }
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        CommerceError::Conflict {
            code,
            message: message.into(),
        }
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        CommerceError::Forbidden {
            message: message.into(),
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            CommerceError::NotFound(_) => "not_found",
            CommerceError::Invalid { code, .. } | CommerceError::Conflict { code, .. } => code,
            CommerceError::Forbidden { .. } => "forbidden",
            CommerceError::Unavailable { .. } => "unavailable",
            CommerceError::Internal(_) => "internal",
        }
    }
}

impl From<sqlx::Error> for CommerceError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                CommerceError::Unavailable { what: "the database" }
            }
            sqlx::Error::Database(ref db)
                if db
                    .code()
                    .as_deref()
                    .is_some_and(|c| c.starts_with("08") || c == "57P01") =>
            {
                CommerceError::Unavailable { what: "the database" }
            }
            other => CommerceError::Internal(other.into()),
        }
    }
}

impl From<redis::RedisError> for CommerceError {
    fn from(_: redis::RedisError) -> Self {
        CommerceError::Unavailable { what: "redis" }
    }
}

pub type CommerceResult<T> = Result<T, CommerceError>;
