//! Comment-to-buy: viewers order by typing a keyword line in chat
//! ("SOLD 7", "buy #3 x2 red"), when the session's host has turned it on.
//!
//! The path of one line, top-down:
//! 1. The hub admits the `chat.send` (mutes, blocked words, slow mode, the
//!    chat rate limit) and asks the server's socket handler, which asks
//!    [`Live::comment_order`]: the session's setting (Postgres is the truth,
//!    each node caches it for `live.comment_cache_ms`, see [`cache`]) and
//!    the [`grammar`]. Plain chat stops here.
//! 2. The hub publishes the line (with `order: true` when the host wants
//!    order lines marked), then hands the order an idempotency key derived
//!    from the message ([`place`]): `chat:<session>:m:<client_msg_id>`, or
//!    `chat:<session>:o:<offset>` when the client gave no id.
//! 3. [`place::place`], in the background: the lineup item at the link
//!    number, its live deal, the variant, then
//!    `hawker_commerce::purchase::place_order` (the gate, batched
//!    settlement, the idempotency key: a message delivered twice buys
//!    once). The buyer hears the outcome as a private notice,
//!    `comment_order.placed` or `comment_order.refused`.

pub mod cache;
pub mod grammar;
pub mod place;

use chrono::{DateTime, Utc};
use hawker_core::Claims;
use hawker_hub::{CommandContext, CommentOrder, Publication};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::{Error, Live, Result};

/// Keywords when the host names none.
pub const DEFAULT_KEYWORDS: &[&str] = &["SOLD", "BUY"];
/// Most keywords per session.
pub const MAX_KEYWORDS: usize = 10;
/// Longest keyword (ASCII letters).
pub const MAX_KEYWORD_CHARS: usize = 16;
/// The room snapshot's key (and the room event's type).
pub const STATE_KEY: &str = "comment_to_buy";

/// A session's comment-to-buy setting.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(example = json!({"session_id": "0190b7a0-0000-7000-8000-000000000001", "enabled": true,
    "keywords": ["SOLD", "BUY"], "mark_orders": true, "updated_at": "2026-12-03T10:00:00Z"}))]
pub struct CommentToBuy {
    pub session_id: Uuid,
    /// Chat lines that follow the grammar place orders.
    pub enabled: bool,
    /// Upper-case; matched ignoring letter case.
    pub keywords: Vec<String>,
    /// Order lines carry `order: true` in their `chat` event.
    pub mark_orders: bool,
    /// Null until the host first sets it (the defaults: off, SOLD and BUY, marked).
    pub updated_at: Option<DateTime<Utc>>,
}

impl CommentToBuy {
    /// The setting of a session never configured.
    pub fn off(session_id: Uuid) -> CommentToBuy {
        CommentToBuy {
            session_id,
            enabled: false,
            keywords: DEFAULT_KEYWORDS.iter().map(|k| k.to_string()).collect(),
            mark_orders: true,
            updated_at: None,
        }
    }

    /// What the room sees (`comment_to_buy` event and snapshot key).
    pub fn room_view(&self) -> Value {
        json!({
            "enabled": self.enabled,
            "keywords": self.keywords,
            "mark_orders": self.mark_orders,
        })
    }
}

/// One keyword, as the OpenAPI document states it: 1 to 16 ASCII letters.
#[derive(utoipa::ToSchema)]
#[schema(pattern = "^[A-Za-z]{1,16}$", example = "SOLD")]
#[allow(dead_code)] // a schema only
pub struct Keyword(String);

/// `PUT /v1/sessions/{id}/comment-to-buy`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"enabled": true, "keywords": ["SOLD", "BUY"], "mark_orders": true}))]
pub struct SetCommentToBuy {
    /// On or off.
    pub enabled: bool,
    /// 1 to 10 words of 1 to 16 ASCII letters (stored upper-case, repeats
    /// dropped). Absent: unchanged (SOLD and BUY at first).
    #[serde(default)]
    #[schema(min_items = 1, max_items = 10, value_type = Option<Vec<Keyword>>)]
    pub keywords: Option<Vec<String>>,
    /// Mark order lines with `order: true`. Absent: unchanged (true at first).
    #[serde(default)]
    pub mark_orders: Option<bool>,
}

/// Keywords as stored: upper-case, repeats dropped, order kept.
pub fn validate_keywords(keywords: &[String]) -> Result<Vec<String>> {
    let bad = || {
        Error::invalid(
            "bad_keywords",
            format!("keywords must be 1 to {MAX_KEYWORDS} words of 1 to {MAX_KEYWORD_CHARS} ASCII letters"),
        )
    };
    // More than the maximum is refused as sent, before repeats are dropped
    // (the OpenAPI document's `maxItems`).
    if keywords.len() > MAX_KEYWORDS {
        return Err(bad());
    }
    let mut out: Vec<String> = Vec::new();
    for keyword in keywords {
        let ok = !keyword.is_empty()
            && keyword.len() <= MAX_KEYWORD_CHARS
            && keyword.bytes().all(|b| b.is_ascii_alphabetic());
        if !ok {
            return Err(bad());
        }
        let upper = keyword.to_ascii_uppercase();
        if !out.contains(&upper) {
            out.push(upper);
        }
    }
    if out.is_empty() || out.len() > MAX_KEYWORDS {
        return Err(bad());
    }
    Ok(out)
}

/// The session's setting (the defaults, off, if never set; 404 for no such session).
pub async fn get(live: &Live, session_id: Uuid) -> Result<CommentToBuy> {
    if let Some(setting) = fetch(live, session_id).await? {
        return Ok(setting);
    }
    let exists: Option<i32> = sqlx::query_scalar("select 1 from live_session where session_id = $1")
        .bind(session_id)
        .fetch_optional(live.db())
        .await?;
    exists.ok_or(Error::NotFound("session"))?;
    Ok(CommentToBuy::off(session_id))
}

/// The stored setting, if any.
pub(crate) async fn fetch(live: &Live, session_id: Uuid) -> Result<Option<CommentToBuy>> {
    Ok(fetch_many(live, &[session_id]).await?.remove(&session_id))
}

/// The settings of `sessions` in one statement (a session never set is absent).
pub(crate) async fn fetch_many(
    live: &Live,
    sessions: &[Uuid],
) -> Result<std::collections::HashMap<Uuid, CommentToBuy>> {
    Ok(sqlx::query_as::<_, CommentToBuy>(
        "select session_id, enabled, keywords, mark_orders, updated_at from comment_to_buy
          where session_id = any($1)",
    )
    .bind(sessions)
    .fetch_all(live.db())
    .await?
    .into_iter()
    .map(|s| (s.session_id, s))
    .collect())
}

/// The host (its agency, an admin) turns comment-to-buy on or off. The
/// room gets a `comment_to_buy` event and snapshot key in the same commit.
#[tracing::instrument(skip_all, fields(%session_id, caller = %claims.sub), err)]
pub async fn set(
    live: &Live,
    claims: &Claims,
    session_id: Uuid,
    new: SetCommentToBuy,
) -> Result<CommentToBuy> {
    let keywords = new.keywords.as_deref().map(validate_keywords).transpose()?;
    hawker_commerce::access::require_host(live.db(), claims, session_id).await?;
    let defaults = CommentToBuy::off(session_id);
    let mut tx = live.db().begin().await?;
    let setting = sqlx::query_as::<_, CommentToBuy>(
        "insert into comment_to_buy (session_id, enabled, keywords, mark_orders, updated_by)
         values ($1, $2, coalesce($3, $4), coalesce($5, $6), $7)
         on conflict (session_id) do update
            set enabled = excluded.enabled,
                keywords = coalesce($3, comment_to_buy.keywords),
                mark_orders = coalesce($5, comment_to_buy.mark_orders),
                updated_by = excluded.updated_by,
                updated_at = now()
         returning session_id, enabled, keywords, mark_orders, updated_at",
    )
    .bind(session_id)
    .bind(new.enabled)
    .bind(keywords)
    .bind(&defaults.keywords)
    .bind(new.mark_orders)
    .bind(defaults.mark_orders)
    .bind(&claims.sub)
    .fetch_one(&mut *tx)
    .await?;
    let view = setting.room_view();
    hawker_hub::durable::enqueue(
        &mut tx,
        session_id,
        &Publication::new(STATE_KEY, view.clone()).set_state(STATE_KEY, view),
    )
    .await?;
    tx.commit().await?;
    live.inner.comment_cache.put(session_id, Some(setting.clone()));
    crate::giveaways::relay(live).await;
    Ok(setting)
}

impl Live {
    /// Whether a viewer's chat line is a comment-to-buy order (the hub
    /// calls it for every admitted viewer line; see the module's docs).
    pub async fn comment_order(&self, ctx: &CommandContext, text: &str) -> Option<CommentOrder> {
        let setting = self.inner.comment_cache.get(self, ctx.room).await?;
        if !setting.enabled {
            return None;
        }
        let intent = grammar::parse(text, &setting.keywords)?;
        let live = self.clone();
        let session = ctx.room;
        let buyer = ctx.member.user.clone();
        Some(CommentOrder {
            mark: setting.mark_orders,
            place: Box::new(move |key: String| {
                let tasks = live.inner.tasks.clone();
                tasks.spawn(async move { place::place(&live, session, &buyer, intent, &key).await });
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::validate_keywords;

    fn words(list: &[&str]) -> Vec<String> {
        list.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn keywords_are_upper_cased_repeats_dropped_and_more_than_ten_refused_as_sent() {
        assert_eq!(
            validate_keywords(&words(&["sold", "SOLD", "Buy"])).unwrap(),
            ["SOLD", "BUY"]
        );
        // Eleven repeats of one word are eleven items: refused, as the OpenAPI document says.
        assert!(validate_keywords(&words(&["A"; 11])).is_err());
        assert!(validate_keywords(&words(&["A"; 10])).is_ok());
        for bad in [&[][..], &["SOLD 7"], &["ABCDEFGHIJKLMNOPQ"], &["ÉTÉ"], &[""]] {
            assert!(validate_keywords(&words(bad)).is_err(), "{bad:?}");
        }
    }
}
