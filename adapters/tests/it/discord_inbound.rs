//! runbot in Discord, end to end over loopback: the fake Discord signs interactions and POSTs
//! them to the real `/discord/interactions` route, takes the HTTP answer as the initial
//! response (3-second deadline included), and serves the REST API runbot answers through; the
//! real engine on a SQLite store; the kube driver against the sandbox cluster.
//!
//! "alice types /ops restart target:promotions-api, the reply is deferred, the plan with
//! Approve/Reject appears in the incident channel, alice's own Approve is refused privately,
//! bob double-clicks Approve (counted once), the status message is edited to the final state."

use crate::common::{preamble, promotions_service, ready, secret_file, sick_pod, until};
use runbot_adapters::discord::{Discord, commands};
use runbot_adapters::kubernetes::KubeCluster;
use runbot_adapters::store_sql::SqlStore;
use runbot_commands::config::Settings;
use runbot_commands::engine::Engine;
use runbot_commands::model::{ExecState, ExecutionId};
use runbot_commands::ports::{Chats, Clusters, Store, SystemClock};
use runbot_commands::steps::StepKinds;
use runbot_sandbox::discord::{FakeDiscord, Interaction, Posted, Route, TEST_PUBLIC_KEY};
use runbot_sandbox::kube::{FakeCluster, Timing};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

const NS: &str = "promotions-ns";
const BOT: &str = "MTI5MDAwMDAwMDAwMDAwMDAwMQ.fake.bot-token-for-tests";
const APP: &str = "1250000000000000001";
const ALICE: &str = "1001000000000000001";
const BOB: &str = "1002000000000000002";
/// Has the on-call role: approves `hello` through `discord-role:`.
const CAROL: &str = "1003000000000000003";
/// Has another role only.
const DAVE: &str = "1004000000000000004";
const ONCALL_ROLE: &str = "1240000000000000001";
const OTHER_ROLE: &str = "1240000000000000002";

struct World {
    fake: FakeDiscord,
    cluster: Option<FakeCluster>,
    engine: Engine,
    adapter: Discord,
    endpoint: String,
    ops: String,
    inc: String,
    _dir: tempfile::TempDir,
}

impl World {
    async fn start(with_cluster: bool) -> World {
        World::start_with(with_cluster, None).await
    }

    /// `backlog`: commands in flight at once (waiting 100 ms for a place); default: the adapter's.
    async fn start_with(with_cluster: bool, backlog: Option<usize>) -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = FakeDiscord::start(BOT, APP).await.expect("fake discord");
        let ops = fake.add_text_channel("ops");
        let inc = fake.add_text_channel("inc-prod");
        fake.add_member(ALICE, "alice", &[]);
        fake.add_member(BOB, "bob", &[]);
        fake.add_member(CAROL, "carol", &[ONCALL_ROLE]);
        fake.add_member(DAVE, "dave", &[OTHER_ROLE]);
        let mut clusters = Clusters::new();
        let mut cluster_cfg = String::new();
        let cluster = if with_cluster {
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
        let config = format!(
            r#"{preamble}
[groups]
sre = ["discord:{ALICE}", "discord:{BOB}"]
oncall = ["discord-role:{ONCALL_ROLE}"]
[[approvals]]
approvers = ["sre"]
required = 1
[[approvals]]
runbook = "hello"
approvers = ["oncall"]
required = 1
[environments.prod]
incident_channel = {{ discord = "{inc}" }}
{service}{cluster_cfg}
[discord]
bot_token = "{bot}"
public_key = "{key}"
application_id = "{APP}"
guild_id = "{guild}"
api_url = "{api}/api/v10"
"#,
            preamble = preamble(dir.path(), "discord-test"),
            service = promotions_service(NS),
            bot = file("bot", BOT),
            key = file("public", TEST_PUBLIC_KEY),
            guild = fake.guild_id(),
            api = fake.api_url(),
        );
        let kinds = StepKinds::shipped_with(&clusters);
        let settings = match Settings::from_toml(&config, dir.path(), &kinds) {
            Ok(s) => s,
            Err(p) => panic!("config problems: {p:?}"),
        };
        let mut adapter = Discord::from_config(settings.config.discord.as_ref().expect("[discord]")).expect("discord adapter");
        if let Some(n) = backlog {
            adapter = adapter.with_backlog(runbot_adapters::backlog::Backlog::new(n, Duration::from_millis(100)));
        }
        let store: Arc<dyn Store> = Arc::new(SqlStore::connect(&settings.config.store.url).await.expect("store"));
        let engine = Engine::new(settings, store, Chats::new().with(adapter.chat.clone()), Arc::new(SystemClock), kinds);
        let pipeline = runbot_adapters::inbound::Pipeline::new(engine.clone());
        let router = adapter.router(&pipeline).expect("mode http serves the endpoint");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let endpoint = format!("http://{}/discord/interactions", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        World { fake, cluster, engine, adapter, endpoint, ops, inc, _dir: dir }
    }

    /// `user` types `/ops <sub> name:value…` in #ops; returns the interaction and the answer.
    async fn command(&self, user: &str, sub: &str, options: &[(&str, Value)]) -> (Interaction, u16, Value) {
        let i = self.fake.slash_command(user, &self.ops, "ops", &[sub], options);
        let (status, answer) = self.fake.deliver(&self.endpoint, &i).await;
        (i, status, answer)
    }

    /// `user` presses the button `label` of `msg`; returns the interaction and the answer.
    async fn click(&self, user: &str, msg: &Posted, label: &str) -> (Interaction, u16, Value) {
        let custom_id =
            msg.buttons().into_iter().find(|(_, l)| l == label).map(|(c, _)| c).unwrap_or_else(|| panic!("no {label} button on {}", msg.text()));
        let i = self.fake.click(user, msg, &custom_id);
        let (status, answer) = self.fake.deliver(&self.endpoint, &i).await;
        (i, status, answer)
    }

    /// The private answer to an interaction: its edited deferred response or a follow-up.
    async fn reply(&self, i: &Interaction) -> Posted {
        self.fake
            .wait("the answer to an interaction", |f| {
                f.messages().into_iter().find(|m| m.interaction.as_deref() == Some(i.id.as_str()) && !m.text().is_empty())
            })
            .await
    }

    /// The one top-level message in `channel` whose text contains `needle`.
    async fn message(&self, channel: &str, needle: &str) -> Posted {
        self.fake.wait(needle, |f| f.in_channel(channel).into_iter().find(|m| m.interaction.is_none() && m.text().contains(needle))).await
    }

    async fn exec(&self, id: &str) -> runbot_commands::model::Execution {
        let id: ExecutionId = id.parse().expect("id");
        self.engine.store().load(id).await.expect("load").expect("exists").value
    }

    async fn audit_kinds(&self) -> Vec<String> {
        self.engine.store().audit_log().await.expect("audit").0.into_iter().map(|r| r.entry.kind).collect()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_deferred_plan_buttons_approval_and_final_message() {
    let w = World::start(true).await;
    let cluster = w.cluster.as_ref().expect("cluster");
    let sick = sick_pod(cluster, NS);
    until("a restart of the sick pod", || {
        cluster
            .pods(NS)
            .iter()
            .any(|p| p["metadata"]["name"] == sick.as_str() && p["status"]["containerStatuses"][0]["restartCount"].as_i64().unwrap_or(0) >= 1)
    })
    .await;

    let (cmd, status, answer) = w.command(ALICE, "restart", &[("target", json!("promotions-api"))]).await;
    assert_eq!((status, answer), (200, json!({"type": 5, "data": {"flags": 64}})), "deferred, privately");
    // The fake took it within the 3 s deadline, as the interaction's only acknowledgement.
    assert_eq!(w.fake.callbacks().iter().filter(|(id, _)| *id == cmd.id).count(), 1);
    // Durably recorded before the answer, once: the adapter's record is the audit record.
    let (log, _) = w.engine.store().audit_log().await.expect("audit");
    let records: Vec<_> = log.iter().filter(|r| r.entry.kind == "discord.command" || r.entry.kind == "command").collect();
    assert_eq!(records.len(), 1, "{records:?}");
    let d = &records[0].entry.detail;
    assert_eq!(
        (&d["text"], &d["platform"], &d["channel"], &d["ok"]),
        (&json!("/ops restart promotions-api"), &json!("discord"), &json!(w.ops), &json!(true))
    );
    assert_eq!(records[0].entry.actor.as_deref(), Some(format!("discord:{ALICE}").as_str()));
    // The engine's reply replaces the "thinking" response, privately.
    let reply = w.reply(&cmd).await;
    assert!(reply.ephemeral() && reply.text().contains("created"), "{reply:?}");

    // The plan, with buttons, in the incident channel: an ordinary bot message.
    let plan = w.message(&w.inc, "Waiting for approval").await;
    assert!(plan.text().contains(&sick), "the plan names the pod to restart:\n{}", plan.text());
    let labels: Vec<String> = plan.buttons().into_iter().map(|(_, l)| l).collect();
    assert_eq!(labels, ["Approve", "Reject"]);
    let id = plan
        .text()
        .split_whitespace()
        .find(|w| w.starts_with("R-"))
        .expect("execution id")
        .trim_matches(|c: char| !c.is_alphanumeric() && c != '-')
        .to_string();

    // alice requested it: her Approve is refused, privately, and changes nothing.
    let (mine, status, answer) = w.click(ALICE, &plan, "Approve").await;
    assert_eq!((status, answer), (200, json!({"type": 6})), "a deferred update: the message stays as the engine keeps it");
    let refusal = w.reply(&mine).await;
    assert!(refusal.ephemeral() && refusal.text().contains("someone else must approve it"), "{}", refusal.text());
    assert_eq!(w.exec(&id).await.state, ExecState::AwaitingApproval);

    // bob double-clicks: two deliveries, one approval.
    let (a, b) = tokio::join!(w.click(BOB, &plan, "Approve"), w.click(BOB, &plan, "Approve"));
    assert_eq!((a.1, b.1), (200, 200));
    let (ra, rb) = tokio::join!(w.reply(&a.0), w.reply(&b.0));
    let answers = format!("{}\n{}", ra.text(), rb.text());
    assert!(answers.contains("already voted") || answers.contains("is not waiting for approval"), "{answers}");

    let fin = w.fake.wait("the final status", |f| f.message(&plan.id).filter(|m| m.text().contains("Succeeded"))).await;
    assert!(fin.buttons().is_empty(), "no buttons on a finished execution");
    assert!(fin.versions.len() >= 3, "the status message was edited live: {} versions", fin.versions.len());
    assert!(fin.edited.is_some() && !fin.ephemeral() && fin.interaction.is_none(), "a bot message, editable after the token expires");
    let exec = w.exec(&id).await;
    assert_eq!(exec.state, ExecState::Succeeded);
    assert_eq!(exec.approvals.len(), 1, "one approval: {:?}", exec.approvals);
    assert_eq!(exec.approvals[0].identity.0, format!("discord:{BOB}"));
    let deleted = cluster.requests().into_iter().filter(|(m, p)| m == "DELETE" && p.contains(&sick)).count();
    assert_eq!(deleted, 1, "the sick pod was deleted exactly once");
    assert!(w.audit_kinds().await.iter().filter(|k| *k == "discord.click").count() >= 3);
    assert_eq!(w.adapter.metrics.rejected.total(), 0);
    assert!(w.fake.problems().is_empty(), "{:?}", w.fake.problems());
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_stale_and_unsigned_interactions_get_401_are_counted_and_ping_gets_pong() {
    let w = World::start(false).await;
    let audit_before = w.audit_kinds().await.len();
    let cmd = w.fake.slash_command(ALICE, &w.ops, "ops", &["help"], &[]);
    // Signed by another key.
    let (_, ts) = cmd.signature(0);
    let forged = runbot_sandbox::discord::sign_with(&[9u8; 32], &ts, cmd.body.as_bytes());
    assert_eq!(w.fake.deliver_signed(&w.endpoint, &cmd, &forged, &ts).await.0, 401);
    // Correctly signed six minutes ago: a replay.
    let (old_sig, old_ts) = cmd.signature(360);
    assert_eq!(w.fake.deliver_signed(&w.endpoint, &cmd, &old_sig, &old_ts).await.0, 401);
    // No headers at all.
    let r = reqwest::Client::new().post(&w.endpoint).header("content-type", "application/json").body(cmd.body.clone()).send().await.expect("post");
    assert_eq!(r.status().as_u16(), 401);
    // A valid signature over another body.
    let (sig, ts) = cmd.signature(0);
    let tampered = Interaction { body: cmd.body.replace("help", "whoami"), ..cmd.clone() };
    assert_eq!(w.fake.deliver_signed(&w.endpoint, &tampered, &sig, &ts).await.0, 401);
    assert_eq!(w.audit_kinds().await.len(), audit_before, "nothing refused was recorded or run");
    assert!(w.fake.callbacks().is_empty());

    let m = &w.adapter.metrics;
    assert_eq!(
        (m.rejected.bad_signature.load(Ordering::Relaxed), m.rejected.stale.load(Ordering::Relaxed), m.rejected.missing.load(Ordering::Relaxed)),
        (2, 1, 1)
    );
    let text = m.render();
    assert!(text.contains("runbot_discord_rejected_total{reason=\"bad_signature\"} 2"), "{text}");
    assert!(text.contains("runbot_discord_rejected_total{reason=\"stale\"} 1"), "{text}");

    // PING → PONG, as Discord checks the endpoint.
    let (status, answer) = w.fake.deliver(&w.endpoint, &w.fake.ping()).await;
    assert_eq!((status, answer), (200, json!({"type": 1})));

    // The signed command itself is answered, once; a replay of the same delivery is not run again.
    let (status, answer) = w.fake.deliver(&w.endpoint, &cmd).await;
    assert_eq!((status, answer["type"].clone()), (200, json!(5)));
    assert!(w.reply(&cmd).await.text().contains("runbot commands"));
    let again = reqwest::Client::new()
        .post(&w.endpoint)
        .header("x-signature-ed25519", &sig)
        .header("x-signature-timestamp", &ts)
        .body(cmd.body.clone())
        .send()
        .await
        .expect("post");
    let v: Value = again.json().await.expect("json");
    assert_eq!((v["type"].clone(), v["data"]["flags"].clone()), (json!(4), json!(64)));
    assert!(v["data"]["content"].as_str().unwrap_or("").contains("already received"), "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_role_mapped_approver_can_approve_and_one_without_the_role_cannot() {
    let w = World::start(false).await;
    // Creating the status message meets a 429 first: waited out, nothing lost.
    w.fake.script_429(Route::CreateMessage, 1, Duration::from_millis(400));
    let (cmd, status, _) = w.command(ALICE, "run", &[("runbook", json!("hello")), ("target", json!("promotions"))]).await;
    assert_eq!(status, 200);
    assert!(w.reply(&cmd).await.text().contains("created"));
    let plan = w.message(&w.inc, "Waiting for approval").await;
    let posts = w.fake.calls_of(Route::CreateMessage);
    let (limited, ok) =
        (posts.iter().position(|c| c.status == 429).expect("a 429"), posts.iter().position(|c| c.status == 200).expect("then a post"));
    assert!(limited < ok && posts[ok].at.duration_since(posts[limited].at) >= Duration::from_millis(390), "retried after retry_after");
    assert_eq!(w.fake.in_channel(&w.inc).iter().filter(|m| m.text().contains("Waiting for approval")).count(), 1, "posted once");

    // dave (no on-call role, not in the group) is refused, privately.
    let (d, _, _) = w.click(DAVE, &plan, "Approve").await;
    let refusal = w.reply(&d).await;
    assert!(refusal.ephemeral() && refusal.text().contains("needs membership of oncall"), "{}", refusal.text());
    // bob is in sre, not in oncall: refused as well.
    let (b, _, _) = w.click(BOB, &plan, "Approve").await;
    assert!(w.reply(&b).await.text().contains("needs membership of oncall"));
    // carol has the role, but a signed click whose custom_id lost its plan fingerprint is
    // refused privately and changes nothing.
    let approve = plan.buttons().into_iter().find(|(_, l)| l == "Approve").map(|(c, _)| c).expect("approve");
    let stripped = format!("{}|", approve.rsplit_once('|').expect("value with a fingerprint").0);
    let forged = w.fake.click(CAROL, &plan, &stripped);
    let (status, _) = w.fake.deliver(&w.endpoint, &forged).await;
    assert_eq!(status, 200);
    let refusal = w.reply(&forged).await;
    assert!(refusal.ephemeral() && refusal.text().contains("carries no plan fingerprint"), "{}", refusal.text());
    let id: ExecutionId = approve.split('|').next().expect("id").parse().expect("id");
    assert!(w.engine.store().load(id).await.expect("load").expect("exists").value.approvals.is_empty(), "the forged vote did not count");
    // carol has the role (as the signed interaction says): she approves.
    let (c, _, _) = w.click(CAROL, &plan, "Approve").await;
    assert!(w.reply(&c).await.text().contains("approved"));
    let fin = w.fake.wait("the final status", |f| f.message(&plan.id).filter(|m| m.text().contains("Succeeded"))).await;
    assert!(fin.buttons().is_empty());
    let id: ExecutionId = fin
        .text()
        .split_whitespace()
        .find(|w| w.starts_with("R-"))
        .expect("id")
        .trim_matches(|c: char| !c.is_alphanumeric() && c != '-')
        .parse()
        .expect("id");
    let exec = w.engine.store().load(id).await.expect("load").expect("exists").value;
    assert_eq!(exec.approvals.iter().map(|a| a.identity.0.clone()).collect::<Vec<_>>(), vec![format!("discord:{CAROL}")]);
    assert!(w.fake.problems().is_empty(), "{:?}", w.fake.problems());
}

#[tokio::test(flavor = "multi_thread")]
async fn autocomplete_offers_services_and_open_executions_and_bad_input_is_answered_privately() {
    let w = World::start(false).await;
    let ac = w.fake.autocomplete(ALICE, &w.ops, "ops", &["restart"], &[("target", json!("prom"))], "target");
    let (status, answer) = w.fake.deliver(&w.endpoint, &ac).await;
    assert_eq!((status, answer), (200, json!({"type": 8, "data": {"choices": [{"name": "promotions", "value": "promotions"}]}})));
    let ac = w.fake.autocomplete(ALICE, &w.ops, "ops", &["restart"], &[("target", json!("zz"))], "target");
    assert_eq!(w.fake.deliver(&w.endpoint, &ac).await.1["data"]["choices"], json!([]));

    let (cmd, _, _) = w.command(ALICE, "run", &[("runbook", json!("hello")), ("target", json!("promotions"))]).await;
    assert!(w.reply(&cmd).await.text().contains("created"));
    let ac = w.fake.autocomplete(ALICE, &w.ops, "ops", &["cancel"], &[("execution-id", json!("R-"))], "execution-id");
    let choices = w.fake.deliver(&w.endpoint, &ac).await.1["data"]["choices"].clone();
    assert_eq!(choices.as_array().map(Vec::len), Some(1), "{choices}");
    assert_eq!(choices[0]["value"], "R-1");
    assert!(choices[0]["name"].as_str().unwrap_or("").contains("hello promotions"), "{choices}");

    // A sub-command the table does not have: a specific private answer, nothing recorded.
    let before = w.audit_kinds().await.len();
    let (_, status, answer) = w.command(ALICE, "explode", &[]).await;
    assert_eq!(status, 200);
    assert_eq!((answer["type"].clone(), answer["data"]["flags"].clone()), (json!(4), json!(64)));
    assert!(answer["data"]["content"].as_str().unwrap_or("").contains("register-commands"), "{answer}");
    // A parse error from the engine reaches the person privately.
    let (cmd, _, _) = w.command(ALICE, "history", &[("limit", json!(500))]).await;
    let r = w.reply(&cmd).await;
    assert!(r.ephemeral() && r.text().contains("Usage"), "{}", r.text());
    assert_eq!(w.audit_kinds().await.len(), before + 1, "only the typed command was recorded");
    assert!(w.fake.problems().is_empty(), "{:?}", w.fake.problems());
}

#[tokio::test(flavor = "multi_thread")]
async fn register_commands_sends_the_generated_definitions() {
    let w = World::start(false).await;
    let guild = w.fake.guild_id().to_string();
    let subs = w.adapter.register_commands(Some(&guild)).await.expect("guild commands");
    let names: Vec<&str> = runbot_commands::grammar::spec::COMMANDS.iter().map(|c| c.name).collect();
    assert_eq!(subs, names);
    let stored = w.fake.commands(Some(&guild));
    assert_eq!(stored.len(), 1);
    let call = w.fake.calls_of(Route::BulkCommands).pop().expect("a PUT");
    assert_eq!((call.method.as_str(), call.path.clone()), ("PUT", format!("/api/v10/applications/{APP}/guilds/{guild}/commands")));
    assert_eq!(call.body, commands::definitions());
    assert_eq!(stored[0]["options"], commands::definitions()[0]["options"]);
    // Globally as well; running it again overwrites (same id).
    w.adapter.register_commands(None).await.expect("global commands");
    let id = w.fake.commands(None)[0]["id"].clone();
    w.adapter.register_commands(None).await.expect("again");
    assert_eq!(w.fake.commands(None)[0]["id"], id);
    assert_eq!(w.fake.calls_of(Route::BulkCommands).last().expect("call").path, format!("/api/v10/applications/{APP}/commands"));
    // A registered command typed with every option of the generated definition reaches the engine.
    let (cmd, _, _) = w.command(ALICE, "help", &[("runbook", json!("restart"))]).await;
    assert!(w.reply(&cmd).await.text().contains("/ops restart"), "help comes back");
}

#[tokio::test(flavor = "multi_thread")]
async fn commands_beyond_the_backlog_are_refused_before_anything_is_recorded_or_run() {
    let w = World::start_with(false, Some(1)).await;
    // The one place is held by a command whose status message Discord keeps rate limiting.
    w.fake.script_429(Route::CreateMessage, 1, Duration::from_secs(2));
    let (cmd, status, _) = w.command(ALICE, "run", &[("runbook", json!("hello")), ("target", json!("promotions"))]).await;
    assert_eq!(status, 200);
    until("the rate-limited post", || !w.fake.calls_of(Route::CreateMessage).is_empty()).await;
    let commands = async || w.audit_kinds().await.iter().filter(|k| *k == "discord.command").count();
    let recorded = commands().await;
    // Another command now: refused in its answer, recorded nowhere, run nowhere.
    let (_, status, answer) = w.command(BOB, "whoami", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(answer["type"], 4, "answered at once, privately: {answer}");
    assert!(answer["data"]["content"].as_str().is_some_and(|t| t.contains("busy") && t.contains("nothing was done")), "{answer}");
    assert_eq!(commands().await, recorded, "not recorded");
    let metrics = w.adapter.metrics.render();
    assert!(metrics.contains("runbot_discord_busy_total 1"), "{metrics}");
    // The first command finishes (its post goes through after retry_after) and frees the place.
    assert!(w.reply(&cmd).await.text().contains("created"));
    until("the place given back", || w.adapter.metrics.backlog.in_flight() == 0).await;
    let (again, _, answer) = w.command(BOB, "whoami", &[]).await;
    assert_eq!(answer["type"], 5, "taken and deferred: {answer}");
    assert!(w.reply(&again).await.text().contains(&format!("discord:{BOB}")));
}

/// `/ops timeline R-n` on Discord: the Markdown file is a message attachment
/// (`multipart/form-data`, `payload_json` + `files[0]`) in the thread of the status message.
#[tokio::test(flavor = "multi_thread")]
async fn the_timeline_is_an_attachment_in_the_thread_of_the_status_message() {
    let w = World::start(false).await;
    let (cmd, status, _) = w.command(ALICE, "run", &[("runbook", json!("hello")), ("target", json!("promotions-api"))]).await;
    assert_eq!(status, 200);
    assert!(w.reply(&cmd).await.text().contains("created"));
    let plan = w.message(&w.inc, "Waiting for approval").await;
    let id = plan
        .text()
        .split_whitespace()
        .find(|t| t.starts_with("R-"))
        .unwrap_or_default()
        .trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '-')
        .to_string();
    let (cmd, status, _) = w.command(BOB, "timeline", &[("execution-id", json!(id))]).await;
    assert_eq!(status, 200);
    let reply = w.reply(&cmd).await;
    assert!(reply.text().contains(&format!("Posted the timeline of {id} in its thread as timeline-{id}.md")), "{}", reply.text());
    let files = w.fake.attachments();
    assert_eq!(files.len(), 1, "{files:?}");
    let f = &files[0];
    assert_eq!(f.filename, format!("timeline-{id}.md"));
    assert_eq!(f.title.as_deref(), Some(format!("Timeline of {id}").as_str()));
    let thread = w.fake.thread_of(&plan.id).map(|(t, _, _)| t).expect("a thread under the status message");
    assert_eq!(f.channel_id, thread, "in the status message's thread");
    let content = String::from_utf8(f.content.clone()).expect("utf-8");
    assert!(content.contains(&format!("# Timeline of {id} — hello on service promotions (prod)")), "{content}");
    assert!(w.fake.problems().is_empty(), "{:?}", w.fake.problems());
}

/// The fake Discord reads attachments as Discord does: an `attachments[i].id` with no
/// `files[n]` part is refused as an invalid form body (50035), more than 8 MiB as too large
/// (40005), and a message of a file alone is accepted.
#[tokio::test(flavor = "multi_thread")]
async fn the_fake_discord_refuses_attachments_the_way_discord_does() {
    let fake = FakeDiscord::start(BOT, APP).await.expect("fake discord");
    let inc = fake.add_text_channel("inc-prod");
    let http = reqwest::Client::new();
    let send = async |payload: Value, file: Vec<u8>| -> (u16, Value) {
        let form = reqwest::multipart::Form::new()
            .text("payload_json", payload.to_string())
            .part("files[0]", reqwest::multipart::Part::bytes(file).file_name("t.md"));
        let r = http
            .post(format!("{}/api/v10/channels/{inc}/messages", fake.api_url()))
            .header("authorization", format!("Bot {BOT}"))
            .multipart(form)
            .send()
            .await
            .expect("POST");
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    };
    let (status, v) = send(json!({"attachments": [{"id": 1, "filename": "t.md"}]}), b"# t".to_vec()).await;
    assert_eq!((status, &v["code"]), (400, &json!(50035)), "an attachment id without its files[1] part: {v}");
    let (status, v) = send(json!({"attachments": [{"id": 0, "filename": "t.md"}]}), vec![b'x'; (8 << 20) + 1]).await;
    assert_eq!((status, &v["code"]), (413, &json!(40005)), "{v}");
    assert!(fake.attachments().is_empty(), "nothing kept from refused requests");
    let (status, v) = send(json!({"attachments": [{"id": 0, "filename": "t.md", "title": "T"}]}), b"# t".to_vec()).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["attachments"][0]["filename"], "t.md");
    let kept = fake.attachments();
    assert_eq!((kept.len(), kept[0].content.as_slice(), kept[0].title.as_deref()), (1, &b"# t"[..], Some("T")));
}
