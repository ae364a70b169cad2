//! The emulated world shared by the tests and `runbot demo`. Today: the demo's config, its
//! runbooks and the local files they act on. The emulated Kubernetes API, Slack, Discord,
//! GitHub and the helm/docker stand-ins join it with their issues.

pub mod demo;
