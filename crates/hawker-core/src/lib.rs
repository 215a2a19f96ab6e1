//! Shared vocabulary of hawker: who is calling (roles, claims, tokens) and
//! the identifiers every other crate speaks in. It does no I/O
//! itself (the [`error`] module only classifies database and Redis errors): the server,
//! the hub and the commerce crates all depend on it, never the other way.

pub mod auth;
pub mod error;
pub mod text;
pub mod text_schema;
pub mod ticks;
mod verified;
pub mod wire;

pub use auth::{Claims, Role, TokenError, TokenKeys};
pub use error::{DbFailure, Error};
