//! runbot scenario tests: one binary, one module per concern.

mod store;
mod engine;
mod layout;
mod config;
mod k8s_restart;
mod backup;
mod integrity;
mod restore_e2e;
mod deploy;
