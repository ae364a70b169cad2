//! Shared helpers for runbot's scenario tests.

pub mod harness;
pub mod store_contract;
