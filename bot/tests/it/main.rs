//! runbot's end-to-end tests against the real binary, one test binary (fewer, smaller links
//! than one binary per file): each module is one concern.

mod audit_anchors;
mod browser;
mod cli;
mod common;
mod config_reference;
mod connections;
mod console;
mod console_auth;
mod crash_recovery;
mod discord;
mod discord_gateway;
mod inbox;
mod liveness;
mod operate;
mod replicas;
mod secrets;
