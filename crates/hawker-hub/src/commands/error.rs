//! Why a client frame or command was refused: one enum, one stable code per
//! variant (the `code` of the `error` frame, listed in `docs/protocol.md`).

use crate::hub::PublishError;
use crate::moderation::ChatRefusal;

/// A refused frame or command; becomes an `error` frame.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// `bad_json`: not JSON, no string `type`, or a non-string `id`.
    #[error("not a command: {0}")]
    BadJson(String),
    /// `frame_too_large`: a text frame above `hub.max_frame_bytes`.
    #[error("frames are limited to {max_bytes} bytes")]
    FrameTooLarge { max_bytes: usize },
    /// `binary_unsupported`: a binary frame.
    #[error("send JSON text frames")]
    BinaryUnsupported,
    /// `unknown_command`: no command has this `type`.
    #[error("unknown command type `{0}`")]
    UnknownCommand(String),
    /// `bad_command`: a field is missing, of the wrong type or out of range.
    #[error("{0}")]
    BadCommand(String),
    /// `too_long`: a text above its limit.
    #[error("`{field}` is limited to {max_chars} characters")]
    TooLong { field: &'static str, max_chars: usize },
    /// `bad_quantity`: `deal.buy`'s `quantity` is not an integer.
    #[error("{0}")]
    BadQuantity(String),
    /// `forbidden`: the sender's role may not send this command.
    #[error("{0}")]
    Forbidden(&'static str),
    /// `muted`, `blocked_word`, `slow_mode`, `rate_limited`: chat refused.
    #[error("{}", .0.message())]
    Chat(ChatRefusal),
    /// `banned`: when joining, the user is banned from the room.
    #[error("you are banned from this room")]
    Banned,
    /// `session_ended`: when joining, the room's session has ended.
    #[error("the session has ended")]
    SessionEnded,
    /// `unavailable`: Redis did not answer; the command was not carried
    /// out, or its outcome is unknown.
    #[error("{0}")]
    Unavailable(String),
    /// A refusal of the commerce crate (`deal.buy`, `coupon.claim`), with
    /// its own stable code (`sold_out`, `cap_exceeded`, `not_found`, ...).
    /// An `internal` error is logged when converted and never shown.
    #[error("{}", domain_message(.0))]
    Domain(hawker_core::Error),
}

impl CommandError {
    /// The server's own failure behind this refusal, if it is one (the
    /// connection logs it with the room, the user and the command).
    pub fn internal(&self) -> Option<&anyhow::Error> {
        match self {
            CommandError::Domain(hawker_core::Error::Internal(inner)) => Some(inner),
            _ => None,
        }
    }

    /// The stable, machine-readable code of the error frame.
    pub fn code(&self) -> &'static str {
        match self {
            CommandError::BadJson(_) => "bad_json",
            CommandError::FrameTooLarge { .. } => "frame_too_large",
            CommandError::BinaryUnsupported => "binary_unsupported",
            CommandError::UnknownCommand(_) => "unknown_command",
            CommandError::BadCommand(_) => "bad_command",
            CommandError::TooLong { .. } => "too_long",
            CommandError::BadQuantity(_) => "bad_quantity",
            CommandError::Forbidden(_) => "forbidden",
            CommandError::Chat(refusal) => refusal.code(),
            CommandError::Banned => "banned",
            CommandError::SessionEnded => "session_ended",
            CommandError::Unavailable(_) => "unavailable",
            CommandError::Domain(e) => e.code(),
        }
    }

    /// A `bad_command` with a message naming the field.
    pub(crate) fn bad(message: impl Into<String>) -> Self {
        CommandError::BadCommand(message.into())
    }
}

fn domain_message(e: &hawker_core::Error) -> String {
    match e {
        hawker_core::Error::Internal(_) => "an internal error occurred; it has been logged".to_string(),
        e => e.to_string(),
    }
}

impl From<PublishError> for CommandError {
    fn from(e: PublishError) -> Self {
        CommandError::Unavailable(e.to_string())
    }
}

impl From<ChatRefusal> for CommandError {
    fn from(refusal: ChatRefusal) -> Self {
        CommandError::Chat(refusal)
    }
}

impl From<hawker_core::Error> for CommandError {
    fn from(e: hawker_core::Error) -> Self {
        CommandError::Domain(e)
    }
}

impl CommandError {
    /// The `error` frame of this refusal, answering the command `id`.
    pub fn frame(&self, id: Option<&str>) -> String {
        crate::protocol::error(id, self.code(), &self.message())
    }

    /// The frame's `message`: what `Display` writes, borrowed where it is a
    /// string already (a refused `deal.buy` is answered tens of thousands of
    /// times a second in a stampede, and formatting it twice showed).
    fn message(&self) -> std::borrow::Cow<'_, str> {
        use hawker_core::Error as Domain;
        use std::borrow::Cow;
        match self {
            CommandError::BadCommand(m) | CommandError::BadQuantity(m) | CommandError::Unavailable(m) => {
                Cow::Borrowed(m)
            }
            CommandError::Forbidden(m) => Cow::Borrowed(m),
            CommandError::Domain(
                Domain::Invalid { message, .. }
                | Domain::Conflict { message, .. }
                | Domain::Forbidden { message },
            ) => Cow::Borrowed(message),
            other => Cow::Owned(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_keep_their_code_but_hide_their_message() {
        let e = CommandError::from(hawker_core::Error::Internal(anyhow::anyhow!("secret detail")));
        assert_eq!(e.code(), "internal");
        assert!(!e.to_string().contains("secret"), "{e}");
        let e = CommandError::from(hawker_core::Error::conflict("sold_out", "sold out"));
        assert_eq!((e.code(), e.to_string().as_str()), ("sold_out", "sold out"));
    }

    #[test]
    fn a_frame_message_is_what_display_writes() {
        let cases = [
            CommandError::bad("`quantity` is required"),
            CommandError::BadQuantity("`quantity` must be an integer".into()),
            CommandError::Unavailable("redis is slow".into()),
            CommandError::Forbidden("only the host may pin"),
            CommandError::Domain(hawker_core::Error::conflict("sold_out", "the deal is sold out")),
            CommandError::Domain(hawker_core::Error::invalid("bad_key", "a bad key")),
            CommandError::Domain(hawker_core::Error::forbidden("not yours")),
            CommandError::Domain(hawker_core::Error::Unavailable { what: "redis" }),
            CommandError::Domain(hawker_core::Error::Internal(anyhow::anyhow!("secret"))),
            CommandError::TooLong {
                field: "text",
                max_chars: 500,
            },
        ];
        for e in cases {
            assert_eq!(e.message(), e.to_string(), "{e:?}");
        }
    }

    #[test]
    fn chat_refusals_keep_their_codes() {
        for (refusal, code) in [
            (ChatRefusal::Muted { until_ms: 1 }, "muted"),
            (ChatRefusal::SlowMode { wait_ms: 1 }, "slow_mode"),
            (ChatRefusal::RateLimited { wait_ms: 1 }, "rate_limited"),
            (ChatRefusal::BlockedWord, "blocked_word"),
        ] {
            assert_eq!(CommandError::from(refusal).code(), code);
        }
    }
}
