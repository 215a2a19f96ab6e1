//! The brand catalog: products and their SKUs (variants with attributes,
//! a price, images and a status), stock movements (every change of stock on
//! hand, with who, when, how many and why; the database keeps the total equal
//! to their sum), bulk import from CSV or JSON lines, and the SKUs of
//! campaigns with their price floors and allocations — the rule that only
//! campaign SKUs enter a lineup and that deals take stock only under a
//! campaign ([`campaign_skus`]).
//!
//! It owns the tables `product`, `sku`, `stock_movement` and `campaign_sku`.
//! Campaigns themselves (who proposed, accepted, the dates) are the agency
//! side's (`hawker_agency::campaigns`), read through its functions; commerce
//! (a deal's units, and those of auction and giveaway orders that expire)
//! and the live formats (an auction's or a giveaway's units) take and give
//! back units through [`campaign_skus::take_units`] and
//! [`campaign_skus::give_back`], naming the source.
//!
//! Everything here is a database function of the caller's claims: the HTTP
//! layer only parses, calls and maps errors.

pub mod access;
pub mod campaign_skus;
pub mod demo;
pub mod import;
pub mod products;
pub mod schema;
pub mod stock;
pub mod validate;

pub use hawker_core::error::{Error, Result};
