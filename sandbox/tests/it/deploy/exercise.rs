//! What runbot does through the Kubernetes API, done against the sandbox so its API server
//! records the requests: every method of the `Cluster` port on the real driver, and the
//! `kubectl` steps of the example team runbooks as runbot prepares them.

use super::kubectl::{Kubectl, repo};
use runbot_adapters::kubernetes::KubeCluster;
use runbot_commands::config::Settings;
use runbot_commands::ports::Cluster;
use runbot_commands::steps::StepKinds;
use runbot_sandbox::kube::{Behavior, FakeCluster};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// The `Cluster` port methods this test calls on the driver; compared with the trait, so a new
/// method cannot skip the RBAC check.
pub const EXERCISED: &[&str] = &[
    "pods",
    "pod",
    "events",
    "logs",
    "delete_pod",
    "wait_ready",
    "rollout",
    "deployment",
    "wait_no_pods",
    "scale",
    "run_job_from_cronjob",
    "helm_history",
    "can_i",
    "secret_exists",
    "switch_secret_key",
];

const IMAGE: &str = "registry.local/promotions-api:1.4.2";

/// The `async fn`s of `trait Cluster` in commands/src/ports/cluster.rs.
pub fn cluster_port_methods() -> BTreeSet<String> {
    let text = std::fs::read_to_string(repo().join("commands/src/ports/cluster.rs")).expect("read cluster.rs");
    let body = text.split_once("pub trait Cluster").expect("trait Cluster").1.split_once("\n}\n").expect("end of trait").0;
    body.lines().filter_map(|l| l.trim().strip_prefix("async fn ")).map(|l| l.split(['(', '<']).next().unwrap_or_default().to_string()).collect()
}

/// Calls every method of the port on the driver, in `ns`.
pub async fn drive(c: &FakeCluster, ns: &str) {
    let sel = "app=promotions-api";
    c.deploy(ns, "promotions-api", IMAGE, 2);
    c.put_object(json!({
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": "backup", "namespace": ns},
        "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "backup", "image": "registry.local/backup:1"}]
        }}}}}
    }));
    let k = KubeCluster::from_url(&c.url(), Duration::from_secs(5)).expect("driver");
    let t = Duration::from_secs(20);
    k.wait_ready(ns, sel, 2, &[], t).await.expect("wait_ready");
    let pods = k.pods(ns, sel).await.expect("pods");
    let sick = pods[0].name.clone();
    c.behave_pod(ns, &sick, Behavior::CrashLoop { exit_code: 2, logs: vec!["boom".into()] });
    let deadline = tokio::time::Instant::now() + t;
    while k.pod(ns, &sick).await.expect("pod").is_none_or(|p| p.containers[0].restart_count < 1) {
        assert!(tokio::time::Instant::now() < deadline, "no restart of {sick}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    k.events(ns, &sick).await.expect("events");
    k.logs(ns, &sick, "app", true, 20).await.expect("previous log");
    k.logs(ns, &pods[1].name, "app", false, 5).await.expect("log");
    k.delete_pod(ns, &sick).await.expect("delete_pod");
    k.wait_ready(ns, sel, 2, std::slice::from_ref(&sick), t).await.expect("a replacement");
    k.rollout(ns, "promotions-api").await.expect("rollout");
    let info = k.deployment(ns, "promotions-api").await.expect("deployment");
    assert_eq!(info.replicas, 2);
    assert_eq!(k.scale(ns, "promotions-api", 0).await.expect("scale"), 2);
    k.wait_no_pods(ns, &info.selector, t).await.expect("wait_no_pods");
    k.scale(ns, "promotions-api", 2).await.expect("scale back");
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    assert!(k.run_job_from_cronjob(ns, "backup", "backup-manual-1", tx, t).await.expect("job"), "the job succeeds");
    assert!(k.helm_history(ns, "promotions-release").await.expect("helm history").is_empty(), "no such release here");
    assert!(k.can_i(ns, "patch", "deployments.apps").await.expect("access review"));
    assert!(!k.secret_exists(ns, "promotions-db-credentials").await.expect("secret lookup"));
    // A restore's switch: the writers' Secret key to the restored instance, the old value kept.
    c.put_object(runbot_sandbox::pitr::secret_object(ns, "promotions-db", "url", "postgres://old"));
    k.switch_secret_key(ns, "promotions-db", "url", "postgres://restored", "url-before-R-1").await.expect("switch");
    let s = c.object("v1", "Secret", ns, "promotions-db").expect("the Secret");
    let value = |key: &str| runbot_sandbox::pitr::secret_value(&s, key);
    assert_eq!((value("url").as_deref(), value("url-before-R-1").as_deref()), (Some("postgres://restored"), Some("postgres://old")));
    let missing = k.switch_secret_key(ns, "promotions-db", "nope", "x", "nope-before-R-1").await;
    assert!(matches!(missing, Err(runbot_commands::ports::cluster::ClusterError::Api { code: 422, .. })), "{missing:?}");
}

/// Runs the `kubectl` steps of deploy/runbooks.example.toml as runbot would prepare them for
/// the service in `ns`, against the sandbox (every kube context points at it).
pub async fn run_example_runbooks(c: &FakeCluster, ns: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let token = dir.path().join("cdn-token");
    std::fs::write(&token, "not-a-real-token\n").expect("write");
    let runbooks = repo().join("deploy/runbooks.example.toml");
    let config = format!(
        "[secrets]\ncdn_token = \"file:{}\"\n[engine]\nrunbooks = \"{}\"\n[clusters.prod]\nurl = \"{}\"\n\
         [services.promotions.environments.prod]\ncluster = \"prod\"\nnamespace = \"{ns}\"\nselector = \"app=promotions-api\"\n\
         deployment = \"promotions-api\"\nvars = {{ kube_context = \"prod\" }}\n",
        token.display(),
        runbooks.display(),
        c.url()
    );
    let kinds = StepKinds::shipped();
    let settings = Settings::from_toml(&config, dir.path(), &kinds).unwrap_or_else(|p| panic!("{p:?}"));
    let env_cfg = &settings.config.services["promotions"].environments["prod"];
    let mut vars: BTreeMap<String, String> = env_cfg.vars.clone();
    for (k, v) in
        [("cluster", &env_cfg.cluster), ("namespace", &env_cfg.namespace), ("selector", &env_cfg.selector), ("deployment", &env_cfg.deployment)]
    {
        vars.insert(k.into(), v.clone().unwrap_or_default());
    }
    for (k, v) in [("service", "promotions"), ("target", "promotions"), ("env", "prod"), ("requester", "console:alice"), ("execution", "R-1")] {
        vars.insert(k.into(), v.into());
    }
    for name in settings.secrets.keys() {
        vars.insert(format!("secret.{name}"), String::new());
    }
    let kubectl = Kubectl::new(Some(&c.url()), &["prod", "staging"]);
    let mut ran = 0;
    for (name, rb) in &settings.runbooks {
        let mut vars = vars.clone();
        vars.insert("runbook".into(), name.clone());
        for (p, def) in &rb.params {
            vars.insert(p.clone(), def.default.clone().unwrap_or_else(|| "x".into()));
        }
        for step in rb.steps.iter().filter(|s| s.kind == "command") {
            let prepared = kinds.get("command").expect("command kind").prepare(&step.params, &vars).expect("prepare");
            let argv: Vec<String> = serde_json::from_value(prepared.params["argv"].clone()).expect("argv");
            let program = std::path::Path::new(&argv[0]).file_name().and_then(|f| f.to_str()).unwrap_or_default().to_string();
            match program.as_str() {
                "kubectl" => {
                    let args: Vec<&str> = argv[1..].iter().map(String::as_str).collect();
                    tokio::task::block_in_place(|| kubectl.ok(&args));
                    ran += 1;
                }
                "helm" | "docker" => panic!("{name}: the example runbooks call {program}, which this test cannot observe"),
                _ => {}
            }
        }
    }
    assert!(ran >= 3, "the example runbooks' kubectl steps ran ({ran})");
}
