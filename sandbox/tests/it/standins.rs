//! The `helm` and `docker` stand-ins as programs (this crate's `helm`/`docker` bins), run with
//! argv like the real CLIs: `helm` against the fake Kubernetes API server — its release
//! Secrets read back by runbot's Kubernetes driver —, `docker` against a sandbox Swarm file.

use runbot_adapters::kubernetes::KubeCluster;
use runbot_adapters::kubernetes::helm::decode_release;
use runbot_commands::ports::{Cluster, HelmRevision};
use runbot_sandbox::kube::{Behavior, FakeCluster, Timing};
use runbot_sandbox::standins::encode_release;
use runbot_sandbox::standins::swarm::{SandboxSwarm, SwarmBehavior};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const NS: &str = "promotions-ns";
const DEPLOY: &str = "promotions-api";
const REPO: &str = "registry.example.com/promotions";
const RELEASE: &str = "promotions-release";

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn helm(cluster: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_helm"));
    cmd.args(args).env_remove("HELM_MAX_HISTORY").env_remove("HELM_NAMESPACE").env("HELM_KUBEAPISERVER", cluster);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().await.expect("run helm");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

/// A sandbox chart: `promotions` 0.3.1, appVersion 1.2.3, following the stand-in's convention.
fn chart(dir: &Path) -> String {
    let c = dir.join("promotions");
    std::fs::create_dir_all(&c).unwrap();
    std::fs::write(c.join("Chart.yaml"), "apiVersion: v2\nname: promotions\nversion: 0.3.1\nappVersion: \"1.2.3\"\n").unwrap();
    std::fs::write(
        c.join("values.yaml"),
        format!("# the sandbox convention\ndeployment: {DEPLOY}\nimage:\n  repository: {REPO}\n  tag: \"\"  # default: appVersion\n"),
    )
    .unwrap();
    c.display().to_string()
}

fn driver(c: &FakeCluster) -> KubeCluster {
    KubeCluster::from_url(&c.url(), Duration::from_secs(5)).expect("driver")
}

async fn history(c: &FakeCluster) -> Vec<HelmRevision> {
    driver(c).helm_history(NS, RELEASE).await.expect("helm history through the driver")
}

fn statuses(h: &[HelmRevision]) -> Vec<(u32, String, String)> {
    h.iter().map(|r| (r.revision, r.status.clone(), r.description.clone())).collect()
}

fn deployment_image(c: &FakeCluster) -> String {
    let d = c.object("apps/v1", "Deployment", NS, DEPLOY).expect("deployment");
    d.pointer("/spec/template/spec/containers/0/image").and_then(Value::as_str).unwrap_or("").to_string()
}

/// The pods that are not terminating: (image, Ready).
fn pods(c: &FakeCluster) -> Vec<(String, bool)> {
    c.pods(NS)
        .iter()
        .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
        .map(|p| {
            let image = p.pointer("/spec/containers/0/image").and_then(Value::as_str).unwrap_or("").to_string();
            let ready = p
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .is_some_and(|cs| cs.iter().any(|x| x["type"] == "Ready" && x["status"] == "True"));
            (image, ready)
        })
        .collect()
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A cluster with the Deployment running 2 Ready pods of 1.2.3 and a chart directory.
async fn world() -> (FakeCluster, tempfile::TempDir, String) {
    let c = FakeCluster::start("127.0.0.1:0".parse().unwrap(), Timing::fast()).await.expect("cluster");
    c.deploy(NS, DEPLOY, &format!("{REPO}:1.2.3"), 2);
    eventually("2 Ready pods", || {
        let p = pods(&c);
        p.len() == 2 && p.iter().all(|(_, r)| *r)
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let ch = chart(dir.path());
    (c, dir, ch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_upgrade_rolls_out_and_writes_helms_release_storage() {
    let (c, _dir, ch) = world().await;
    let url = c.url();
    let v = helm(&url, &["version", "--short"], &[]).await;
    assert_eq!(v.stdout, "v3.21.4+gsandbox\n");

    let install = helm(&url, &["upgrade", "--install", RELEASE, &ch, "-n", NS, "--wait", "--timeout", "30s"], &[]).await;
    assert_eq!(install.code, 0, "{}", install.stderr);
    assert!(install.stdout.starts_with(&format!("Release \"{RELEASE}\" does not exist. Installing it now.\nNAME: {RELEASE}\nLAST DEPLOYED: ")));
    assert!(install.stdout.ends_with(&format!("NAMESPACE: {NS}\nSTATUS: deployed\nREVISION: 1\nTEST SUITE: None\n")), "{}", install.stdout);

    let up =
        helm(&url, &["upgrade", "--install", RELEASE, &ch, "--namespace", NS, "--set", "image.tag=1.2.4", "--wait", "--timeout", "30s"], &[]).await;
    assert_eq!(up.code, 0, "{}", up.stderr);
    assert!(up.stdout.starts_with(&format!("Release \"{RELEASE}\" has been upgraded. Happy Helming!\nNAME: {RELEASE}\n")), "{}", up.stdout);
    assert!(up.stdout.contains("STATUS: deployed\nREVISION: 2\n"));
    // --wait returned only once the rollout was complete: every pod Ready on the new image.
    assert_eq!(deployment_image(&c), format!("{REPO}:1.2.4"));
    assert_eq!(pods(&c), vec![(format!("{REPO}:1.2.4"), true); 2]);

    // The release Secret, as helm's storage driver writes it.
    let s = c.object("v1", "Secret", NS, &format!("sh.helm.release.v1.{RELEASE}.v2")).expect("release secret v2");
    assert_eq!(s["type"], "helm.sh/release.v1");
    let labels = &s["metadata"]["labels"];
    assert_eq!(
        (labels["name"].as_str(), labels["owner"].as_str(), labels["status"].as_str(), labels["version"].as_str()),
        (Some(RELEASE), Some("helm"), Some("deployed"), Some("2"))
    );
    assert!(labels.get("modifiedAt").is_some(), "updated after the rollout: {labels}");
    let helm_text = base64_decode(s["data"]["release"].as_str().unwrap());
    let rev = decode_release(&helm_text).expect("decodes like runbot's driver");
    assert_eq!(
        (rev.revision, rev.status.as_str(), rev.chart.as_str(), rev.app_version.as_str(), rev.description.as_str()),
        (2, "deployed", "promotions-0.3.1", "1.2.3", "Upgrade complete")
    );
    assert_eq!(rev.value("image.tag").as_deref(), Some("1.2.4"));

    let h = history(&c).await;
    assert_eq!(statuses(&h), vec![(1, "superseded".into(), "Install complete".into()), (2, "deployed".into(), "Upgrade complete".into())]);
    // The chart's own values are stored with the revision (`chart.values`).
    assert_eq!(h[0].value("image.repository").as_deref(), Some(REPO));
    assert_eq!(h[1].value("image.tag").as_deref(), Some("1.2.4"));

    let json_out = helm(&url, &["history", RELEASE, "-n", NS, "-o", "json"], &[]).await;
    assert_eq!(json_out.code, 0, "{}", json_out.stderr);
    let rows: Value = serde_json::from_str(&json_out.stdout).expect("json");
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["revision"], 2);
    assert_eq!(rows[1]["status"], "deployed");
    assert_eq!(rows[1]["chart"], "promotions-0.3.1");
    assert_eq!(rows[1]["app_version"], "1.2.3");
    assert_eq!(rows[1]["description"], "Upgrade complete");
    assert!(chrono::DateTime::parse_from_rfc3339(rows[1]["updated"].as_str().unwrap()).is_ok());
    let mut keys: Vec<&String> = rows[0].as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["app_version", "chart", "description", "revision", "status", "updated"]);

    let table = helm(&url, &["history", RELEASE, "-n", NS], &[]).await;
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(lines.len(), 3);
    assert!(lines[0].starts_with("REVISION\tUPDATED"), "{}", lines[0]);
    assert!(
        lines[2].starts_with("2       \t") && lines[2].contains("\tdeployed  \tpromotions-0.3.1\t1.2.3      \tUpgrade complete"),
        "{}",
        table.stdout
    );
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).expect("base64")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_upgrade_then_rollback_zero_restores_the_previous_revision() {
    let (c, _dir, ch) = world().await;
    let url = c.url();
    for tag in ["1.2.3", "1.2.4"] {
        let r = helm(&url, &["upgrade", "--install", RELEASE, &ch, "-n", NS, "--set", &format!("image.tag={tag}"), "--wait"], &[]).await;
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    c.behave_image(&format!("{REPO}:1.2.5"), Behavior::CrashLoop { exit_code: 1, logs: vec!["panic: boom".into()] });
    let bad = helm(&url, &["upgrade", RELEASE, &ch, "-n", NS, "--set", "image.tag=1.2.5", "--wait", "--timeout", "1s"], &[]).await;
    assert_eq!(bad.code, 1);
    assert_eq!(bad.stderr, "Error: UPGRADE FAILED: context deadline exceeded\n");
    assert_eq!(bad.stdout, "");
    let h = history(&c).await;
    assert_eq!(
        statuses(&h),
        vec![
            (1, "superseded".into(), "Install complete".into()),
            (2, "deployed".into(), "Upgrade complete".into()),
            (3, "failed".into(), format!("Upgrade \"{RELEASE}\" failed: context deadline exceeded")),
        ]
    );
    assert_eq!(deployment_image(&c), format!("{REPO}:1.2.5"));

    // 0 = the latest revision − 1 (here 2, the last good one), whatever its status.
    let rb = helm(&url, &["rollback", RELEASE, "0", "-n", NS, "--wait", "--timeout", "30s"], &[]).await;
    assert_eq!((rb.code, rb.stdout.as_str(), rb.stderr.as_str()), (0, "Rollback was a success! Happy Helming!\n", ""));
    assert_eq!(deployment_image(&c), format!("{REPO}:1.2.4"));
    assert_eq!(pods(&c), vec![(format!("{REPO}:1.2.4"), true); 2]);
    let h = history(&c).await;
    assert_eq!(
        statuses(&h),
        vec![
            (1, "superseded".into(), "Install complete".into()),
            (2, "superseded".into(), "Upgrade complete".into()),
            (3, "failed".into(), format!("Upgrade \"{RELEASE}\" failed: context deadline exceeded")),
            (4, "deployed".into(), "Rollback to 2".into()),
        ]
    );
    assert_eq!(h[3].value("image.tag").as_deref(), Some("1.2.4"), "config copied from revision 2");
    assert_eq!(h[3].chart, "promotions-0.3.1");

    // Rolling back into the crashing revision fails the new revision, like helm.
    let rb = helm(&url, &["rollback", RELEASE, "3", "-n", NS, "--wait", "--timeout", "1s"], &[]).await;
    assert_eq!((rb.code, rb.stderr.as_str()), (1, format!("Error: release {RELEASE} failed: context deadline exceeded\n").as_str()));
    let last = history(&c).await.pop().unwrap();
    assert_eq!((last.revision, last.status.as_str()), (5, "failed"));
    assert_eq!(last.description, format!("Release \"{RELEASE}\" failed: context deadline exceeded"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_capped_and_pruned_revisions_cannot_be_rolled_back_to() {
    let (c, _dir, ch) = world().await;
    let url = c.url();
    for i in 0..5 {
        let tag = format!("1.3.{i}");
        let r = helm(&url, &["upgrade", "-i", RELEASE, &ch, "-n", NS, "--set", &format!("image.tag={tag}")], &[("HELM_MAX_HISTORY", "3")]).await;
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    assert_eq!(deployment_image(&c), format!("{REPO}:1.3.4"));
    let revs: Vec<u32> = history(&c).await.iter().map(|r| r.revision).collect();
    assert_eq!(revs, [3, 4, 5]);
    assert!(c.object("v1", "Secret", NS, &format!("sh.helm.release.v1.{RELEASE}.v2")).is_none());

    let r = helm(&url, &["rollback", RELEASE, "1", "-n", NS], &[]).await;
    assert_eq!((r.code, r.stderr.as_str()), (1, "Error: release has no 1 version\n"));
    let r = helm(&url, &["rollback", "nope", "-n", NS], &[]).await;
    assert_eq!((r.code, r.stderr.as_str()), (1, "Error: release: not found\n"));
    let r = helm(&url, &["history", "nope", "-n", NS, "-o", "json"], &[]).await;
    assert_eq!((r.code, r.stderr.as_str()), (1, "Error: release: not found\n"));

    // Without --wait: rolled back at once (revision 4 → image 1.3.3), status deployed.
    let r = helm(&url, &["rollback", RELEASE, "-n", NS, "--history-max", "3"], &[]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(deployment_image(&c), format!("{REPO}:1.3.3"));
    let h = history(&c).await;
    assert_eq!(statuses(&h)[2..], [(6, "deployed".into(), "Rollback to 4".into())]);
    assert_eq!(h.iter().map(|r| r.revision).collect::<Vec<_>>(), [4, 5, 6]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_errors_are_helms() {
    let (c, dir, ch) = world().await;
    let url = c.url();
    let r = helm(&url, &["upgrade", "--install", RELEASE, "./no-such-chart", "-n", NS], &[]).await;
    assert_eq!(r.code, 1);
    assert_eq!(r.stderr, "Error: path \"./no-such-chart\" not found\n");
    let r = helm(&url, &["upgrade", RELEASE, &ch, "-n", NS], &[]).await;
    assert_eq!(r.stderr, format!("Error: UPGRADE FAILED: \"{RELEASE}\" has no deployed releases\n"));
    let r = helm("http://127.0.0.1:1", &["history", RELEASE], &[]).await;
    assert_eq!(r.code, 1);
    assert_eq!(
        r.stderr,
        "Error: Kubernetes cluster unreachable: Get \"http://127.0.0.1:1/version\": dial tcp 127.0.0.1:1: connect: connection refused\n"
    );
    let r = helm(&url, &["upgrade", "--install", RELEASE, &ch, "--bogus"], &[]).await;
    assert_eq!((r.code, r.stderr.as_str()), (1, "Error: unknown flag: --bogus\n"));
    // A chart without image.repository breaks the sandbox convention: no revision is written.
    let bare = dir.path().join("bare");
    std::fs::create_dir_all(&bare).unwrap();
    std::fs::write(bare.join("Chart.yaml"), "apiVersion: v2\nname: bare\nversion: 1.0.0\n").unwrap();
    let r = helm(&url, &["upgrade", "--install", "bare", bare.to_str().unwrap(), "-n", NS], &[]).await;
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("image.repository is required"), "{}", r.stderr);
    assert!(driver(&c).helm_history(NS, "bare").await.unwrap().is_empty());
    // --kube-apiserver wins over the environment.
    let r = helm("http://127.0.0.1:1", &["--kube-apiserver", &url, "history", "nope", "-n", NS], &[]).await;
    assert_eq!(r.stderr, "Error: release: not found\n");
}

/// Release Secrets written directly with `encode_release` (as the lead's tests seed them)
/// are read by runbot's driver and by the stand-in alike, and the stand-in rolls back to them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_releases_round_trip() {
    let (c, _dir, _ch) = world().await;
    for (rev, status, tag) in [(1, "superseded", "1.2.4"), (2, "deployed", "1.2.5")] {
        let doc = json!({
            "name": RELEASE, "namespace": NS, "version": rev,
            "info": {"first_deployed": "2026-11-01T10:00:00Z", "last_deployed": format!("2026-11-0{rev}T10:00:00Z"),
                     "deleted": "", "description": if rev == 1 { "Install complete" } else { "Upgrade complete" }, "status": status},
            "chart": {"metadata": {"name": "promotions", "version": "0.3.1", "appVersion": "1.2.3", "apiVersion": "v2"},
                      "values": {"deployment": DEPLOY, "image": {"repository": REPO}}},
            "config": {"image": {"tag": tag}}, "manifest": "", "hooks": []
        });
        use base64::Engine as _;
        c.put_object(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": format!("sh.helm.release.v1.{RELEASE}.v{rev}"), "namespace": NS,
                         "labels": {"name": RELEASE, "owner": "helm", "status": status, "version": rev.to_string()}},
            "type": "helm.sh/release.v1",
            "data": {"release": base64::engine::general_purpose::STANDARD.encode(encode_release(&doc))}
        }));
    }
    let h = history(&c).await;
    assert_eq!(h.iter().map(|r| r.value("image.tag").unwrap()).collect::<Vec<_>>(), ["1.2.4", "1.2.5"]);
    assert_eq!(h[1].updated.unwrap().to_rfc3339(), "2026-11-02T10:00:00+00:00");
    let r = helm(&c.url(), &["rollback", RELEASE, "-n", NS, "--wait"], &[]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(deployment_image(&c), format!("{REPO}:1.2.4"));
    assert_eq!(pods(&c), vec![(format!("{REPO}:1.2.4"), true); 2]);
    assert_eq!(statuses(&history(&c).await)[2], (3, "deployed".into(), "Rollback to 1".into()));
}

// ---------------------------------------------------------------------------------------
// docker

fn docker(swarm: &Path, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_docker")).args(args).env("RUNBOT_SANDBOX_SWARM", swarm).output().expect("run docker");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

fn json_lines(s: &str) -> Vec<Value> {
    s.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn docker_stack_deploy_update_inspect_and_ps() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("swarm.json");
    let sw = SandboxSwarm::create(&state).unwrap();
    sw.set_timing(Duration::from_millis(200)).unwrap();
    let compose = dir.path().join("compose.yml");
    let write_compose = |tag: &str| {
        std::fs::write(
            &compose,
            format!("version: \"3.8\"\nservices:\n  app:\n    image: myrpo/app:${{RUNBOT_TEST_APP_TAG:-{tag}}}\n    deploy:\n      replicas: 2\n"),
        )
        .unwrap()
    };
    write_compose("v1.2.3");
    assert_eq!(docker(&state, &["version", "--format", "{{.Server.Version}}"]).stdout, "24.0.7\n");

    let r = docker(&state, &["stack", "deploy", "-c", compose.to_str().unwrap(), "stack"]);
    assert_eq!((r.code, r.stdout.as_str()), (0, "Creating network stack_default\nCreating service stack_app\n"), "{}", r.stderr);
    wait_for("2 running tasks", || sw.running_images("stack_app").unwrap() == ["myrpo/app:v1.2.3"; 2]);

    let r = docker(&state, &["service", "update", "--image", "myrpo/app:v1.2.4", "stack_app"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines[0], "stack_app");
    assert!(lines.contains(&"overall progress: 2 out of 2 tasks"), "{}", r.stdout);
    assert_eq!(lines.last(), Some(&"verify: Service converged"));
    assert_eq!(sw.running_images("stack_app").unwrap(), ["myrpo/app:v1.2.4"; 2]);

    let r = docker(&state, &["service", "inspect", "stack_app"]);
    assert_eq!(r.code, 0);
    assert!(r.stdout.starts_with("[\n    {\n"), "docker's 4-space indentation: {}", r.stdout);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    let s = &v[0];
    assert_eq!(s["Spec"]["Name"], "stack_app");
    assert_eq!(s["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"], "myrpo/app:v1.2.4");
    assert_eq!(s["PreviousSpec"]["TaskTemplate"]["ContainerSpec"]["Image"], "myrpo/app:v1.2.3");
    assert_eq!(s["Spec"]["Mode"]["Replicated"]["Replicas"], 2);
    assert_eq!(s["Spec"]["Labels"]["com.docker.stack.namespace"], "stack");
    assert_eq!(s["UpdateStatus"]["State"], "completed");
    assert_eq!(s["UpdateStatus"]["Message"], "update completed");
    assert!(s["Version"]["Index"].as_u64().unwrap() > 0);
    assert_eq!(s["ID"].as_str().unwrap().len(), 25);
    let id = s["ID"].as_str().unwrap().to_string();

    let one = docker(&state, &["service", "inspect", "--format", "{{json .}}", "stack_app"]);
    assert_eq!(json_lines(&one.stdout).len(), 1);
    assert_eq!(json_lines(&one.stdout)[0]["PreviousSpec"]["TaskTemplate"]["ContainerSpec"]["Image"], "myrpo/app:v1.2.3");
    let img = docker(&state, &["service", "inspect", "--format", "{{.Spec.TaskTemplate.ContainerSpec.Image}}", "stack_app"]);
    assert_eq!(img.stdout, "myrpo/app:v1.2.4\n");

    let ps = docker(&state, &["service", "ps", "stack_app", "--filter", "desired-state=running", "--format", "{{json .}}"]);
    let rows = json_lines(&ps.stdout);
    assert_eq!(rows.len(), 2);
    for (i, t) in rows.iter().enumerate() {
        assert_eq!(t["Name"], format!("stack_app.{}", i + 1));
        assert_eq!(t["Image"], "myrpo/app:v1.2.4");
        assert_eq!(t["DesiredState"], "Running");
        assert!(t["CurrentState"].as_str().unwrap().starts_with("Running ") && t["CurrentState"].as_str().unwrap().ends_with(" ago"), "{t}");
        assert_eq!(t["ID"].as_str().unwrap().len(), 12);
        assert_eq!(t["Error"], "");
    }
    let table = docker(&state, &["service", "ps", "stack_app"]).stdout;
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("ID") && lines[0].contains("DESIRED STATE") && lines[0].ends_with("PORTS"), "{table}");
    assert!(lines.iter().any(|l| l.contains(" \\_ stack_app.1") && l.contains("myrpo/app:v1.2.3") && l.contains("Shutdown")), "{table}");

    // Redeploying the stack with a new tag (from the environment) updates the service.
    let r = Command::new(env!("CARGO_BIN_EXE_docker"))
        .args(["stack", "deploy", "-c", compose.to_str().unwrap(), "stack"])
        .env("RUNBOT_SANDBOX_SWARM", &state)
        .env("RUNBOT_TEST_APP_TAG", "v1.2.5")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&r.stdout), format!("Updating service stack_app (id: {id})\n"));
    wait_for("v1.2.5 everywhere", || sw.running_images("stack_app").unwrap() == ["myrpo/app:v1.2.5"; 2]);
    let view = sw.service("stack_app").unwrap().unwrap();
    assert_eq!((view.image.as_str(), view.previous_image.as_deref()), ("myrpo/app:v1.2.5", Some("myrpo/app:v1.2.4")));

    // Concurrent CLI calls share the file without corrupting it.
    let children: Vec<_> = (0..6)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_docker"))
                .args(["service", "ps", "stack_app", "--format", "{{json .}}"])
                .env("RUNBOT_SANDBOX_SWARM", &state)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for ch in children {
        let out = ch.wait_with_output().unwrap();
        assert!(out.status.success());
        assert!(!json_lines(&String::from_utf8_lossy(&out.stdout)).is_empty());
    }

    let r = docker(&state, &["service", "inspect", "nope"]);
    assert_eq!((r.code, r.stdout.as_str(), r.stderr.as_str()), (1, "[]\n", "Error: no such service: nope\n"));
    let r = Command::new(env!("CARGO_BIN_EXE_docker")).args(["service", "ls"]).env_remove("RUNBOT_SANDBOX_SWARM").output().unwrap();
    assert_eq!(r.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&r.stderr),
        "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?\n"
    );
}

#[test]
fn a_crashing_image_fails_again_and_again_and_the_update_pauses() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("swarm.json");
    let sw = SandboxSwarm::create(&state).unwrap();
    sw.set_timing(Duration::from_millis(100)).unwrap();
    sw.deploy_service("stack_app", "myrpo/app:v1", 2).unwrap();
    sw.set_behavior("v2", SwarmBehavior::Crash { exit_code: 1, error: None }).unwrap();
    assert_eq!(sw.running_images("stack_app").unwrap(), ["myrpo/app:v1"; 2]);

    let r = docker(&state, &["service", "update", "--image", "myrpo/app:v2", "stack_app"]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stderr.starts_with("service update paused: update paused due to failure or early termination of task "), "{}", r.stderr);
    std::thread::sleep(Duration::from_millis(700));

    let rows = json_lines(&docker(&state, &["service", "ps", "stack_app", "--format", "{{json .}}"]).stdout);
    let failed: Vec<&Value> =
        rows.iter().filter(|t| t["Image"] == "myrpo/app:v2" && t["CurrentState"].as_str().unwrap().starts_with("Failed ")).collect();
    assert!(failed.len() >= 2, "replaced and failed again: {rows:?}");
    for t in &failed {
        assert_eq!(t["Error"], "\"task: non-zero exit (1)\"");
        assert_eq!(t["DesiredState"], "Shutdown");
        assert_eq!(t["Name"], "stack_app.1");
    }
    // The update paused after slot 1: slot 2 still runs the old image (slot 1's crashing task
    // may be in its short running window).
    let running = sw.running_images("stack_app").unwrap();
    assert_eq!(running.iter().filter(|i| *i == "myrpo/app:v1").count(), 1, "{running:?}");
    let v: Value = serde_json::from_str(&docker(&state, &["service", "inspect", "stack_app"]).stdout).unwrap();
    assert_eq!(v[0]["UpdateStatus"]["State"], "paused");

    let r = docker(&state, &["service", "rollback", "stack_app"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.starts_with("stack_app\nrollback: manually requested rollback\n"), "{}", r.stdout);
    assert!(r.stdout.ends_with("verify: Service converged\n"));
    assert_eq!(sw.running_images("stack_app").unwrap(), ["myrpo/app:v1"; 2]);
    let view = sw.service("stack_app").unwrap().unwrap();
    assert_eq!(view.update_state.as_deref(), Some("rollback_completed"));
    assert_eq!(view.previous_image.as_deref(), Some("myrpo/app:v2"));
}
