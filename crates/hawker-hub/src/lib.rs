//! The real-time hub: one room per live session, WebSocket delivery to the
//! viewers connected to this node, and fan-out between nodes through Redis.
//!
//! How a client command travels (socket → command → publish):
//! 1. The connection's reader task ([`connection`]) reads a text frame and parses
//!    it once into a typed [`Command`] ([`commands`]; one file per concern:
//!    chat, host, moderation, commerce). A refusal is a [`CommandError`]
//!    with a stable code.
//! 2. Applying the command checks the room's rules and publishes an event
//!    with [`Hub::publish`]; `deal.buy` and `coupon.claim` go instead to the
//!    [`CommerceCommands`] the server handed the socket (the hub holds no
//!    reference to commerce, which holds the hub).
//!
//! How an event travels (publish → subscriber → room → send queue → socket):
//! 1. Anyone (a socket command, the commerce crate) calls [`Hub::publish`].
//!    One Lua script in Redis gives it the room's next **offset**, appends
//!    it to the room's capped history stream, applies its snapshot state
//!    changes and PUBLISHes it — one atomic step, so offsets are gapless and
//!    ordered per room ([`store`]). Events that must follow a database
//!    change go through the durable room outbox first ([`durable`]).
//! 2. Each node holds one Redis subscriber connection ([`subscriber`]),
//!    subscribed to a room's channel only while the node has someone in it.
//! 3. A per-room task on each node ([`room`]) puts events in offset order
//!    (filling gaps from the history), encodes nothing — the bytes from
//!    Redis are the frame — and pushes one shared copy into each
//!    connection's byte-bounded send queue ([`send_queue`]), where priority
//!    lanes decide what may be dropped.
//! 4. Each connection's writer ([`connection`]), woken by its send queue
//!    alone, drains it and writes frames with one flush per batch.

pub mod commands;
pub mod config;
pub mod connection;
pub mod counters;
pub mod durable;
pub mod event;
pub mod hub;
mod ingest;
pub mod keys;
pub mod metrics;
pub mod moderation;
pub mod notices;
pub mod presence;
pub mod protocol;
mod publisher;
pub mod ratelimit;
pub mod retention;
pub mod rights;
pub mod room;
pub mod send_queue;
pub mod store;
pub mod subscriber;

pub use commands::{
    Ack, Bid, BidReply, Buy, BuyReply, Claim, ClaimReply, Command, CommandContext, CommandError,
    CommentOrder, CommerceCommands, CommerceFuture, Enter, EnterReply, GroupJoin, GroupJoinReply,
};
pub use config::HubConfig;
pub use event::{Lane, Publication, StateChange};
pub use hub::{Hub, Member, PublishError};
pub use notices::{Notice, StoredNotice};
pub use protocol::close_code;
pub use rights::{RightsFuture, SessionRights};
