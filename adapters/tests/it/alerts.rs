//! The Alertmanager receiver over loopback with Alertmanager's documented webhook payload
//! (version 4): the bearer token before anything else, one message per firing alert with the
//! runbook's plan and a [Run …] button, a repeat edits it, `resolved` edits it to resolved,
//! the button creates the execution as the person who clicked, unmatched alerts are counted.

use crate::common::{preamble, promotions_service, ready, secret_file, sick_pod, until};
use runbot_adapters::alerts::Alerts;
use runbot_adapters::console::ConsoleChat;
use runbot_adapters::kubernetes::KubeCluster;
use runbot_adapters::store_sql::SqlStore;
use runbot_commands::config::Settings;
use runbot_commands::engine::{Click, Engine, Request};
use runbot_commands::model::{ExecState, Identity, Origin};
use runbot_commands::ports::Clusters;
use runbot_commands::ports::{Chats, ListFilter, Store, SystemClock};
use runbot_commands::steps::StepKinds;
use runbot_sandbox::kube::{FakeCluster, Timing};
use serde_json::{Value, json};
use std::sync::Arc;

const TOKEN: &str = "am-token-5f1d2c9e7b";
const INC: &str = "inc-prod";

struct Receiver {
    base: String,
    chat: Arc<ConsoleChat>,
    engine: Engine,
    alerts: Alerts,
    dir: Arc<tempfile::TempDir>,
}

const NS: &str = "prod";

async fn receiver() -> Receiver {
    receiver_in(Arc::new(tempfile::tempdir().expect("tempdir")), Arc::new(ConsoleChat::in_memory())).await
}

/// A receiver whose store is in `dir` and whose chat is `chat` (the same two again: a restart,
/// or another replica).
async fn receiver_in(dir: Arc<tempfile::TempDir>, chat: Arc<ConsoleChat>) -> Receiver {
    receiver_with(dir, chat, None).await
}

/// [`receiver_in`] acting on the sandbox cluster `cluster` (`[clusters.sandbox]`).
async fn receiver_with(dir: Arc<tempfile::TempDir>, chat: Arc<ConsoleChat>, cluster: Option<&FakeCluster>) -> Receiver {
    let mut clusters = Clusters::new();
    let mut cluster_cfg = String::new();
    if let Some(c) = cluster {
        clusters = clusters.with("sandbox", Arc::new(KubeCluster::from_url(&c.url(), std::time::Duration::from_secs(5)).expect("kube client")));
        cluster_cfg = format!("[clusters.sandbox]\nurl = \"{}\"\n", c.url());
    }
    let config = format!(
        r#"{preamble}
[secrets]
alertmanager = "{token}"
[groups]
sre = ["console:ana", "console:bruno"]
[[approvals]]
approvers = ["sre"]
required = 1
[environments.prod]
incident_channel = {{ console = "{INC}" }}
{service}{cluster_cfg}
[alerts]
token_secret = "alertmanager"
platform = "console"
max_body_bytes = 65536
diagnosis_timeout = "2s"
[[triggers]]
labels = {{ alertname = "KubePodCrashLooping" }}
runbook = "hello"
target = "{{labels.deployment}}"
env = "{{labels.namespace}}"
[[triggers]]
labels = {{ alertname = "Probe" }}
runbook = "probe"
target = "{{labels.deployment}}"
env = "prod"
[[triggers]]
labels = {{ alertname = "ProbeFails" }}
runbook = "probe-fails"
target = "{{labels.deployment}}"
env = "prod"
[[triggers]]
labels = {{ alertname = "ProbeHangs" }}
runbook = "probe-hangs"
target = "{{labels.deployment}}"
env = "prod"
[[triggers]]
labels = {{ alertname = "PodCrash" }}
runbook = "restart"
target = "{{labels.deployment}}"
env = "{{labels.namespace}}"
"#,
        preamble = preamble(dir.path(), "alerts-test"),
        token = secret_file(dir.path(), "am-token", TOKEN),
        service = promotions_service(NS),
    );
    // A runbook that looks before it asks: its first step is the diagnosis.
    let runbooks = dir.path().join("runbooks.toml");
    let mut text = std::fs::read_to_string(&runbooks).expect("runbooks.toml");
    text.push_str(&format!(
        "[runbooks.probe]\nsummary = \"Looks, then asks\"\ntarget = \"service\"\n\
         [[runbooks.probe.steps]]\nname = \"look\"\nkind = \"command\"\nidempotent = true\nargv = [\"echo\", \"looking at {{target}}\"]\n\
         [[runbooks.probe.steps]]\nname = \"approve\"\nkind = \"approval\"\n\
         [[runbooks.probe.steps]]\nname = \"act\"\nkind = \"command\"\nargv = [\"touch\", \"{marker}\"]\n\
         [runbooks.probe-fails]\nsummary = \"Looks and fails\"\ntarget = \"service\"\n\
         [[runbooks.probe-fails.steps]]\nname = \"look\"\nkind = \"command\"\nidempotent = true\nargv = [\"sh\", \"-c\", \"echo no route to {{target}} >&2; exit 7\"]\n\
         [[runbooks.probe-fails.steps]]\nname = \"look again\"\nkind = \"command\"\nidempotent = true\nargv = [\"echo\", \"second look\"]\n\
         [[runbooks.probe-fails.steps]]\nname = \"approve\"\nkind = \"approval\"\n\
         [runbooks.probe-hangs]\nsummary = \"Looks for too long\"\ntarget = \"service\"\n\
         [[runbooks.probe-hangs.steps]]\nname = \"look\"\nkind = \"command\"\nidempotent = true\nargv = [\"sleep\", \"60\"]\n\
         [[runbooks.probe-hangs.steps]]\nname = \"approve\"\nkind = \"approval\"\n",
        marker = dir.path().join("acted").display(),
    ));
    std::fs::write(&runbooks, text).expect("write runbooks.toml");
    let kinds = StepKinds::shipped_with(&clusters);
    let settings = Settings::from_toml(&config, dir.path(), &kinds).unwrap_or_else(|p| panic!("config problems: {p:?}"));
    let store: Arc<dyn Store> = Arc::new(SqlStore::connect(&settings.config.store.url).await.expect("store"));
    let engine = Engine::new(settings, store, Chats::new().with(chat.clone()), Arc::new(SystemClock), kinds);
    let alerts = Alerts::from_engine(&engine).expect("receiver").expect("[alerts] is set");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let app = alerts.router();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Receiver { base, chat, engine, alerts, dir }
}

/// Alertmanager's documented webhook body (version 4), one alert.
fn payload(status: &str, alertname: &str, fingerprint: &str) -> Value {
    let labels = json!({"alertname": alertname, "deployment": "promotions-api", "namespace": "prod", "severity": "critical"});
    json!({
        "version": "4",
        "groupKey": "{}:{alertname=\"KubePodCrashLooping\"}",
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "runbot",
        "groupLabels": {"alertname": alertname},
        "commonLabels": labels,
        "commonAnnotations": {"summary": "promotions-api is crash-looping"},
        "externalURL": "http://alertmanager.example:9093",
        "alerts": [{
            "status": status,
            "labels": labels,
            "annotations": {"summary": "promotions-api is crash-looping", "description": "Pod restarted 5 times in 10 minutes"},
            "startsAt": "2026-12-06T02:10:00.000Z",
            "endsAt": if status == "resolved" { "2026-12-06T02:40:00.000Z" } else { "0001-01-01T00:00:00Z" },
            "generatorURL": "http://prometheus.example:9090/graph?g0.expr=kube_pod_restarts",
            "fingerprint": fingerprint
        }]
    })
}

async fn send(r: &Receiver, token: Option<&str>, body: String) -> (u16, String) {
    let mut req = reqwest::Client::new().post(format!("{}/alerts/alertmanager", r.base)).header("content-type", "application/json").body(body);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = req.send().await.expect("POST");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_without_the_right_bearer_token_is_refused_with_401_before_its_body_is_read() {
    let r = receiver().await;
    let good = payload("firing", "KubePodCrashLooping", "1a30ba71cca2921f").to_string();
    assert_eq!(send(&r, None, good.clone()).await.0, 401, "no token");
    assert_eq!(send(&r, Some("am-token-wrong"), good.clone()).await.0, 401, "a wrong token");
    assert_eq!(send(&r, Some(&format!("{TOKEN}x")), good).await.0, 401, "a longer token");
    // A body that is not JSON is not even read without the token: 401, not 400.
    assert_eq!(send(&r, Some("nope"), "{not json".into()).await.0, 401);
    assert!(r.chat.messages(INC).is_empty(), "nothing posted");
    assert_eq!(r.alerts.metrics.get("runbot_alerts_rejected_total", "token"), 4);
    // With the token, the same unreadable body is a 400; an oversized one a 413.
    assert_eq!(send(&r, Some(TOKEN), "{not json".into()).await.0, 400);
    assert_eq!(send(&r, Some(TOKEN), "x".repeat(70_000)).await.0, 413);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_firing_alert_posts_one_message_with_the_plan_and_a_button_a_repeat_edits_it_and_resolved_ends_it() {
    let r = receiver().await;
    let firing = payload("firing", "KubePodCrashLooping", "1a30ba71cca2921f").to_string();
    assert_eq!(send(&r, Some(TOKEN), firing.clone()).await, (200, "ok".into()));
    let msgs = r.chat.messages(INC);
    assert_eq!(msgs.len(), 1, "one message in the environment's incident channel");
    let m = &msgs[0];
    let text = m.message.all_text();
    for want in [
        "KubePodCrashLooping",
        "promotions-api is crash-looping",
        "deployment=promotions-api",
        "2026-12-06 02:10:00 UTC",
        "http://prometheus.example:9090/graph",
        "Dry run",
        "greet",
        "echo",
    ] {
        assert!(text.contains(want), "the alert message shows {want}:\n{text}");
    }
    let button = m.message.buttons.iter().find(|b| b.label == "Run hello promotions-api").expect("the [Run hello promotions-api] button");
    assert_eq!(button.value, "alert|1a30ba71cca2921f");

    // Alertmanager repeats the notification: the same message is edited, nothing new posted.
    assert_eq!(send(&r, Some(TOKEN), firing).await.0, 200);
    let msgs = r.chat.messages(INC);
    assert_eq!(msgs.len(), 1, "a repeat is not reposted");
    assert_eq!(msgs[0].edits, 1, "a repeat edits the message");

    assert_eq!(send(&r, Some(TOKEN), payload("resolved", "KubePodCrashLooping", "1a30ba71cca2921f").to_string()).await.0, 200);
    let msgs = r.chat.messages(INC);
    assert_eq!(msgs.len(), 1);
    let text = msgs[0].message.all_text();
    assert!(text.contains("Resolved at 2026-12-06 02:40:00 UTC"), "{text}");
    assert!(msgs[0].message.buttons.is_empty(), "a resolved alert offers no button");
    assert_eq!(r.alerts.metrics.get("runbot_alerts_total", "posted"), 1);
    assert_eq!(r.alerts.metrics.get("runbot_alerts_total", "edited"), 1);
    assert_eq!(r.alerts.metrics.get("runbot_alerts_total", "resolved"), 1);
}

fn click(who: &str, value: &str) -> Click {
    Click {
        identity: Identity::new(who),
        origin: Origin { platform: "console".into(), channel: INC.into(), thread: None },
        value: value.into(),
        delivery: None,
        roles: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_button_creates_the_execution_with_the_clicking_person_as_requester_and_the_alert_noted() {
    let r = receiver().await;
    assert_eq!(send(&r, Some(TOKEN), payload("firing", "KubePodCrashLooping", "bc97ff14869b13e3").to_string()).await.0, 200);
    let reply = r.engine.handle_click(click("console:bruno", "alert|bc97ff14869b13e3")).await;
    assert!(reply.message.text.contains("created"), "{:?}", reply.message.text);
    // The runner takes the new execution to its approval step.
    let started = std::time::Instant::now();
    let list = loop {
        let list = r.engine.store().list(&ListFilter::default()).await.expect("list");
        if list.iter().all(|e| e.state != ExecState::Running) || started.elapsed() > std::time::Duration::from_secs(30) {
            break list;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(list.len(), 1, "one execution");
    let exec = &list[0];
    assert_eq!(exec.requester, Identity::new("console:bruno"), "the clicking person requested it");
    assert_eq!(exec.runbook, "hello");
    assert_eq!(exec.command, "/ops run hello promotions-api --env prod");
    assert_eq!(exec.state, ExecState::AwaitingApproval, "the approval rules apply unchanged");
    assert!(exec.notes.iter().any(|n| n.contains("Started from alert KubePodCrashLooping (fingerprint bc97ff14869b13e3")), "{:?}", exec.notes);
    // The alert's message names the execution; a second click starts nothing new.
    let alert_msg = r.chat.messages(INC).into_iter().find(|m| m.message.title.starts_with("Alert")).expect("the alert message");
    assert!(alert_msg.message.all_text().contains(&format!("{} (/ops status", exec.id)), "{}", alert_msg.message.all_text());
    let again = r.engine.handle_click(click("console:ana", "alert|bc97ff14869b13e3")).await;
    assert!(again.message.text.contains("already started"), "{}", again.message.text);
    assert_eq!(r.engine.store().list(&ListFilter::default()).await.expect("list").len(), 1);
    // The requester cannot approve their own request: bruno's vote is refused like a typed command's.
    let own = r.engine.handle_click(click("console:bruno", &format!("{}|approve|{}", exec.id, exec.fingerprint))).await;
    assert!(own.message.text.contains("someone else must approve it"), "{}", own.message.text);

    // The alert resolves; the execution's timeline starts with the alert and shows its end.
    assert_eq!(send(&r, Some(TOKEN), payload("resolved", "KubePodCrashLooping", "bc97ff14869b13e3").to_string()).await.0, 200);
    let req = Request {
        identity: Identity::new("console:ana"),
        origin: Origin { platform: "console".into(), channel: INC.into(), thread: None },
        text: format!("/ops timeline {}", exec.id),
        roles: Vec::new(),
    };
    let reply = r.engine.handle_command(req).await;
    assert!(
        reply.message.text.contains(&format!("Posted the timeline of {} in its thread as timeline-{}.md", exec.id, exec.id)),
        "{}",
        reply.message.text
    );
    // The file is in the execution's thread, under its status message.
    let status = &exec.messages[0];
    let file = r
        .chat
        .messages(INC)
        .into_iter()
        .find(|m| m.message.title == format!("Timeline of {}", exec.id))
        .expect("the timeline file in the incident channel");
    assert_eq!(file.thread.as_deref(), Some(status.id.as_str()), "posted in the execution's thread");
    let timeline = file.message.code.unwrap_or_default();
    let mut at = 0;
    for want in [
        "| runbot | Alert KubePodCrashLooping fired, firing since 2026-12-06T02:10:00Z (http://prometheus.example:9090/graph",
        "| console:bruno | Requested hello on service:promotions@prod",
        "| console:bruno | Run from alert KubePodCrashLooping (bc97ff14869b13e3) |",
        "| runbot | Alert KubePodCrashLooping resolved |",
    ] {
        at += timeline[at..].find(want).unwrap_or_else(|| panic!("{want:?} after byte {at} in:\n{timeline}")) + want.len();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_alert_no_trigger_matches_is_counted_and_not_posted() {
    let r = receiver().await;
    assert_eq!(send(&r, Some(TOKEN), payload("firing", "HighLatency", "c6eadffa33fcdf37").to_string()).await.0, 200);
    assert!(r.chat.messages(INC).is_empty(), "nothing posted");
    assert_eq!(r.alerts.metrics.get("runbot_alerts_unmatched_total", "no_trigger"), 1);
    let text = r.alerts.metrics.render();
    assert!(text.contains("runbot_alerts_unmatched_total{reason=\"no_trigger\"} 1"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_restart_a_repeat_still_edits_its_message_and_the_button_still_works() {
    let before = receiver().await;
    assert_eq!(send(&before, Some(TOKEN), payload("firing", "KubePodCrashLooping", "5e7a11c0ffee0001").to_string()).await.0, 200);
    // A new process on the same store and chat: it finds the alert in the store.
    let after = receiver_in(before.dir.clone(), before.chat.clone()).await;
    assert_eq!(send(&after, Some(TOKEN), payload("firing", "KubePodCrashLooping", "5e7a11c0ffee0001").to_string()).await.0, 200);
    let msgs = after.chat.messages(INC);
    assert_eq!(msgs.len(), 1, "the repeat after the restart is not reposted");
    assert_eq!(msgs[0].edits, 1);
    assert!(msgs[0].message.all_text().contains("deployment=promotions-api"), "{}", msgs[0].message.all_text());
    let reply = after.engine.handle_click(click("console:ana", "alert|5e7a11c0ffee0001")).await;
    assert!(reply.message.text.contains("created"), "{}", reply.message.text);
    assert_eq!(after.alerts.metrics.get("runbot_alerts_total", "edited"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_between_firing_and_resolved_leaves_one_message_edited_to_resolved() {
    let before = receiver().await;
    assert_eq!(send(&before, Some(TOKEN), payload("firing", "KubePodCrashLooping", "5e7a11c0ffee0002").to_string()).await.0, 200);
    let after = receiver_in(before.dir.clone(), before.chat.clone()).await;
    let resolved = payload("resolved", "KubePodCrashLooping", "5e7a11c0ffee0002").to_string();
    assert_eq!(send(&after, Some(TOKEN), resolved).await.0, 200);
    let msgs = after.chat.messages(INC);
    assert_eq!(msgs.len(), 1, "one message for the alert");
    assert!(msgs[0].message.all_text().contains("Resolved at 2026-12-06 02:40:00 UTC"), "{}", msgs[0].message.all_text());
    assert!(msgs[0].message.buttons.is_empty(), "no button once resolved");
    assert_eq!(after.alerts.metrics.get("runbot_alerts_total", "resolved"), 1);
    assert_eq!(after.alerts.metrics.get("runbot_alerts_unmatched_total", "unknown_resolved"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_on_one_store_post_an_alert_once_and_either_edits_it() {
    let a = receiver().await;
    let b = receiver_in(a.dir.clone(), a.chat.clone()).await;
    let firing = payload("firing", "KubePodCrashLooping", "5e7a11c0ffee0003").to_string();
    // The same notification reaches both replicas at once (an Alertmanager HA pair).
    let (x, y) = tokio::join!(send(&a, Some(TOKEN), firing.clone()), send(&b, Some(TOKEN), firing.clone()));
    let codes = [x.0, y.0];
    assert!(codes.contains(&200), "one of them posts: {x:?} {y:?}");
    assert_eq!(a.chat.messages(INC).len(), 1, "posted once: {x:?} {y:?}");
    // Alertmanager retries a 503; any later delivery edits the one message.
    assert_eq!(send(&b, Some(TOKEN), firing).await.0, 200);
    assert_eq!(send(&a, Some(TOKEN), payload("resolved", "KubePodCrashLooping", "5e7a11c0ffee0003").to_string()).await.0, 200);
    let msgs = a.chat.messages(INC);
    assert_eq!(msgs.len(), 1);
    assert!(msgs[0].message.all_text().contains("Resolved at"), "{}", msgs[0].message.all_text());
}

fn code_of(r: &Receiver) -> String {
    r.chat.messages(INC).first().and_then(|m| m.message.code.clone()).expect("the alert message with its plan")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_steps_before_the_approval_run_as_the_diagnosis_and_nothing_after_it_runs() {
    let r = receiver().await;
    assert_eq!(send(&r, Some(TOKEN), payload("firing", "Probe", "0b5e55ed00000001").to_string()).await.0, 200);
    let code = code_of(&r);
    assert!(code.contains("1. look — run [\"echo\", \"looking at promotions\"]") && code.contains("(diagnosis, before approval)"), "{code}");
    assert!(!code.lines().any(|l| l.starts_with("2. approve") && l.contains("diagnosis")), "{code}");
    // The diagnosis ran: its outcome and its output are in the message.
    assert!(code.contains("Diagnosis of promotions"), "{code}");
    assert!(code.contains("1. look — SUCCEEDED"), "{code}");
    assert!(code.contains("| looking at promotions"), "the step's output is shown:\n{code}");
    assert!(!r.dir.path().join("acted").exists(), "the step after the approval did not run");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_diagnosis_step_is_shown_as_failed_and_the_steps_after_it_do_not_run() {
    let r = receiver().await;
    assert_eq!(send(&r, Some(TOKEN), payload("firing", "ProbeFails", "0b5e55ed00000002").to_string()).await.0, 200);
    let code = code_of(&r);
    assert!(code.contains("1. look — FAILED"), "{code}");
    assert!(code.contains("no route to promotions"), "the failure's output is shown:\n{code}");
    assert!(code.contains("2. look again — NOT RUN: step 1 failed"), "{code}");
    assert!(!code.contains("second look\n"), "{code}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_diagnosis_past_its_time_limit_is_cancelled_and_shown_as_timed_out() {
    let r = receiver().await;
    let started = std::time::Instant::now();
    assert_eq!(send(&r, Some(TOKEN), payload("firing", "ProbeHangs", "0b5e55ed00000003").to_string()).await.0, 200);
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "bounded: {:?}", started.elapsed());
    let code = code_of(&r);
    assert!(code.contains("1. look — TIMED OUT: still running after 2s, cancelled"), "{code}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_runbook_without_a_read_only_step_before_its_approval_says_so() {
    let r = receiver().await;
    assert_eq!(send(&r, Some(TOKEN), payload("firing", "KubePodCrashLooping", "0b5e55ed00000004").to_string()).await.0, 200);
    let code = code_of(&r);
    assert!(code.contains("Diagnosis: none — the hello runbook has no read-only step before its approval; nothing was run."), "{code}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_restart_runbooks_diagnosis_names_the_crash_looping_pod_of_the_sandbox_cluster_and_deletes_nothing() {
    let cluster = FakeCluster::start("127.0.0.1:0".parse().expect("addr"), Timing::fast()).await.expect("sandbox cluster");
    cluster.deploy(NS, "promotions-api", "registry.local/promotions-api:1.4.2", 3);
    until("3 Ready pods", || cluster.pods(NS).iter().filter(|p| ready(p)).count() == 3).await;
    let sick = sick_pod(&cluster, NS);
    let r = receiver_with(Arc::new(tempfile::tempdir().expect("tempdir")), Arc::new(ConsoleChat::in_memory()), Some(&cluster)).await;
    assert_eq!(send(&r, Some(TOKEN), payload("firing", "PodCrash", "0b5e55ed00000005").to_string()).await.0, 200);
    let code = code_of(&r);
    assert!(code.contains("1. Diagnose — SUCCEEDED"), "{code}");
    assert!(code.contains(&sick), "the diagnosis names the sick pod {sick}:\n{code}");
    let writes: Vec<_> = cluster.requests().into_iter().filter(|(m, _)| m != "GET").collect();
    assert!(writes.is_empty(), "a diagnosis changes nothing in the cluster: {writes:?}");
    assert!(r.engine.store().list(&ListFilter::default()).await.expect("list").is_empty(), "no execution was created");
}

/// The console renders an execution's timeline as HTML with every text escaped: a hostile
/// `generatorURL` from Alertmanager comes out as text, never as markup; the step output links
/// point at pages the console serves.
#[tokio::test(flavor = "multi_thread")]
async fn the_console_timeline_page_escapes_what_an_alert_carried_and_links_step_output() {
    use runbot_adapters::console::{ConsoleAuth, ConsoleState, router};
    let r = receiver().await;
    let mut hostile = payload("firing", "KubePodCrashLooping", "e5ca9e0000000001");
    hostile["alerts"][0]["generatorURL"] = json!("http://x/\"><script>alert(1)</script>");
    assert_eq!(send(&r, Some(TOKEN), hostile.to_string()).await.0, 200);
    let reply = r.engine.handle_click(click("console:bruno", "alert|e5ca9e0000000001")).await;
    assert!(reply.message.text.contains("created"), "{}", reply.message.text);
    let id = r.engine.store().list(&ListFilter::default()).await.expect("list")[0].id;

    let state = ConsoleState { chat: r.chat.clone(), engine: r.engine.clone(), auth: Arc::new(ConsoleAuth::Loopback(None)) };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let app = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let get = async |path: &str| {
        let resp = reqwest::get(format!("{base}{path}")).await.expect("GET");
        (resp.status().as_u16(), resp.text().await.unwrap_or_default())
    };
    let (status, html) = get(&format!("/console/executions/{id}/timeline")).await;
    assert_eq!(status, 200, "{html}");
    assert!(!html.contains("<script>"), "the alert's link is not markup:\n{html}");
    assert!(html.contains("&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"), "{html}");
    assert!(html.contains(&format!("<h1>Timeline of {id} — hello on service promotions (prod)</h1>")), "{html}");
    assert_eq!(get("/console/executions/R-999/timeline").await.0, 404);
    assert_eq!(get(&format!("/console/executions/{id}/steps/0/output")).await.0, 404);
    assert_eq!(get(&format!("/console/executions/{id}/steps/99/output")).await.0, 404);
    assert_eq!(get(&format!("/console/executions/{id}/steps/1/output")).await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_alert_that_fires_again_after_it_resolved_gets_a_new_message() {
    let r = receiver().await;
    let fp = "f1e5a9a1a0000001";
    assert_eq!(send(&r, Some(TOKEN), payload("firing", "KubePodCrashLooping", fp).to_string()).await.0, 200);
    assert_eq!(send(&r, Some(TOKEN), payload("resolved", "KubePodCrashLooping", fp).to_string()).await.0, 200);
    assert_eq!(send(&r, Some(TOKEN), payload("firing", "KubePodCrashLooping", fp).to_string()).await.0, 200);
    let msgs = r.chat.messages(INC);
    assert_eq!(msgs.len(), 2, "the first incident's message stays resolved; the new one is posted");
    let resolved = msgs.iter().filter(|m| m.message.all_text().contains("Resolved at")).count();
    let firing = msgs.iter().filter(|m| m.message.all_text().contains("Firing") && !m.message.buttons.is_empty()).count();
    assert_eq!((resolved, firing), (1, 1), "{msgs:?}");
    assert_eq!(r.alerts.metrics.get("runbot_alerts_total", "posted"), 2);
}
