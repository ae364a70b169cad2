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
    eventually("a BackOff event", async || k.events(NS, &sick).await.expect("events").iter().any(|e| e.kind == "Warning" && e.reason == "BackOff"))
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
    deployments.patch("promotions-api", &kube::api::PatchParams::default(), &kube::api::Patch::Strategic(patch)).await.expect("set a new image");
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

/// kube's `get_metadata` Accept header (kube-core `JSON_METADATA_MIME`).
const METADATA_ACCEPT: &str = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1";

#[tokio::test(flavor = "multi_thread")]
async fn can_i_asks_a_self_subject_access_review() {
    let (cluster, k) = start(1).await;
    // Discovery shows the review as the real server does: create-only, cluster-scoped.
    let client = kube::Client::try_from(kube::Config::new(cluster.url().parse().expect("url"))).expect("client");
    let groups = client.list_api_groups().await.expect("/apis");
    assert!(groups.groups.iter().any(|g| g.name == "authorization.k8s.io"), "{groups:?}");
    let list = client.list_api_group_resources("authorization.k8s.io/v1").await.expect("/apis/authorization.k8s.io/v1");
    let ssar = list.resources.iter().find(|r| r.name == "selfsubjectaccessreviews").expect("selfsubjectaccessreviews listed");
    assert_eq!((ssar.kind.as_str(), ssar.namespaced, ssar.verbs.clone()), ("SelfSubjectAccessReview", false, vec!["create".to_string()]));

    // Everything is allowed by default: a subresource, a group, the core group.
    for (verb, resource) in
        [("get", "pods/log"), ("patch", "deployments.apps"), ("patch", "deployments.apps/scale"), ("delete", "pods"), ("create", "jobs.batch")]
    {
        assert!(k.can_i(NS, verb, resource).await.expect("review"), "{verb} {resource}");
    }
    let reviews = cluster
        .requests()
        .iter()
        .filter(|(m, p)| m == "POST" && p.split('?').next() == Some("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"))
        .count();
    assert_eq!(reviews, 5, "one review per question");

    // A missing permission: the review says no, and the call itself is refused with 403.
    cluster.deny("get", "pods/log", NS);
    cluster.deny("patch", "deployments.apps", NS);
    assert!(!k.can_i(NS, "get", "pods/log").await.expect("review"));
    assert!(k.can_i(NS, "get", "pods").await.expect("review"), "pods/log only");
    assert!(k.can_i("elsewhere", "get", "pods/log").await.expect("review"), "that namespace only");
    assert!(!k.can_i(NS, "patch", "deployments.apps").await.expect("review"));
    assert!(k.can_i(NS, "patch", "deployments.apps/scale").await.expect("review"), "the scale subresource is another permission");
    assert!(k.can_i(NS, "patch", "deployments").await.expect("review"), "the core group has no deployments rule");
    let pod = k.pods(NS, SEL).await.expect("pods").remove(0);
    match k.logs(NS, &pod.name, &pod.containers[0].name, false, 5).await {
        Err(ClusterError::Forbidden(m)) => assert!(
            m.contains(
                r#"User "system:serviceaccount:runbot:runbot" cannot get resource "pods/log" in API group "" in the namespace "promotions-ns""#
            ),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }

    // The review on the wire: 201, `denied` and a reason for a denial.
    let http = reqwest::Client::new();
    let ask = |verb: &str, resource: &str, sub: &str| {
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
               "spec": {"resourceAttributes": {"namespace": NS, "verb": verb, "group": "", "resource": resource, "subresource": sub}}})
    };
    let url = format!("{}/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", cluster.url());
    let r = http.post(&url).json(&ask("get", "pods", "log")).send().await.expect("post");
    assert_eq!(r.status().as_u16(), 201);
    let v: serde_json::Value = r.json().await.expect("json");
    assert_eq!(
        (v["kind"].as_str(), v["status"]["allowed"].as_bool(), v["status"]["denied"].as_bool()),
        (Some("SelfSubjectAccessReview"), Some(false), Some(true))
    );
    assert!(v["status"]["reason"].as_str().is_some_and(|r| r.contains("get pods/log")), "{v}");
    assert_eq!(v["spec"]["resourceAttributes"]["subresource"], "log", "the spec is echoed");
    let v: serde_json::Value = http.post(&url).json(&ask("get", "pods", "")).send().await.expect("post").json().await.expect("json");
    assert!(
        v["status"]["allowed"].as_bool().expect("allowed") && v["status"]["reason"].as_str().is_some_and(|r| r.starts_with("RBAC: allowed by")),
        "{v}"
    );
    let r = http.post(&url).json(&json!({"spec": {}})).send().await.expect("post");
    assert_eq!(r.status().as_u16(), 422, "neither resource nor non-resource attributes");
    assert_eq!(http.get(&url).send().await.expect("get").status().as_u16(), 405, "create-only");

    // allow_only: what is not granted is simply not allowed (no `denied`), and refused.
    cluster.allow_all();
    cluster.allow_only(&[("list", "pods", NS), ("watch", "pods", NS), ("get", "pods", "*")]);
    assert!(k.can_i(NS, "list", "pods").await.expect("review"));
    assert!(!k.can_i(NS, "delete", "pods").await.expect("review"));
    assert!(!k.can_i("other", "list", "pods").await.expect("review"));
    assert!(!k.can_i(NS, "get", "pods/log").await.expect("review"), "pods does not grant pods/log");
    assert_eq!(k.pods(NS, SEL).await.expect("list is granted").len(), 1);
    assert!(matches!(k.delete_pod(NS, &pod.name).await, Err(ClusterError::Forbidden(_))));
    let v: serde_json::Value = http.post(&url).json(&ask("delete", "pods", "")).send().await.expect("post").json().await.expect("json");
    assert_eq!(v["status"], json!({"allowed": false}), "RBAC's no-opinion answer");

    cluster.allow_all();
    assert!(k.can_i(NS, "delete", "pods").await.expect("review"));
    k.delete_pod(NS, &pod.name).await.expect("allowed again");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn secret_exists_reads_metadata_only() {
    let cluster = FakeCluster::start("127.0.0.1:0".parse().expect("addr"), Timing::fast()).await.expect("sandbox");
    let k = KubeCluster::from_url(&cluster.url(), Duration::from_secs(2)).expect("client");
    cluster.put_object(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "db-credentials", "namespace": NS, "labels": {"app": "promotions-api"}},
        "type": "Opaque",
        "data": {"password": "aHVudGVyMg=="}
    }));
    assert!(k.secret_exists(NS, "db-credentials").await.expect("exists"));
    assert!(!k.secret_exists(NS, "nope").await.expect("absent"));
    assert!(!k.secret_exists("other-ns", "db-credentials").await.expect("absent elsewhere"));
    let gets: Vec<_> = cluster.requests().into_iter().filter(|(_, p)| p.contains("/secrets")).collect();
    assert_eq!(gets[0], ("GET".to_string(), format!("/api/v1/namespaces/{NS}/secrets/db-credentials")), "a get by name, not a list");

    // What that GET carried: a PartialObjectMetadata, never the data.
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/namespaces/{NS}/secrets/db-credentials", cluster.url());
    let text = http.get(&url).header("accept", METADATA_ACCEPT).send().await.expect("get").text().await.expect("body");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!((v["apiVersion"].as_str(), v["kind"].as_str()), (Some("meta.k8s.io/v1"), Some("PartialObjectMetadata")));
    assert_eq!(v["metadata"]["name"], "db-credentials");
    assert_eq!(v["metadata"]["labels"]["app"], "promotions-api");
    let keys: Vec<&String> = v.as_object().expect("object").keys().collect();
    assert_eq!(keys, ["apiVersion", "kind", "metadata"], "metadata only");
    assert!(!text.contains("aHVudGVyMg=="), "{text}");
    // The list form, and the API server's 406 for a list type on a get.
    let list: serde_json::Value = http
        .get(format!("{}/api/v1/namespaces/{NS}/secrets", cluster.url()))
        .header("accept", "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1")
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(list["kind"], "PartialObjectMetadataList");
    assert_eq!(list["items"][0]["kind"], "PartialObjectMetadata");
    assert!(list["items"][0].get("data").is_none());
    let r = http.get(&url).header("accept", "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1").send().await.expect("get");
    assert_eq!(r.status().as_u16(), 406);
    // Without the header: the whole Secret, as before.
    let full: serde_json::Value = http.get(&url).send().await.expect("get").json().await.expect("json");
    assert_eq!(full["data"]["password"], "aHVudGVyMg==");

    cluster.deny("get", "secrets", NS);
    assert!(matches!(k.secret_exists(NS, "db-credentials").await, Err(ClusterError::Forbidden(_))));
    cluster.shutdown().await;
}

/// A Helm release Secret exactly as Helm 3 writes it: `data.release` is base64 (the Secret's)
/// of base64 of gzip of the release JSON.
struct Rev<'a> {
    release: &'a str,
    version: u32,
    status: &'a str,
    app_version: &'a str,
    chart_version: &'a str,
    tag: &'a str,
    deployed: &'a str,
    description: &'a str,
}

fn helm_secret(r: Rev<'_>) -> serde_json::Value {
    use base64::Engine as _;
    use std::io::Write as _;
    let Rev { release, version, status, app_version, chart_version, tag, deployed, description } = r;
    let doc = json!({
        "name": release,
        "info": {"first_deployed": "2025-05-01T09:00:00.123456789Z", "last_deployed": deployed, "deleted": "", "description": description, "status": status, "notes": "Thanks"},
        "chart": {"metadata": {"apiVersion": "v2", "name": release, "version": chart_version, "appVersion": app_version}, "lock": null, "templates": [], "values": {"image": {"tag": "latest"}}, "schema": null, "files": []},
        "config": {"image": {"tag": tag}, "replicaCount": 2},
        "manifest": "---\n# Source: x/templates/deployment.yaml\n",
        "version": version,
        "namespace": NS,
    });
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(doc.to_string().as_bytes()).expect("gzip");
    let helm_text = base64::engine::general_purpose::STANDARD.encode(gz.finish().expect("gzip"));
    secret_with_release(&format!("sh.helm.release.v1.{release}.v{version}"), release, version, status, "helm.sh/release.v1", &helm_text)
}

fn secret_with_release(name: &str, release: &str, version: u32, status: &str, type_: &str, helm_text: &str) -> serde_json::Value {
    use base64::Engine as _;
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": NS,
                     "labels": {"owner": "helm", "name": release, "status": status, "version": version.to_string(), "modifiedAt": "1746090000"}},
        "type": type_,
        "data": {"release": base64::engine::general_purpose::STANDARD.encode(helm_text)}
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn helm_history_decodes_release_secrets() {
    let cluster = FakeCluster::start("127.0.0.1:0".parse().expect("addr"), Timing::fast()).await.expect("sandbox");
    let k = KubeCluster::from_url(&cluster.url(), Duration::from_secs(2)).expect("client");
    assert!(k.helm_history(NS, "promotions").await.expect("no release").is_empty());

    // Written newest first: the driver orders by revision.
    cluster.put_object(helm_secret(Rev {
        release: "promotions",
        version: 3,
        status: "deployed",
        app_version: "1.4.2",
        chart_version: "0.3.1",
        tag: "1.4.2",
        deployed: "2025-05-03T10:00:00.5+02:00",
        description: "Upgrade complete",
    }));
    cluster.put_object(helm_secret(Rev {
        release: "promotions",
        version: 1,
        status: "superseded",
        app_version: "1.4.0",
        chart_version: "0.3.0",
        tag: "1.4.0",
        deployed: "2025-05-01T09:00:00.123456789Z",
        description: "Install complete",
    }));
    cluster.put_object(helm_secret(Rev {
        release: "promotions",
        version: 2,
        status: "superseded",
        app_version: "1.4.1",
        chart_version: "0.3.0",
        tag: "1.4.1",
        deployed: "2025-05-02T09:30:00Z",
        description: "Upgrade complete",
    }));
    // Another release, and a Secret with Helm's labels that is not a release: ignored.
    cluster.put_object(helm_secret(Rev {
        release: "billing",
        version: 1,
        status: "deployed",
        app_version: "2.0.0",
        chart_version: "1.0.0",
        tag: "2.0.0",
        deployed: "2025-05-02T09:30:00Z",
        description: "Install complete",
    }));
    cluster.put_object(secret_with_release("promotions-notes", "promotions", 9, "deployed", "Opaque", "not a release"));

    let h = k.helm_history(NS, "promotions").await.expect("history");
    assert_eq!(h.iter().map(|r| r.revision).collect::<Vec<_>>(), [1, 2, 3], "oldest first, other release and type ignored");
    let last = &h[2];
    assert_eq!((last.status.as_str(), last.chart.as_str(), last.app_version.as_str()), ("deployed", "promotions-0.3.1", "1.4.2"));
    assert_eq!(last.description, "Upgrade complete");
    assert_eq!(last.updated, Some(chrono::DateTime::parse_from_rfc3339("2025-05-03T08:00:00.5Z").expect("time").to_utc()));
    assert_eq!(last.value("image.tag").as_deref(), Some("1.4.2"));
    assert_eq!(last.value("replicaCount").as_deref(), Some("2"));
    assert_eq!(last.value("image.repository"), None, "user values only, not the chart's defaults");
    assert_eq!((h[0].status.as_str(), h[0].chart.as_str(), h[0].description.as_str()), ("superseded", "promotions-0.3.0", "Install complete"));
    assert_eq!(h[0].value("image.tag").as_deref(), Some("1.4.0"));
    let lists: Vec<_> = cluster.requests().into_iter().filter(|(_, p)| p.contains("/secrets")).collect();
    assert!(lists.iter().all(|(m, p)| m == "GET" && p.contains("labelSelector=owner%3Dhelm%2Cname%3Dpromotions")), "{lists:?}");

    // A release Secret that is not Helm's encoding: a clear error naming it.
    cluster.put_object(secret_with_release(
        "sh.helm.release.v1.promotions.v4",
        "promotions",
        4,
        "pending-upgrade",
        "helm.sh/release.v1",
        "%%% not base64 %%%",
    ));
    match k.helm_history(NS, "promotions").await {
        Err(e) => {
            let m = e.to_string();
            assert!(m.contains("sh.helm.release.v1.promotions.v4") && m.contains("not base64"), "{m}");
        }
        Ok(h) => panic!("decoded garbage: {h:?}"),
    }
    cluster.shutdown().await;
}
