//! What the end-to-end adapter tests share: the `hello` runbook (an approval, then `echo`),
//! waiting for a condition, and the sandbox cluster's pods.

#![allow(dead_code)] // each test binary uses a different part of this module

use runbot_sandbox::kube::{Behavior, FakeCluster};
use serde_json::Value;
use std::time::{Duration, Instant};

/// A team runbook that needs one approval, then says hello to its target.
pub const RUNBOOKS: &str = r#"
[runbooks.hello]
summary = "Says hello after an approval"
target = "service"
mutating = true

[[runbooks.hello.steps]]
name = "approve"
kind = "approval"

[[runbooks.hello.steps]]
name = "greet"
kind = "command"
argv = ["echo", "hello {target}"]
timeout = "30s"
"#;

/// `[services.promotions]` (alias `promotions-api`, default environment `prod`) with its
/// `prod` environment on the `promotions-api` Deployment in namespace `ns`.
pub fn promotions_service(ns: &str) -> String {
    format!(
        r#"[services.promotions]
aliases = ["promotions-api"]
default_env = "prod"
[services.promotions.environments.prod]
namespace = "{ns}"
selector = "app=promotions-api"
deployment = "promotions-api"
"#
    )
}

/// Whether a pod object says Ready.
pub fn ready(p: &Value) -> bool {
    p["status"]["conditions"].as_array().is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// Polls `f` until it holds; fails naming `what` after 30 s.
pub async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(30), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Makes the second pod in `ns` crash-loop (a cannot-connect log line); returns its name.
pub fn sick_pod(c: &FakeCluster, ns: &str) -> String {
    let pods = c.pods(ns);
    let name = pods[1]["metadata"]["name"].as_str().unwrap_or_default().to_string();
    c.behave_pod(ns, &name, Behavior::CrashLoop { exit_code: 3, logs: vec!["FATAL: cannot connect to promotions-db:5432".into()] });
    name
}

/// The start of an end-to-end test's config: a SQLite store in `dir`, the engine as
/// `instance` with [`RUNBOOKS`] (written to `dir/runbooks.toml`), 50 ms updates, quotas
/// out of the way.
pub fn preamble(dir: &std::path::Path, instance: &str) -> String {
    std::fs::write(dir.join("runbooks.toml"), RUNBOOKS).expect("write runbooks.toml");
    format!(
        "[store]\nurl = \"sqlite://{db}\"\n\
         [engine]\ninstance = \"{instance}\"\nrunbooks = \"runbooks.toml\"\nupdate_interval_ms = 50\n\
         [limits]\nper_identity_per_minute = 1000\nper_channel_per_minute = 1000\n",
        db = dir.join("runbot.db").display()
    )
}

/// Writes a secret into `dir/name`; returns its reference (`file:PATH`).
pub fn secret_file(dir: &std::path::Path, name: &str, value: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, value).expect("write secret");
    format!("file:{}", p.display())
}
