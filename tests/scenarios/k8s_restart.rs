//! The restart runbook ("Reinicio de servicios atascados") end to end: the real engine, the
//! real kube-rs driver, and the sandbox's Kubernetes API on 127.0.0.1 with its controller
//! replacing deleted pods. Diagnose → approval → delete one pod at a time → verify Ready.

use runbot_adapters::kubernetes::KubeCluster;
use runbot_commands::model::{ExecState, ExecutionId, StepStatus};
use runbot_commands::ports::Clusters;
use runbot_sandbox::kube::{Behavior, FakeCluster, Fault, Timing};
use runbot_tests::harness::{Options, World};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

const NS: &str = "promotions-ns";
const IMAGE: &str = "registry.local/promotions-api:1.4.2";

struct Setup {
    world: World,
    cluster: FakeCluster,
}

fn name(p: &Value) -> String {
    p["metadata"]["name"].as_str().unwrap_or_default().to_string()
}

fn ready(p: &Value) -> bool {
    p["status"]["conditions"].as_array().is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

fn restarted(p: &Value) -> bool {
    p["status"]["containerStatuses"][0]["restartCount"].as_i64().unwrap_or(0) >= 1
}

fn live_pods(cluster: &FakeCluster) -> Vec<Value> {
    cluster
        .pods(NS)
        .into_iter()
        .filter(|p| p["metadata"]["labels"]["app"] == "promotions-api" && p["metadata"]["deletionTimestamp"].is_null())
        .collect()
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let t = std::time::Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(10), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// promotions-api with 3 Ready replicas in the sandbox, and a world whose `sandbox` cluster is
/// the kube driver pointed at it (requests time out after `api_timeout`).
async fn setup(api_timeout: Duration) -> Setup {
    let cluster = FakeCluster::start("127.0.0.1:0".parse().expect("addr"), Timing::fast()).await.expect("start the sandbox cluster");
    cluster.deploy(NS, "promotions-api", IMAGE, 3);
    until("3 Ready pods", || live_pods(&cluster).iter().filter(|p| ready(p)).count() == 3).await;
    let driver = KubeCluster::from_url(&cluster.url(), api_timeout).expect("kube client");
    let opts = Options {
        clusters: Clusters::new().with("sandbox", Arc::new(driver)),
        extra_config: format!("[clusters.sandbox]\nurl = \"{}\"\n", cluster.url()),
        ..Options::default()
    };
    Setup { world: World::with(opts).await, cluster }
}

fn deletes(cluster: &FakeCluster) -> Vec<String> {
    cluster.requests().into_iter().filter(|(m, p)| m == "DELETE" && p.contains("/pods/")).map(|(_, p)| p).collect()
}

/// The detail thread of an execution's status message, as one text.
async fn thread_text(world: &World, id: ExecutionId) -> String {
    let mid = world.status_message_id(id).await;
    world.chat.thread(&mid).iter().map(|p| p.message.all_text()).collect::<Vec<_>>().join("\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn healthy_service_has_nothing_to_restart() {
    let Setup { world, cluster } = setup(Duration::from_secs(5)).await;
    let before: Vec<String> = live_pods(&cluster).iter().map(name).collect();

    let id = world.request("console:alice", "/ops restart promotions-api").await;
    let done = world.wait_state(id, "succeeded").await;
    assert_eq!(done.steps[0].status, StepStatus::Succeeded);
    assert!(done.steps[1..].iter().all(|s| s.status == StepStatus::Skipped), "{:?}", done.steps);
    assert!(done.approvals.is_empty() && done.resolved.is_empty());
    let msg = world.wait_text(id, "nothing to restart").await;
    assert!(msg.all_text().contains("No unhealthy pods: 3 of 3 pods of promotions are Ready"), "{}", msg.all_text());
    assert!(msg.buttons.is_empty(), "no approval is asked for when there is nothing to do");

    assert!(deletes(&cluster).is_empty(), "nothing deleted: {:?}", deletes(&cluster));
    let after: Vec<String> = live_pods(&cluster).iter().map(name).collect();
    assert_eq!(before, after);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn crashlooping_pod_is_diagnosed_approved_replaced_and_ready() {
    let Setup { world, cluster } = setup(Duration::from_secs(5)).await;
    let pods: Vec<String> = live_pods(&cluster).iter().map(name).collect();
    let sick = pods[1].clone();
    cluster.behave_pod(
        NS,
        &sick,
        Behavior::CrashLoop { exit_code: 3, logs: vec!["FATAL: cannot connect to promotions-db:5432".into(), "exiting".into()] },
    );
    until("a restart of the sick pod", || {
        live_pods(&cluster).iter().any(|p| name(p) == sick && p["status"]["containerStatuses"][0]["restartCount"].as_i64().unwrap_or(0) >= 1)
    })
    .await;

    let id = world.request("console:alice", "/ops restart promotions-api").await;
    let plan = world.wait_text(id, "Waiting for approval").await;
    let text = plan.all_text();
    // The diagnosis, readable in the status message: which pod, why, exit code, restarts.
    for needle in [sick.as_str(), "1 of 3 pods unhealthy", "last exit code 3 (Error)", "restarts"] {
        assert!(text.contains(needle), "the plan lacks {needle:?}:\n{text}");
    }
    assert!(text.contains("CrashLoopBackOff") || text.contains("not Ready"), "{text}");
    assert_eq!(plan.fields.iter().find(|(k, _)| k == "Acts on").map(|(_, v)| v.as_str()), Some(sick.as_str()));
    // The previous container's log and the events, in the detail thread.
    let thread = thread_text(&world, id).await;
    assert!(thread.contains("previous container's log"), "{thread}");
    assert!(thread.contains("FATAL: cannot connect to promotions-db:5432"), "{thread}");
    assert!(thread.contains("BackOff"), "events shown: {thread}");
    assert!(deletes(&cluster).is_empty(), "nothing is deleted before the approval");

    world.click("console:bob", id, "approve").await;
    let done = world.wait_state(id, "succeeded").await;
    assert!(done.steps.iter().all(|s| s.status == StepStatus::Succeeded), "{:?}", done.steps);

    // Exactly the sick pod was deleted; a new one replaced it; all 3 are Ready.
    let deleted = deletes(&cluster);
    assert_eq!(deleted.len(), 1, "{deleted:?}");
    assert!(deleted[0].contains(&sick), "{deleted:?}");
    let now: Vec<Value> = live_pods(&cluster);
    assert!(!now.iter().any(|p| name(p) == sick), "the sick pod is gone");
    assert_eq!(now.iter().filter(|p| ready(p)).count(), 3, "3 Ready pods");
    for p in &pods {
        if *p != sick {
            assert!(now.iter().any(|x| name(x) == *p), "healthy pod {p} untouched");
        }
    }
    let summary = done.steps[2].summary.clone().unwrap_or_default();
    assert!(summary.contains(&format!("deleted {sick}")), "{summary}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rejected_restart_deletes_nothing() {
    let Setup { world, cluster } = setup(Duration::from_secs(5)).await;
    let pods: Vec<String> = live_pods(&cluster).iter().map(name).collect();
    cluster.behave_pod(NS, &pods[0], Behavior::LivenessFailing { logs: vec!["GC overhead limit exceeded".into()] });
    until("a liveness kill", || live_pods(&cluster).iter().any(|p| name(p) == pods[0] && restarted(p))).await;

    let id = world.request("console:alice", "/ops restart promotions-api").await;
    world.wait_text(id, "Waiting for approval").await;
    world.click("console:carol", id, "reject").await;
    let done = world.wait_state(id, "rejected").await;
    assert!(done.steps[2..].iter().all(|s| s.status != StepStatus::Succeeded), "{:?}", done.steps);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(deletes(&cluster).is_empty(), "{:?}", deletes(&cluster));
    assert!(live_pods(&cluster).iter().any(|p| name(p) == pods[0]), "the pod is still there");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn named_pod_is_restarted_even_if_healthy_but_only_a_pod_of_the_service() {
    let Setup { world, cluster } = setup(Duration::from_secs(5)).await;
    // A neighbour whose pod names start like ours but whose labels do not match the selector.
    cluster.deploy(NS, "promotions-api-canary", IMAGE, 1);
    until("the canary pod", || cluster.pods(NS).iter().any(|p| p["metadata"]["labels"]["app"] == "promotions-api-canary")).await;
    let canary = cluster.pods(NS).into_iter().find(|p| p["metadata"]["labels"]["app"] == "promotions-api-canary").map(|p| name(&p)).expect("canary");

    let id = world.request("console:alice", &format!("/ops restart {canary}")).await;
    let failed = world.wait_state(id, "failed").await;
    let why = failed.steps[0].summary.clone().unwrap_or_default();
    assert!(why.contains("is not one of promotions's pods") && why.contains("refusing"), "{why}");

    let id = world.request("console:alice", "/ops restart promotions-api-doesnotexist-12345").await;
    let failed = world.wait_state(id, "failed").await;
    assert!(failed.steps[0].summary.clone().unwrap_or_default().contains("no pod named"), "{:?}", failed.steps[0]);

    let healthy = name(&live_pods(&cluster)[0]);
    let id = world.request("console:alice", &format!("/ops restart {healthy}")).await;
    let plan = world.wait_text(id, "Waiting for approval").await;
    assert!(plan.all_text().contains("named pod"), "{}", plan.all_text());
    world.click("console:bob", id, "approve").await;
    world.wait_state(id, "succeeded").await;
    let deleted = deletes(&cluster);
    assert_eq!(deleted.len(), 1, "{deleted:?}");
    assert!(deleted[0].ends_with(&format!("/pods/{healthy}")) || deleted[0].contains(&format!("/pods/{healthy}?")), "{deleted:?}");
    cluster.shutdown().await;
}

/// An API error on the first request the runbook makes: the diagnosis fails with the API
/// server's reason, nothing is awaiting approval, nothing is deleted.
#[tokio::test(flavor = "multi_thread")]
async fn api_errors_fail_the_step_with_a_clear_message() {
    for (status, hang, expect) in
        [(403, false, "forbidden"), (404, false, "not found"), (500, false, "API error 500"), (0, true, "no answer from the API server within 1s")]
    {
        let Setup { world, cluster } = setup(Duration::from_secs(1)).await;
        cluster.inject(Fault { method: Some("GET".into()), path_contains: "/namespaces/promotions-ns/pods".into(), status, times: 0, hang });
        let id = world.request("console:alice", "/ops restart promotions-api").await;
        let failed = world.wait_state(id, "failed").await;
        let why = failed.steps[0].summary.clone().unwrap_or_default();
        assert!(why.contains("listing the pods of promotions") && why.contains(expect), "{status}/{hang}: {why}");
        assert!(failed.approvals.is_empty() && failed.resolved.is_empty());
        assert!(failed.steps[1..].iter().all(|s| s.status == StepStatus::Pending), "{:?}", failed.steps);
        let msg = world.wait_text(id, "Failed at step 1").await;
        assert!(msg.all_text().contains(expect), "{}", msg.all_text());
        assert!(deletes(&cluster).is_empty());
        cluster.shutdown().await;
    }
}

/// The API refuses the deletion after approval: the step fails saying nothing was deleted.
#[tokio::test(flavor = "multi_thread")]
async fn forbidden_delete_fails_without_claiming_a_restart() {
    let Setup { world, cluster } = setup(Duration::from_secs(5)).await;
    let sick = name(&live_pods(&cluster)[2]);
    cluster.behave_pod(NS, &sick, Behavior::LivenessFailing { logs: vec![] });
    until("a liveness kill", || live_pods(&cluster).iter().any(|p| name(p) == sick && restarted(p))).await;
    cluster.inject(Fault { method: Some("DELETE".into()), path_contains: "/pods/".into(), status: 403, times: 0, hang: false });

    let id = world.request("console:alice", "/ops restart promotions-api").await;
    world.wait_text(id, "Waiting for approval").await;
    world.click("console:bob", id, "approve").await;
    let failed = world.wait_state(id, "failed").await;
    assert_eq!(failed.state, ExecState::Failed);
    let why = failed.steps[2].summary.clone().unwrap_or_default();
    assert!(why.contains(&format!("deleting {sick} failed: forbidden")) && why.contains("no pod was deleted"), "{why}");
    assert_eq!(failed.steps[3].status, StepStatus::Pending, "verification never claimed");
    assert!(live_pods(&cluster).iter().any(|p| name(p) == sick));
    cluster.shutdown().await;
}

/// A pod that is merely starting (young, no restart, no warning) is not stuck: it is left alone.
#[tokio::test(flavor = "multi_thread")]
async fn a_pod_still_starting_is_left_alone() {
    let Setup { world, cluster } = setup(Duration::from_secs(5)).await;
    // A rollout of a new version whose pods take 30 s to get Ready: one new pod is starting
    // next to the 3 Ready old ones (maxSurge 25%, maxUnavailable 25% of 3 = 0).
    let next = "registry.local/promotions-api:1.5.0";
    cluster.behave_image(next, Behavior::SlowStart(Duration::from_secs(30)));
    cluster.deploy(NS, "promotions-api", next, 3);
    until("a 4th pod", || live_pods(&cluster).len() == 4).await;

    let id = world.request("console:alice", "/ops restart promotions-api").await;
    world.wait_state(id, "succeeded").await;
    let msg = world.wait_text(id, "nothing to restart").await;
    assert!(msg.all_text().contains("3 of 4 pods of promotions are Ready, 1 still starting"), "{}", msg.all_text());
    assert!(deletes(&cluster).is_empty());
    cluster.shutdown().await;
}

/// Two sick pods: both are in the plan, and the second is deleted only after the first one's
/// replacement is Ready.
#[tokio::test(flavor = "multi_thread")]
async fn two_sick_pods_are_replaced_one_at_a_time() {
    let Setup { world, cluster } = setup(Duration::from_secs(5)).await;
    let pods: Vec<String> = live_pods(&cluster).iter().map(name).collect();
    for p in &pods[..2] {
        cluster.behave_pod(NS, p, Behavior::CrashLoop { exit_code: 137, logs: vec!["OOMKilled?".into()] });
    }
    until("both crashed", || live_pods(&cluster).iter().filter(|p| restarted(p)).count() == 2).await;

    let id = world.request("console:alice", "/ops restart promotions-api").await;
    let plan = world.wait_text(id, "Waiting for approval").await;
    assert!(plan.all_text().contains("2 of 3 pods unhealthy"), "{}", plan.all_text());
    world.click("console:bob", id, "approve").await;
    let done = world.wait_state(id, "succeeded").await;
    assert_eq!(done.resolved, pods[..2].to_vec());

    let deleted = deletes(&cluster);
    assert_eq!(deleted.len(), 2, "{deleted:?}");
    assert!(deleted[0].contains(&pods[0]) && deleted[1].contains(&pods[1]), "in order: {deleted:?}");
    let thread = thread_text(&world, id).await;
    let first_ready = thread.find("replacement Ready after").expect("a replacement Ready line");
    let second_delete = thread.find(&format!("deleting pod {} (2 of 2)", pods[1])).expect("the second deletion");
    assert!(first_ready < second_delete, "the second pod was deleted before the first replacement was Ready:\n{thread}");
    assert_eq!(live_pods(&cluster).iter().filter(|p| ready(p)).count(), 3);
    cluster.shutdown().await;
}
