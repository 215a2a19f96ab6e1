//! Who may host a room, asked again while a socket is open.
//!
//! `can_host` is decided when a socket opens, but a host can leave the
//! agency's roster while the socket stays open. The server hands each socket
//! a [`SessionRights`] (the agency's session-access rule for that token and
//! session), and the connection asks it again: before any command once its
//! last answer is older than `hub.host_recheck_secs`, and on a timer of that
//! period. A "no" demotes the socket to a viewer; an error refuses the
//! command (`unavailable`), so a host command is never carried out on an
//! answer older than the bound. The moderation commands also ask whether
//! their *target* may host the session (moderators may not act on hosts).

use futures_util::future::BoxFuture;

/// What a rights check answers, or why it could not.
pub type RightsFuture<'a> = BoxFuture<'a, Result<bool, hawker_core::Error>>;

/// The session's access rule, bound to one socket's token and session.
pub trait SessionRights: Send + Sync + 'static {
    /// Whether the socket's own user may host the session now.
    fn may_host(&self) -> RightsFuture<'_>;

    /// Whether `user` (a token `sub`) is a host who may host the session now
    /// (on the roster of the session's agency). Admins and agency accounts
    /// are recognised by the room when they open a socket in it.
    fn user_may_host<'a>(&'a self, user: &'a str) -> RightsFuture<'a>;
}
