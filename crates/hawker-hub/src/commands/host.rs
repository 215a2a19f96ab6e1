//! Host commands: `host.announce`, `host.message`, `host.pin`, `host.unpin`.
//! Only a socket with `can_host` may send them (checked in
//! [`super::Command::parse`]).

use serde_json::{json, Value};

use super::{Ack, CommandError, Context, Field, Fields};
use crate::event::{now_ms, Publication};

/// Host texts are 1 to this many characters.
pub const HOST_TEXT_MAX_CHARS: usize = 1000;
/// A pinned item is a JSON object of at most this many bytes, serialized.
pub const PIN_MAX_BYTES: usize = 2048;

/// `host.announce` and `host.message`: a host's text, trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostText {
    pub text: String,
}

impl HostText {
    pub(crate) fn parse(data: Fields<'_>) -> Result<HostText, CommandError> {
        Ok(HostText {
            text: data.text("text", HOST_TEXT_MAX_CHARS)?,
        })
    }

    /// `host.announce`: publishes `host.announcement` and keeps it in the
    /// snapshot's `announcement`, so late joiners see it.
    pub(crate) async fn announce(self, ctx: &Context<'_>) -> Result<Ack, CommandError> {
        let publication = Publication::new("host.announcement", json!({ "text": self.text }))
            .from_user(&ctx.member.user)
            .set_state("announcement", json!({ "text": self.text, "at": now_ms() }));
        ctx.publish(publication, &[]).await
    }

    /// `host.message`: a message to the chat that is never dropped or thinned.
    pub(crate) async fn message(self, ctx: &Context<'_>) -> Result<Ack, CommandError> {
        let publication =
            Publication::new("host.message", json!({ "text": self.text })).from_user(&ctx.member.user);
        ctx.publish(publication, &[]).await
    }
}

/// `host.pin`: the item the host shows, an object stored as given.
#[derive(Debug, Clone, PartialEq)]
pub struct Pin {
    pub item: Value,
}

impl Pin {
    pub(crate) fn parse(data: Fields<'_>) -> Result<Pin, CommandError> {
        let item = data
            .get("item")?
            .and_then(Field::object)
            .ok_or_else(|| CommandError::bad("`item` must be an object"))?;
        if item.to_string().len() > PIN_MAX_BYTES {
            return Err(CommandError::bad(format!(
                "`item` is limited to {PIN_MAX_BYTES} bytes"
            )));
        }
        Ok(Pin { item: item.clone() })
    }

    /// Publishes `host.pinned` and sets the snapshot's `pinned`.
    pub(crate) async fn apply(self, ctx: &Context<'_>) -> Result<Ack, CommandError> {
        let publication =
            Publication::new("host.pinned", json!({ "item": self.item })).set_state("pinned", self.item);
        ctx.publish(publication, &[]).await
    }
}

/// `host.unpin`: publishes `host.unpinned` and removes `pinned`.
pub(crate) async fn unpin(ctx: &Context<'_>) -> Result<Ack, CommandError> {
    let publication = Publication::new("host.unpinned", json!({})).remove_state("pinned");
    ctx.publish(publication, &[]).await
}
