//! `runbot demo`: writes a self-contained world into a state directory — a config (SQLite
//! store, console on 127.0.0.1, approver identities), a runbooks file using the shipped
//! step kinds, the local cache directory those runbooks inspect and flush, the promotions Helm
//! chart and a `helm` that is runbot itself (multi-call: the sandbox's helm stand-in) — and
//! starts the sandbox world ([`start`]): the Kubernetes API with the `promotions-api`
//! Deployment (3 replicas in `promotions-ns`, one of them failing its liveness probe) for
//! `/ops restart promotions-api`; a container registry holding v1.2.4, v1.2.5 and v1.2.6; a
//! GitHub whose CI is green on main at the commit those tags point at; and a health endpoint
//! that follows the running image. v1.2.4 runs, v1.2.5 is healthy, v1.2.6 crashes on start:
//! deploy, break, roll back.

use crate::github::{self, FakeGitHub};
use crate::kube::{Behavior, FakeCluster, Timing};
use crate::registry::FakeRegistry;
use crate::smoke::SmokeServer;
use runbot_commands::setup::{Doing, SetupError, SetupResult, ensure};
use std::path::{Path, PathBuf};

const CONFIG: &str = include_str!("config.toml");
const RUNBOOKS: &str = include_str!("runbooks.toml");

pub const NAMESPACE: &str = "promotions-ns";
pub const DEPLOYMENT: &str = "promotions-api";
pub const RELEASE: &str = "promotions-release";
pub const REPO: &str = "acme/promotions";
/// The versions the demo's registry holds; the first runs at start, the last crashes on start.
pub const VERSIONS: [&str; 3] = ["v1.2.4", "v1.2.5", "v1.2.6"];
const CRASHING: &str = "v1.2.6";
const COMMIT: &str = "5e1f4c2a9d3b7e6f8a0c1d2e3f405162738495a6";

/// The running sandbox world of the demo.
pub struct World {
    pub cluster: FakeCluster,
    pub github: FakeGitHub,
    pub registry: FakeRegistry,
    pub smoke: SmokeServer,
}

impl World {
    /// `promotions-api` without tag, in the demo registry.
    pub fn image(&self) -> String {
        format!("{}/promotions-api", self.registry.host())
    }

    pub async fn shutdown(self) {
        self.smoke.shutdown().await;
        self.github.shutdown().await;
        self.registry.shutdown().await;
        self.cluster.shutdown().await;
    }
}

/// Starts the demo world on free loopback ports with human-watchable timing.
pub async fn start() -> SetupResult<World> {
    let registry = FakeRegistry::start(([127, 0, 0, 1], 0).into()).await.doing("starting the sandbox registry")?;
    for v in VERSIONS {
        registry.push("promotions-api", v);
    }
    let image = format!("{}/promotions-api", registry.host());
    let cluster = start_cluster_with(Timing::demo(), &format!("{image}:{}", VERSIONS[0])).await?;
    cluster.behave_image(
        &format!("{image}:{CRASHING}"),
        Behavior::CrashLoop {
            exit_code: 1,
            logs: vec!["INFO  promotions-api v1.2.6 starting".into(), "panic: config key PROMO_RULES is missing".into()],
        },
    );
    let github = FakeGitHub::start(([127, 0, 0, 1], 0).into(), github::Timing::demo()).await.doing("starting the sandbox GitHub")?;
    github.add_workflow(REPO, "ci.yml", "CI", &[]);
    github.set_branch(REPO, "main", COMMIT);
    for v in VERSIONS {
        github.add_tag(REPO, v, COMMIT, true);
    }
    github.push_run(REPO, "ci.yml", "main", COMMIT, "push", "completed", Some("success"));
    let bad = format!(":{CRASHING}");
    let smoke = SmokeServer::following_deployment(([127, 0, 0, 1], 0).into(), &cluster, NAMESPACE, DEPLOYMENT, move |img| !img.ends_with(&bad))
        .await
        .doing("starting the sandbox health endpoint")?;
    Ok(World { cluster, github, registry, smoke })
}

/// The demo cluster on a free loopback port with `timing`: `promotions-api` on `image` with 3
/// replicas, one of which fails its liveness probe (tests use [`Timing::fast`]).
pub async fn start_cluster_with(timing: Timing, image: &str) -> SetupResult<FakeCluster> {
    let cluster = FakeCluster::start(([127, 0, 0, 1], 0).into(), timing.clone()).await?;
    cluster.deploy(NAMESPACE, DEPLOYMENT, image, 3);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let first = loop {
        let mut names: Vec<String> = cluster.pods(NAMESPACE).iter().filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string)).collect();
        names.sort();
        if names.len() == 3 {
            break names.remove(0);
        }
        ensure(std::time::Instant::now() < deadline, || "the sandbox cluster did not create the demo pods".to_string())?;
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
        let sick_running =
            pods.iter().any(|p| p["metadata"]["name"] == first.as_str() && !p["status"]["containerStatuses"][0]["state"]["running"].is_null());
        if others_ready && sick_running {
            break;
        }
        ensure(std::time::Instant::now() < deadline, || "the sandbox cluster did not start the demo pods".to_string())?;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tokio::time::sleep(timing.crash_every / 3 + std::time::Duration::from_millis(200)).await;
    Ok(cluster)
}

/// Where the demo's sandbox services listen, for its config.
pub struct Urls {
    pub kube: String,
    pub github: String,
    /// `127.0.0.1:PORT`
    pub registry: String,
    pub smoke: String,
}

impl World {
    pub fn urls(&self) -> Urls {
        Urls { kube: self.cluster.url(), github: self.github.url(), registry: self.registry.host(), smoke: self.smoke.url() }
    }
}

/// Prepares `state_dir` and returns the path of the demo config to serve, acting on the
/// sandbox at `urls`; `runbot` is the runbot executable, linked as the demo's `helm`.
pub fn prepare(state_dir: &Path, listen: &str, urls: &Urls, runbot: &Path) -> SetupResult<PathBuf> {
    std::fs::create_dir_all(state_dir).doing(format!("creating {}", state_dir.display()))?;
    let state = std::fs::canonicalize(state_dir)?;
    let state_str = state.to_str().ok_or_else(|| SetupError("the state directory path is not UTF-8".into()))?;
    if state_str.contains(['"', '\\', '\n']) {
        return Err(SetupError("the state directory path must not contain quotes, backslashes or newlines".to_string()));
    }
    let cache = state.join("cache/promotions");
    std::fs::create_dir_all(&cache)?;
    // A few cache files for the flush runbook to find; refilled on every start.
    for i in 1..=3 {
        std::fs::write(cache.join(format!("page-{i}.bin")), vec![b'x'; 1024 * i])?;
    }
    // The promotions chart, following the sandbox chart convention (see `standins`).
    let chart = state.join("charts/promotions");
    std::fs::create_dir_all(&chart)?;
    std::fs::write(chart.join("Chart.yaml"), "apiVersion: v2\nname: promotions\nversion: 0.3.1\nappVersion: \"1.2.4\"\n")?;
    std::fs::write(
        chart.join("values.yaml"),
        format!("deployment: {DEPLOYMENT}\nreplicaCount: 3\nimage:\n  repository: {}/promotions-api\n  tag: {}\n", urls.registry, VERSIONS[0]),
    )?;
    // runbot answers as the sandbox's helm when called by that name.
    let bin = state.join("bin");
    std::fs::create_dir_all(&bin)?;
    let helm = bin.join("helm");
    let _ = std::fs::remove_file(&helm);
    std::os::unix::fs::symlink(runbot, &helm).doing(format!("linking {} as {}", runbot.display(), helm.display()))?;
    let config = CONFIG
        .replace("@STATE@", state_str)
        .replace("@LISTEN@", listen)
        .replace("@KUBE@", &urls.kube)
        .replace("@GITHUB@", &urls.github)
        .replace("@REGISTRY@", &urls.registry)
        .replace("@SMOKE@", &urls.smoke);
    let path = state.join("runbot.toml");
    std::fs::write(&path, config)?;
    std::fs::write(state.join("runbooks.toml"), RUNBOOKS)?;
    Ok(path)
}

/// Installs the promotions release (revision 1, the version running at start) with the demo's
/// `helm`, as a team would have it before runbot arrives.
pub fn install_release(state_dir: &Path, kube_url: &str) -> SetupResult<()> {
    let state = std::fs::canonicalize(state_dir)?;
    let chart = state.join("charts/promotions");
    let out = std::process::Command::new(state.join("bin/helm"))
        .args(["upgrade", "--install", RELEASE])
        .arg(&chart)
        .args(["--namespace", NAMESPACE, "--kube-apiserver", kube_url])
        .output()
        .doing("running the demo's helm")?;
    ensure(out.status.success(), || format!("installing {RELEASE}: {}", String::from_utf8_lossy(&out.stderr).trim()))?;
    Ok(())
}

/// The demo runbooks text (for tests that check it stays valid).
pub fn runbooks() -> &'static str {
    RUNBOOKS
}
