//! The agency side of hawker: MCN agencies, brands, hosts and their rosters,
//! brands' campaigns and the commission terms agreed in them
//! (`terms_in_force()`, batched for the ledger in [`terms`]), and scheduling — sessions, shifts
//! (`host_on_shift()`), go-live, handoffs, end.
//!
//! It owns the tables `agency`, `brand`, `host`, `agency_host`, `roster_invite`, `campaign`,
//! `commission_terms`, `live_session`, `shift` and `calendar_feed` (the
//! secret iCalendar feeds of [`calendar_feed`]), and holds the one
//! session-access rule ([`access::session_access`], with
//! [`access::SessionStatus`]) that the socket route and commerce use too.
//! Session events (`session.live`, `session.handoff`, `session.ended`) are
//! queued in the hub's durable outbox in the transaction that changes the
//! session, so each reaches the room exactly once.
//!
//! Everything here is a database function of the caller's [`Claims`]: the
//! HTTP layer (`hawker-server`) only parses, calls and maps errors. The
//! commission ledger, statements and live figures are in `hawker-ledger`.
//!
//! [`Claims`]: hawker_core::Claims

pub mod access;
pub mod bans;
pub mod calendar_feed;
pub mod campaigns;
pub mod demo;
pub mod discover;
pub mod ical;
pub mod page;
pub mod room_rights;
pub mod roster;
pub mod schedule;
pub mod session_cache;
pub mod terms;
pub mod time;

pub use access::{SessionAccess, SessionRole, SessionStatus};
pub use hawker_core::error::{Error, Result};
