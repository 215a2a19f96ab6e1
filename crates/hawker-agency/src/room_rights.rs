//! The session-access rule as an open socket asks it ([`SessionRights`]):
//! may this socket's user still host, and may a moderation command's target
//! host. The hub asks again while the socket is open (`hub.host_recheck_secs`),
//! so a host who leaves the roster loses host rights within that bound.

use hawker_core::Claims;
use hawker_hub::{RightsFuture, SessionRights};
use sqlx::PgPool;
use uuid::Uuid;

use crate::access::{session_role, SessionRow};
use hawker_core::error::Result;

/// One socket's token and session, with the database to ask.
pub struct RoomRights {
    db: PgPool,
    claims: Claims,
    session: SessionRow,
}

impl RoomRights {
    pub fn new(db: PgPool, claims: Claims, session: SessionRow) -> Self {
        RoomRights { db, claims, session }
    }
}

impl SessionRights for RoomRights {
    fn may_host(&self) -> RightsFuture<'_> {
        Box::pin(async move {
            Ok(session_role(&self.db, &self.claims, &self.session)
                .await?
                .may_host())
        })
    }

    fn user_may_host<'a>(&'a self, user: &'a str) -> RightsFuture<'a> {
        Box::pin(async move {
            match Uuid::parse_str(user) {
                Ok(host_id) => on_roster_now(&self.db, self.session.agency_id, host_id).await,
                Err(_) => Ok(false),
            }
        })
    }
}

/// Whether `host_id` is on `agency_id`'s roster now.
pub async fn on_roster_now(db: &PgPool, agency_id: Uuid, host_id: Uuid) -> Result<bool> {
    Ok(sqlx::query_scalar(
        "select exists(select 1 from agency_host where agency_id = $1 and host_id = $2
                        and joined_at <= now() and (left_at is null or left_at > now()))",
    )
    .bind(agency_id)
    .bind(host_id)
    .fetch_one(db)
    .await?)
}

/// The name others see for a socket's user: a host's display name, else
/// the token's `name` claim when it is fit to show (1 to 64 characters, no
/// control, bidi or zero-width characters); `None` when neither is known.
pub async fn display_name(db: &PgPool, claims: &Claims) -> Result<Option<String>> {
    if let Some(host_id) = crate::access::host_of(claims) {
        if let Some(host) = crate::roster::hosts(db, &[host_id]).await?.into_iter().next() {
            return Ok(Some(host.display_name));
        }
    }
    Ok(claims
        .name
        .as_deref()
        .filter(|n| fit_to_show(n))
        .map(str::to_string))
}

/// A name from a token may be shown: 1 to 64 characters after trimming, no
/// hidden characters.
fn fit_to_show(name: &str) -> bool {
    let count = name.chars().count();
    name.trim() == name && (1..=64).contains(&count) && hawker_core::text::hidden_char(name, false).is_none()
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_with_hidden_characters_or_out_of_bounds_are_not_shown() {
        assert!(super::fit_to_show("Leo Park"));
        assert!(super::fit_to_show("😀 Mia"));
        for bad in ["", " padded", "a\u{202E}b", "line\nbreak", &"x".repeat(65)] {
            assert!(!super::fit_to_show(bad), "{bad:?}");
        }
    }
}
