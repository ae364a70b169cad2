//! The emulated world shared by the tests and `runbot demo`: the demo's config, its runbooks
//! and the local files they act on, a fake Kubernetes API server ([`kube`]), fake Slack,
//! Discord, GitHub and container registry, an S3 server, a real PITR world, a health endpoint,
//! and the helm/docker stand-ins.

pub mod demo;
pub mod discord;
pub mod github;
pub mod kube;
pub mod pitr;
pub mod registry;
pub mod s3;
pub mod slack;
pub mod smoke;
pub mod standins;
