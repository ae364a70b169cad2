//! The sandbox's integration tests (the fake Kubernetes API with kube-rs and kubectl, the S3
//! server, the stand-ins, the deploy manifests), one test binary.

mod deploy;
mod deploy_manifests;
mod kube_api;
mod kubectl;
mod s3_memory;
mod standins;
