//! Shared helpers for runbot's scenario tests.

pub mod store_contract;
pub mod harness;
