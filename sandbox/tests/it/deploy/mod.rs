//! Helpers of `deploy_manifests.rs`, by role.

pub mod chart;
pub mod exercise;
pub mod kubectl;
pub mod objects;
pub mod rbac;
