//! Moderation commands: mutes, bans, slow mode and blocked words (hosts and
//! moderators), and appointing moderators (hosts). Each publishes an event
//! and, in the same step, the change to the room's moderation hash, which
//! every node applies as the event passes (`crate::moderation`).

use serde_json::json;

use super::{Ack, CommandError, Context, Field, Fields};
use crate::event::{now_ms, Publication};
use crate::hub::PublishError;
use crate::store::ModChange;

/// The longest mute or ban: 30 days.
pub const MAX_RESTRICT_SECS: u64 = 30 * 86_400;
/// A mute or ban without `seconds`: 10 minutes.
pub const DEFAULT_RESTRICT_SECS: u64 = 600;
/// The longest slow-mode interval.
pub const MAX_SLOW_MODE_SECS: u64 = 3600;
/// At most this many blocked words, each 1 to [`MAX_BLOCKED_WORD_BYTES`].
pub const MAX_BLOCKED_WORDS: usize = 500;
pub const MAX_BLOCKED_WORD_BYTES: usize = 64;

/// `mod.mute` and `mod.ban`: who, and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restrict {
    pub user: String,
    /// 1 to [`MAX_RESTRICT_SECS`].
    pub seconds: u64,
}

impl Restrict {
    /// `seconds`: an integer from 1 to 30 days; absent or `null`: 600.
    pub(crate) fn parse(data: Fields<'_>) -> Result<Restrict, CommandError> {
        let user = data.user()?;
        let seconds = data.integer_in("seconds", 1..=MAX_RESTRICT_SECS, Some(DEFAULT_RESTRICT_SECS))?;
        Ok(Restrict { user, seconds })
    }

    /// Publishes `moderation.muted`; the user's `chat.send` is refused until then.
    pub(crate) async fn mute(self, ctx: &Context<'_>) -> Result<Ack, CommandError> {
        may_act_on(ctx, &self.user).await?;
        self.publish(ctx, "moderation.muted", "mute").await
    }

    /// Publishes `moderation.banned`; every node closes the user's sockets
    /// in the room with 4003 and refuses them until then.
    pub(crate) async fn ban(self, ctx: &Context<'_>) -> Result<Ack, CommandError> {
        may_act_on(ctx, &self.user).await?;
        self.publish(ctx, "moderation.banned", "ban").await
    }

    async fn publish(self, ctx: &Context<'_>, kind: &str, field: &str) -> Result<Ack, CommandError> {
        let until = now_ms() + (self.seconds as i64) * 1000;
        let publication = Publication::new(
            kind,
            json!({ "user": self.user, "until": until, "by": ctx.member.user }),
        );
        let change = ModChange::Set(format!("{field}:{}", self.user), until.to_string());
        ctx.publish(publication, &[change]).await
    }
}

/// `mod.unmute`, `mod.unban`, `mod.grant`, `mod.revoke`: the user concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub user: String,
}

impl Target {
    pub(crate) fn parse(data: Fields<'_>) -> Result<Target, CommandError> {
        Ok(Target { user: data.user()? })
    }

    /// Lifts a mute early (published even when there was none).
    pub(crate) async fn unmute(self, ctx: &Context<'_>) -> Result<Ack, CommandError> {
        may_act_on(ctx, &self.user).await?;
        self.lift(ctx, "moderation.unmuted", "mute").await
    }

    /// Lifts a ban early (published even when there was none).
    pub(crate) async fn unban(self, ctx: &Context<'_>) -> Result<Ack, CommandError> {
        may_act_on(ctx, &self.user).await?;
        self.lift(ctx, "moderation.unbanned", "ban").await
    }

    async fn lift(self, ctx: &Context<'_>, kind: &str, field: &str) -> Result<Ack, CommandError> {
        let (publication, change) = crate::moderation::lift(&self.user, &ctx.member.user, kind, field);
        ctx.publish(publication, &[change]).await
    }

    /// Appoints a moderator for this room (an `internal.*` event: never sent to clients).
    pub(crate) async fn grant(self, ctx: &Context<'_>) -> Result<Ack, CommandError> {
        let change = ModChange::Set(format!("moderator:{}", self.user), "1".into());
        let publication = Publication::new("internal.moderator_granted", json!({ "user": self.user }));
        ctx.publish(publication, &[change]).await
    }

    /// Dismisses a moderator.
    pub(crate) async fn revoke(self, ctx: &Context<'_>) -> Result<Ack, CommandError> {
        let change = ModChange::Remove(format!("moderator:{}", self.user));
        let publication = Publication::new("internal.moderator_revoked", json!({ "user": self.user }));
        ctx.publish(publication, &[change]).await
    }
}

/// The moderation hierarchy: nobody mutes or bans (or lifts a mute or ban
/// of) someone who may host the session — its hosts on the roster, the
/// agency's accounts and admins that opened a socket in the room — and only
/// those who may host act on moderators. Asked of Redis (the room's
/// moderators and privileged users, shared by every node) and of the
/// session's access rule (hosts on the roster); an unanswered question
/// refuses the command (`unavailable`).
async fn may_act_on(ctx: &Context<'_>, target: &str) -> Result<(), CommandError> {
    const PROTECTED: &str =
        "moderators may not act on the session's hosts, its agency, admins or other moderators";
    let fields = [format!("privileged:{target}"), format!("moderator:{target}")];
    let known = ctx
        .hub
        .inner
        .store
        .moderation_fields(ctx.room.id, &fields)
        .await
        .map_err(PublishError::from)?;
    let privileged = known.first().is_some_and(Option::is_some);
    let moderator = known.get(1).is_some_and(Option::is_some);
    if privileged || (moderator && !ctx.rights.host) {
        return Err(CommandError::Forbidden(PROTECTED));
    }
    if ctx.session_rights.user_may_host(target).await? {
        return Err(CommandError::Forbidden(PROTECTED));
    }
    Ok(())
}

/// `mod.slow_mode`: one chat message per `seconds` per viewer; 0 is off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlowMode {
    pub seconds: u64,
}

impl SlowMode {
    /// `seconds`: an integer from 0 (off) to 3600; required.
    pub(crate) fn parse(data: Fields<'_>) -> Result<SlowMode, CommandError> {
        Ok(SlowMode {
            seconds: data.integer_in("seconds", 0..=MAX_SLOW_MODE_SECS, None)?,
        })
    }

    /// Publishes `moderation.slow_mode` and keeps it in the snapshot.
    pub(crate) async fn apply(self, ctx: &Context<'_>) -> Result<Ack, CommandError> {
        let publication = Publication::new("moderation.slow_mode", json!({ "seconds": self.seconds }))
            .set_state("slow_mode", json!(self.seconds));
        let change = ModChange::Set("slow_mode".into(), self.seconds.to_string());
        ctx.publish(publication, &[change]).await
    }
}

/// `mod.blocked_words`: the complete new list (empty clears it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockedWords {
    pub words: Vec<String>,
}

impl BlockedWords {
    pub(crate) fn parse(data: Fields<'_>) -> Result<BlockedWords, CommandError> {
        let list = data
            .get("words")?
            .and_then(Field::list)
            .ok_or_else(|| CommandError::bad("`words` must be a list"))?;
        let words: Option<Vec<String>> = list
            .iter()
            .map(|w| {
                w.as_str()
                    .filter(|s| !s.is_empty() && s.len() <= MAX_BLOCKED_WORD_BYTES)
                    .map(str::to_string)
            })
            .collect();
        match words {
            Some(words) if words.len() <= MAX_BLOCKED_WORDS => Ok(BlockedWords { words }),
            _ => Err(CommandError::bad(format!(
                "`words`: up to {MAX_BLOCKED_WORDS} strings of 1 to {MAX_BLOCKED_WORD_BYTES} bytes"
            ))),
        }
    }

    /// Publishes `internal.blocked_words` (never sent to clients).
    pub(crate) async fn apply(self, ctx: &Context<'_>) -> Result<Ack, CommandError> {
        let list = json!(self.words);
        let change = ModChange::Set("blocked_words".into(), list.to_string());
        let publication = Publication::new("internal.blocked_words", json!({ "words": list }));
        ctx.publish(publication, &[change]).await
    }
}
