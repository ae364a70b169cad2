//! Across platforms, end to end over loopback: a command typed in Slack (signed slash command
//! to `/slack/commands`) creates an execution whose status message is mirrored to Discord's
//! incident channel (`[environments.prod] mirror = ["discord"]`); a signed component
//! interaction to `/discord/interactions` approves it; both messages reach the final state.
//! The requester's own Discord identity (`[people]`) cannot approve it.

use crate::common::{preamble, secret_file};
use runbot_adapters::discord::Discord;
use runbot_adapters::slack::Slack;
use runbot_adapters::store_sql::SqlStore;
use runbot_commands::config::Settings;
use runbot_commands::engine::Engine;
use runbot_commands::model::ExecState;
use runbot_commands::ports::{Chats, Store, SystemClock};
use runbot_commands::steps::StepKinds;
use runbot_sandbox::discord::{FakeDiscord, TEST_PUBLIC_KEY};
use runbot_sandbox::slack::{FakeSlack, sign};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

const SIGNING: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const SLACK_BOT: &str = "xoxb-test-bot-token";
const SLACK_APP: &str = "xapp-test-app-token";
const DISCORD_BOT: &str = "MTI5MDAwMDAwMDAwMDAwMDAwMQ.fake.bot-token-for-mirror-tests";
const DISCORD_APP: &str = "1250000000000000001";
/// ana: on Slack and on Discord (one person); bruno: on Discord.
const ANA_SLACK: &str = "U0ANA0001";
const ANA_DISCORD: &str = "1001000000000000001";
const BRUNO_DISCORD: &str = "1002000000000000002";
const OPS: &str = "C0OPS0001";
const INC: &str = "C0INCPROD";

#[tokio::test(flavor = "multi_thread")]
async fn requested_in_slack_mirrored_to_discord_approved_there_both_end_final() {
    let dir = tempfile::tempdir().expect("tempdir");
    let slack = FakeSlack::start(SLACK_BOT, SLACK_APP).await.expect("fake slack");
    let discord = FakeDiscord::start(DISCORD_BOT, DISCORD_APP).await.expect("fake discord");
    let dinc = discord.add_text_channel("inc-prod");
    discord.add_member(ANA_DISCORD, "ana", &[]);
    discord.add_member(BRUNO_DISCORD, "bruno", &[]);
    let file = |name: &str, v: &str| secret_file(dir.path(), name, v);
    let config = format!(
        r#"{preamble}
[groups]
sre = ["slack:{ANA_SLACK}", "discord:{BRUNO_DISCORD}"]
[people]
ana = ["slack:{ANA_SLACK}", "discord:{ANA_DISCORD}"]
[[approvals]]
approvers = ["sre"]
required = 1
[environments.prod]
incident_channel = {{ slack = "{INC}", discord = "{dinc}" }}
mirror = ["discord"]
[services.promotions]
default_env = "prod"
[services.promotions.environments.prod]
[slack]
bot_token = "{slack_bot}"
signing_secret = "{signing}"
api_url = "{slack_api}"
post_interval_ms = 20
edits_per_minute = 3000
[discord]
bot_token = "{discord_bot}"
public_key = "{public_key}"
application_id = "{DISCORD_APP}"
guild_id = "{guild}"
api_url = "{discord_api}/api/v10"
"#,
        preamble = preamble(dir.path(), "mirror-test"),
        slack_bot = file("slack-bot", SLACK_BOT),
        signing = file("signing", SIGNING),
        slack_api = slack.api_url(),
        discord_bot = file("discord-bot", DISCORD_BOT),
        public_key = file("discord-key", TEST_PUBLIC_KEY),
        guild = discord.guild_id(),
        discord_api = discord.api_url(),
    );
    let kinds = StepKinds::shipped();
    let settings = Settings::from_toml(&config, dir.path(), &kinds).unwrap_or_else(|p| panic!("config problems: {p:?}"));
    let slack_adapter = Slack::from_config(settings.config.slack.as_ref().expect("[slack]"), &settings).expect("slack adapter");
    let discord_adapter = Discord::from_config(settings.config.discord.as_ref().expect("[discord]")).expect("discord adapter");
    let store: Arc<dyn Store> = Arc::new(SqlStore::connect(&settings.config.store.url).await.expect("store"));
    let chats = Chats::new().with(slack_adapter.chat.clone()).with(discord_adapter.chat.clone());
    let engine = Engine::new(settings, store, chats, Arc::new(SystemClock), kinds);
    let pipeline = runbot_adapters::inbound::Pipeline::new(engine.clone());
    let app = slack_adapter.router(&pipeline).expect("slack routes").merge(discord_adapter.router(&pipeline).expect("discord route"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    // ana types the command in Slack.
    let (body, _) = slack.command_form(ANA_SLACK, OPS, "/ops", "run hello promotions");
    let ts = chrono::Utc::now().timestamp();
    let r = reqwest::Client::new()
        .post(format!("{base}/slack/commands"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", ts.to_string())
        .header("x-slack-signature", sign(SIGNING, ts, &body))
        .body(body)
        .send()
        .await
        .expect("slash command");
    assert_eq!(r.status().as_u16(), 200);

    // The plan is in Slack's incident channel and mirrored into Discord's.
    let in_slack = slack.wait("the plan in Slack", |f| f.top_level(INC).into_iter().find(|m| m.text().contains("Waiting for approval"))).await;
    let mirror =
        discord.wait("the mirrored plan in Discord", |f| f.in_channel(&dinc).into_iter().find(|m| m.text().contains("Waiting for approval"))).await;
    let id = in_slack
        .text()
        .split_whitespace()
        .find(|w| w.starts_with("R-"))
        .unwrap_or_default()
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .to_string();
    assert!(mirror.text().contains(&id), "the mirror shows {id}:\n{}", mirror.text());
    let approve = mirror.buttons().into_iter().map(|(c, _)| c).find(|c| c.contains("|approve|")).expect("Approve on the mirror");
    let endpoint = format!("{base}/discord/interactions");

    // ana's Discord identity is ana: her approval there is refused, privately.
    let (status, ack) = discord.deliver(&endpoint, &discord.click(ANA_DISCORD, &mirror, &approve)).await;
    assert_eq!((status, ack), (200, json!({"type": 6})));
    let refusal =
        discord.wait("ana's refusal", |f| f.messages().into_iter().find(|m| m.ephemeral() && m.text().contains("someone else must approve"))).await;
    assert!(refusal.text().contains(&format!("slack:{ANA_SLACK}")), "{}", refusal.text());
    let exec_id = id.parse().expect("execution id");
    assert_eq!(engine.store().load(exec_id).await.expect("load").expect("exists").value.state, ExecState::AwaitingApproval);

    // bruno approves on Discord: it runs; both messages end in the final state.
    let (status, ack) = discord.deliver(&endpoint, &discord.click(BRUNO_DISCORD, &mirror, &approve)).await;
    assert_eq!((status, ack), (200, json!({"type": 6})));
    let fin_slack = slack
        .wait("the final state in Slack", |f| f.top_level(INC).into_iter().find(|m| m.ts == in_slack.ts && m.text().contains("Succeeded")))
        .await;
    let fin_discord = discord.wait("the final state in Discord", |f| f.message(&mirror.id).filter(|m| m.text().contains("Succeeded"))).await;
    assert!(fin_slack.buttons().is_empty() && fin_discord.buttons().is_empty(), "no buttons left on either");
    for text in [fin_slack.text(), fin_discord.text()] {
        assert!(text.contains(&format!("discord:{BRUNO_DISCORD}")), "the approver is shown:\n{text}");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let exec = loop {
        let e = engine.store().load(exec_id).await.expect("load").expect("exists").value;
        if e.messages.iter().all(|m| m.final_sent) || std::time::Instant::now() > deadline {
            break e;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(exec.state, ExecState::Succeeded);
    let platforms: Vec<(&str, bool)> = exec.messages.iter().map(|m| (m.platform.as_str(), m.final_sent)).collect();
    assert_eq!(platforms, [("slack", true), ("discord", true)]);
    assert_eq!(exec.approvals.len(), 1);
    assert_eq!(exec.approvals[0].identity.0, format!("discord:{BRUNO_DISCORD}"));
    assert!(slack.violations().is_empty(), "{:?}", slack.violations());
    assert!(discord.problems().is_empty(), "{:?}", discord.problems());
}
