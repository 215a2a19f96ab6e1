//! Authentication at the edge: the bearer token of an HTTP request becomes
//! [`Auth`]; the token of a WebSocket handshake (which a browser cannot give
//! headers) becomes [`SocketAuth`].
//!
//! Only the socket route reads a token from the subprotocol or the
//! `access_token` query parameter: a token in a URL ends up in proxy and
//! browser logs, so every other route takes it from `Authorization` alone.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use hawker_core::{Claims, Role, TokenError};
use uuid::Uuid;

use super::error::ApiError;
use super::AppState;

/// The WebSocket subprotocol hawker speaks. A browser sends
/// `Sec-WebSocket-Protocol: hawker.v1, bearer.<token>`; the server answers
/// with `hawker.v1`.
pub const WS_PROTOCOL: &str = "hawker.v1";
const WS_BEARER_PREFIX: &str = "bearer.";

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Auth(pub Claims);

impl Auth {
    pub fn claims(&self) -> &Claims {
        &self.0
    }

    /// Refuses unless the caller has one of `roles` (admin always passes).
    pub fn require_role(&self, roles: &[Role]) -> Result<(), ApiError> {
        if self.0.is_admin() || roles.contains(&self.0.role) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "role `{}` may not do this (needs one of: {})",
                self.0.role,
                roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")
            )))
        }
    }

    /// Refuses unless the caller is an admin or acts for `agency_id`.
    pub fn require_agency(&self, agency_id: Uuid) -> Result<(), ApiError> {
        if self.0.is_admin() || (self.0.role == Role::Agency && self.0.agency_id == Some(agency_id)) {
            Ok(())
        } else {
            Err(ApiError::forbidden("this token does not act for that agency"))
        }
    }
}

/// An authenticated WebSocket handshake: the token came from
/// `Authorization`, the `bearer.<token>` subprotocol or `?access_token=`.
#[derive(Debug, Clone)]
pub struct SocketAuth(pub Claims);

impl From<SocketAuth> for Auth {
    fn from(auth: SocketAuth) -> Self {
        Auth(auth.0)
    }
}

/// The token of `Authorization: Bearer <token>`, if the header is present.
fn bearer_header(headers: &HeaderMap) -> Option<Result<String, TokenError>> {
    let value = headers.get(header::AUTHORIZATION)?;
    Some((|| {
        let value = value
            .to_str()
            .map_err(|_| TokenError::Malformed("Authorization header is not ASCII".into()))?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or_else(|| TokenError::Malformed("Authorization must be `Bearer <token>`".into()))?;
        Ok(token.trim().to_string())
    })())
}

/// The token of an HTTP request: `Authorization: Bearer` only.
pub fn token_from_headers(headers: &HeaderMap) -> Result<String, TokenError> {
    bearer_header(headers).unwrap_or(Err(TokenError::Missing))
}

/// The token of a WebSocket handshake: `Authorization: Bearer`, then the
/// WebSocket subprotocol, then the `access_token` query parameter (for
/// WebSocket clients that can set neither).
pub fn token_from_parts(headers: &HeaderMap, query: Option<&str>) -> Result<String, TokenError> {
    if let Some(token) = bearer_header(headers) {
        return token;
    }
    if let Some(protocols) = headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
    {
        if let Some(token) = protocols
            .split(',')
            .map(str::trim)
            .find_map(|p| p.strip_prefix(WS_BEARER_PREFIX))
        {
            return Ok(token.to_string());
        }
    }
    if let Some(query) = query {
        for pair in query.split('&') {
            if let Some(token) = pair.strip_prefix("access_token=") {
                return Ok(token.to_string());
            }
        }
    }
    Err(TokenError::Missing)
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = token_from_headers(&parts.headers)?;
        let claims = state.keys.verify(&token)?;
        Ok(Auth(claims))
    }
}

impl FromRequestParts<AppState> for SocketAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = token_from_parts(&parts.headers, parts.uri.query())?;
        // Not remembered: the socket keeps its claims for its life.
        let claims = state.keys.verify_once(&token)?;
        Ok(SocketAuth(claims))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn the_authorization_header_wins() {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer abc"));
        assert_eq!(
            token_from_parts(&headers, Some("access_token=zzz")).unwrap(),
            "abc"
        );
    }

    #[test]
    fn a_websocket_subprotocol_carries_the_token() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("hawker.v1, bearer.t0k"),
        );
        assert_eq!(token_from_parts(&headers, None).unwrap(), "t0k");
    }

    #[test]
    fn the_query_parameter_is_the_last_resort() {
        assert_eq!(
            token_from_parts(&HeaderMap::new(), Some("resume=1:2&access_token=q")).unwrap(),
            "q"
        );
        assert_eq!(
            token_from_parts(&HeaderMap::new(), None).unwrap_err(),
            TokenError::Missing
        );
    }

    #[test]
    fn http_routes_read_only_the_authorization_header() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("hawker.v1, bearer.t0k"),
        );
        assert_eq!(token_from_headers(&headers).unwrap_err(), TokenError::Missing);
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer abc"));
        assert_eq!(token_from_headers(&headers).unwrap(), "abc");
    }

    #[test]
    fn a_non_bearer_scheme_is_malformed() {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic dXNlcg=="));
        assert!(matches!(
            token_from_parts(&headers, None),
            Err(TokenError::Malformed(_))
        ));
    }
}
