//! The adapters' integration tests against the sandbox's fakes and real servers on loopback,
//! one test binary: each module is one adapter or concern.

mod alerts;
mod backup_catalog;
mod common;
mod discord;
mod discord_gateway;
mod discord_inbound;
mod github;
mod http_check;
mod kube_driver;
mod mirror;
mod pitr;
mod registry;
mod slack;
