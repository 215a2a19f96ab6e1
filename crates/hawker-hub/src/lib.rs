//! The real-time hub: one room per live session, WebSocket delivery to the
//! viewers connected to this node, and fan-out between nodes through Redis.
//!
//! How an event travels:
//! 1. Anyone (a socket command, the commerce crate) calls [`Hub::publish`].
//!    One Lua script in Redis gives it the room's next **offset**, appends
//!    it to the room's capped history stream, applies its snapshot state
//!    changes and PUBLISHes it — one atomic step, so offsets are gapless and
//!    ordered per room ([`store`]).
//! 2. Each node holds one Redis subscriber connection ([`subscriber`]),
//!    subscribed to a room's channel only while the node has someone in it.
//! 3. A per-room task on each node ([`room`]) puts events in offset order
//!    (filling gaps from the history), encodes nothing — the bytes from
//!    Redis are the frame — and pushes one shared copy into each
//!    connection's byte-bounded outbox ([`outbox`]), where priority lanes
//!    decide what may be dropped.
//! 4. Each connection's task ([`connection`]) drains its outbox, writes
//!    frames with one flush per batch, and reads client commands.

pub mod config;
pub mod connection;
pub mod counters;
pub mod durable;
pub mod event;
pub mod hub;
pub mod metrics;
pub mod moderation;
pub mod outbox;
pub mod protocol;
pub mod room;
pub mod store;
pub mod subscriber;

pub use config::HubConfig;
pub use event::{Lane, Publication, StateChange};
pub use hub::{CommandContext, CommandError, CommandHandler, Hub, Member, PublishError};
pub use protocol::close_code;
