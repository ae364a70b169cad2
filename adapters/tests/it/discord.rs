//! `DiscordChat` against the sandbox's fake Discord over loopback: serenity's `Http` and
//! runbot's limiter talk to it exactly as to discord.com — only the base URL differs.
//! Messages land with the right JSON; content over Discord's limits is split, never cut; 429s
//! are waited out and nothing is lost; a bad token is a clear error that does not echo it;
//! interaction signatures are verified; the fake's payloads and objects parse as serenity's.

use runbot_adapters::discord::{CREATE_CHANNEL, DiscordChat, DiscordChatOptions, Rejection, Verifier};
use runbot_commands::config::{Secret, SecretRef};
use runbot_commands::message::{Button, ButtonStyle, Message, StepLine};
use runbot_commands::model::Identity;
use runbot_commands::ports::{Chat, ChatError};
use runbot_sandbox::discord::{FakeDiscord, Route, TEST_PUBLIC_KEY, content_text};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const BOT: &str = "MTI5MDAwMDAwMDAwMDAwMDAwMQ.fake.bot-token-for-tests";
const APP: &str = "1250000000000000001";
const ALICE: &str = "1001000000000000001";
const BOB: &str = "1002000000000000002";

fn secret(dir: &tempfile::TempDir, name: &str, value: &str) -> Secret {
    let p = dir.path().join(name);
    std::fs::write(&p, value).expect("write secret");
    format!("file:{}", p.display()).parse::<SecretRef>().expect("ref").resolve().expect("secret")
}

struct World {
    fake: FakeDiscord,
    ops: String,
    category: String,
    dir: tempfile::TempDir,
}

impl World {
    async fn start() -> World {
        let fake = FakeDiscord::start(BOT, APP).await.expect("fake discord");
        let ops = fake.add_text_channel("ops");
        let category = fake.add_category("incidents");
        fake.add_member(ALICE, "alice", &["1240000000000000001"]);
        fake.add_member(BOB, "bob", &[]);
        World { fake, ops, category, dir: tempfile::tempdir().expect("tempdir") }
    }

    fn options(&self, token: &str) -> DiscordChatOptions {
        DiscordChatOptions {
            api_url: self.fake.api_url(),
            bot_token: secret(&self.dir, "bot", token),
            application_id: APP.into(),
            guild_id: Some(self.fake.guild_id().to_string()),
            incident_category: Some(self.category.clone()),
            mention: vec![BOB.into()],
            timeout: Duration::from_secs(10),
        }
    }

    fn chat(&self) -> DiscordChat {
        DiscordChat::new(self.options(BOT)).expect("discord chat")
    }
}

fn plan(text: &str) -> Message {
    Message {
        title: "R-42 · restart promotions-api (prod)".into(),
        text: text.into(),
        fields: vec![("Requested by".into(), format!("discord:{ALICE}")), ("Acts on".into(), "promotions-api-7d9f (3 pods)".into())],
        steps: vec![StepLine { status: runbot_commands::model::StepStatus::Waiting, name: "approve".into(), detail: String::new() }],
        code: None,
        buttons: vec![
            Button {
                label: "Approve".into(),
                action_id: "approve".into(),
                value: "R-42|approve|0123456789abcdef".into(),
                style: Some(ButtonStyle::Primary),
            },
            Button {
                label: "Reject".into(),
                action_id: "reject".into(),
                value: "R-42|reject|0123456789abcdef".into(),
                style: Some(ButtonStyle::Danger),
            },
        ],
        footer: Some("plan 0123456789abcdef".into()),
    }
}

fn split(id: &str) -> (&str, &str) {
    id.split_once('/').expect("CHANNEL/MESSAGE")
}

#[tokio::test]
async fn post_edit_and_thread_replies_land_with_the_right_json() {
    let w = World::start().await;
    let chat = w.chat();
    let id = chat.post(&w.ops, None, &plan("⏳ Waiting for approval: 0 of 1 from sre.")).await.expect("post");
    let (channel, mid) = split(&id);
    assert_eq!(channel, w.ops);
    let m = w.fake.message(mid).expect("posted");
    let e = &m.content["embeds"][0];
    assert_eq!(e["title"], "R-42 · restart promotions-api (prod)");
    assert_eq!(e["fields"][0]["name"], "Requested by");
    assert!(e["description"].as_str().unwrap_or("").contains("⏳ 1. approve (waiting)"));
    assert_eq!(
        m.buttons(),
        vec![("R-42|approve|0123456789abcdef".into(), "Approve".into()), ("R-42|reject|0123456789abcdef".into(), "Reject".into())]
    );
    let call = &w.fake.calls_of(Route::CreateMessage)[0];
    assert_eq!(call.path, format!("/api/v10/channels/{}/messages", w.ops));
    assert_eq!(call.body["allowed_mentions"], json!({"parse": []}));

    // Edit in place: the same message, a second version, no buttons once decided.
    let mut done = plan("✅ Succeeded.");
    done.buttons.clear();
    chat.update(&w.ops, &id, &done).await.expect("update");
    let m = w.fake.message(mid).expect("still there");
    assert_eq!(m.versions.len(), 2);
    assert!(m.text().contains("✅ Succeeded."), "{}", m.text());
    assert!(m.buttons().is_empty());
    assert_eq!(w.fake.calls_of(Route::EditMessage)[0].method, "PATCH");

    // Thread replies: the first creates the thread from the status message (named after it).
    let r1 = chat
        .post(
            &w.ops,
            Some(&id),
            &Message { text: "Output of step 1 (greet):\n".into(), code: Some("hello promotions-api\n".into()), ..Message::default() },
        )
        .await
        .expect("reply");
    let r2 = chat.post(&w.ops, Some(&id), &Message::text("second")).await.expect("reply 2");
    let (thread, name, parent) = w.fake.thread_of(mid).expect("thread");
    assert_eq!((thread.as_str(), parent.as_str()), (mid, w.ops.as_str()));
    assert_eq!(name, "R-42 · restart promotions-api (prod)");
    assert_eq!(split(&r1).0, thread);
    assert_eq!(split(&r2).0, thread);
    let in_thread = w.fake.in_channel(&thread);
    assert_eq!(in_thread.len(), 2);
    assert_eq!(in_thread[0].content["content"], "Output of step 1 (greet):\n```\nhello promotions-api\n```");
    assert_eq!(in_thread[1].content["content"], "second");
    assert_eq!(w.fake.calls_of(Route::CreateThread).len(), 1, "one thread per message");

    // After a restart (nothing remembered), a reply finds the existing thread (160004).
    let again = w.chat();
    let r3 = again.post(&w.ops, Some(&id), &Message::text("after restart")).await.expect("reply 3");
    assert_eq!(split(&r3).0, thread);
    let threads = w.fake.calls_of(Route::CreateThread);
    assert_eq!(threads.len(), 2);
    assert_eq!(threads[1].code, Some(160004));
    assert!(w.fake.problems().is_empty(), "{:?}", w.fake.problems());
}

#[tokio::test]
async fn content_over_the_limits_is_split_never_cut() {
    let w = World::start().await;
    let chat = w.chat();
    // A status message with a long code block, a huge field, 30 fields and 32 buttons.
    let mut m = plan("Long run");
    let code: String = (0..2500).map(|i| format!("{i:05} pod promotions-api-{i} ok <&> *x*\n")).collect();
    m.code = Some(code.clone());
    m.fields.push(("Targets".into(), "promotions-api-0000 ".repeat(400)));
    m.fields.extend((0..30).map(|i| (format!("k{i}"), format!("v{i}"))));
    m.buttons = (0..32)
        .map(|i| Button { label: format!("Action {i}"), action_id: format!("a{i}"), value: format!("R-42|a{i}|0123456789abcdef"), style: None })
        .collect();
    let id = chat.post(&w.ops, None, &m).await.expect("post");
    let (_, mid) = split(&id);
    assert!(w.fake.problems().is_empty(), "the fake refused: {:?}", w.fake.problems());
    assert!(w.fake.calls().iter().all(|c| c.status < 300), "{:?}", w.fake.calls().iter().map(|c| (c.path.clone(), c.status)).collect::<Vec<_>>());
    let main = w.fake.message(mid).expect("main");
    let parts = w.fake.in_channel(mid);
    assert!(parts.len() >= 4, "overflow went to the thread: {}", parts.len());
    let all: Vec<_> = std::iter::once(main.clone()).chain(parts.clone()).collect();
    // Every code line arrives, in order.
    let descs: String = all.iter().filter_map(|p| p.content["embeds"][0]["description"].as_str().map(str::to_string)).collect::<Vec<_>>().join("\n");
    let mut got = String::new();
    let mut inside = false;
    for line in descs.lines() {
        if line == "```" {
            inside = !inside;
        } else if inside {
            got.push_str(line);
            got.push('\n');
        }
    }
    assert_eq!(got, code);
    let text = runbot_adapters::discord::render::unescape(&all.iter().map(|p| p.text()).collect::<String>());
    // The 8000-character field is one line, split between messages after a space.
    assert_eq!(text.matches("promotions-api-0000 ").count(), 400);
    // The step list stays in the main message.
    assert!(main.text().contains("⏳ 1. approve (waiting)"), "{}", main.text());
    for i in 0..30 {
        assert!(text.contains(&format!("k{i}")) && text.contains(&format!("v{i}")));
    }
    let ids: Vec<String> = all.iter().flat_map(|p| p.buttons()).map(|(c, _)| c).collect();
    assert_eq!(ids, (0..32).map(|i| format!("R-42|a{i}|0123456789abcdef")).collect::<Vec<_>>());

    // Plain step output over 2000 characters: several messages in the thread, all of it.
    let out: String = (0..400).map(|i| format!("line {i}\n")).collect();
    chat.post(&w.ops, Some(&id), &Message::code(out.clone())).await.expect("long reply");
    let replies: Vec<_> = w
        .fake
        .in_channel(mid)
        .into_iter()
        .filter(|p| {
            p.content["embeds"] == json!([]) && p.content["content"].as_str().is_some_and(|c| c.contains("line 0\n") || c.starts_with("```\nline"))
        })
        .collect();
    assert!(replies.len() >= 2);
    let mut joined = String::new();
    for r in &replies {
        let c = r.content["content"].as_str().unwrap_or("");
        let inner = c.strip_prefix("```\n").and_then(|x| x.split("\n```").next()).unwrap_or("");
        joined.push_str(inner);
        joined.push('\n');
    }
    assert_eq!(joined, out);
    assert!(replies.iter().all(|r| content_text(&r.content).chars().count() <= 2001));
    assert!(w.fake.problems().is_empty(), "{:?}", w.fake.problems());
}

#[tokio::test]
async fn scripted_429s_are_waited_out_and_nothing_is_lost() {
    let w = World::start().await;
    let chat = w.chat();
    // Two 429s on create message: the post waits each retry_after, then succeeds once.
    w.fake.script_429(Route::CreateMessage, 2, Duration::from_millis(300));
    let id = chat.post(&w.ops, None, &plan("first")).await.expect("post after 429s");
    let calls = w.fake.calls_of(Route::CreateMessage);
    assert_eq!(calls.iter().map(|c| c.status).collect::<Vec<_>>(), vec![429, 429, 200]);
    assert!(calls[1].at.duration_since(calls[0].at) >= Duration::from_millis(290), "waited retry_after");
    assert!(calls[2].at.duration_since(calls[1].at) >= Duration::from_millis(290));
    assert_eq!(w.fake.in_channel(&w.ops).len(), 1, "posted exactly once");

    // A 429 on an edit goes back to the engine's publisher, which waits and edits again.
    w.fake.script_429(Route::EditMessage, 1, Duration::from_millis(250));
    match chat.update(&w.ops, &id, &plan("second")).await {
        Err(ChatError::RateLimited(d)) => assert!(d >= Duration::from_millis(240) && d <= Duration::from_secs(1), "{d:?}"),
        other => panic!("expected RateLimited, got {other:?}"),
    }
    let t = Instant::now();
    chat.update(&w.ops, &id, &plan("second")).await.expect("update after the wait");
    assert!(t.elapsed() >= Duration::from_millis(200), "the limiter kept the bucket closed until retry_after");
    assert!(w.fake.message(split(&id).1).expect("msg").text().contains("second"));

    // A global 429 holds every route; the post still lands.
    w.fake.script_global_429(1, Duration::from_millis(300));
    let id2 = chat.post(&w.ops, None, &plan("third")).await.expect("post after a global 429");
    let calls = w.fake.calls_of(Route::CreateMessage);
    let n = calls.len();
    assert_eq!((calls[n - 2].status, calls[n - 1].status), (429, 200));
    assert!(calls[n - 1].at.duration_since(calls[n - 2].at) >= Duration::from_millis(290));
    assert!(w.fake.message(split(&id2).1).is_some());

    // X-RateLimit-Remaining is honoured before Discord has to say 429: 2 per second, 5 posts.
    w.fake.set_route_limit(Route::CreateMessage, 2, Duration::from_secs(1));
    let busy = w.fake.add_text_channel("busy");
    let t = Instant::now();
    for i in 0..5 {
        chat.post(&busy, None, &Message::text(format!("burst {i}"))).await.expect("burst post");
    }
    assert!(t.elapsed() >= Duration::from_millis(1900), "waited for the bucket to refill: {:?}", t.elapsed());
    let burst: Vec<_> = w.fake.calls_of(Route::CreateMessage).into_iter().filter(|c| c.path.contains(&busy)).collect();
    assert!(burst.iter().all(|c| c.status == 200), "no 429 needed: {:?}", burst.iter().map(|c| c.status).collect::<Vec<_>>());
    let texts: Vec<String> = w.fake.in_channel(&busy).iter().map(|m| m.content["content"].as_str().unwrap_or("").to_string()).collect();
    assert_eq!(texts, (0..5).map(|i| format!("burst {i}")).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_bad_token_is_a_clear_error_that_does_not_echo_it() {
    let w = World::start().await;
    let wrong = "MTI5wrong.token.value-that-must-not-leak";
    let chat = DiscordChat::new(w.options(wrong)).expect("chat");
    let err = chat.post(&w.ops, None, &plan("x")).await.expect_err("refused");
    let s = err.to_string();
    assert!(s.contains("HTTP 401") && s.contains("bot_token"), "{s}");
    assert!(!s.contains(wrong) && !s.contains("wrong.token"), "{s}");
    let call = &w.fake.calls()[0];
    assert_eq!((call.status, call.code), (401, Some(0)));
    // A malformed id is an error too, never a panic.
    let err = chat.update("not-a-channel", "0", &plan("x")).await.expect_err("bad ids");
    assert!(err.to_string().contains("not a Discord channel id"), "{err}");
    assert!(DiscordChat::new(DiscordChatOptions { application_id: "0".into(), ..w.options(BOT) }).is_err());
}

#[tokio::test]
async fn incident_channels_are_created_in_the_category_with_people_mentioned() {
    let w = World::start().await;
    let chat = w.chat();
    let id = chat.post(CREATE_CHANNEL, None, &plan("waiting")).await.expect("post");
    let created = w.fake.created_channels();
    assert_eq!(created.len(), 1);
    let (cid, name, parent) = &created[0];
    assert_eq!(parent.as_deref(), Some(w.category.as_str()));
    assert!(name.starts_with("inc-") && name.ends_with("-restart-42"), "{name}");
    assert_eq!(split(&id).0, cid);
    let msgs = w.fake.in_channel(cid);
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0].content["content"], format!("Incident channel for R-42: <@{ALICE}> <@{BOB}>"));
    let mention_call = w
        .fake
        .calls_of(Route::CreateMessage)
        .into_iter()
        .find(|c| c.body["content"].as_str().is_some_and(|s| s.starts_with("Incident")))
        .expect("call");
    assert_eq!(mention_call.body["allowed_mentions"]["users"], json!([ALICE, BOB]));
    // The engine edits it under the configured name; the id carries the channel.
    chat.update(CREATE_CHANNEL, &id, &plan("done")).await.expect("update");
    assert!(w.fake.message(split(&id).1).expect("m").text().contains("done"));
    // The same execution does not get a second channel.
    chat.post(CREATE_CHANNEL, None, &plan("again")).await.expect("post again");
    assert_eq!(w.fake.created_channels().len(), 1);
    assert_eq!(chat.created_channel("R-42").as_deref(), Some(cid.as_str()));
}

#[tokio::test]
async fn ephemeral_answers_use_the_interaction_token_else_a_mention() {
    let w = World::start().await;
    let chat = w.chat();
    let id = chat.post(&w.ops, None, &plan("waiting")).await.expect("post");
    let status = w.fake.message(split(&id).1).expect("status");
    // Bob clicks Approve; the endpoint defers (through serenity's builders) and keeps the token.
    let click = w.fake.click(BOB, &status, "R-42|approve|0123456789abcdef");
    let interaction: serenity::model::application::Interaction = serde_json::from_str(&click.body).expect("serenity parses the click");
    let ci = interaction.message_component().expect("component interaction");
    assert_eq!(ci.data.custom_id, "R-42|approve|0123456789abcdef");
    assert_eq!(ci.message.id.to_string(), status.id);
    assert_eq!(ci.message.components.len(), 1);
    let defer = serenity::builder::CreateInteractionResponse::Defer(serenity::builder::CreateInteractionResponseMessage::new().ephemeral(true));
    ci.create_response(chat.http().clone(), defer).await.expect("deferred through serenity");
    assert_eq!(w.fake.callbacks()[0].1["type"], 5);
    // A second acknowledgement is refused like Discord does.
    let again = serenity::builder::CreateInteractionResponse::Acknowledge;
    let err = ci.create_response(chat.http().clone(), again).await.expect_err("acknowledged twice");
    assert!(err.to_string().contains("already been acknowledged"), "{err}");
    // The deferred ("thinking") response is edited through @original.
    let edited = ci
        .edit_response(chat.http().as_ref(), serenity::builder::EditInteractionResponse::new().content("Approving…"))
        .await
        .expect("edit @original");
    assert_eq!(edited.content, "Approving…");
    assert!(w.fake.messages().iter().any(|m| m.ephemeral() && m.content["content"] == "Approving…"));
    chat.remember_interaction(BOB, &w.ops, &click.token);

    chat.ephemeral(&w.ops, &Identity::new(format!("discord:{BOB}")), &Message::text("Approved (1 of 1).")).await.expect("ephemeral");
    let private: Vec<_> = w.fake.messages().into_iter().filter(|m| m.ephemeral() && m.content["content"] == "Approved (1 of 1).").collect();
    assert_eq!(private.len(), 1, "an ephemeral follow-up");
    assert_eq!(w.fake.calls_of(Route::CreateFollowup)[0].path, format!("/api/v10/webhooks/{APP}/{{token}}"));

    // The token expired: the answer goes to the channel, mentioning Bob (and only him).
    w.fake.expire_interaction(&click.id);
    chat.ephemeral(&w.ops, &Identity::new(format!("discord:{BOB}")), &Message::text("Already handled.")).await.expect("fallback");
    let last = w.fake.in_channel(&w.ops).pop().expect("a channel message");
    assert_eq!(last.content["content"], format!("<@{BOB}> Already handled."));
    assert!(!last.ephemeral());
    let call = w.fake.calls_of(Route::CreateMessage).pop().expect("call");
    assert_eq!(call.body["allowed_mentions"], json!({"parse": [], "users": [BOB]}));
    // Alice never interacted: a mention as well.
    chat.ephemeral(&w.ops, &Identity::new(format!("discord:{ALICE}")), &Message::text("You cannot approve your own request."))
        .await
        .expect("mention");
    assert_eq!(w.fake.in_channel(&w.ops).pop().expect("m").content["content"], format!("<@{ALICE}> You cannot approve your own request."));
    assert!(chat.ephemeral(&w.ops, &Identity::new("slack:U1"), &Message::text("x")).await.is_err());
}

#[tokio::test]
async fn verification_accepts_signed_bodies_and_rejects_tampered_stale_and_missing() {
    let w = World::start().await;
    let v = Verifier::new(TEST_PUBLIC_KEY).expect("key");
    let now = chrono::Utc::now().timestamp();
    let cmd = w.fake.slash_command(ALICE, &w.ops, "ops", &["restart"], &[("service", json!("promotions-api")), ("env", json!("prod"))]);
    let (sig, ts) = cmd.signature(0);
    assert_eq!(v.verify(Some(&sig), Some(&ts), cmd.body.as_bytes(), now), Ok(()));
    let tampered = cmd.body.replace("promotions-api", "payments-api");
    assert_eq!(v.verify(Some(&sig), Some(&ts), tampered.as_bytes(), now), Err(Rejection::Mismatch));
    // 301 s old when checked: measured from its own timestamp, as a second may have ticked
    // since `now` was read.
    let (old_sig, old_ts) = cmd.signature(301);
    let signed_at: i64 = old_ts.parse().expect("a timestamp");
    assert_eq!(v.verify(Some(&old_sig), Some(&old_ts), cmd.body.as_bytes(), signed_at + 301), Err(Rejection::Stale));
    assert_eq!(v.verify(None, Some(&ts), cmd.body.as_bytes(), now), Err(Rejection::Missing));
    assert_eq!(v.verify(Some(&sig), None, cmd.body.as_bytes(), now), Err(Rejection::Missing));
    assert_eq!(v.verify(Some("00"), Some(&ts), cmd.body.as_bytes(), now), Err(Rejection::Malformed));
    // Signed by another application's key.
    let other = runbot_sandbox::discord::sign_with(&[9u8; 32], &ts, cmd.body.as_bytes());
    assert_eq!(v.verify(Some(&other), Some(&ts), cmd.body.as_bytes(), now), Err(Rejection::Mismatch));
}

#[tokio::test]
async fn the_fakes_payloads_and_objects_parse_as_serenitys() {
    use serenity::model::application::{CommandDataOptionValue, Interaction};
    let w = World::start().await;
    let chat = w.chat();
    // Commands: bulk overwrite through serenity's builders, read back typed.
    let ops = serenity::builder::CreateCommand::new("ops").description("Run runbooks").add_option(
        serenity::builder::CreateCommandOption::new(serenity::model::application::CommandOptionType::SubCommand, "restart", "Restart a service")
            .add_sub_option(
                serenity::builder::CreateCommandOption::new(serenity::model::application::CommandOptionType::String, "service", "Service")
                    .required(true)
                    .set_autocomplete(true),
            ),
    );
    let cmds = chat.http().create_global_commands(&vec![ops]).await.expect("commands");
    assert_eq!(cmds[0].name, "ops");
    assert_eq!(w.fake.commands(None)[0]["options"][0]["options"][0]["autocomplete"], true);
    let guild_id = serenity::model::id::GuildId::new(w.fake.guild_id().parse().expect("id"));
    let gcmds = guild_id
        .set_commands(chat.http().as_ref(), vec![serenity::builder::CreateCommand::new("ops-staging").description("Run runbooks (staging)")])
        .await
        .expect("guild commands");
    assert_eq!(gcmds[0].guild_id, Some(guild_id));
    assert_eq!(w.fake.commands(Some(w.fake.guild_id())).len(), 1);
    let bad = json!([{"name": "Ops", "description": ""}]);
    let err = chat.http().create_global_commands(&bad).await.expect_err("invalid command");
    assert!(err.to_string().contains("Invalid Form Body"), "{err}");

    // A slash command with a sub-command and options.
    let cmd = w.fake.slash_command(ALICE, &w.ops, "ops", &["restart"], &[("service", json!("promotions-api")), ("replicas", json!(3))]);
    let Interaction::Command(ci) = serde_json::from_str::<Interaction>(&cmd.body).expect("command parses") else { panic!("not a command") };
    assert_eq!(ci.data.name, "ops");
    assert_eq!(ci.data.id.to_string(), cmds[0].id.to_string(), "the registered command's id");
    let sub = &ci.data.options[0];
    assert_eq!(sub.name, "restart");
    let CommandDataOptionValue::SubCommand(opts) = &sub.value else { panic!("sub-command") };
    assert_eq!(opts[0].value.as_str(), Some("promotions-api"));
    assert_eq!(opts[1].value.as_i64(), Some(3));
    assert_eq!(ci.member.as_ref().map(|m| m.roles.len()), Some(1));
    assert_eq!(ci.user.id.to_string(), ALICE);
    // Autocomplete with the focused option.
    let ac = w.fake.autocomplete(ALICE, &w.ops, "ops", &["restart"], &[("service", json!("prom"))], "service");
    let Interaction::Autocomplete(ai) = serde_json::from_str::<Interaction>(&ac.body).expect("autocomplete parses") else {
        panic!("not autocomplete")
    };
    let focused = ai.data.autocomplete().expect("focused option");
    assert_eq!((focused.name, focused.value), ("service", "prom"));
    // PING.
    assert!(matches!(serde_json::from_str::<Interaction>(&w.fake.ping().body).expect("ping parses"), Interaction::Ping(_)));

    // Messages, threads and channels come back as serenity's types.
    let cid = serenity::model::id::ChannelId::new(w.ops.parse().expect("id"));
    let m = cid.say(chat.http().as_ref(), "typed hello").await.expect("typed send");
    assert_eq!(m.content, "typed hello");
    let thread =
        cid.create_thread_from_message(chat.http().as_ref(), m.id, serenity::builder::CreateThread::new("details")).await.expect("typed thread");
    assert_eq!(thread.id.get(), m.id.get());
    let guild = serenity::model::id::GuildId::new(w.fake.guild_id().parse().expect("id"));
    let ch = guild
        .create_channel(
            chat.http().as_ref(),
            serenity::builder::CreateChannel::new("Inc Test").category(serenity::model::id::ChannelId::new(w.category.parse().expect("id"))),
        )
        .await
        .expect("typed channel");
    assert_eq!(ch.name, "inc-test");
    let value: Value = w.fake.message_object(&m.id.to_string()).expect("object");
    assert_eq!(value["author"]["bot"], true);
}

/// Three replicas — three clients, each with its own connection to one PostgreSQL store — post
/// at once into one channel whose bucket allows 5 messages a second: spending the bucket (and
/// the global limit) together through the store, they stay within it — no 429 from Discord.
/// Each following only the headers of its own answers, they would overrun it.
#[tokio::test(flavor = "multi_thread")]
async fn replicas_on_one_store_spend_a_bucket_together_without_a_429() {
    use runbot_adapters::store_sql::{SqlStore, create_database, drop_database};
    use std::hash::{BuildHasher, RandomState};
    use std::sync::Arc;
    let server = std::env::var("RUNBOT_TEST_PG_URL").expect("RUNBOT_TEST_PG_URL is set by ./scripts/test.sh");
    let name = format!("runbot_discord_buckets_{:016x}", RandomState::new().hash_one(std::process::id()));
    let db = create_database(&server, &name).await.expect("a scratch database");
    let result = tokio::spawn(async move {
        let w = World::start().await;
        w.fake.set_route_limit(Route::CreateMessage, 5, Duration::from_secs(1));
        let mut chats = Vec::new();
        for _ in 0..3 {
            let chat = Arc::new(w.chat());
            chat.share_limits(Arc::new(SqlStore::connect(&db).await.expect("store")));
            chats.push(chat);
        }
        // Each learns the bucket's shape from one answer (an unseen bucket is not paced yet).
        for (i, c) in chats.iter().enumerate() {
            c.post(&w.ops, None, &plan(&format!("hello {i}"))).await.expect("post");
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let posts = chats.iter().flat_map(|c| (0..5).map(move |k| (c.clone(), k))).map(|(c, k)| {
            let ops = w.ops.clone();
            async move { c.post(&ops, None, &plan(&format!("burst {k}"))).await }
        });
        let results = futures::future::join_all(posts).await;
        assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
        let calls = w.fake.calls();
        let refused = calls.iter().filter(|c| c.status == 429).count();
        let created = calls.iter().filter(|c| c.route == Some(Route::CreateMessage) && (200..300).contains(&c.status)).count();
        assert_eq!(created, 18, "every message posted once");
        assert_eq!(refused, 0, "the replicas overran the bucket: {refused} × 429");
    })
    .await;
    let dropped = drop_database(&server, &name).await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic.into_panic());
    }
    dropped.expect("drop the scratch database");
}
