//! runbot scenario tests: one binary, one module per concern.

mod backup;
mod config;
mod deploy;
mod engine;
mod integrity;
mod k8s_restart;
mod layout;
mod restore_e2e;
mod store;
