//! Discord in gateway mode, over loopback against the sandbox's fake Discord: runbot's Gateway
//! v10 client (`GET /gateway/bot`, HELLO, heartbeats, IDENTIFY/READY, RESUME) feeding the same
//! interaction handler as the HTTP endpoint, answering each interaction over REST.
//!
//! - The restart flow: `/ops restart` typed in Discord arrives as INTERACTION_CREATE, the plan
//!   appears in the incident channel, bob's click on Approve (another INTERACTION_CREATE) runs
//!   it, the sick pod is deleted once, the status message ends in the final state.
//! - A connection whose heartbeats are not acknowledged is dropped and the session resumed
//!   (no new IDENTIFY), and interactions flow again; RECONNECT resumes too; an INVALID_SESSION
//!   that cannot be resumed identifies anew.
//! - A refused token, or a fatal close code, stops the client with a clear error — once, not
//!   in a loop — and never echoes the token.

use crate::common::{preamble, promotions_service, ready, secret_file, sick_pod, until};
use async_trait::async_trait;
use runbot_adapters::discord::{Discord, DiscordChat, DiscordChatOptions, Gateway, GatewayOptions, GatewayState, InteractionHandler};
use runbot_adapters::kubernetes::KubeCluster;
use runbot_adapters::store_sql::SqlStore;
use runbot_commands::config::{Secret, SecretRef, Settings};
use runbot_commands::engine::Engine;
use runbot_commands::model::ExecState;
use runbot_commands::ports::{Chat, Chats, Clusters, Store, SystemClock};
use runbot_commands::steps::StepKinds;
use runbot_sandbox::discord::{FakeDiscord, Route};
use runbot_sandbox::kube::{FakeCluster, Timing};
use serde_json::{Value, json};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const BOT: &str = "MTI5MDAwMDAwMDAwMDAwMDAwMQ.fake.bot-token-for-gateway-tests";
const APP: &str = "1250000000000000001";
const ALICE: &str = "1001000000000000001";
const BOB: &str = "1002000000000000002";
const NS: &str = "promotions-ns";

fn secret(dir: &tempfile::TempDir, name: &str, value: &str) -> (String, Secret) {
    let r = secret_file(dir.path(), name, value);
    let s = r.parse::<SecretRef>().expect("ref").resolve().expect("secret");
    (r, s)
}

async fn state_is(gw: &Gateway, what: &str, f: impl Fn(&GatewayState) -> bool) -> GatewayState {
    let mut rx = gw.state();
    let wait = async {
        loop {
            let s = rx.borrow_and_update().clone();
            if f(&s) {
                return s;
            }
            if rx.changed().await.is_err() {
                return rx.borrow().clone();
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for the gateway to be {what}; it is {:?}", gw.state().borrow().clone()))
}

fn connected(s: &GatewayState) -> bool {
    matches!(s, GatewayState::Connected { .. })
}

/// A handler that answers every interaction privately with its custom_id, and remembers them.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<Value>>,
}

#[async_trait]
impl InteractionHandler for Recorder {
    async fn handle(&self, interaction: Value) -> Option<Value> {
        let id = interaction["data"]["custom_id"].as_str().unwrap_or("").to_string();
        self.seen.lock().expect("lock").push(interaction);
        Some(json!({"type": 4, "data": {"content": format!("got {id}"), "flags": 64}}))
    }
}

fn chat_for(fake: &FakeDiscord, token: Secret) -> Arc<DiscordChat> {
    Arc::new(
        DiscordChat::new(DiscordChatOptions {
            api_url: fake.api_url(),
            bot_token: token,
            application_id: APP.into(),
            guild_id: Some(fake.guild_id().to_string()),
            incident_category: None,
            mention: Vec::new(),
            timeout: Duration::from_secs(10),
        })
        .expect("discord chat"),
    )
}

/// A gateway client with the recording handler, connected to `fake` with `token`.
fn recording_gateway(fake: &FakeDiscord, dir: &tempfile::TempDir, token: &str) -> (Gateway, Arc<Recorder>) {
    let (_, token) = secret(dir, "bot", token);
    let rec = Arc::new(Recorder::default());
    let mut opts = GatewayOptions::new(token.clone());
    opts.reidentify_wait = (Duration::from_millis(10), Duration::from_millis(50));
    let gw = Gateway::spawn(chat_for(fake, token), opts, rec.clone());
    (gw, rec)
}

/// A click dispatched over the gateway is answered over REST with the handler's response.
async fn click_answered(fake: &FakeDiscord, channel: &str, custom_id: &str) {
    let msg = fake.in_channel(channel).into_iter().next().expect("a message to click on");
    let click = fake.click(BOB, &msg, custom_id);
    assert!(fake.gateway_dispatch(&click) >= 1);
    let id = click.id.clone();
    let body = fake.wait("the interaction callback", |f| f.callbacks().into_iter().find(|(i, _)| *i == id).map(|(_, b)| b)).await;
    assert_eq!(body["data"]["content"], format!("got {custom_id}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_over_the_gateway() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeDiscord::start(BOT, APP).await.expect("fake discord");
    let ops = fake.add_text_channel("ops");
    let inc = fake.add_text_channel("inc-prod");
    fake.add_member(ALICE, "alice", &[]);
    fake.add_member(BOB, "bob", &[]);
    let cluster = FakeCluster::start("127.0.0.1:0".parse().expect("addr"), Timing::fast()).await.expect("sandbox cluster");
    cluster.deploy(NS, "promotions-api", "registry.local/promotions-api:1.4.2", 3);
    until("3 Ready pods", || cluster.pods(NS).iter().filter(|p| ready(p)).count() == 3).await;
    let sick = sick_pod(&cluster, NS);
    until("the sick pod restarting", || {
        cluster
            .pods(NS)
            .iter()
            .any(|p| p["metadata"]["name"] == sick.as_str() && p["status"]["containerStatuses"][0]["restartCount"].as_i64().unwrap_or(0) >= 1)
    })
    .await;

    let (bot_ref, _) = secret(&dir, "bot", BOT);
    let config = format!(
        r#"{preamble}
[groups]
sre = ["discord:{ALICE}", "discord:{BOB}"]
[[approvals]]
approvers = ["sre"]
required = 1
[environments.prod]
incident_channel = {{ discord = "{inc}" }}
{service}[clusters.sandbox]
url = "{cluster}"
[discord]
bot_token = "{bot_ref}"
application_id = "{APP}"
guild_id = "{guild}"
mode = "gateway"
api_url = "{api}/api/v10"
"#,
        preamble = preamble(dir.path(), "discord-gateway-test"),
        service = promotions_service(NS),
        cluster = cluster.url(),
        guild = fake.guild_id(),
        api = fake.api_url(),
    );
    let clusters = Clusters::new().with("sandbox", Arc::new(KubeCluster::from_url(&cluster.url(), Duration::from_secs(5)).expect("kube client")));
    let kinds = StepKinds::shipped_with(&clusters);
    let settings = Settings::from_toml(&config, dir.path(), &kinds).unwrap_or_else(|p| panic!("config problems: {p:?}"));
    let cfg = settings.config.discord.clone().expect("[discord]");
    let discord = Discord::from_config(&cfg).expect("discord adapter");
    let store: Arc<dyn Store> = Arc::new(SqlStore::connect(&settings.config.store.url).await.expect("store"));
    let engine = Engine::new(settings, store, Chats::new().with(discord.chat.clone()), Arc::new(SystemClock), kinds);
    let pipeline = runbot_adapters::inbound::Pipeline::new(engine.clone());
    let gw = discord.gateway(&cfg, &pipeline).expect("gateway").expect("mode gateway starts a client");
    state_is(&gw, "connected", connected).await;
    assert!(gw.connected().load(Ordering::Relaxed));

    // alice types /ops restart promotions-api in #ops: it arrives over the gateway.
    let cmd = fake.slash_command(ALICE, &ops, "ops", &["restart"], &[("target", json!("promotions-api"))]);
    assert_eq!(fake.gateway_dispatch(&cmd), 1);
    let cmd_id = cmd.id.clone();
    let ack = fake.wait("the command's callback", |f| f.callbacks().into_iter().find(|(i, _)| *i == cmd_id).map(|(_, b)| b)).await;
    assert_eq!(ack["type"], 5, "deferred, answered over REST: {ack}");
    let plan =
        fake.wait("the plan in the incident channel", |f| f.in_channel(&inc).into_iter().find(|m| m.text().contains("Waiting for approval"))).await;
    assert!(plan.text().contains(&sick), "the plan names the sick pod:\n{}", plan.text());
    let approve = plan.buttons().into_iter().map(|(c, _)| c).find(|c| c.contains("|approve|")).expect("an Approve button");

    // bob approves over the gateway.
    let click = fake.click(BOB, &plan, &approve);
    assert_eq!(fake.gateway_dispatch(&click), 1);
    let click_id = click.id.clone();
    let ack = fake.wait("the click's callback", |f| f.callbacks().into_iter().find(|(i, _)| *i == click_id).map(|(_, b)| b)).await;
    assert_eq!(ack["type"], 6);
    let fin = fake.wait("the final state", |f| f.message(&plan.id).filter(|m| m.text().contains("Succeeded"))).await;
    assert!(fin.buttons().is_empty());
    let id = plan
        .text()
        .split_whitespace()
        .find(|w| w.starts_with("R-"))
        .unwrap_or_default()
        .trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '-')
        .to_string();
    let exec = engine.store().load(id.parse().expect("execution id")).await.expect("load").expect("exists").value;
    assert_eq!(exec.state, ExecState::Succeeded);
    assert_eq!(exec.approvals[0].identity.0, format!("discord:{BOB}"));
    let deleted = cluster.requests().into_iter().filter(|(m, p)| m == "DELETE" && p.contains(&sick)).count();
    assert_eq!(deleted, 1, "the sick pod was deleted exactly once");
    assert!(fake.problems().is_empty(), "{:?}", fake.problems());
    let stats = fake.gateway_stats();
    assert_eq!((stats.identifies, stats.resumes), (1, 0));

    gw.shutdown().await;
    until("the session closed", || fake.gateway_sessions_live() == 0).await;
    assert!(fake.gateway_stats().client_closes.contains(&1000));
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_heartbeat_acks_reconnect_and_resume() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeDiscord::start(BOT, APP).await.expect("fake discord");
    let ops = fake.add_text_channel("ops");
    fake.add_member(BOB, "bob", &[]);
    fake.set_heartbeat_interval(150);
    let chat = chat_for(&fake, secret(&dir, "bot", BOT).1);
    chat.post(&ops, None, &runbot_commands::message::Message::text("a message to click on")).await.expect("post");
    let (gw, rec) = recording_gateway(&fake, &dir, BOT);
    let first = state_is(&gw, "connected", connected).await;
    until("a heartbeat carrying READY's sequence number", || fake.gateway_stats().heartbeat_seqs.contains(&Some(1))).await;
    click_answered(&fake, &ops, "before").await;

    // Discord stops acknowledging: the client drops the zombie connection and resumes.
    fake.gateway_ack_heartbeats(false);
    until("a resumed session", || fake.gateway_stats().resumed >= 1).await;
    fake.gateway_ack_heartbeats(true);
    let after = state_is(&gw, "resumed", |s| matches!(s, GatewayState::Connected { resumed: true, .. })).await;
    match (first, after) {
        (GatewayState::Connected { session: a, .. }, GatewayState::Connected { session: b, .. }) => assert_eq!(a, b, "the same session"),
        other => panic!("{other:?}"),
    }
    let stats = fake.gateway_stats();
    assert_eq!(stats.identifies, 1, "resumed, not identified again: {stats:?}");
    assert!(stats.client_closes.iter().all(|c| *c != 1000 && *c != 1001), "closed without ending the session: {:?}", stats.client_closes);
    click_answered(&fake, &ops, "after-resume").await;

    // RECONNECT (op 7): resumed again.
    let resumed = fake.gateway_stats().resumed;
    fake.gateway_reconnect();
    until("resumed after RECONNECT", || fake.gateway_stats().resumed > resumed).await;
    click_answered(&fake, &ops, "after-reconnect").await;

    // INVALID_SESSION, not resumable: a new IDENTIFY, a new session.
    fake.gateway_invalid_session(false);
    until("identified again", || fake.gateway_stats().identifies == 2).await;
    state_is(
        &gw,
        "connected with a new session",
        |s| matches!(s, GatewayState::Connected { resumed: false, session } if session != "fake-session-0001"),
    )
    .await;
    click_answered(&fake, &ops, "after-invalid-session").await;
    assert!(gw.connected().load(Ordering::Relaxed));
    let seen: Vec<String> = rec.seen.lock().expect("lock").iter().map(|v| v["data"]["custom_id"].as_str().unwrap_or("").to_string()).collect();
    assert_eq!(seen, ["before", "after-resume", "after-reconnect", "after-invalid-session"], "each interaction handled once");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_token_stops_with_a_clear_error_not_a_loop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeDiscord::start(BOT, APP).await.expect("fake discord");
    let wrong = "MTI5MDAwMDAwMDAwMDAwMDAwMQ.fake.not-the-right-token";
    let (gw, _) = recording_gateway(&fake, &dir, wrong);
    let why = tokio::time::timeout(Duration::from_secs(20), gw.failed()).await.expect("the client gives up");
    assert!(why.contains("401") && why.contains("bot_token"), "{why}");
    assert!(!why.contains(wrong) && !why.contains("not-the-right-token"), "the token is never echoed: {why}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(fake.calls_of(Route::GatewayBot).len(), 1, "asked once, no retry loop");
    assert_eq!(fake.gateway_stats().connections, 0);
    assert!(!gw.connected().load(Ordering::Relaxed));
    assert_eq!(*gw.state().borrow(), GatewayState::Failed(why));
}

#[tokio::test(flavor = "multi_thread")]
async fn fatal_close_codes_stop_the_client() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeDiscord::start(BOT, APP).await.expect("fake discord");
    let (gw, _) = recording_gateway(&fake, &dir, BOT);
    state_is(&gw, "connected", connected).await;
    fake.gateway_close(4014, "Disallowed intent(s).");
    let why = tokio::time::timeout(Duration::from_secs(20), gw.failed()).await.expect("the client gives up");
    assert!(why.contains("4014") && why.contains("disallowed intents"), "{why}");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let stats = fake.gateway_stats();
    assert_eq!((stats.connections, stats.identifies, stats.resumes), (1, 1, 0), "no reconnection after a fatal close: {stats:?}");
    assert!(!gw.connected().load(Ordering::Relaxed));
}
