//! Integration tests of the hawker server: one binary, many modules, and
//! what they share in `support`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agency;
mod auctions;
mod auth;
mod authz_matrix;
mod calendar;
mod campaigns;
mod catalog;
mod commerce;
mod config;
mod console;
mod coupons;
mod database;
mod discovery;
mod first_run;
mod health;
mod http;
mod hub;
mod hub_security;
mod journey;
mod listener;
mod money;
mod notices;
mod order_faults;
mod paging;
mod payments;
mod process;
mod reports;
mod retention;
mod roster;
mod security;
mod shutdown;
mod socket_conformance;
mod sourced;
mod support;
