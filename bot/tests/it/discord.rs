//! The real `runbot` binary with `[discord]`: `serve` mounts `POST /discord/interactions`
//! (PONG to a signed PING, 401 to a forged one, counted at `/metrics`), `/readyz` counts the
//! Discord endpoint as a chat adapter that receives commands, and `runbot discord
//! register-commands` bulk-overwrites `/ops` in the fake Discord, in the guild or globally.

use crate::common::{BIN, Runbot, free_port};
use runbot_sandbox::discord::{FakeDiscord, TEST_PUBLIC_KEY, sign_with};
use serde_json::{Value, json};
use std::ffi::OsString;
use std::process::Command;

const BOT: &str = "MTI5MDAwMDAwMDAwMDAwMDAwMQ.fake.bot-token-for-cli";
const APP: &str = "1250000000000000001";

fn config(dir: &std::path::Path, port: u16, fake: &FakeDiscord) -> std::path::PathBuf {
    let path = dir.join("runbot.toml");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n[store]\nurl = \"sqlite://{}/state.db\"\n[console]\nenabled = false\n\
         [discord]\nbot_token = \"env:RUNBOT_TEST_DISCORD_BOT\"\npublic_key = \"env:RUNBOT_TEST_DISCORD_KEY\"\n\
         application_id = \"{APP}\"\nguild_id = \"{}\"\napi_url = \"{}/api/v10\"\n",
        dir.display(),
        fake.guild_id(),
        fake.api_url()
    );
    std::fs::write(&path, text).expect("config");
    path
}

const ENV: [(&str, &str); 2] = [("RUNBOT_TEST_DISCORD_BOT", BOT), ("RUNBOT_TEST_DISCORD_KEY", TEST_PUBLIC_KEY)];

#[tokio::test(flavor = "multi_thread")]
async fn serve_mounts_the_interactions_endpoint_counts_refusals_and_is_ready() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeDiscord::start(BOT, APP).await.expect("fake discord");
    let port = free_port();
    let cfg = config(dir.path(), port, &fake);
    let args: Vec<OsString> = vec!["serve".into(), "--config".into(), cfg.into()];
    let bot = Runbot::spawn_with(args, &ENV, port, &dir.path().join("log")).await;

    let r = bot.get("/readyz").await;
    assert_eq!((r.status().as_u16(), r.text().await.unwrap_or_default()), (200, "ready: store, discord (HTTP)".to_string()));

    let endpoint = bot.url("/discord/interactions");
    let (status, answer) = fake.deliver(&endpoint, &fake.ping()).await;
    assert_eq!((status, answer), (200, json!({"type": 1})));
    let ping = fake.ping();
    let (_, ts) = ping.signature(0);
    let forged = sign_with(&[9u8; 32], &ts, ping.body.as_bytes());
    assert_eq!(fake.deliver_signed(&endpoint, &ping, &forged, &ts).await.0, 401);

    let metrics = bot.get("/metrics").await.text().await.unwrap_or_default();
    assert!(metrics.contains("runbot_discord_rejected_total{reason=\"bad_signature\"} 1"), "{metrics}");
    assert!(metrics.contains("runbot_discord_received_total{kind=\"ping\"} 1"), "{metrics}");
    assert!(!bot.log_text().contains(BOT), "the bot token is never logged");
    let status = bot.terminate();
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn register_commands_puts_the_generated_ops_in_the_guild_or_globally() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeDiscord::start(BOT, APP).await.expect("fake discord");
    let cfg = config(dir.path(), free_port(), &fake);
    let run = |extra: &[&str]| {
        let out = Command::new(BIN).args(["discord", "register-commands", "--config"]).arg(&cfg).args(extra).envs(ENV).output().expect("run");
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    // The fake answers on this runtime's other workers while the CLI runs.
    let (ok, out, err) = tokio::task::block_in_place(|| run(&[]));
    assert!(ok, "{err}");
    assert!(out.starts_with(&format!("registered /ops in guild {}", fake.guild_id())) && out.contains("restart"), "{out}");
    let stored = fake.commands(Some(fake.guild_id()));
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["name"], "ops");
    let subs: Vec<&str> = stored[0]["options"].as_array().expect("subs").iter().filter_map(|o| o["name"].as_str()).collect();
    let table: Vec<&str> = runbot_commands::grammar::spec::COMMANDS.iter().map(|c| c.name).collect();
    assert_eq!(subs, table);
    assert_eq!(stored[0]["options"], runbot_adapters::discord::commands::definitions()[0]["options"]);

    let (ok, out, err) = tokio::task::block_in_place(|| run(&["--global"]));
    assert!(ok && out.contains("globally"), "{out}{err}");
    assert_eq!(fake.commands(None).first().map(|c| c["name"].clone()), Some(Value::from("ops")));

    // A refused token is a clear error that does not echo it.
    let out = tokio::task::block_in_place(|| {
        Command::new(BIN)
            .args(["discord", "register-commands", "--config"])
            .arg(&cfg)
            .envs([("RUNBOT_TEST_DISCORD_BOT", "wrong-token"), ("RUNBOT_TEST_DISCORD_KEY", TEST_PUBLIC_KEY)])
            .output()
            .expect("run")
    });
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("HTTP 401") && !err.contains("wrong-token"), "{err}");
}
