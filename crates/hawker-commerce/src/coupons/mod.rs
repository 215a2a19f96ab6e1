//! Coupon drops: the host announces N coupons for a moment of the stream;
//! viewers claim them during a window; a claimed coupon is applied (and
//! marked used) by the settlement writer when its owner buys.
//!
//! - **Exactly once across nodes.** A drop is a row in `coupon_drop`; every
//!   node's scheduler calls [`fire_due_drops`], which claims due rows with
//!   `for update skip locked` and changes them in the same transaction that
//!   queues their room events in the hub's durable outbox.
//! - **Never more claims than coupons.** A claim bumps `coupon_drop.claimed`
//!   with a conditional update (`claimed < total`), backed by the
//!   `coupon_drop_no_overclaim` check; one claim per viewer (or
//!   `per_viewer_limit`) is the `coupon_claim_per_viewer` unique key.
//! - **Cheap refusals.** Once a drop is exhausted, refusals are answered from
//!   a flag (in process, and `hawker:coupon:{id}:exhausted` in Redis for the
//!   other nodes) without touching Postgres. Exhaustion is final: claims are
//!   never given back.
//!
//! By job: [`drop`](mod@drop) (a drop: validation, creation, the moment it drops),
//! [`schedule`] (dropping and ending on time), [`claim`](mod@claim) (a viewer's claim)
//! and [`gate`] (the Redis and in-process shortcuts that refuse claims on an
//! exhausted drop before Postgres).

pub mod claim;
pub mod drop;
pub mod gate;
pub mod schedule;

pub use claim::{claim, claim_with_flag, grant, list_claims_for_viewer, CouponClaim, CouponClaimPage};
pub use drop::{
    create_drop, get_drop, CouponDrop, NewCouponDrop, MAX_CLAIM_WINDOW_SECS, MAX_PER_VIEWER,
    MAX_SCHEDULE_AHEAD_SECS, MAX_TOTAL,
};
pub use schedule::fire_due_drops;
