//! `runbot demo`: writes a self-contained world into a state directory — a config (SQLite
//! store, console on 127.0.0.1, two approver identities), a runbooks file using the shipped
//! step kinds, and the local cache directory those runbooks inspect and flush — and starts the
//! sandbox's Kubernetes API with the `promotions-api` Deployment (3 replicas in
//! `promotions-ns`, one of them failing its liveness probe) for `/ops restart promotions-api`.

use crate::kube::{Behavior, FakeCluster, Timing};
use anyhow::Context;
use std::path::{Path, PathBuf};

const CONFIG: &str = include_str!("config.toml");
const RUNBOOKS: &str = include_str!("runbooks.toml");

pub const NAMESPACE: &str = "promotions-ns";
pub const DEPLOYMENT: &str = "promotions-api";
pub const IMAGE: &str = "registry.local/promotions-api:1.4.2";

/// Starts the demo cluster on a free loopback port with human-watchable timing:
/// `promotions-api` with 3 replicas, one of which fails its liveness probe.
pub async fn start_cluster() -> anyhow::Result<FakeCluster> {
    start_cluster_with(Timing::demo()).await
}

/// [`start_cluster`] with other timing (tests use [`Timing::fast`]).
pub async fn start_cluster_with(timing: Timing) -> anyhow::Result<FakeCluster> {
    let cluster = FakeCluster::start(([127, 0, 0, 1], 0).into(), timing.clone()).await?;
    cluster.deploy(NAMESPACE, DEPLOYMENT, IMAGE, 3);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let first = loop {
        let mut names: Vec<String> =
            cluster.pods(NAMESPACE).iter().filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string)).collect();
        names.sort();
        if names.len() == 3 {
            break names.remove(0);
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "the sandbox cluster did not create the demo pods");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    cluster.behave_pod(
        NAMESPACE,
        &first,
        Behavior::LivenessFailing {
            logs: vec![
                "WARN  pool: all 20 connections to promotions-db busy for 30s".into(),
                "ERROR http: /healthz timed out after 5s (thread pool exhausted)".into(),
            ],
        },
    );
    // Serve the world as described: the two others Ready and the sick pod running, one
    // liveness period in (so its first `Unhealthy` event is there).
    loop {
        let pods = cluster.pods(NAMESPACE);
        let ready = |p: &serde_json::Value| {
            p["status"]["conditions"].as_array().is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
        };
        let others_ready = pods.iter().filter(|p| p["metadata"]["name"] != first.as_str() && ready(p)).count() == 2;
        let sick_running = pods
            .iter()
            .any(|p| p["metadata"]["name"] == first.as_str() && !p["status"]["containerStatuses"][0]["state"]["running"].is_null());
        if others_ready && sick_running {
            break;
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "the sandbox cluster did not start the demo pods");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tokio::time::sleep(timing.crash_every / 3 + std::time::Duration::from_millis(200)).await;
    Ok(cluster)
}

/// Prepares `state_dir` and returns the path of the demo config to serve, acting on the
/// Kubernetes API at `kube_url`.
pub fn prepare(state_dir: &Path, listen: &str, kube_url: &str) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(state_dir).with_context(|| format!("creating {}", state_dir.display()))?;
    let state = std::fs::canonicalize(state_dir)?;
    let state_str = state.to_str().context("the state directory path is not UTF-8")?;
    if state_str.contains(['"', '\\', '\n']) {
        anyhow::bail!("the state directory path must not contain quotes, backslashes or newlines");
    }
    let cache = state.join("cache/promotions");
    std::fs::create_dir_all(&cache)?;
    // A few cache files for the flush runbook to find; refilled on every start.
    for i in 1..=3 {
        std::fs::write(cache.join(format!("page-{i}.bin")), vec![b'x'; 1024 * i])?;
    }
    let config = CONFIG.replace("@STATE@", state_str).replace("@LISTEN@", listen).replace("@KUBE@", kube_url);
    let path = state.join("runbot.toml");
    std::fs::write(&path, config)?;
    std::fs::write(state.join("runbooks.toml"), RUNBOOKS)?;
    Ok(path)
}

/// The demo runbooks text (for tests that check it stays valid).
pub fn runbooks() -> &'static str {
    RUNBOOKS
}
