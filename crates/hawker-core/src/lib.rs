//! Shared vocabulary of hawker: who is calling (roles, claims, tokens) and
//! the identifiers every other crate speaks in. It has no I/O: the server,
//! the hub and the commerce crates all depend on it, never the other way.

pub mod auth;

pub use auth::{Claims, Role, TokenError, TokenKeys};
