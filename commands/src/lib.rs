//! runbot's core: the `/ops` grammar, the durable runbook engine with approvals, locks and
//! audit, and the narrow port traits (chat, store, clock, step kinds) that adapters implement.
//! This crate depends on no SDK crate; a test in `tests/` keeps it that way.

pub mod alerts;
pub mod audit;
pub mod config;
pub mod engine;
pub mod grammar;
pub mod limits;
pub mod message;
pub mod metrics;
pub mod model;
pub mod ports;
pub mod runbook;
pub mod setup;
pub mod steps;
pub mod store_memory;
pub mod timeline;
