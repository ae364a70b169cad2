//! The fake Kubernetes API server against the real kube-rs 5 client (and, for wire details a
//! typed client hides, raw HTTP/1.1 on 127.0.0.1).

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod};
use kube::api::{Api, DeleteParams, EvictParams, ListParams, LogParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Config};
use runbot_sandbox::kube::{Behavior, FakeCluster, Fault, Timing};
use serde_json::{Value, json};
use std::future::Future;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(20);

async fn cluster() -> (FakeCluster, Client) {
    let c = FakeCluster::start("127.0.0.1:0".parse().unwrap(), Timing::fast()).await.expect("start fake cluster");
    let client = client(&c);
    (c, client)
}

fn client(c: &FakeCluster) -> Client {
    let mut cfg = Config::new(c.url().parse().expect("url"));
    cfg.default_retry = false;
    Client::try_from(cfg).expect("client")
}

/// Polls `f` until it yields a value (panics after [`WAIT`]).
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn is_ready(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn name(p: &Pod) -> String {
    p.metadata.name.clone().unwrap_or_default()
}

/// Waits for `n` Ready pods (not terminating) with label app=`app`; returns their names.
async fn ready_pods(api: &Api<Pod>, app: &str, n: usize) -> Vec<String> {
    eventually(&format!("{n} ready pods of {app}"), || async {
        let pods = api.list(&ListParams::default().labels(&format!("app={app}"))).await.ok()?;
        let ready: Vec<String> = pods.items.iter().filter(|p| is_ready(p) && p.metadata.deletion_timestamp.is_none()).map(name).collect();
        (ready.len() == n && pods.items.len() == n).then_some(ready)
    })
    .await
}

fn api_code(e: &kube::Error) -> (u16, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Raw HTTP/1.1 (Connection: close): (status, content-type, body with chunking undone).
async fn raw(c: &FakeCluster, method: &str, path: &str, content_type: Option<&str>, body: &str) -> (u16, String, String) {
    let addr = c.url().trim_start_matches("http://").to_string();
    let mut s = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: application/json\r\n");
    if let Some(ct) = content_type {
        req.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf)).await.expect("response in time").expect("read");
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code: u16 = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let header = |h: &str| {
        head.lines()
            .find(|l| l.to_ascii_lowercase().starts_with(&format!("{h}:")))
            .map(|l| l.split_once(':').map(|x| x.1.trim().to_string()).unwrap_or_default())
    };
    let body = if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.push_str(&after[..n.min(after.len())]);
            rest = after.get(n + 2..).unwrap_or("");
        }
        out
    } else {
        body.to_string()
    };
    (code, header("content-type").unwrap_or_default(), body)
}

#[tokio::test]
async fn lists_by_label_and_field_selectors() {
    let (c, client) = cluster().await;
    c.deploy("shop", "web", "web:1", 3);
    c.deploy("shop", "api", "api:1", 2);
    let pods: Api<Pod> = Api::namespaced(client.clone(), "shop");
    ready_pods(&pods, "web", 3).await;
    ready_pods(&pods, "api", 2).await;
    let count = |sel: &'static str| {
        let pods = pods.clone();
        async move { pods.list(&ListParams::default().labels(sel)).await.expect(sel).items.len() }
    };
    assert_eq!(count("app=web").await, 3);
    assert_eq!(count("app==web").await, 3);
    assert_eq!(count("app!=web").await, 2);
    assert_eq!(count("app in (web,api)").await, 5);
    assert_eq!(count("app notin (web)").await, 2);
    assert_eq!(count("app").await, 5);
    assert_eq!(count("!app").await, 0);
    assert_eq!(count("app=web,pod-template-hash").await, 3);

    let one = pods.list(&ListParams::default().labels("app=api")).await.unwrap().items[0].clone();
    let by_name = pods.list(&ListParams::default().fields(&format!("metadata.name={}", name(&one)))).await.unwrap();
    assert_eq!(by_name.items.len(), 1);
    assert_eq!(pods.list(&ListParams::default().fields("status.phase=Running")).await.unwrap().items.len(), 5);
    assert_eq!(pods.list(&ListParams::default().fields("status.phase!=Running")).await.unwrap().items.len(), 0);
    assert_eq!(pods.list(&ListParams::default().fields("metadata.namespace=shop,spec.nodeName=sandbox-node-1")).await.unwrap().items.len(), 5);
    // Cluster-wide list.
    let all: Api<Pod> = Api::all(client.clone());
    assert_eq!(all.list(&ListParams::default().labels("app in (web,api)")).await.unwrap().items.len(), 5);
    // Bad selectors are 400 BadRequest.
    let e = pods.list(&ListParams::default().labels("app in web")).await.unwrap_err();
    assert_eq!(api_code(&e), (400, "BadRequest".into()));
    let e = pods.list(&ListParams::default().fields("spec.bogus=1")).await.unwrap_err();
    assert_eq!(api_code(&e).0, 400);
    // Events about one pod, the way `kubectl describe` asks for them.
    let events: Api<Event> = Api::namespaced(client.clone(), "shop");
    let sel = format!("involvedObject.name={},involvedObject.namespace=shop,involvedObject.uid={}", name(&one), one.metadata.uid.clone().unwrap());
    let evs = events.list(&ListParams::default().fields(&sel)).await.unwrap();
    let reasons: Vec<String> = evs.items.iter().filter_map(|e| e.reason.clone()).collect();
    for r in ["Scheduled", "Pulled", "Created", "Started"] {
        assert!(reasons.iter().any(|x| x == r), "{r} in {reasons:?}");
    }
    c.shutdown().await;
}

#[tokio::test]
async fn pages_with_limit_and_continue() {
    let (c, client) = cluster().await;
    c.deploy("paging", "web", "web:1", 5);
    let pods: Api<Pod> = Api::namespaced(client.clone(), "paging");
    let all = ready_pods(&pods, "web", 5).await;
    let mut seen = Vec::new();
    let first = pods.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(first.items.len(), 2);
    assert_eq!(first.metadata.remaining_item_count, Some(3));
    let rv = first.metadata.resource_version.clone().unwrap();
    assert!(rv.parse::<u64>().is_ok(), "resourceVersion is an integer string: {rv}");
    seen.extend(first.items.iter().map(name));
    let mut token = first.metadata.continue_.clone();
    while let Some(t) = token.filter(|t| !t.is_empty()) {
        let page = pods.list(&ListParams::default().limit(2).continue_token(&t)).await.unwrap();
        assert_eq!(page.metadata.resource_version.as_deref(), Some(rv.as_str()), "pages share the first page's RV");
        seen.extend(page.items.iter().map(name));
        token = page.metadata.continue_.clone();
    }
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "every pod once, in order");
    let e = pods.list(&ListParams::default().continue_token("not-a-token")).await.unwrap_err();
    assert_eq!(api_code(&e).0, 400);
    // A selector plus paging: no remainingItemCount (as the real server).
    let p = pods.list(&ListParams::default().labels("app=web").limit(1)).await.unwrap();
    assert!(p.metadata.continue_.is_some() && p.metadata.remaining_item_count.is_none());
    c.shutdown().await;
}

#[tokio::test]
async fn await_condition_ready_then_deleted() {
    let (c, client) = cluster().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "waits");
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "solo", "labels": {"app": "solo"}},
        "spec": {"containers": [{"name": "app", "image": "solo:1"}]}
    }))
    .unwrap();
    let created = pods.create(&PostParams::default(), &pod).await.unwrap();
    assert_eq!(created.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Pending"));
    assert_eq!(created.metadata.generation, Some(1));
    let uid = created.metadata.uid.clone().unwrap();
    let ready = tokio::time::timeout(WAIT, await_condition(pods.clone(), "solo", |p: Option<&Pod>| p.is_some_and(is_ready)))
        .await
        .expect("ready in time")
        .unwrap()
        .unwrap();
    let st = ready.status.unwrap();
    assert_eq!(st.phase.as_deref(), Some("Running"));
    let cs = &st.container_statuses.unwrap()[0];
    assert!(cs.ready && cs.started == Some(true) && cs.state.as_ref().unwrap().running.is_some());
    assert!(st.pod_ip.is_some() && st.host_ip.is_some() && st.start_time.is_some());
    assert_eq!(ready.spec.unwrap().node_name.as_deref(), Some("sandbox-node-1"));
    let conds: Vec<String> = st.conditions.unwrap().iter().map(|c| c.type_.clone()).collect();
    for t in ["PodScheduled", "Initialized", "ContainersReady", "Ready"] {
        assert!(conds.contains(&t.to_string()), "{t} in {conds:?}");
    }
    // Graceful deletion: the answer is the pod with a deletionTimestamp, then it goes away.
    let del = pods.delete("solo", &DeleteParams::default()).await.unwrap();
    let terminating = del.left().expect("pods come back from DELETE");
    assert!(terminating.metadata.deletion_timestamp.is_some());
    tokio::time::timeout(WAIT, await_condition(pods.clone(), "solo", conditions::is_deleted(&uid))).await.expect("deleted in time").unwrap();
    assert!(pods.get_opt("solo").await.unwrap().is_none());
    c.shutdown().await;
}

#[tokio::test]
async fn watch_streams_changes_and_bookmarks() {
    let (c, client) = cluster().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "w");
    let list = cms.list(&ListParams::default()).await.unwrap();
    let rv = list.metadata.resource_version.unwrap();
    let mut stream = cms.watch(&WatchParams::default().timeout(10), &rv).await.unwrap().boxed();
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "a", "labels": {"x": "1"}}, "data": {"k": "v"}})).unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    cms.patch("a", &PatchParams::default(), &Patch::Merge(json!({"data": {"k": "w"}}))).await.unwrap();
    cms.delete("a", &DeleteParams::default()).await.unwrap();
    let mut kinds = Vec::new();
    let mut bookmark = None;
    while bookmark.is_none() || kinds.len() < 3 {
        let ev = tokio::time::timeout(WAIT, stream.try_next()).await.expect("event in time").unwrap().expect("stream open");
        match ev {
            WatchEvent::Added(o) => kinds.push(("ADDED", o.data.unwrap()["k"].clone())),
            WatchEvent::Modified(o) => kinds.push(("MODIFIED", o.data.unwrap()["k"].clone())),
            WatchEvent::Deleted(o) => kinds.push(("DELETED", o.data.unwrap()["k"].clone())),
            WatchEvent::Bookmark(b) => bookmark = Some(b.metadata.resource_version),
            WatchEvent::Error(e) => panic!("watch error {e:?}"),
        }
    }
    assert_eq!(kinds, [("ADDED", "v".to_string()), ("MODIFIED", "w".to_string()), ("DELETED", "w".to_string())]);
    let b: u64 = bookmark.unwrap().parse().unwrap();
    assert!(b > rv.parse::<u64>().unwrap());

    // A label-selector watch sees an object leave the selection as DELETED.
    let rv2 = cms.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap();
    let mut sel = cms.watch(&WatchParams::default().labels("x=1").timeout(10), &rv2).await.unwrap().boxed();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    cms.patch("a", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"x": "2"}}}))).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        match tokio::time::timeout(WAIT, sel.try_next()).await.expect("event").unwrap().expect("open") {
            WatchEvent::Added(_) => seen.push("ADDED"),
            WatchEvent::Deleted(_) => seen.push("DELETED"),
            WatchEvent::Modified(_) => seen.push("MODIFIED"),
            _ => {}
        }
    }
    assert_eq!(seen, ["ADDED", "DELETED"]);

    // kube-runtime's watcher (list + watch) sees the pods of a deployment come up.
    c.deploy("w", "web", "web:1", 2);
    let pods: Api<Pod> = Api::namespaced(client.clone(), "w");
    let mut objs = watcher(pods, watcher::Config::default().labels("app=web")).applied_objects().boxed();
    let mut ready = std::collections::BTreeSet::new();
    while ready.len() < 2 {
        let p = tokio::time::timeout(WAIT, objs.try_next()).await.expect("pod event").unwrap().expect("open");
        if is_ready(&p) {
            ready.insert(name(&p));
        }
    }

    // The streaming-list watcher (sendInitialEvents=true, then a bookmark) works too.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "w");
    let mut objs = watcher(pods, watcher::Config::default().labels("app=web").streaming_lists()).applied_objects().boxed();
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 2 {
        let p = tokio::time::timeout(WAIT, objs.try_next()).await.expect("pod event").unwrap().expect("open");
        seen.insert(name(&p));
    }
    assert_eq!(seen, ready);
    assert!(c.requests().iter().any(|(_, p)| p.contains("sendInitialEvents=true")));

    // timeoutSeconds ends the stream (raw: the body is complete when the server closes it).
    let started = std::time::Instant::now();
    let (code, ct, body) = raw(&c, "GET", "/api/v1/namespaces/w/configmaps?watch=1&timeoutSeconds=1&allowWatchBookmarks=true", None, "").await;
    assert_eq!((code, ct.as_str()), (200, "application/json"));
    assert!(started.elapsed() >= Duration::from_millis(900));
    let lines: Vec<Value> = body.lines().map(|l| serde_json::from_str(l).expect("one JSON object per line")).collect();
    assert!(lines.iter().any(|l| l["type"] == "ADDED" && l["object"]["kind"] == "ConfigMap"), "{body}");

    // A watch from a compacted resourceVersion gets 410 Gone as an ERROR event.
    c.compact();
    let mut old = cms.watch(&WatchParams::default(), &rv).await.unwrap().boxed();
    match tokio::time::timeout(WAIT, old.try_next()).await.expect("event").unwrap().expect("one event") {
        WatchEvent::Error(e) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected 410, got {other:?}"),
    }
    c.shutdown().await;
}

#[tokio::test]
async fn deleted_pod_is_replaced_under_a_new_name() {
    let (c, client) = cluster().await;
    c.deploy("rep", "web", "web:1", 3);
    let pods: Api<Pod> = Api::namespaced(client.clone(), "rep");
    let before = ready_pods(&pods, "web", 3).await;
    let victim = before[0].clone();
    pods.delete(&victim, &DeleteParams::default()).await.unwrap();
    let after = eventually("a replacement", || async {
        let ps = pods.list(&ListParams::default().labels("app=web")).await.ok()?;
        let live: Vec<&Pod> = ps.items.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
        (live.len() == 3 && live.iter().all(|p| is_ready(p)) && !live.iter().any(|p| name(p) == victim))
            .then(|| live.iter().map(|p| name(p)).collect::<Vec<_>>())
    })
    .await;
    let new: Vec<&String> = after.iter().filter(|n| !before.contains(n)).collect();
    assert_eq!(new.len(), 1);
    let rs_name = victim.rsplit_once('-').unwrap().0.to_string();
    assert!(new[0].starts_with(&format!("{rs_name}-")), "{} from {rs_name}", new[0]);
    let p = pods.get(new[0]).await.unwrap();
    let owner = &p.metadata.owner_references.unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str(), owner.controller), ("ReplicaSet", rs_name.as_str(), Some(true)));
    let events: Api<Event> = Api::namespaced(client.clone(), "rep");
    let evs = events.list(&ListParams::default().fields(&format!("involvedObject.name={rs_name}"))).await.unwrap();
    assert!(evs.items.iter().any(|e| e.reason.as_deref() == Some("SuccessfulCreate")));
    c.shutdown().await;
}

#[tokio::test]
async fn scale_subresource_with_patch_scale_and_get_scale() {
    let (c, client) = cluster().await;
    c.deploy("sc", "web", "web:1", 2);
    let pods: Api<Pod> = Api::namespaced(client.clone(), "sc");
    ready_pods(&pods, "web", 2).await;
    let deps: Api<Deployment> = Api::namespaced(client.clone(), "sc");
    let gen_before = deps.get("web").await.unwrap().metadata.generation.unwrap();
    let s = deps.patch_scale("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 5}}))).await.unwrap();
    assert_eq!(s.spec.unwrap().replicas, Some(5));
    let got = deps.get_scale("web").await.unwrap();
    assert_eq!(got.spec.unwrap().replicas, Some(5));
    assert_eq!(got.status.unwrap().selector.as_deref(), Some("app=web"));
    ready_pods(&pods, "web", 5).await;
    let d = eventually("deployment status", || async {
        let d = deps.get("web").await.ok()?;
        (d.status.as_ref()?.available_replicas == Some(5)).then_some(d)
    })
    .await;
    assert_eq!(d.metadata.generation, Some(gen_before + 1));
    let st = d.status.unwrap();
    assert_eq!((st.replicas, st.ready_replicas, st.updated_replicas, st.observed_generation), (Some(5), Some(5), Some(5), Some(gen_before + 1)));
    // Scale down, and through the ReplicaSet's view.
    deps.patch_scale("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 1}}))).await.unwrap();
    ready_pods(&pods, "web", 1).await;
    let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), "sc");
    let rs = rss.list(&ListParams::default()).await.unwrap().items.remove(0);
    assert_eq!(rs.spec.unwrap().replicas, Some(1));
    c.shutdown().await;
}

fn progressing(d: &Deployment) -> Option<(String, String)> {
    d.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Progressing")
        .map(|c| (c.status.clone(), c.reason.clone().unwrap_or_default()))
}

#[tokio::test]
async fn image_change_rolls_out() {
    let (c, client) = cluster().await;
    c.deploy("roll", "web", "web:1", 3);
    let pods: Api<Pod> = Api::namespaced(client.clone(), "roll");
    ready_pods(&pods, "web", 3).await;
    let deps: Api<Deployment> = Api::namespaced(client.clone(), "roll");
    // `kubectl set image` sends this strategic merge patch.
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "web:2"}]}}}});
    let d = deps.patch("web", &PatchParams::default(), &Patch::Strategic(patch)).await.unwrap();
    let generation = d.metadata.generation.unwrap();
    assert_eq!(generation, 2);
    let done = eventually("rollout complete", || async {
        let d = deps.get("web").await.ok()?;
        let s = d.status.clone()?;
        let complete = s.observed_generation >= Some(generation)
            && s.updated_replicas == Some(3)
            && s.replicas == Some(3)
            && s.available_replicas == Some(3)
            && progressing(&d).is_some_and(|(_, r)| r == "NewReplicaSetAvailable");
        complete.then_some(d)
    })
    .await;
    assert_eq!(done.metadata.annotations.unwrap()["deployment.kubernetes.io/revision"], "2");
    let live = ready_pods(&pods, "web", 3).await;
    for n in &live {
        let p = pods.get(n).await.unwrap();
        assert_eq!(p.spec.unwrap().containers[0].image.as_deref(), Some("web:2"));
    }
    let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), "roll");
    let all = rss.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(all.len(), 2);
    let old = all.iter().find(|r| r.metadata.annotations.as_ref().unwrap()["deployment.kubernetes.io/revision"] == "1").unwrap();
    assert_eq!(old.spec.as_ref().unwrap().replicas, Some(0));
    let events: Api<Event> = Api::namespaced(client.clone(), "roll");
    let evs = events.list(&ListParams::default().fields("involvedObject.name=web,reason=ScalingReplicaSet")).await.unwrap();
    assert!(evs.items.iter().any(|e| e.message.as_deref().unwrap_or("").starts_with("Scaled down replica set")), "{:?}", evs.items);
    c.shutdown().await;
}

#[tokio::test]
async fn never_ready_rollout_exceeds_progress_deadline() {
    let (c, client) = cluster().await;
    c.deploy("stall", "web", "web:1", 3);
    let pods: Api<Pod> = Api::namespaced(client.clone(), "stall");
    ready_pods(&pods, "web", 3).await;
    c.behave_image("web:bad", Behavior::SlowStart(Duration::from_secs(3600)));
    let deps: Api<Deployment> = Api::namespaced(client.clone(), "stall");
    let patch = json!({"spec": {"progressDeadlineSeconds": 2, "template": {"spec": {"containers": [{"name": "app", "image": "web:bad"}]}}}});
    deps.patch("web", &PatchParams::default(), &Patch::Strategic(patch)).await.unwrap();
    let d = eventually("ProgressDeadlineExceeded", || async {
        let d = deps.get("web").await.ok()?;
        (progressing(&d)? == ("False".to_string(), "ProgressDeadlineExceeded".to_string())).then_some(d)
    })
    .await;
    let s = d.status.unwrap();
    // maxSurge 25% of 3 → 1 new pod; maxUnavailable 25% of 3 → 0: the old pods keep serving.
    assert_eq!(s.updated_replicas, Some(1));
    assert_eq!(s.available_replicas, Some(3));
    assert_eq!(s.replicas, Some(4));
    c.shutdown().await;
}

#[tokio::test]
async fn crash_loop_shows_restarts_last_state_and_previous_logs() {
    let (c, client) = cluster().await;
    let lines = vec!["connecting to db".to_string(), "FATAL: password authentication failed".to_string()];
    c.behave_image("promo:broken", Behavior::CrashLoop { exit_code: 3, logs: lines.clone() });
    c.deploy("cl", "promo", "promo:broken", 1);
    let pods: Api<Pod> = Api::namespaced(client.clone(), "cl");
    let p = eventually("a restart", || async {
        let ps = pods.list(&ListParams::default()).await.ok()?;
        ps.items.into_iter().find(|p| p.status.as_ref().and_then(|s| s.container_statuses.as_ref()).is_some_and(|cs| cs[0].restart_count > 0))
    })
    .await;
    assert!(!is_ready(&p));
    let cs = &p.status.as_ref().unwrap().container_statuses.as_ref().unwrap()[0];
    let last = cs.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!((last.exit_code, last.reason.as_deref()), (3, Some("Error")));
    assert!(!cs.ready);
    let prev = pods.logs(&name(&p), &LogParams { previous: true, container: Some("app".into()), ..Default::default() }).await.unwrap();
    assert_eq!(prev, format!("{}\n", lines.join("\n")));
    let tail = pods.logs(&name(&p), &LogParams { previous: true, tail_lines: Some(1), ..Default::default() }).await.unwrap();
    assert_eq!(tail, format!("{}\n", lines[1]));
    // The container waits in CrashLoopBackOff between runs.
    let waiting = eventually("CrashLoopBackOff", || async {
        let p = pods.get(&name(&p)).await.ok()?;
        let cs = p.status?.container_statuses?.remove(0);
        cs.state?.waiting?.reason.filter(|r| r == "CrashLoopBackOff")
    })
    .await;
    assert_eq!(waiting, "CrashLoopBackOff");
    let events: Api<Event> = Api::namespaced(client.clone(), "cl");
    let evs = events.list(&ListParams::default().fields(&format!("involvedObject.name={},reason=BackOff", name(&p)))).await.unwrap();
    let ev = &evs.items[0];
    assert_eq!(ev.type_.as_deref(), Some("Warning"));
    assert!(ev.message.as_deref().unwrap().starts_with("Back-off restarting failed container app in pod"));
    // A pod that never restarted has no previous log: 400 like the kubelet's answer.
    c.deploy("cl", "fine", "fine:1", 1);
    let fine = ready_pods(&pods, "fine", 1).await;
    let e = pods.logs(&fine[0], &LogParams { previous: true, ..Default::default() }).await.unwrap_err();
    assert_eq!(api_code(&e).0, 400);
    assert_eq!(pods.logs(&fine[0], &LogParams::default()).await.unwrap(), "starting\nlistening on :8080\n");
    c.shutdown().await;
}

#[tokio::test]
async fn liveness_failing_pod_gets_unhealthy_events_and_restarts() {
    let (c, client) = cluster().await;
    c.deploy("lv", "web", "web:1", 2);
    let pods: Api<Pod> = Api::namespaced(client.clone(), "lv");
    let names = ready_pods(&pods, "web", 2).await;
    c.behave_pod("lv", &names[0], Behavior::LivenessFailing { logs: vec!["GET /healthz 500".into()] });
    let events: Api<Event> = Api::namespaced(client.clone(), "lv");
    let sel = format!("involvedObject.name={},reason=Unhealthy", names[0]);
    let ev = eventually("Unhealthy events", || async {
        let evs = events.list(&ListParams::default().fields(&sel)).await.ok()?;
        evs.items.into_iter().find(|e| e.count.unwrap_or(0) >= 3)
    })
    .await;
    assert_eq!(ev.type_.as_deref(), Some("Warning"));
    assert_eq!(ev.message.as_deref(), Some("Liveness probe failed: HTTP probe failed with statuscode: 500"));
    assert!(ev.first_timestamp.is_some() && ev.last_timestamp.is_some());
    assert_eq!(ev.source.as_ref().unwrap().component.as_deref(), Some("kubelet"));
    assert_eq!(ev.involved_object.field_path.as_deref(), Some("spec.containers{app}"));
    let p = eventually("a liveness restart", || async {
        let p = pods.get(&names[0]).await.ok()?;
        let restarted = p.status.as_ref()?.container_statuses.as_ref()?[0].restart_count > 0;
        restarted.then_some(p)
    })
    .await;
    assert!(!is_ready(&p));
    let cs = &p.status.unwrap().container_statuses.unwrap()[0];
    assert_eq!(cs.last_state.as_ref().unwrap().terminated.as_ref().unwrap().exit_code, 137);
    let killing = events.list(&ListParams::default().fields(&format!("involvedObject.name={},reason=Killing", names[0]))).await.unwrap();
    assert!(killing.items.iter().any(|e| e.message.as_deref() == Some("Container app failed liveness probe, will be restarted")));
    // The other pod is untouched; fixing the pod makes it Ready again.
    assert!(is_ready(&pods.get(&names[1]).await.unwrap()));
    c.behave_pod("lv", &names[0], Behavior::Healthy);
    eventually("ready again", || async { pods.get(&names[0]).await.ok().filter(is_ready) }).await;
    c.shutdown().await;
}

#[tokio::test]
async fn evict_and_disruption_budget_refusal() {
    let (c, client) = cluster().await;
    c.deploy("ev", "web", "web:1", 2);
    let pods: Api<Pod> = Api::namespaced(client.clone(), "ev");
    let names = ready_pods(&pods, "web", 2).await;
    let uid = pods.get(&names[0]).await.unwrap().metadata.uid.unwrap();
    let s = pods.evict(&names[0], &EvictParams::default()).await.unwrap();
    assert_eq!(s.code, 201);
    tokio::time::timeout(WAIT, await_condition(pods.clone(), &names[0], conditions::is_deleted(&uid))).await.expect("gone").unwrap();
    let now = ready_pods(&pods, "web", 2).await;
    assert!(!now.contains(&names[0]));
    c.inject(Fault { method: Some("POST".into()), path_contains: "/eviction".into(), status: 429, times: 1, hang: false });
    let e = pods.evict(&now[0], &EvictParams::default()).await.unwrap_err();
    assert_eq!(api_code(&e), (429, "TooManyRequests".into()));
    assert!(pods.get(&now[0]).await.unwrap().metadata.deletion_timestamp.is_none());
    let e = pods.evict("nope", &EvictParams::default()).await.unwrap_err();
    assert_eq!(api_code(&e).0, 404);
    c.shutdown().await;
}

#[tokio::test]
async fn errors_are_status_bodies() {
    let (c, client) = cluster().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "err");
    let e = pods.get("nope").await.unwrap_err();
    let kube::Error::Api(s) = &e else { panic!("{e:?}") };
    assert_eq!((s.code, s.reason.as_str(), s.message.as_str()), (404, "NotFound", "pods \"nope\" not found"));
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "err");
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "c"}, "data": {"a": "1"}})).unwrap();
    let v1 = cms.create(&PostParams::default(), &cm).await.unwrap();
    let e = cms.create(&PostParams::default(), &cm).await.unwrap_err();
    assert_eq!(api_code(&e), (409, "AlreadyExists".into()));
    // Optimistic concurrency: a replace with a stale resourceVersion is a 409 Conflict.
    let mut v2 = v1.clone();
    v2.data = Some([("a".to_string(), "2".to_string())].into());
    cms.replace("c", &PostParams::default(), &v2).await.unwrap();
    let e = cms.replace("c", &PostParams::default(), &v2).await.unwrap_err();
    assert_eq!(api_code(&e), (409, "Conflict".into()));
    // 422 Invalid: negative replicas through scale and on the object; a missing name.
    c.deploy("err", "web", "web:1", 1);
    let deps: Api<Deployment> = Api::namespaced(client.clone(), "err");
    let e = deps.patch_scale("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": -1}}))).await.unwrap_err();
    let kube::Error::Api(s) = &e else { panic!("{e:?}") };
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    assert!(s.message.contains("spec.replicas: Invalid value: -1"), "{}", s.message);
    let e = deps.patch("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": -2}}))).await.unwrap_err();
    assert_eq!(api_code(&e), (422, "Invalid".into()));
    let nameless: ConfigMap = serde_json::from_value(json!({"metadata": {}})).unwrap();
    let e = cms.create(&PostParams::default(), &nameless).await.unwrap_err();
    let kube::Error::Api(s) = &e else { panic!("{e:?}") };
    assert_eq!(s.code, 422);
    assert!(s.message.contains("metadata.name: Required value"), "{}", s.message);
    // generateName works.
    let generated: ConfigMap = serde_json::from_value(json!({"metadata": {"generateName": "c-"}})).unwrap();
    let made = cms.create(&PostParams::default(), &generated).await.unwrap();
    assert!(made.metadata.name.unwrap().starts_with("c-"));

    // The raw wire format of a Status.
    let (code, ct, body) = raw(&c, "GET", "/api/v1/namespaces/err/pods/x", None, "").await;
    assert_eq!(code, 404);
    assert!(ct.starts_with("application/json"));
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "pods \"x\" not found", "reason": "NotFound", "details": {"name": "x", "kind": "pods"}, "code": 404})
    );
    let (code, _, body) = raw(&c, "GET", "/apis/apps/v1/namespaces/err/deployments/x", None, "").await;
    assert_eq!(code, 404);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["details"], json!({"name": "x", "group": "apps", "kind": "deployments"}));
    let (code, _, body) = raw(&c, "GET", "/api/v1/frobs", None, "").await;
    assert_eq!((code, serde_json::from_str::<Value>(&body).unwrap()["reason"].clone()), (404, json!("NotFound")));
    let (code, _, _) = raw(&c, "POST", "/api/v1/namespaces/err/configmaps", Some("application/json"), "{not json").await;
    assert_eq!(code, 400);
    let (code, _, _) = raw(&c, "PATCH", "/api/v1/namespaces/err/configmaps/c", Some("application/json"), "{}").await;
    assert_eq!(code, 415);
    // RFC 6902 JSON patch, including a failed test op (422).
    let (code, _, body) = raw(
        &c,
        "PATCH",
        "/api/v1/namespaces/err/configmaps/c",
        Some("application/json-patch+json"),
        r#"[{"op":"add","path":"/data/b","value":"3"}]"#,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(cms.get("c").await.unwrap().data.unwrap()["b"], "3");
    let (code, _, _) = raw(
        &c,
        "PATCH",
        "/api/v1/namespaces/err/configmaps/c",
        Some("application/json-patch+json"),
        r#"[{"op":"test","path":"/data/b","value":"9"}]"#,
    )
    .await;
    assert_eq!(code, 422);
    c.shutdown().await;
}

#[tokio::test]
async fn injected_faults_forbidden_internal_and_hang() {
    let (c, client) = cluster().await;
    c.deploy("f", "web", "web:1", 1);
    let pods: Api<Pod> = Api::namespaced(client.clone(), "f");
    c.inject(Fault { method: Some("GET".into()), path_contains: "/namespaces/f/pods".into(), status: 403, times: 1, hang: false });
    let e = pods.list(&ListParams::default()).await.unwrap_err();
    let kube::Error::Api(s) = &e else { panic!("{e:?}") };
    assert_eq!((s.code, s.reason.as_str()), (403, "Forbidden"));
    assert!(s.message.contains("cannot list resource \"pods\" in API group \"\" in the namespace \"f\""), "{}", s.message);
    pods.list(&ListParams::default()).await.expect("the fault was used up");
    c.inject(Fault { method: None, path_contains: "/namespaces/f/pods".into(), status: 500, times: 2, hang: false });
    for _ in 0..2 {
        assert_eq!(api_code(&pods.list(&ListParams::default()).await.unwrap_err()).0, 500);
    }
    pods.list(&ListParams::default()).await.unwrap();
    c.inject(Fault { method: None, path_contains: "/namespaces/hang/".into(), status: 0, times: 0, hang: true });
    let hung: Api<ConfigMap> = Api::namespaced(client.clone(), "hang");
    let r = tokio::time::timeout(Duration::from_millis(400), hung.list(&ListParams::default())).await;
    assert!(r.is_err(), "the request must not be answered");
    // Everything else still answers, and the log has the requests.
    pods.list(&ListParams::default()).await.unwrap();
    let log = c.requests();
    assert!(log.iter().any(|(m, p)| m == "GET" && p.starts_with("/api/v1/namespaces/hang/configmaps")));
    assert!(log.iter().filter(|(_, p)| p.starts_with("/api/v1/namespaces/f/pods")).count() >= 5);
    tokio::time::timeout(Duration::from_secs(10), c.shutdown()).await.expect("shutdown with a hanging request");
}

#[tokio::test]
async fn jobs_from_a_cronjob_run_to_completion_or_failure() {
    let (c, client) = cluster().await;
    c.put_object(json!({
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": "report", "namespace": "jobs"},
        "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "report", "image": "report:1"}]
        }}}}}
    }));
    let cj = c.object("batch/v1", "CronJob", "jobs", "report").expect("seeded");
    let cj_uid = cj["metadata"]["uid"].as_str().unwrap().to_string();
    let jobs: Api<Job> = Api::namespaced(client.clone(), "jobs");
    let job_from = |name: &str| -> Job {
        serde_json::from_value(json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "annotations": {"cronjob.kubernetes.io/instantiate": "manual"},
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "report", "uid": cj_uid, "controller": true}]},
            "spec": cj["spec"]["jobTemplate"]["spec"].clone()
        }))
        .unwrap()
    };
    jobs.create(&PostParams::default(), &job_from("report-manual-1")).await.unwrap();
    let done = tokio::time::timeout(WAIT, await_condition(jobs.clone(), "report-manual-1", conditions::is_job_completed()))
        .await
        .expect("job done in time")
        .unwrap()
        .unwrap();
    let st = done.status.unwrap();
    assert_eq!(st.succeeded, Some(1));
    assert!(st.completion_time.is_some() && st.start_time.is_some());
    assert!(st.conditions.unwrap().iter().any(|c| c.type_ == "Complete" && c.status == "True"));
    let pods: Api<Pod> = Api::namespaced(client.clone(), "jobs");
    let jp = pods.list(&ListParams::default().labels("job-name=report-manual-1")).await.unwrap().items;
    assert_eq!(jp.len(), 1);
    assert_eq!(jp[0].metadata.labels.as_ref().unwrap()["batch.kubernetes.io/job-name"], "report-manual-1");
    assert_eq!(jp[0].status.as_ref().unwrap().phase.as_deref(), Some("Succeeded"));
    assert_eq!(pods.logs(&name(&jp[0]), &LogParams::default()).await.unwrap(), "starting\ndone\n");

    c.behave_image("report:1", Behavior::CrashLoop { exit_code: 2, logs: vec!["no such table: sales".into()] });
    jobs.create(&PostParams::default(), &job_from("report-manual-2")).await.unwrap();
    let failed = eventually("job failed", || async {
        let j = jobs.get("report-manual-2").await.ok()?;
        let conds = j.status.as_ref()?.conditions.clone()?;
        conds.iter().any(|c| c.type_ == "Failed" && c.status == "True").then_some(j)
    })
    .await;
    assert_eq!(failed.status.unwrap().failed, Some(1));
    let fp = pods.list(&ListParams::default().labels("job-name=report-manual-2")).await.unwrap().items;
    let term = fp[0].status.as_ref().unwrap().container_statuses.as_ref().unwrap()[0].state.as_ref().unwrap().terminated.clone().unwrap();
    assert_eq!(term.exit_code, 2);
    assert_eq!(pods.logs(&name(&fp[0]), &LogParams::default()).await.unwrap(), "no such table: sales\n");
    // Deleting the CronJob collects its Jobs and their pods.
    let cjs: Api<k8s_openapi::api::batch::v1::CronJob> = Api::namespaced(client.clone(), "jobs");
    cjs.delete("report", &DeleteParams::default()).await.unwrap();
    eventually("jobs and pods collected", || async {
        let j = jobs.list(&ListParams::default()).await.ok()?.items.len();
        let p = pods.list(&ListParams::default()).await.ok()?.items.len();
        (j == 0 && p == 0).then_some(())
    })
    .await;
    c.shutdown().await;
}

#[tokio::test]
async fn server_side_apply_and_strategic_patches_on_leases() {
    let (c, client) = cluster().await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "le");
    let pp = PatchParams::apply("runbot").force();
    let body = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "runbot-leader"},
        "spec": {"holderIdentity": "pod-a", "leaseDurationSeconds": 30}});
    let l = leases.patch("runbot-leader", &pp, &Patch::Apply(&body)).await.unwrap();
    assert_eq!(l.spec.as_ref().unwrap().holder_identity.as_deref(), Some("pod-a"));
    let rv1 = l.metadata.resource_version.clone().unwrap();
    let renew = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "runbot-leader"},
        "spec": {"renewTime": "2026-01-01T00:00:00.000000Z"}});
    let l = leases.patch("runbot-leader", &pp, &Patch::Apply(&renew)).await.unwrap();
    let spec = l.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("pod-a"));
    assert!(spec.renew_time.is_some());
    assert!(l.metadata.resource_version.unwrap().parse::<u64>().unwrap() > rv1.parse::<u64>().unwrap());
    let l = leases.patch("runbot-leader", &PatchParams::default(), &Patch::Strategic(json!({"spec": {"holderIdentity": "pod-b"}}))).await.unwrap();
    assert_eq!(l.spec.unwrap().holder_identity.as_deref(), Some("pod-b"));
    // Apply without a field manager is refused like the real server.
    let (code, _, _) =
        raw(&c, "PATCH", "/apis/coordination.k8s.io/v1/namespaces/le/leases/x", Some("application/apply-patch+yaml"), &body.to_string()).await;
    assert_eq!(code, 422);
    // Patching a missing object with a merge patch is a 404.
    let e = leases.patch("absent", &PatchParams::default(), &Patch::Merge(json!({"spec": {}}))).await.unwrap_err();
    assert_eq!(api_code(&e).0, 404);
    c.shutdown().await;
}

#[tokio::test]
async fn discovery_and_log_follow() {
    let (c, client) = cluster().await;
    let (code, _, body) = raw(&c, "GET", "/version", None, "").await;
    assert_eq!(code, 200);
    assert!(serde_json::from_str::<Value>(&body).unwrap()["gitVersion"].as_str().unwrap().starts_with("v1.33."));
    let (_, _, body) = raw(&c, "GET", "/api/v1", None, "").await;
    let v: Value = serde_json::from_str(&body).unwrap();
    let pods = v["resources"].as_array().unwrap().iter().find(|r| r["name"] == "pods").unwrap();
    assert_eq!(pods["shortNames"], json!(["po"]));
    assert_eq!(pods["namespaced"], true);
    let (_, _, body) = raw(&c, "GET", "/apis/apps/v1", None, "").await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(v["resources"].as_array().unwrap().iter().any(|r| r["name"] == "deployments/scale" && r["kind"] == "Scale"));
    let (code, _, _) = raw(&c, "GET", "/openapi/v2", None, "").await;
    assert_eq!(code, 404);
    let discovery = kube::discovery::Discovery::new(client.clone()).run().await.unwrap();
    let groups: Vec<String> = discovery.groups().map(|g| g.name().to_string()).collect();
    for g in ["", "apps", "batch", "coordination.k8s.io"] {
        assert!(groups.iter().any(|x| x == g), "{g:?} in {groups:?}");
    }

    // follow=true: a chunked stream that stays open while the container runs.
    c.deploy("lf", "web", "web:1", 1);
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), "lf");
    let names = ready_pods(&pods_api, "web", 1).await;
    let stream = pods_api.log_stream(&names[0], &LogParams { follow: true, ..Default::default() }).await.unwrap();
    use futures::AsyncBufReadExt;
    let mut lines = stream.lines();
    assert_eq!(lines.next().await.unwrap().unwrap(), "starting");
    assert_eq!(lines.next().await.unwrap().unwrap(), "listening on :8080");
    let more = tokio::time::timeout(Duration::from_millis(300), lines.next()).await;
    assert!(more.is_err(), "the stream stays open while the container runs");
    // It ends when the container stops (the pod is deleted).
    pods_api.delete(&names[0], &DeleteParams::default()).await.unwrap();
    let end = tokio::time::timeout(WAIT, lines.next()).await.expect("stream ends");
    assert!(end.is_none());
    c.shutdown().await;
}
