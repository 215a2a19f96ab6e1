//! A purchase, top-down in three files:
//!
//! 1. [`entry`]: `place_order` checks the request, asks the gate, and answers
//!    after the commit; a repeated idempotency key is replayed.
//! 2. [`gate`]: the admission gate in Redis, and the only code that knows the
//!    reservation format. It answers refusals and repeats without Postgres
//!    and reserves units for the rest; the reconciler releases what never
//!    settled.
//! 3. [`settle`]: the batcher and the commit — one transaction per batch,
//!    then the gate and the room are told.
//!
//! [`admission`] groups the gate's calls: attempts that arrive while one is
//! under way go to Redis together. [`mirror`] answers for a deal that sold
//! out without Redis: the node's own copy of what its gate still lets through.
//!
//! [`decide`] is the commit's one pure step: who gets what in a batch.
//! The order type is [`crate::order`], prices [`crate::pricing`], running
//! figures [`crate::stock`].

mod admission;
pub mod decide;
pub mod entry;
pub mod gate;
mod mirror;
pub mod settle;

pub use entry::{
    bad_idempotency_key, place_order, request_hash, validate_idempotency_key, PlaceOrder, Placed,
    MAX_QUANTITY,
};
