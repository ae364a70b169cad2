//! The kube-rs driver against the sandbox's Kubernetes API on 127.0.0.1: the same code path a
//! real cluster uses, only the URL differs.

use runbot_adapters::kubernetes::KubeCluster;
use runbot_commands::ports::{Cluster, ClusterError, Rollout};
use runbot_sandbox::kube::{Behavior, FakeCluster, Fault, Timing};
use serde_json::json;
use std::time::{Duration, Instant};

const NS: &str = "promotions-ns";
const SEL: &str = "app=promotions-api";
const IMAGE: &str = "registry.local/promotions-api:1.4.2";

async fn start(replicas: i32) -> (FakeCluster, KubeCluster) {
    let cluster = FakeCluster::start("127.0.0.1:0".parse().expect("addr"), Timing::fast()).await.expect("sandbox");
    cluster.deploy(NS, "promotions-api", IMAGE, replicas);
    let driver = KubeCluster::from_url(&cluster.url(), Duration::from_secs(2)).expect("client");
    driver.wait_ready(NS, SEL, replicas as usize, &[], Duration::from_secs(10)).await.expect("pods Ready");
    (cluster, driver)
}

async fn eventually<F: AsyncFnMut() -> bool>(what: &str, mut f: F) {
    let t = Instant::now();
    while !f().await {
        assert!(t.elapsed() < Duration::from_secs(10), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pods_diagnosis_logs_and_events() {
    let (cluster, k) = start(3).await;
    let pods = k.pods(NS, SEL).await.expect("pods");
    assert_eq!(pods.len(), 3);
    assert!(pods.iter().all(|p| p.ready && !p.unhealthy() && p.phase == "Running"), "{pods:?}");
    assert!(pods.iter().all(|p| p.containers.len() == 1 && p.containers[0].image == IMAGE));
    assert!(k.pods(NS, "app=other").await.expect("pods").is_empty());

    let sick = pods[0].name.clone();
    cluster.behave_pod(NS, &sick, Behavior::CrashLoop { exit_code: 2, logs: vec!["boom: config missing".into()] });
    eventually("a crash", async || k.pod(NS, &sick).await.ok().flatten().is_some_and(|p| p.containers[0].restart_count >= 1)).await;
    let p = k.pod(NS, &sick).await.expect("get").expect("exists");
    assert!(p.unhealthy() && !p.ready);
    let t = p.containers[0].last_termination.clone().expect("last termination");
    assert_eq!((t.reason.as_str(), t.exit_code), ("Error", 2));
    assert!(t.finished_at.is_some());

    let prev = k.logs(NS, &sick, &p.containers[0].name, true, 20).await.expect("previous log");
    assert!(prev.contains("boom: config missing"), "{prev}");
    eventually("a BackOff event", async || {
        k.events(NS, &sick).await.expect("events").iter().any(|e| e.kind == "Warning" && e.reason == "BackOff")
    })
    .await;

    // A healthy pod has no previous container: the API says 400, the driver reports it.
    let healthy = &pods[1];
    let err = k.logs(NS, &healthy.name, &healthy.containers[0].name, true, 5).await.expect_err("no previous container");
    assert!(matches!(err, ClusterError::Api { code: 400, .. }), "{err:?}");
    let current = k.logs(NS, &healthy.name, &healthy.containers[0].name, false, 5).await.expect("current log");
    assert!(current.contains("listening on :8080"), "{current}");

    assert_eq!(k.pod(NS, "nope").await.expect("get"), None);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_then_wait_for_a_ready_replacement() {
    let (cluster, k) = start(2).await;
    let pods = k.pods(NS, SEL).await.expect("pods");
    let victim = pods[0].name.clone();
    k.delete_pod(NS, &victim).await.expect("delete");
    let ready = k.wait_ready(NS, SEL, 2, std::slice::from_ref(&victim), Duration::from_secs(10)).await.expect("replacement Ready");
    assert_eq!(ready.len(), 2);
    assert!(!ready.contains(&victim));
    assert!(ready.contains(&pods[1].name));
    // Deleting a pod that is already gone is fine.
    eventually("the victim gone", async || k.pod(NS, &victim).await.expect("get").is_none()).await;
    k.delete_pod(NS, &victim).await.expect("deleting a gone pod is Ok");

    // Waiting for more Ready pods than there are times out, saying how many were Ready.
    let err = k.wait_ready(NS, SEL, 5, &[], Duration::from_millis(600)).await.expect_err("timeout");
    match err {
        ClusterError::Timeout(m) => assert!(m.contains("2 of 5 Ready"), "{m}"),
        other => panic!("{other:?}"),
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rollout_status_and_scale() {
    let (cluster, k) = start(2).await;
    match k.rollout(NS, "promotions-api").await.expect("rollout") {
        Rollout::Complete(m) => assert!(m.contains("successfully rolled out"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(k.scale(NS, "promotions-api", 4).await.expect("scale"), 2, "the previous count");
    k.wait_ready(NS, SEL, 4, &[], Duration::from_secs(10)).await.expect("4 Ready");
    assert_eq!(k.scale(NS, "promotions-api", 2).await.expect("scale"), 4);
    assert!(matches!(k.scale(NS, "missing", 1).await, Err(ClusterError::NotFound(_))));

    // A new image whose pods never get Ready, with a short progress deadline: Progressing,
    // then Failed (ProgressDeadlineExceeded), as `kubectl rollout status` says.
    cluster.behave_image("registry.local/promotions-api:bad", Behavior::CrashLoop { exit_code: 1, logs: vec![] });
    let client = kube::Client::try_from(kube::Config::new(cluster.url().parse().expect("url"))).expect("client");
    let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> = kube::Api::namespaced(client, NS);
    let patch = json!({"spec": {"progressDeadlineSeconds": 1, "template": {"spec": {"containers": [
        {"name": "app", "image": "registry.local/promotions-api:bad"}
    ]}}}});
    deployments
        .patch("promotions-api", &kube::api::PatchParams::default(), &kube::api::Patch::Strategic(patch))
        .await
        .expect("set a new image");
    let mut seen_progressing = false;
    eventually("ProgressDeadlineExceeded", async || match k.rollout(NS, "promotions-api").await.expect("rollout") {
        Rollout::Failed(m) => {
            assert!(m.contains("exceeded its progress deadline"), "{m}");
            true
        }
        Rollout::Progressing(_) | Rollout::Pending(_) => {
            seen_progressing = true;
            false
        }
        Rollout::Complete(m) => panic!("a never-Ready rollout completed: {m}"),
    })
    .await;
    assert!(seen_progressing);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn job_from_cronjob_streams_its_log_and_reports_the_outcome() {
    let (cluster, k) = start(1).await;
    for (name, image) in [("backup", "registry.local/backup:1"), ("broken", "registry.local/backup:broken")] {
        cluster.put_object(json!({
            "apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "backup", "image": image}]
            }}}}}
        }));
    }
    cluster.behave_image("registry.local/backup:broken", Behavior::CrashLoop { exit_code: 4, logs: vec!["upload failed".into()] });

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let ok = k.run_job_from_cronjob(NS, "backup", "backup-manual-1", tx, Duration::from_secs(10)).await.expect("job");
    assert!(ok, "the healthy job succeeds");
    let mut lines = Vec::new();
    while let Ok(l) = rx.try_recv() {
        lines.push(l);
    }
    assert!(lines.iter().any(|l| l.contains("created from cronjob backup")), "{lines:?}");
    assert!(lines.iter().any(|l| l == "done"), "the pod's log was followed: {lines:?}");
    let job = cluster.object("batch/v1", "Job", NS, "backup-manual-1").expect("job exists");
    assert_eq!(job["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"], "manual");
    assert_eq!(job["metadata"]["ownerReferences"][0]["kind"], "CronJob");

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let ok = k.run_job_from_cronjob(NS, "broken", "broken-manual-1", tx, Duration::from_secs(10)).await.expect("job");
    assert!(!ok, "the failing job is reported as failed");
    let mut lines = Vec::new();
    while let Ok(l) = rx.try_recv() {
        lines.push(l);
    }
    assert!(lines.iter().any(|l| l.contains("upload failed")), "{lines:?}");

    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let err = k.run_job_from_cronjob(NS, "backup", "backup-manual-1", tx, Duration::from_secs(5)).await.expect_err("exists");
    assert!(matches!(err, ClusterError::Api { code: 409, .. }), "{err:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn api_errors_surface_at_once_with_the_servers_message() {
    let (cluster, k) = start(1).await;
    for (status, check) in [
        (403u16, (|e: &ClusterError| matches!(e, ClusterError::Forbidden(_))) as fn(&ClusterError) -> bool),
        (404, |e| matches!(e, ClusterError::NotFound(_))),
        (500, |e| matches!(e, ClusterError::Api { code: 500, .. })),
        (503, |e| matches!(e, ClusterError::Api { code: 503, .. })),
        (429, |e| matches!(e, ClusterError::Api { code: 429, .. })),
    ] {
        cluster.inject(Fault { method: Some("GET".into()), path_contains: "/pods".into(), status, times: 1, hang: false });
        let t = Instant::now();
        let err = k.pods(NS, SEL).await.expect_err("fault");
        assert!(check(&err), "{status}: {err:?}");
        assert!(t.elapsed() < Duration::from_secs(1), "{status} was retried: {:?}", t.elapsed());
        assert!(err.to_string().contains("list pods app=promotions-api in promotions-ns"), "{err}");
    }
    // The fault was used up: the next call works.
    assert_eq!(k.pods(NS, SEL).await.expect("pods").len(), 1);

    cluster.inject(Fault { method: Some("GET".into()), path_contains: "/pods".into(), status: 0, times: 1, hang: true });
    let t = Instant::now();
    match k.pods(NS, SEL).await {
        Err(ClusterError::Timeout(m)) => assert!(m.contains("within 2s"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(4));

    // Nothing listening: a transport error, not a hang.
    let gone = KubeCluster::from_url("http://127.0.0.1:9", Duration::from_secs(2)).expect("client");
    assert!(matches!(gone.pods(NS, SEL).await, Err(ClusterError::Transport(_))));
    cluster.shutdown().await;
}

/// The real-cluster path: a kubeconfig file with several contexts, one chosen by name.
#[tokio::test(flavor = "multi_thread")]
async fn kubeconfig_with_a_named_context() {
    let (cluster, _k) = start(1).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: elsewhere\n\
             clusters:\n- name: sandbox\n  cluster:\n    server: {}\n- name: nowhere\n  cluster:\n    server: http://127.0.0.1:9\n\
             users:\n- name: runbot\n  user:\n    token: not-a-real-token\n\
             contexts:\n- name: prod\n  context:\n    cluster: sandbox\n    user: runbot\n- name: elsewhere\n  context:\n    cluster: nowhere\n    user: runbot\n",
            cluster.url()
        ),
    )
    .expect("write kubeconfig");
    let path = path.to_str().expect("utf-8");

    let prod = KubeCluster::from_kubeconfig(path, Some("prod"), Duration::from_secs(2)).await.expect("prod context");
    assert_eq!(prod.pods(NS, SEL).await.expect("pods through the prod context").len(), 1);
    // Without a context: the current one, which points nowhere — a transport error, quickly.
    let current = KubeCluster::from_kubeconfig(path, None, Duration::from_secs(2)).await.expect("current context");
    assert!(matches!(current.pods(NS, SEL).await, Err(ClusterError::Transport(_))));
    let err = KubeCluster::from_kubeconfig(path, Some("staging"), Duration::from_secs(2)).await.err().expect("no such context");
    assert!(err.contains("staging"), "{err}");
    let err = KubeCluster::from_kubeconfig("/nonexistent/kubeconfig", None, Duration::from_secs(2)).await.err().expect("no file");
    assert!(err.contains("cannot read kubeconfig /nonexistent/kubeconfig"), "{err}");
    cluster.shutdown().await;
}
