//! The emulated world shared by the tests and `runbot demo`: the demo's config, its runbooks
//! and the local files they act on, and a fake Kubernetes API server ([`kube`]). Slack,
//! Discord, GitHub and the helm/docker stand-ins join it with their issues.

pub mod demo;
pub mod github;
pub mod kube;
pub mod pitr;
pub mod registry;
pub mod slack;
pub mod s3;
pub mod standins;
pub mod smoke;
