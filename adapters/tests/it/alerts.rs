//! The Alertmanager receiver over loopback with Alertmanager's documented webhook payload
//! (version 4): the bearer token before anything else, one message per firing alert with the
//! runbook's plan and a [Run …] button, a repeat edits it, `resolved` edits it to resolved,
//! the button creates the execution as the person who clicked, unmatched alerts are counted.

use crate::common::{preamble, promotions_service, secret_file};
use runbot_adapters::alerts::Alerts;
use runbot_adapters::console::ConsoleChat;
use runbot_adapters::store_sql::SqlStore;
use runbot_commands::config::Settings;
use runbot_commands::engine::{Click, Engine, Request};
use runbot_commands::model::{ExecState, Identity, Origin};
use runbot_commands::ports::{Chats, ListFilter, Store, SystemClock};
use runbot_commands::steps::StepKinds;
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

async fn receiver() -> Receiver {
    receiver_in(Arc::new(tempfile::tempdir().expect("tempdir")), Arc::new(ConsoleChat::in_memory())).await
}

/// A receiver whose store is in `dir` and whose chat is `chat` (the same two again: a restart).
async fn receiver_in(dir: Arc<tempfile::TempDir>, chat: Arc<ConsoleChat>) -> Receiver {
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
{service}
[alerts]
token_secret = "alertmanager"
platform = "console"
max_body_bytes = 65536
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
"#,
        preamble = preamble(dir.path(), "alerts-test"),
        token = secret_file(dir.path(), "am-token", TOKEN),
        service = promotions_service("prod"),
    );
    // A runbook that looks before it asks: its first step is the diagnosis.
    let runbooks = dir.path().join("runbooks.toml");
    let mut text = std::fs::read_to_string(&runbooks).expect("runbooks.toml");
    text.push_str(
        "[runbooks.probe]\nsummary = \"Looks, then asks\"\ntarget = \"service\"\n\
         [[runbooks.probe.steps]]\nname = \"look\"\nkind = \"command\"\nidempotent = true\nargv = [\"echo\", \"looking at {target}\"]\n\
         [[runbooks.probe.steps]]\nname = \"approve\"\nkind = \"approval\"\n",
    );
    std::fs::write(&runbooks, text).expect("write runbooks.toml");
    let kinds = StepKinds::shipped();
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
    let timeline = r.engine.handle_command(req).await.message.code.unwrap_or_default();
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
    // A new process on the same store and chat: it knows the alert from the audit trail.
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
async fn the_steps_before_the_approval_are_shown_as_the_diagnosis() {
    let r = receiver().await;
    assert_eq!(send(&r, Some(TOKEN), payload("firing", "Probe", "0b5e55ed00000001").to_string()).await.0, 200);
    let code = r.chat.messages(INC).first().and_then(|m| m.message.code.clone()).expect("the alert message with its plan");
    assert!(code.contains("1. look — run [\"echo\", \"looking at promotions\"]") && code.contains("(diagnosis, before approval)"), "{code}");
    assert!(!code.lines().any(|l| l.starts_with("2. approve") && l.contains("diagnosis")), "{code}");
}
