//! Bearer tokens: claims, roles, signing and verification.
//!
//! Tokens are JWTs signed either with an HS256 shared secret or an Ed25519
//! (EdDSA) key pair. Verification distinguishes *why* a token is refused so
//! the HTTP layer can answer with a precise error code.

use std::fmt;
use std::str::FromStr;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What a caller is allowed to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Host,
    Agency,
    Brand,
    Admin,
}

impl Role {
    pub const ALL: [Role; 5] = [Role::Viewer, Role::Host, Role::Agency, Role::Brand, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Host => "host",
            Role::Agency => "agency",
            Role::Brand => "brand",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role `{s}` (expected viewer, host, agency, brand or admin)"))
    }
}

/// The claims hawker puts in (and expects from) a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Claims {
    /// The user id. Hosts are identified by their host id (a UUID); viewers
    /// by any stable id of the identity provider (at most 64 characters).
    pub sub: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agency_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brand_id: Option<Uuid>,
    /// Expiry, seconds since the Unix epoch.
    pub exp: i64,
    /// Issued at, seconds since the Unix epoch.
    #[serde(default)]
    pub iat: i64,
    /// Who issued the token; checked when the server configures an issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Whom the token is for; checked when the server configures an audience.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// The user's display name, if the identity provider gives one: others
    /// see it in presence notices instead of `sub` (when it is 1 to 64
    /// characters without control, bidi or zero-width characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The longest `sub` accepted; longer ones are refused as malformed.
pub const MAX_SUBJECT_LEN: usize = 64;

impl Claims {
    pub fn new(sub: impl Into<String>, role: Role, ttl: chrono::Duration) -> Self {
        let now = chrono::Utc::now().timestamp();
        Claims {
            sub: sub.into(),
            role,
            agency_id: None,
            brand_id: None,
            exp: now + ttl.num_seconds(),
            iat: now,
            iss: None,
            aud: None,
            name: None,
        }
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// The subject as a UUID, for roles whose subject is a row in the database (hosts).
    pub fn subject_uuid(&self) -> Option<Uuid> {
        Uuid::parse_str(&self.sub).ok()
    }
}

/// Why a token was refused. Each variant has its own stable error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no bearer token was presented")]
    Missing,
    #[error("the token is not a well-formed hawker token: {0}")]
    Malformed(String),
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
}

impl TokenError {
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::Missing => "token_missing",
            TokenError::Malformed(_) => "token_malformed",
            TokenError::BadSignature => "token_bad_signature",
            TokenError::Expired => "token_expired",
        }
    }
}

/// Bidi controls, zero-width characters and other invisible formatting
/// characters, which can make a text read differently from what it is.
pub fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{200B}'..='\u{200F}' // zero-width space/joiners, LRM, RLM
        | '\u{202A}'..='\u{202E}' // bidi embeddings and overrides
        | '\u{2060}'..='\u{2064}' // word joiner, invisible operators
        | '\u{2066}'..='\u{2069}' // bidi isolates
        | '\u{FEFF}' // zero-width no-break space
        | '\u{00AD}' // soft hyphen
        | '\u{061C}' // Arabic letter mark
        | '\u{180E}' // Mongolian vowel separator
    )
}

/// Keys for signing and verifying tokens.
#[derive(Clone)]
pub struct TokenKeys {
    algorithm: Algorithm,
    encoding: Option<EncodingKey>,
    decoding: DecodingKey,
    /// Required `iss`, if any.
    issuer: Option<String>,
    /// Required `aud`, if any.
    audience: Option<String>,
    /// Tokens verified lately (`verify` answers them from here).
    verified: crate::verified::Verified<Claims>,
}

impl fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenKeys")
            .field("algorithm", &self.algorithm)
            .field("can_sign", &self.encoding.is_some())
            .finish()
    }
}

impl TokenKeys {
    /// HS256 with a shared secret.
    pub fn hs256(secret: &[u8]) -> Self {
        TokenKeys {
            algorithm: Algorithm::HS256,
            encoding: Some(EncodingKey::from_secret(secret)),
            decoding: DecodingKey::from_secret(secret),
            issuer: None,
            audience: None,
            verified: Default::default(),
        }
    }

    /// EdDSA (Ed25519) from PEM. The private key is optional: a node that only
    /// verifies tokens needs only the public key.
    pub fn ed25519(public_pem: &[u8], private_pem: Option<&[u8]>) -> Result<Self, String> {
        let decoding = DecodingKey::from_ed_pem(public_pem).map_err(|e| format!("public key: {e}"))?;
        let encoding = match private_pem {
            Some(pem) => Some(EncodingKey::from_ed_pem(pem).map_err(|e| format!("private key: {e}"))?),
            None => None,
        };
        Ok(TokenKeys {
            algorithm: Algorithm::EdDSA,
            encoding,
            decoding,
            issuer: None,
            audience: None,
            verified: Default::default(),
        })
    }

    /// Tokens must carry this `iss` and `aud` (each when `Some`); minted
    /// tokens get them.
    pub fn with_issuer_and_audience(mut self, issuer: Option<String>, audience: Option<String>) -> Self {
        self.issuer = issuer;
        self.audience = audience;
        // What was verified under the old rules is not verified under these.
        self.verified = Default::default();
        self
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub fn sign(&self, claims: &Claims) -> Result<String, String> {
        let key = self
            .encoding
            .as_ref()
            .ok_or_else(|| "no private key configured: this node can only verify tokens".to_string())?;
        let mut claims = claims.clone();
        if claims.iss.is_none() {
            claims.iss.clone_from(&self.issuer);
        }
        if claims.aud.is_none() {
            claims.aud.clone_from(&self.audience);
        }
        jsonwebtoken::encode(&Header::new(self.algorithm), &claims, key).map_err(|e| e.to_string())
    }

    /// The claims of `token`, or why it is refused. A token verified before
    /// and not yet expired is answered from memory (see `verified.rs`).
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        if let Some(claims) = self.verified.get(token, chrono::Utc::now().timestamp()) {
            return Ok(claims);
        }
        let claims = self.verify_signed(token)?;
        self.verified.insert(token, &claims, claims.exp);
        Ok(claims)
    }

    /// [`TokenKeys::verify`] for a token used once, such as a socket's
    /// (the socket keeps the claims for its life): answered from memory if
    /// it is there, but a token verified here is not remembered, so ten
    /// thousand open sockets do not hold ten thousand remembered tokens.
    pub fn verify_once(&self, token: &str) -> Result<Claims, TokenError> {
        if let Some(claims) = self.verified.get(token, chrono::Utc::now().timestamp()) {
            return Ok(claims);
        }
        self.verify_signed(token)
    }

    /// Full verification: signature, algorithm, expiry, issuer, audience, subject.
    fn verify_signed(&self, token: &str) -> Result<Claims, TokenError> {
        let mut validation = Validation::new(self.algorithm);
        validation.leeway = 0;
        let mut required = vec!["exp", "sub"];
        match &self.issuer {
            Some(issuer) => {
                validation.set_issuer(&[issuer]);
                required.push("iss");
            }
            None => validation.iss = None,
        }
        match &self.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation).map_err(|e| match e
            .kind()
        {
            ErrorKind::ExpiredSignature => TokenError::Expired,
            ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => TokenError::BadSignature,
            _ => TokenError::Malformed(e.to_string()),
        })?;
        let claims = data.claims;
        if claims.sub.is_empty() || claims.sub.len() > MAX_SUBJECT_LEN {
            return Err(TokenError::Malformed(format!(
                "sub must be 1 to {MAX_SUBJECT_LEN} characters"
            )));
        }
        // A subject ends up in logs, room events and SQL: no line breaks,
        // control or invisible formatting characters.
        if claims.sub.chars().any(|c| c.is_control() || is_invisible(c)) {
            return Err(TokenError::Malformed(
                "sub must not contain control, bidi or zero-width characters".into(),
            ));
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(ttl_secs: i64) -> Claims {
        Claims::new("viewer-1", Role::Viewer, chrono::Duration::seconds(ttl_secs))
    }

    #[test]
    fn a_configured_issuer_and_audience_are_stamped_and_required() {
        let secret = b"a-secret-long-enough-for-hs256-000000";
        let ours =
            TokenKeys::hs256(secret).with_issuer_and_audience(Some("idp".into()), Some("hawker".into()));
        let token = ours.sign(&claims(60)).unwrap();
        let verified = ours.verify(&token).unwrap();
        assert_eq!(verified.iss.as_deref(), Some("idp"));
        assert_eq!(verified.aud.as_deref(), Some("hawker"));
        // Same key, no iss/aud: refused by a server that requires them.
        let bare = TokenKeys::hs256(secret).sign(&claims(60)).unwrap();
        assert!(matches!(ours.verify(&bare), Err(TokenError::Malformed(_))));
        // Same key, another audience: refused.
        let other = TokenKeys::hs256(secret)
            .with_issuer_and_audience(Some("idp".into()), Some("another-app".into()))
            .sign(&claims(60))
            .unwrap();
        assert!(matches!(ours.verify(&other), Err(TokenError::Malformed(_))));
        // A server that requires nothing accepts tokens that carry them.
        assert!(TokenKeys::hs256(secret).verify(&token).is_ok());
    }

    #[test]
    fn a_subject_with_a_line_break_or_bidi_control_is_malformed() {
        let keys = TokenKeys::hs256(b"a-secret-long-enough-for-hs256-000000");
        for sub in ["viewer\n1", "viewer\r1", "a\u{202E}b", "zero\u{200B}width"] {
            let token = keys
                .sign(&Claims::new(sub, Role::Viewer, chrono::Duration::seconds(60)))
                .unwrap();
            assert!(
                matches!(keys.verify(&token), Err(TokenError::Malformed(_))),
                "{sub:?}"
            );
        }
    }

    #[test]
    fn a_signed_token_verifies_with_the_same_secret() {
        let keys = TokenKeys::hs256(b"a-secret-long-enough-for-hs256-000000");
        let token = keys.sign(&claims(60)).unwrap();
        assert_eq!(keys.verify(&token).unwrap().sub, "viewer-1");
    }

    #[test]
    fn a_token_from_another_secret_is_a_bad_signature() {
        let token = TokenKeys::hs256(b"one-secret-000000000000000000000000")
            .sign(&claims(60))
            .unwrap();
        let err = TokenKeys::hs256(b"another-secret-00000000000000000000")
            .verify(&token)
            .unwrap_err();
        assert_eq!(err, TokenError::BadSignature);
    }

    #[test]
    fn an_expired_token_is_expired() {
        let keys = TokenKeys::hs256(b"a-secret-long-enough-for-hs256-000000");
        let token = keys.sign(&claims(-5)).unwrap();
        assert_eq!(keys.verify(&token).unwrap_err(), TokenError::Expired);
    }

    #[test]
    fn a_remembered_token_expires_on_time_and_its_forgeries_stay_refused() {
        let keys = TokenKeys::hs256(b"a-secret-long-enough-for-hs256-000000");
        let token = keys.sign(&claims(2)).unwrap();
        assert_eq!(keys.verify(&token).unwrap().sub, "viewer-1");
        assert_eq!(
            keys.verify(&token).unwrap().sub,
            "viewer-1",
            "answered from memory"
        );
        // Another signature on the same header and claims: a different string, verified in full.
        let (signed, _) = token.rsplit_once('.').unwrap();
        let forged = format!("{signed}.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
        assert_eq!(keys.verify(&forged).unwrap_err(), TokenError::BadSignature);
        std::thread::sleep(std::time::Duration::from_millis(3100));
        assert_eq!(keys.verify(&token).unwrap_err(), TokenError::Expired);
    }

    #[test]
    fn a_token_verified_once_is_not_remembered_but_one_remembered_is_used() {
        let keys = TokenKeys::hs256(b"a-secret-long-enough-for-hs256-000000");
        let socket = keys.sign(&claims(60)).unwrap();
        assert_eq!(keys.verify_once(&socket).unwrap().sub, "viewer-1");
        assert_eq!(keys.verified.len(), 0, "a socket's token is not remembered");
        let (signed, _) = socket.rsplit_once('.').unwrap();
        let forged = format!("{signed}.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
        assert_eq!(keys.verify_once(&forged).unwrap_err(), TokenError::BadSignature);
        keys.verify(&socket).unwrap();
        assert_eq!(keys.verified.len(), 1);
        assert_eq!(keys.verify_once(&socket).unwrap().sub, "viewer-1");
    }

    #[test]
    fn new_issuer_rules_forget_what_the_old_ones_verified() {
        let keys = TokenKeys::hs256(b"a-secret-long-enough-for-hs256-000000");
        let token = keys.sign(&claims(60)).unwrap();
        assert!(keys.verify(&token).is_ok());
        let strict = keys.with_issuer_and_audience(Some("idp".into()), None);
        assert!(matches!(strict.verify(&token), Err(TokenError::Malformed(_))));
    }

    #[test]
    fn garbage_is_malformed() {
        let keys = TokenKeys::hs256(b"a-secret-long-enough-for-hs256-000000");
        assert!(matches!(keys.verify("not.a.jwt"), Err(TokenError::Malformed(_))));
        assert!(matches!(keys.verify(""), Err(TokenError::Malformed(_))));
    }

    #[test]
    fn roles_parse_from_their_names_only() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
        }
        assert!("root".parse::<Role>().is_err());
    }
}
