//! The one error type of the HTTP boundary. Every failure leaves as
//! `{"error": code, "message": ...}` with the right status; internals are
//! logged, never shown.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hawker_core::{Error as DomainError, TokenError};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The JSON body of every error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A stable, machine-readable code, e.g. `token_expired`.
    pub error: &'static str,
    /// A sentence for humans.
    pub message: String,
}

/// The 401 every route behind a bearer token may answer, for
/// `#[utoipa::path(responses(...))]`. Documentation only: handlers answer
/// with [`ApiError`].
#[derive(utoipa::IntoResponses)]
#[response(
    status = 401,
    description = "missing, malformed, expired or foreign token",
    headers(("WWW-Authenticate" = String, description = "`Bearer`")),
)]
pub struct Unauthenticated(pub ErrorBody);

/// The 401 and a plain 403 (the token's role or scope may not do this), for
/// routes whose 403 needs no route-specific description. Routes that say
/// who may act list [`Unauthenticated`] and their own 403.
#[derive(utoipa::IntoResponses)]
pub enum AuthErrors {
    /// Missing, malformed, expired or foreign token.
    #[response(
        status = 401,
        description = "missing, malformed, expired or foreign token",
        headers(("WWW-Authenticate" = String, description = "`Bearer`")),
    )]
    Unauthenticated(ErrorBody),
    /// The token may not do this.
    #[response(status = 403, description = "the token may not do this")]
    Forbidden(ErrorBody),
}

/// The 503 of every route that needs the database: retry after the
/// `Retry-After` seconds.
#[derive(utoipa::IntoResponses)]
#[response(
    status = 503,
    description = "the database is unavailable; see Retry-After",
    headers(("Retry-After" = u64, description = "seconds to wait before retrying")),
)]
pub struct Unavailable(pub ErrorBody);

/// The `Retry-After` of every 429: how long a client waits before trying
/// again (e.g. a socket over `hub.max_sockets_per_user`, until one of its
/// others has closed).
pub const TOO_MANY_RETRY_AFTER_SECS: u64 = 5;

/// Every failure a handler can answer with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(#[from] TokenError),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("{message}")]
    TooMany { code: &'static str, message: String },
    #[error("{what} is unavailable")]
    Unavailable {
        what: &'static str,
        retry_after_secs: u64,
    },
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::Forbidden(message.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::TooMany { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized(e) => e.code(),
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::BadRequest { code, .. }
            | ApiError::Conflict { code, .. }
            | ApiError::TooMany { code, .. } => code,
            ApiError::Unavailable { .. } => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::from(DomainError::from(e))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            ApiError::Internal(e) => {
                tracing::error!(error = ?e, "request failed");
                "an internal error occurred; it has been logged".to_string()
            }
            other => other.to_string(),
        };
        let mut response = (
            status,
            axum::Json(ErrorBody {
                error: self.code(),
                message,
            }),
        )
            .into_response();
        match &self {
            ApiError::Unauthorized(_) => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::Unavailable { retry_after_secs, .. } => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            ApiError::TooMany { .. } => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(TOO_MANY_RETRY_AFTER_SECS));
            }
            _ => {}
        }
        response
    }
}

/// The one mapping from the crates' domain error to HTTP.
impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        let code = e.code();
        match e {
            DomainError::NotFound(what) => ApiError::NotFound(what),
            DomainError::Invalid { message, .. } => ApiError::BadRequest { code, message },
            DomainError::Forbidden { message } => ApiError::Forbidden(message),
            DomainError::Conflict { message, .. } => ApiError::Conflict { code, message },
            DomainError::Unavailable { what } => ApiError::Unavailable {
                what,
                retry_after_secs: 2,
            },
            DomainError::Internal(e) => ApiError::Internal(e),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        ApiError::bad_request("bad_json", r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::bad_request("bad_path", r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::bad_request("bad_query", r.body_text())
    }
}

/// `axum::Json` whose rejection is an [`ApiError`], and which reads an
/// integral number written as a float (`-705.0`, `1e3`) as the integer it
/// is: JSON Schema, and so the OpenAPI document, counts it as an integer.
/// A fractional number in an integer field is still `bad_json`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        // The common case, read once: a plain `application/json` object that
        // is already what `T` wants. Anything else (another content type, an
        // error, a float to rewrite, a repeated field) takes the full path
        // below, which decides and words the refusal.
        let mut value = if plain_json(request.headers()) {
            let bytes = axum::body::Bytes::from_request(request, state)
                .await
                .map_err(JsonRejection::from)?;
            if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
                if let Ok(parsed) = serde_json::from_slice::<T>(&bytes) {
                    return Ok(Json(parsed));
                }
            }
            axum::Json::<serde_json::Value>::from_bytes(&bytes)?.0
        } else {
            // The content type and the syntax are checked as `axum::Json` does.
            axum::Json::<serde_json::Value>::from_request(request, state)
                .await?
                .0
        };
        // serde reads a struct from an array of its fields in order
        // (`[null, null]`); no request body of the API is an array.
        if value.is_array() {
            return Err(ApiError::bad_request(
                "bad_json",
                "the body must be a JSON object",
            ));
        }
        integral_floats_as_integers(&mut value);
        // Read through `axum::Json` again for its messages, which name the
        // offending field.
        let bytes =
            serde_json::to_vec(&value).map_err(|e| ApiError::bad_request("bad_json", e.to_string()))?;
        let axum::Json(parsed) = axum::Json::<T>::from_bytes(&bytes)?;
        Ok(Json(parsed))
    }
}

/// `Content-Type: application/json`, alone or with parameters (`; charset=utf-8`):
/// a type `axum::Json` accepts too.
fn plain_json(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.as_bytes().strip_prefix(b"application/json"))
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(b";"))
}

/// Rewrites every float with no fractional part that fits an `i64` (or a
/// `u64`) as that integer, in place, at any depth.
pub fn integral_floats_as_integers(value: &mut serde_json::Value) {
    use serde_json::{Number, Value};
    match value {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            // 2^63 and 2^64 are exact as f64; the ranges are open. A number
            // below -2^63 (`-9223372036854775809`, which is no `i64` and so
            // reaches here as a float) rounds to exactly -2^63, so -2^63 as a
            // float cannot be told from an out-of-range number and stays a
            // float (refused by an integer field); larger ones round upwards
            // and stay out of range.
            const I64_END: f64 = 9_223_372_036_854_775_808.0;
            const U64_END: f64 = 18_446_744_073_709_551_616.0;
            if f.fract() == 0.0 {
                if f > -I64_END && f < I64_END {
                    *n = Number::from(f as i64);
                } else if (0.0..U64_END).contains(&f) {
                    *n = Number::from(f as u64);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_floats_as_integers),
        Value::Object(fields) => fields.values_mut().for_each(integral_floats_as_integers),
        _ => {}
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// `axum::extract::Path` whose rejection is an [`ApiError`].
#[derive(Debug, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// `axum::extract::Query` whose rejection is an [`ApiError`].
#[derive(Debug, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::integral_floats_as_integers;
    use serde_json::{json, Value};

    fn rewritten(text: &str) -> Value {
        let mut value: Value = serde_json::from_str(text).unwrap();
        integral_floats_as_integers(&mut value);
        value
    }

    #[test]
    fn integral_floats_become_integers_at_any_depth() {
        assert_eq!(rewritten(r#"{"a": [-705.0, 1e3]}"#), json!({"a": [-705, 1000]}));
        assert!(rewritten("1.5").is_f64());
    }

    #[test]
    fn a_number_below_the_i64_range_is_not_clamped_into_it() {
        // -2^63 - 1 parses as a float that rounds to exactly -2^63.
        let value = rewritten("-9223372036854775809");
        assert!(value.is_f64(), "{value}");
        assert!(serde_json::from_value::<i64>(value).is_err());
        // The smallest i64 written as an integer is still one.
        assert_eq!(rewritten("-9223372036854775808"), json!(i64::MIN));
    }

    #[test]
    fn a_large_integral_float_is_read_exactly_and_becomes_its_integer() {
        // Without exact float parsing this reads as 4168563465161073.5 (one
        // ulp off) and a schema-valid integer was refused (schemathesis).
        assert_eq!(rewritten("4168563465161074.0"), json!(4_168_563_465_161_074_i64));
        assert_eq!(rewritten("9007199254740992.0"), json!(9_007_199_254_740_992_i64));
    }

    #[test]
    fn a_number_above_the_u64_range_stays_a_float() {
        assert!(rewritten("18446744073709551616").is_f64());
        assert!(rewritten("9223372036854775808.0").is_u64());
    }
}
