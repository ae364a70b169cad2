//! runbot in Slack, end to end over loopback: the real axum routes (or Socket Mode), the real
//! engine on a SQLite store, the kube driver against the sandbox cluster, and slack-morphism
//! talking to the sandbox's fake Slack — only the base URLs differ from a deployment.
//!
//! "alice types /ops restart promotions-api, the plan with Approve/Reject appears in the
//! incident channel, alice's own Approve is refused privately, bob approves, the message is
//! edited to the final state."

use crate::common::{preamble, promotions_service, ready, secret_file, until};
use runbot_adapters::kubernetes::KubeCluster;
use runbot_adapters::slack::{Slack, SocketMode};
use runbot_adapters::store_sql::SqlStore;
use runbot_commands::config::Settings;
use runbot_commands::engine::Engine;
use runbot_commands::model::{ExecState, ExecutionId};
use runbot_commands::ports::{Chats, Clusters, Store, SystemClock};
use runbot_commands::steps::StepKinds;
use runbot_sandbox::kube::{Behavior, FakeCluster, Timing};
use runbot_sandbox::slack::{FakeSlack, Posted, sign};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

const NS: &str = "promotions-ns";
const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const BOT: &str = "xoxb-test-bot-token";
const APP: &str = "xapp-test-app-token";
const ALICE: &str = "U0ALICE01";
const BOB: &str = "U0BOB0002";
const OPS: &str = "C0OPS0001";
const INC: &str = "C0INCPROD";

struct World {
    slack: FakeSlack,
    cluster: Option<FakeCluster>,
    engine: Engine,
    adapter: Slack,
    base: String,
    http: reqwest::Client,
    socket: Option<SocketMode>,
    _dir: tempfile::TempDir,
}

struct Opts {
    socket: bool,
    http: bool,
    cluster: bool,
    /// Commands in flight at once (waiting 100 ms for a place); default: the adapter's.
    backlog: Option<usize>,
    /// `[limits] per_identity_per_minute`; default: the preamble's (1000).
    per_identity: Option<u32>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts { socket: false, http: true, cluster: true, backlog: None, per_identity: None }
    }
}

impl World {
    async fn start(o: Opts) -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let slack = FakeSlack::start(BOT, APP).await.expect("fake slack");
        let mut clusters = Clusters::new();
        let mut cluster_cfg = String::new();
        let cluster = if o.cluster {
            let c = FakeCluster::start("127.0.0.1:0".parse().expect("addr"), Timing::fast()).await.expect("sandbox cluster");
            c.deploy(NS, "promotions-api", "registry.local/promotions-api:1.4.2", 3);
            until("3 Ready pods", || c.pods(NS).iter().filter(|p| ready(p)).count() == 3).await;
            clusters = clusters.with("sandbox", Arc::new(KubeCluster::from_url(&c.url(), Duration::from_secs(5)).expect("kube client")));
            cluster_cfg = format!("[clusters.sandbox]\nurl = \"{}\"\n", c.url());
            Some(c)
        } else {
            None
        };
        let file = |name: &str, v: &str| secret_file(dir.path(), name, v);
        let secret_line = if o.http { format!("signing_secret = \"{}\"\n", file("signing", SECRET)) } else { String::new() };
        let app_line = if o.socket { format!("app_token = \"{}\"\n", file("app", APP)) } else { String::new() };
        let config = format!(
            r#"{preamble}
[groups]
sre = ["slack:{ALICE}", "slack:{BOB}"]
[[approvals]]
approvers = ["sre"]
required = 1
[environments.prod]
incident_channel = {{ slack = "{INC}" }}
[environments.staging]
incident_channel = {{ slack = "create" }}
{service}[services.promotions.environments.staging]
{cluster_cfg}
[slack]
bot_token = "{bot}"
{secret_line}{app_line}api_url = "{api}"
post_interval_ms = 20
edits_per_minute = 3000
"#,
            preamble = match o.per_identity {
                Some(n) => preamble(dir.path(), "slack-test").replace("per_identity_per_minute = 1000", &format!("per_identity_per_minute = {n}")),
                None => preamble(dir.path(), "slack-test"),
            },
            service = promotions_service(NS),
            bot = file("bot", BOT),
            api = slack.api_url(),
        );
        let kinds = StepKinds::shipped_with(&clusters);
        let settings = match Settings::from_toml(&config, dir.path(), &kinds) {
            Ok(s) => s,
            Err(p) => panic!("config problems: {p:?}"),
        };
        let mut adapter = Slack::from_config(settings.config.slack.as_ref().expect("[slack]"), &settings).expect("slack adapter");
        if let Some(n) = o.backlog {
            adapter = adapter.with_backlog(runbot_adapters::backlog::Backlog::new(n, Duration::from_millis(100)));
        }
        let store: Arc<dyn Store> = Arc::new(SqlStore::connect(&settings.config.store.url).await.expect("store"));
        let engine = Engine::new(settings, store, Chats::new().with(adapter.chat.clone()), Arc::new(SystemClock), kinds);
        let pipeline = runbot_adapters::inbound::Pipeline::new(engine.clone());
        let mut base = String::new();
        if let Some(router) = adapter.router(&pipeline) {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            base = format!("http://{}", listener.local_addr().expect("addr"));
            tokio::spawn(async move {
                let _ = axum::serve(listener, router).await;
            });
        }
        let socket = adapter.socket_mode(&pipeline);
        World { slack, cluster, engine, adapter, base, http: reqwest::Client::new(), socket, _dir: dir }
    }

    /// POSTs `body` to `path` signed like Slack, `age` seconds ago.
    async fn signed(&self, path: &str, ctype: &str, body: &str, age: i64) -> reqwest::Response {
        let ts = chrono::Utc::now().timestamp() - age;
        self.http
            .post(format!("{}{path}", self.base))
            .header("content-type", ctype)
            .header("x-slack-request-timestamp", ts.to_string())
            .header("x-slack-signature", sign(SECRET, ts, body))
            .body(body.to_string())
            .send()
            .await
            .expect("request")
    }

    /// Types a slash command; returns the HTTP status, the ack body and the response_url.
    async fn command(&self, user: &str, text: &str) -> (u16, String, String) {
        let (body, url) = self.slack.command_form(user, OPS, "/ops", text);
        let r = self.signed("/slack/commands", "application/x-www-form-urlencoded", &body, 0).await;
        (r.status().as_u16(), r.text().await.unwrap_or_default(), url)
    }

    /// Presses a button of a message; returns the HTTP status and the response_url.
    async fn click(&self, user: &str, msg: &Posted, action: &str) -> (u16, String) {
        let value = msg.buttons().into_iter().find(|(a, _)| a == action).map(|(_, v)| v).expect("button");
        let (payload, url) = self.slack.block_actions(user, msg, action, &value);
        let body = serde_urlencoded::to_string([("payload", payload.to_string())]).expect("form");
        let r = self.signed("/slack/interactions", "application/x-www-form-urlencoded", &body, 0).await;
        (r.status().as_u16(), url)
    }

    async fn response(&self, url: &str) -> String {
        let v = self.slack.wait("a reply on the response_url", |f| f.responses_to(url).first().cloned()).await;
        runbot_sandbox::slack::content_text(&v)
    }

    /// The one top-level message in `channel` whose text contains `needle`.
    async fn message(&self, channel: &str, needle: &str) -> Posted {
        self.slack.wait(needle, |f| f.top_level(channel).into_iter().find(|m| m.text().contains(needle))).await
    }

    async fn exec(&self, id: &str) -> runbot_commands::model::Execution {
        let id: ExecutionId = id.parse().expect("id");
        self.engine.store().load(id).await.expect("load").expect("exists").value
    }

    async fn audit_kinds(&self) -> Vec<String> {
        self.engine.store().audit_log().await.expect("audit").0.into_iter().map(|r| r.entry.kind).collect()
    }
}

fn sick_pod(c: &FakeCluster) -> String {
    let pods = c.pods(NS);
    let name = pods[1]["metadata"]["name"].as_str().unwrap_or_default().to_string();
    c.behave_pod(NS, &name, Behavior::CrashLoop { exit_code: 3, logs: vec!["FATAL: cannot connect to promotions-db:5432".into()] });
    name
}

/// The restart flow after the command was typed: plan with buttons in the incident channel,
/// self-approval refused privately, a double click by bob counted once, then the final state.
async fn restart_flow(w: &World, sick: &str, click: impl AsyncFn(&str, &Posted, &str) -> String) {
    let plan = w.message(INC, "Waiting for approval").await;
    assert!(plan.text().contains(sick), "the plan names the pod to restart:\n{}", plan.text());
    let actions: Vec<String> = plan.buttons().into_iter().map(|(a, _)| a).collect();
    assert_eq!(actions, ["approve", "reject"]);
    let id = plan.text().split_whitespace().next().unwrap_or_default().to_string();

    // alice requested it: her Approve is refused, privately, and changes nothing.
    let refusal = click(ALICE, &plan, "approve").await;
    assert!(refusal.contains("someone else must approve it"), "{refusal}");
    assert_eq!(w.exec(&id).await.state, ExecState::AwaitingApproval);

    // bob double-clicks: two deliveries, one approval.
    let (a, b) = tokio::join!(click(BOB, &plan, "approve"), click(BOB, &plan, "approve"));
    let answers = format!("{a}\n{b}");
    assert!(answers.contains("already voted") || answers.contains("is not waiting for approval"), "{answers}");

    let fin = w.slack.wait("the final status", |f| f.top_level(INC).into_iter().find(|m| m.ts == plan.ts && m.text().contains("Succeeded"))).await;
    assert!(fin.buttons().is_empty(), "no buttons on a finished execution");
    assert!(fin.versions.len() >= 3, "the status message was edited live: {} versions", fin.versions.len());
    let exec = w.exec(&id).await;
    assert_eq!(exec.state, ExecState::Succeeded);
    assert_eq!(exec.approvals.len(), 1, "one approval: {:?}", exec.approvals);
    assert_eq!(exec.approvals[0].identity.0, format!("slack:{BOB}"));
    let deleted = w.cluster.as_ref().map(|c| c.requests().into_iter().filter(|(m, p)| m == "DELETE" && p.contains(sick)).count()).unwrap_or(0);
    assert_eq!(deleted, 1, "the sick pod was deleted exactly once");
    assert!(w.slack.violations().is_empty(), "{:?}", w.slack.violations());
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_over_http_plan_buttons_approval_and_final_message() {
    let w = World::start(Opts::default()).await;
    let sick = sick_pod(w.cluster.as_ref().expect("cluster"));
    until("a restart of the sick pod", || {
        w.cluster.as_ref().is_some_and(|c| {
            c.pods(NS)
                .iter()
                .any(|p| p["metadata"]["name"] == sick.as_str() && p["status"]["containerStatuses"][0]["restartCount"].as_i64().unwrap_or(0) >= 1)
        })
    })
    .await;

    let (status, ack, url) = w.command(ALICE, "restart promotions-api").await;
    assert_eq!((status, ack.as_str()), (200, ""), "an empty 200 acknowledges at once");
    // Durably recorded before the ack: the audit log has it.
    assert!(w.audit_kinds().await.contains(&"slack.command".to_string()));
    let reply = w.response(&url).await;
    assert!(reply.contains("created") && reply.contains(INC), "{reply}");
    // One durable record per command: the adapter's is the command's audit record, so the
    // engine does not append a second one.
    let (log, _) = w.engine.store().audit_log().await.expect("audit");
    let records: Vec<_> = log.iter().filter(|r| r.entry.kind == "slack.command" || r.entry.kind == "command").collect();
    assert_eq!(records.len(), 1, "{records:?}");
    let detail = &records[0].entry.detail;
    assert_eq!(
        (&detail["text"], &detail["platform"], &detail["channel"], &detail["ok"]),
        (&json!("/ops restart promotions-api"), &json!("slack"), &json!(OPS), &json!(true))
    );

    restart_flow(&w, &sick, async |user: &str, msg: &Posted, action: &str| {
        let (status, url) = w.click(user, msg, action).await;
        assert_eq!(status, 200);
        w.response(&url).await
    })
    .await;
    assert_eq!(w.adapter.metrics.rejected.total(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_over_socket_mode() {
    let w = World::start(Opts { socket: true, http: false, ..Opts::default() }).await;
    assert!(w.base.is_empty(), "no signing secret: no HTTP routes");
    let sick = sick_pod(w.cluster.as_ref().expect("cluster"));
    until("a restart of the sick pod", || {
        w.cluster.as_ref().is_some_and(|c| {
            c.pods(NS)
                .iter()
                .any(|p| p["metadata"]["name"] == sick.as_str() && p["status"]["containerStatuses"][0]["restartCount"].as_i64().unwrap_or(0) >= 1)
        })
    })
    .await;

    let url = w.slack.response_url();
    let cmd = json!({"team_id": "T0001", "channel_id": OPS, "user_id": ALICE, "command": "/ops", "text": "restart promotions-api",
        "response_url": url, "trigger_id": "1.2.3", "api_app_id": "A0RUNBOT"});
    let env = w.slack.socket_send("slash_commands", cmd).await;
    let ack = w.slack.socket_ack(&env).await;
    assert_eq!(ack, json!({"envelope_id": env}));
    assert!(w.response(&url).await.contains("created"));

    restart_flow(&w, &sick, async |user: &str, msg: &Posted, action: &str| {
        let value = msg.buttons().into_iter().find(|(a, _)| a == action).map(|(_, v)| v).expect("button");
        let (payload, url) = w.slack.block_actions(user, msg, action, &value);
        let env = w.slack.socket_send("interactive", payload).await;
        assert_eq!(w.slack.socket_ack(&env).await["envelope_id"], env);
        w.response(&url).await
    })
    .await;

    // Slack asks to reconnect: the client opens a new connection and keeps working.
    w.slack.socket_disconnect();
    let url = w.slack.response_url();
    let env = w
        .slack
        .socket_send("slash_commands", json!({"team_id": "T0001", "channel_id": OPS, "user_id": BOB, "command": "/ops", "text": "whoami", "response_url": url, "trigger_id": "1.2.4"}))
        .await;
    // whoami is answered from memory: in the ack's payload (the envelope accepts one).
    let ack = w.slack.socket_ack(&env).await;
    assert_eq!(ack["payload"]["response_type"], "ephemeral");
    assert!(runbot_sandbox::slack::content_text(&ack["payload"]).contains(&format!("slack:{BOB}")), "{ack}");
    assert!(w.slack.responses_to(&url).is_empty(), "answered once, in the ack");
    // An envelope that takes no payload gets its answer through the response_url.
    let url = w.slack.response_url();
    let env = w
        .slack
        .socket_send_without_payload("slash_commands", json!({"team_id": "T0001", "channel_id": OPS, "user_id": BOB, "command": "/ops", "text": "whoami", "response_url": url, "trigger_id": "1.2.5"}))
        .await;
    assert_eq!(w.slack.socket_ack(&env).await, json!({"envelope_id": env}));
    assert!(w.response(&url).await.contains(&format!("slack:{BOB}")));
    assert!(w.slack.socket_connections() >= 2);
    if let Some(s) = w.socket {
        s.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_stale_and_unsigned_requests_get_401_and_are_counted() {
    let w = World::start(Opts { cluster: false, ..Opts::default() }).await;
    let (body, _) = w.slack.command_form(ALICE, OPS, "/ops", "whoami");
    let post = |sig: Option<String>, ts: Option<String>| {
        let mut r = w.http.post(format!("{}/slack/commands", w.base)).header("content-type", "application/x-www-form-urlencoded").body(body.clone());
        if let Some(s) = sig {
            r = r.header("x-slack-signature", s);
        }
        if let Some(t) = ts {
            r = r.header("x-slack-request-timestamp", t);
        }
        r.send()
    };
    let now = chrono::Utc::now().timestamp();
    let forged = sign("not-the-secret", now, &body);
    let old = now - 600;
    let cases = [
        ("forged", Some(forged), Some(now.to_string())),
        ("replayed 10 min later", Some(sign(SECRET, old, &body)), Some(old.to_string())),
        ("unsigned", None, None),
        ("malformed", Some("v0=nothex".into()), Some(now.to_string())),
        ("signature of another body", Some(sign(SECRET, now, "text=other")), Some(now.to_string())),
    ];
    for (what, sig, ts) in cases {
        let r = post(sig, ts).await.expect("request");
        assert_eq!(r.status().as_u16(), 401, "{what}");
    }
    // Interactions and events are guarded the same way.
    let r = w.http.post(format!("{}/slack/events", w.base)).body(r#"{"type":"url_verification","challenge":"x"}"#).send().await.expect("req");
    assert_eq!(r.status().as_u16(), 401);
    let r = w.http.post(format!("{}/slack/interactions", w.base)).body("payload=%7B%7D").send().await.expect("req");
    assert_eq!(r.status().as_u16(), 401);
    // A body over the routes' 1 MiB limit, even signed, is refused before anything reads it.
    let big = format!("text={}", "a".repeat(1 << 20));
    let r = w.signed("/slack/commands", "application/x-www-form-urlencoded", &big, 0).await;
    assert_eq!(r.status().as_u16(), 413);

    let m = &w.adapter.metrics;
    assert_eq!(m.rejected.bad_signature.load(Ordering::Relaxed), 2);
    assert_eq!(m.rejected.stale.load(Ordering::Relaxed), 1);
    assert_eq!(m.rejected.missing.load(Ordering::Relaxed), 3);
    assert_eq!(m.rejected.malformed.load(Ordering::Relaxed), 1);
    assert!(m.render().contains("runbot_slack_rejected_total{reason=\"stale\"} 1"));
    // Nothing was recorded, run or posted.
    assert!(!w.audit_kinds().await.iter().any(|k| k.starts_with("slack.") || k == "command"));
    assert!(w.slack.calls().is_empty(), "{:?}", w.slack.calls());

    // The same body, properly signed, goes through.
    let r = w.signed("/slack/commands", "application/x-www-form-urlencoded", &body, 0).await;
    assert_eq!(r.status().as_u16(), 200);
    // A signed but unreadable body gets a readable answer, not a 500.
    let r = w.signed("/slack/interactions", "application/x-www-form-urlencoded", "payload=%7Bnot-json", 0).await;
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.text().await.unwrap_or_default().contains("could not read"));
}

#[tokio::test(flavor = "multi_thread")]
async fn url_verification_and_an_event_retried_is_handled_once() {
    let w = World::start(Opts { cluster: false, ..Opts::default() }).await;
    let r = w
        .signed(
            "/slack/events",
            "application/json",
            r#"{"token":"t","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#,
            0,
        )
        .await;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.text().await.unwrap_or_default(), "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P");

    let event = |id: &str, text: &str| {
        json!({"token": "t", "team_id": "T0001", "api_app_id": "A0RUNBOT", "type": "event_callback", "event_id": id, "event_time": 1700000000,
            "event": {"type": "app_mention", "user": ALICE, "text": text, "ts": "1700000000.000100", "channel": OPS, "event_ts": "1700000000.000100"}})
        .to_string()
    };
    let first = event("Ev0000000001", "<@U0RUNBOT> whoami");
    assert_eq!(w.signed("/slack/events", "application/json", &first, 0).await.status().as_u16(), 200);
    // Slack retries the same delivery (x-slack-retry-num: 1): acknowledged, not handled again.
    let ts = chrono::Utc::now().timestamp();
    let r = w
        .http
        .post(format!("{}/slack/events", w.base))
        .header("content-type", "application/json")
        .header("x-slack-retry-num", "1")
        .header("x-slack-retry-reason", "http_timeout")
        .header("x-slack-request-timestamp", ts.to_string())
        .header("x-slack-signature", sign(SECRET, ts, &first))
        .body(first.clone())
        .send()
        .await
        .expect("retry");
    assert_eq!(r.status().as_u16(), 200);
    // A different event afterwards is handled; by then the retry would have been too.
    assert_eq!(w.signed("/slack/events", "application/json", &event("Ev0000000002", "<@U0RUNBOT> help"), 0).await.status().as_u16(), 200);
    w.slack.wait("two ephemeral answers", |f| (f.ephemerals().len() >= 2).then_some(())).await;
    let eph = w.slack.ephemerals();
    assert_eq!(eph.len(), 2, "{eph:?}");
    assert_eq!(w.adapter.metrics.duplicate_events.load(Ordering::Relaxed), 1);
    let whoami = eph.iter().find(|e| e.to_string().contains("You are")).expect("whoami answer");
    assert_eq!(whoami["user"], ALICE, "answered to the person who asked, privately");
    assert_eq!(whoami["channel"], OPS);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_429_storm_slows_updates_and_the_final_state_still_arrives() {
    let w = World::start(Opts { cluster: false, ..Opts::default() }).await;
    w.slack.set_retry_after(1);
    // The first post is rate limited twice: the adapter waits it out.
    w.slack.storm("chat.postMessage", 2);
    let (status, _, url) = w.command(ALICE, "run hello promotions").await;
    assert_eq!(status, 200);
    assert!(w.response(&url).await.contains("created"));
    let plan = w.message(INC, "Waiting for approval").await;
    // Every edit is refused for a while.
    w.slack.storm("chat.update", 4);
    w.slack.limit("chat.update", 2, Duration::from_secs(1));
    let (status, url) = w.click(BOB, &plan, "approve").await;
    assert_eq!(status, 200);
    assert!(w.response(&url).await.contains("approved"));
    let fin = w.slack.wait("the final state", |f| f.top_level(INC).into_iter().find(|m| m.ts == plan.ts && m.text().contains("Succeeded"))).await;
    assert!(fin.buttons().is_empty());
    let is_final =
        |c: &runbot_sandbox::slack::Call| c.status == 200 && c.error.is_none() && runbot_sandbox::slack::content_text(&c.body).contains("Succeeded");
    w.slack.wait("the final chat.update call", |f| f.calls_of("chat.update").into_iter().find(is_final)).await;
    let updates = w.slack.calls_of("chat.update");
    assert!(updates.iter().filter(|c| c.status == 429).count() >= 4, "{updates:?}");
    assert_eq!(w.slack.calls_of("chat.postMessage").iter().filter(|c| c.status == 429).count(), 2);
    // After a 429 the next edit carries the latest state, not a queue of stale ones.
    let ok: Vec<&runbot_sandbox::slack::Call> = updates.iter().filter(|c| c.status == 200).collect();
    let summary: Vec<String> = updates
        .iter()
        .map(|c| format!("{} {:?} {}", c.status, c.error, runbot_sandbox::slack::content_text(&c.body).lines().nth(1).unwrap_or("")))
        .collect();
    assert!(ok.last().is_some_and(|c| is_final(c)), "{summary:#?}");
    // ...and is recorded as delivered, so a restart would not send it again.
    let id = plan.text().split_whitespace().next().unwrap_or_default().to_string();
    let t = std::time::Instant::now();
    while !w.exec(&id).await.messages.iter().all(|m| m.final_sent) {
        assert!(t.elapsed() < Duration::from_secs(30), "the final state was never recorded as delivered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn incident_channel_created_per_execution_with_people_invited() {
    let w = World::start(Opts { cluster: false, ..Opts::default() }).await;
    let (_, _, url) = w.command(ALICE, "run hello promotions --env staging").await;
    let reply = w.response(&url).await;
    let (id, name) = w.slack.wait("a created channel", |f| f.channels_created().first().cloned()).await;
    assert!(reply.contains(&id), "the reply points to the new channel: {reply}");
    let today = chrono::Utc::now().format("%Y%m%d").to_string();
    assert!(name.starts_with(&format!("inc-{today}-hello-")), "{name}");
    let plan = w.message(&id, "Waiting for approval").await;
    let invited = w.slack.invites();
    assert_eq!(invited.len(), 1);
    assert_eq!(invited[0].0, id);
    assert!(invited[0].1.contains(&ALICE.to_string()) && invited[0].1.contains(&BOB.to_string()), "{invited:?}");
    // Edits land in the created channel, under the same message.
    let (_, url) = w.click(BOB, &plan, "approve").await;
    w.response(&url).await;
    w.slack
        .wait("the final state in the new channel", |f| f.top_level(&id).into_iter().find(|m| m.ts == plan.ts && m.text().contains("Succeeded")))
        .await;
    assert!(w.slack.top_level(OPS).is_empty() && w.slack.top_level("create").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_are_answered_privately_to_whoever_caused_them() {
    let w = World::start(Opts { cluster: false, ..Opts::default() }).await;
    let (status, ack, url) = w.command("U0STRANGER", "run hello promotions").await;
    assert_eq!((status, ack.as_str()), (200, ""));
    let reply = w.response(&url).await;
    assert!(reply.contains("not in any runbot group"), "{reply}");
    // A typo is answered from memory: in the ack itself, privately, and nowhere else.
    let (status, ack, url) = w.command(ALICE, "deploy").await;
    assert_eq!(status, 200);
    let ack: Value = serde_json::from_str(&ack).expect("a JSON answer in the ack");
    assert_eq!(ack["response_type"], "ephemeral");
    assert!(runbot_sandbox::slack::content_text(&ack).to_lowercase().contains("usage"), "{ack}");
    assert!(w.slack.top_level(OPS).is_empty() && w.slack.top_level(INC).is_empty(), "nothing public");
    assert!(w.slack.responses_to(&url).is_empty(), "answered once, in the ack");
}

#[tokio::test(flavor = "multi_thread")]
async fn commands_beyond_the_backlog_are_refused_before_anything_is_recorded_or_run() {
    let w = World::start(Opts { cluster: false, backlog: Some(1), ..Opts::default() }).await;
    // The one place is held by a command whose incident post Slack keeps rate limiting.
    w.slack.set_retry_after(2);
    w.slack.storm("chat.postMessage", 1);
    let (status, ack, url) = w.command(ALICE, "run hello promotions").await;
    assert_eq!((status, ack.as_str()), (200, ""));
    until("the rate-limited post", || !w.slack.calls_of("chat.postMessage").is_empty()).await;
    let recorded = w.audit_kinds().await.iter().filter(|k| *k == "slack.command").count();
    // Another command now: refused in its ack, recorded nowhere, run nowhere.
    let (status, ack, busy_url) = w.command(BOB, "whoami").await;
    assert_eq!(status, 200);
    let ack: Value = serde_json::from_str(&ack).expect("a JSON answer in the ack");
    assert!(ack["text"].as_str().is_some_and(|t| t.contains("busy") && t.contains("nothing was done")), "{ack}");
    assert_eq!(w.audit_kinds().await.iter().filter(|k| *k == "slack.command").count(), recorded, "not recorded");
    let metrics = w.adapter.metrics.render();
    assert!(metrics.contains("runbot_slack_busy_total 1"), "{metrics}");
    // The first command finishes (its post goes through after Retry-After) and frees the place.
    assert!(w.response(&url).await.contains("created"));
    let (_, ack, _) = w.command(BOB, "whoami").await;
    assert!(ack.contains(&format!("slack:{BOB}")), "{ack}");
    assert!(w.slack.responses_to(&busy_url).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_ready_at_once_ride_on_the_ack_and_the_rest_follow_it() {
    let w = World::start(Opts { cluster: false, ..Opts::default() }).await;
    // help: rendered as Block Kit in the ack, recorded before it, never sent again.
    let (status, ack, url) = w.command(ALICE, "help").await;
    assert_eq!(status, 200);
    let ack: Value = serde_json::from_str(&ack).expect("a JSON answer in the ack");
    assert_eq!(ack["response_type"], "ephemeral");
    assert!(ack["blocks"].as_array().is_some_and(|b| !b.is_empty() && b.len() <= 50), "{ack}");
    assert!(runbot_sandbox::slack::content_text(&ack).contains("/ops restart"), "{ack}");
    assert!(w.audit_kinds().await.iter().any(|k| k == "slack.command"), "recorded before the ack");
    // ... and recorded processed in the same write: nothing for a restart to take over.
    let later = chrono::Utc::now() + chrono::TimeDelta::hours(1);
    let claim = runbot_commands::ports::InboxClaim {
        owner: w.engine.settings().instance.clone(),
        own: true,
        until: later,
        now: later,
        forget_before: chrono::Utc::now() - chrono::TimeDelta::days(1),
    };
    let left = w.engine.store().claim_inbound(&claim).await.expect("claim");
    assert!(left.is_empty(), "an answered command left unprocessed: {left:?}");
    // A runbook waits for Slack (its plan is posted in the incident channel first):
    // acknowledged empty, answered through the response_url.
    let (status, ack, url2) = w.command(ALICE, "run hello promotions").await;
    assert_eq!((status, ack.as_str()), (200, ""));
    assert!(w.response(&url2).await.contains("created"));
    assert!(w.slack.responses_to(&url).is_empty(), "help was answered once, in the ack");
}

/// Only answers that need nothing but the command ride on the ack, recorded processed at once:
/// help, whoami, a typo — within the quota. Past it, the usual way refuses (empty ack, the
/// refusal through the response_url, audited); a runbook is never answered at once.
#[tokio::test(flavor = "multi_thread")]
async fn only_answers_needing_nothing_but_the_command_are_given_in_the_ack() {
    let w = World::start(Opts { cluster: false, per_identity: Some(3), ..Opts::default() }).await;
    let json = |ack: &str| serde_json::from_str::<Value>(ack).unwrap_or_else(|e| panic!("a JSON answer in the ack: {e}: {ack}"));
    let (_, ack, _) = w.command(ALICE, "help").await;
    assert!(runbot_sandbox::slack::content_text(&json(&ack)).contains("/ops restart"), "{ack}");
    let (_, ack, _) = w.command(ALICE, "deploy").await;
    assert!(runbot_sandbox::slack::content_text(&json(&ack)).contains("Usage:"), "{ack}");
    let (_, ack, _) = w.command(ALICE, "whoami").await;
    assert!(ack.contains(&format!("slack:{ALICE}")), "{ack}");
    // Alice's fourth in a minute: over the quota, so not answered at once.
    let (status, ack, url) = w.command(ALICE, "help").await;
    assert_eq!((status, ack.as_str()), (200, ""));
    assert!(w.response(&url).await.contains("Try again in"));
    assert!(w.audit_kinds().await.iter().any(|k| k == "limit"), "the refusal is audited");
    // Bob's runbook waits for Slack and the store: acknowledged empty.
    let (status, ack, url) = w.command(BOB, "run hello promotions").await;
    assert_eq!((status, ack.as_str()), (200, ""));
    assert!(w.response(&url).await.contains("created"));
    assert_eq!(w.audit_kinds().await.iter().filter(|k| *k == "slack.command").count(), 5, "every command recorded once");
}

/// Ack bodies are reused for an equal answer (rendering was a good part of an ack's cost),
/// never across different ones: Alice and Bob asking `whoami` in turn each see themselves, and
/// help after a typo is help. The content-type says JSON, as Slack needs for Block Kit.
#[tokio::test(flavor = "multi_thread")]
async fn a_reused_ack_body_is_only_ever_the_same_answer() {
    let w = World::start(Opts { cluster: false, ..Opts::default() }).await;
    for round in 0..3 {
        for (who, other) in [(ALICE, BOB), (BOB, ALICE)] {
            let (status, ack, _) = w.command(who, "whoami").await;
            assert_eq!(status, 200);
            assert!(ack.contains(&format!("slack:{who}")) && !ack.contains(&format!("slack:{other}")), "round {round}, {who}: {ack}");
        }
        let (_, typo, _) = w.command(ALICE, "deploy").await;
        assert!(typo.contains("Usage:") && !typo.contains("/ops restart"), "{typo}");
        let (_, help, _) = w.command(ALICE, "help").await;
        assert!(help.contains("/ops restart") && help.contains("\"response_type\":\"ephemeral\""), "{help}");
    }
    let (body, _) = w.slack.command_form(ALICE, OPS, "/ops", "whoami");
    let r = w.signed("/slack/commands", "application/x-www-form-urlencoded", &body, 0).await;
    assert_eq!(r.headers().get("content-type").map(|v| v.as_bytes()), Some(&b"application/json"[..]));
}

/// A signed `block_actions` whose value lost its plan fingerprint (`R-1|approve|`) is refused
/// privately, audited, and approves nothing; the real button then does.
#[tokio::test(flavor = "multi_thread")]
async fn an_approval_without_the_plan_fingerprint_is_refused() {
    let w = World::start(Opts { cluster: false, ..Opts::default() }).await;
    let (status, _, url) = w.command(ALICE, "run hello promotions").await;
    assert_eq!(status, 200);
    assert!(w.response(&url).await.contains("created"));
    let plan = w.message(INC, "Waiting for approval").await;
    let value = plan.buttons().into_iter().find(|(a, _)| a == "approve").map(|(_, v)| v).expect("approve");
    let id = value.split('|').next().expect("id").to_string();
    for forged in [format!("{id}|approve|"), format!("{id}|approve")] {
        let (payload, url) = w.slack.block_actions(BOB, &plan, "approve", &forged);
        let body = serde_urlencoded::to_string([("payload", payload.to_string())]).expect("form");
        let r = w.signed("/slack/interactions", "application/x-www-form-urlencoded", &body, 0).await;
        assert_eq!(r.status().as_u16(), 200);
        let answer = w.response(&url).await;
        assert!(answer.contains("carries no plan fingerprint"), "{forged}: {answer}");
        let exec = w.exec(&id).await;
        assert_eq!((exec.state, exec.approvals.len()), (ExecState::AwaitingApproval, 0), "{forged} approved nothing");
    }
    assert_eq!(w.audit_kinds().await.iter().filter(|k| *k == "approval_refused").count(), 2);
    let (status, url) = w.click(BOB, &plan, "approve").await;
    assert_eq!(status, 200);
    assert!(w.response(&url).await.contains("approved"));
}

/// `/ops timeline R-n` uploads the timeline through Slack's external upload (the three
/// documented calls) into the execution's thread; the bytes arrive whole.
#[tokio::test(flavor = "multi_thread")]
async fn the_timeline_is_uploaded_as_a_file_into_the_executions_thread() {
    let w = World::start(Opts { cluster: false, ..Opts::default() }).await;
    let (status, _, url) = w.command(ALICE, "run hello promotions-api").await;
    assert_eq!(status, 200);
    let reply = w.response(&url).await;
    assert!(reply.contains("created"), "{reply}");
    let plan = w.message(INC, "Waiting for approval").await;
    let id = plan.text().split_whitespace().next().unwrap_or_default().to_string();
    let (status, _, url) = w.command(BOB, &format!("timeline {id}")).await;
    assert_eq!(status, 200);
    let reply = w.response(&url).await;
    assert!(reply.contains(&format!("Posted the timeline of {id} in its thread as timeline-{id}.md")), "{reply}");
    let files = w.slack.files();
    assert_eq!(files.len(), 1, "{files:?}");
    let f = &files[0];
    assert_eq!(f.filename, format!("timeline-{id}.md"));
    assert_eq!((f.channel.as_deref(), f.thread_ts.as_deref()), (Some(INC), Some(plan.ts.as_str())), "in the status message's thread");
    assert_eq!(f.title.as_deref(), Some(format!("Timeline of {id}").as_str()));
    let content = String::from_utf8(f.content.clone().expect("uploaded")).expect("utf-8");
    assert_eq!(content.len(), f.length, "the declared length is the bytes sent");
    assert!(content.starts_with(&format!("# Timeline of {id} — hello on service promotions (prod)")), "{content}");
    assert!(content.contains("Requested hello on service:promotions@prod"), "{content}");
    let methods: Vec<String> = w.slack.calls().into_iter().map(|c| c.method).filter(|m| m.starts_with("files.")).collect();
    assert_eq!(methods, ["files.getUploadURLExternal", "files.completeUploadExternal"]);
}

/// The fake's upload endpoints refuse what Slack refuses, with Slack's documented errors.
#[tokio::test(flavor = "multi_thread")]
async fn the_fake_slack_upload_endpoints_answer_bad_arguments_with_slacks_errors() {
    let slack = FakeSlack::start(BOT, APP).await.expect("fake slack");
    let http = reqwest::Client::new();
    let call = async |method: &str, form: &[(&str, &str)]| -> Value {
        let r = http.post(format!("{}/{method}", slack.api_url())).bearer_auth(BOT).form(form).send().await.expect("call");
        r.json().await.expect("json")
    };
    assert_eq!(call("files.getUploadURLExternal", &[("filename", "a.md")]).await["error"], "missing_argument", "no length");
    assert_eq!(call("files.getUploadURLExternal", &[("filename", "a.md"), ("length", "0")]).await["error"], "missing_argument");
    assert_eq!(call("files.getUploadURLExternal", &[("length", "3")]).await["error"], "missing_argument", "no filename");
    assert_eq!(call("files.getUploadURLExternal", &[("filename", "a.md"), ("length", "x")]).await["error"], "invalid_arguments");
    let got = call("files.getUploadURLExternal", &[("filename", "a.md"), ("length", "3")]).await;
    let (upload, fid) = (got["upload_url"].as_str().expect("upload_url"), got["file_id"].as_str().expect("file_id"));
    let files = json!([{"id": fid, "title": "A"}]).to_string();
    // Not uploaded yet: completing it finds no file.
    assert_eq!(call("files.completeUploadExternal", &[("files", &files), ("channel_id", INC)]).await["error"], "file_not_found");
    assert_eq!(http.post(upload).body("four").send().await.expect("upload").status().as_u16(), 400, "the wrong length is refused");
    assert_eq!(http.post(upload).body("abc").send().await.expect("upload").status().as_u16(), 200);
    assert_eq!(call("files.completeUploadExternal", &[("channel_id", INC)]).await["error"], "invalid_arguments", "no files");
    let missing_id = json!([{"title": "A"}]).to_string();
    assert_eq!(call("files.completeUploadExternal", &[("files", &missing_id)]).await["error"], "invalid_arguments", "a file without id");
    let unknown = json!([{"id": "F0NOPE"}]).to_string();
    assert_eq!(call("files.completeUploadExternal", &[("files", &unknown), ("channel_id", INC)]).await["error"], "file_not_found");
    assert_eq!(call("files.completeUploadExternal", &[("files", &files), ("channel_id", INC)]).await["ok"], true);
    assert_eq!(slack.files().len(), 1);
    assert_eq!(slack.files()[0].content.as_deref(), Some(&b"abc"[..]));
}
