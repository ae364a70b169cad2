//! The real `runbot` binary with `[discord] mode = "gateway"`: `serve` connects to the fake
//! Discord's Gateway (no `/discord/interactions` route), `/readyz` is ready only while the
//! gateway session is up, and says why when Discord closed it for good; the bot token never
//! reaches the log.

use crate::common::{Runbot, free_port, until};
use runbot_sandbox::discord::FakeDiscord;
use std::ffi::OsString;

const BOT: &str = "MTI5MDAwMDAwMDAwMDAwMDAwMQ.fake.bot-token-for-gateway-cli";
const APP: &str = "1250000000000000001";

#[tokio::test(flavor = "multi_thread")]
async fn serve_in_gateway_mode_is_ready_while_connected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeDiscord::start(BOT, APP).await.expect("fake discord");
    let port = free_port();
    let path = dir.path().join("runbot.toml");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n[store]\nurl = \"sqlite://{}/state.db\"\n[console]\nenabled = false\n\
         [discord]\nbot_token = \"env:RUNBOT_TEST_DISCORD_BOT\"\nmode = \"gateway\"\n\
         application_id = \"{APP}\"\nguild_id = \"{}\"\napi_url = \"{}/api/v10\"\n",
        dir.path().display(),
        fake.guild_id(),
        fake.api_url()
    );
    std::fs::write(&path, text).expect("config");
    let args: Vec<OsString> = vec!["serve".into(), "--config".into(), path.into()];
    let bot = Runbot::spawn_with(args, &[("RUNBOT_TEST_DISCORD_BOT", BOT)], port, &dir.path().join("log")).await;

    let mut last = String::new();
    until("ready with the gateway connected", 20, async || {
        let r = bot.get("/readyz").await;
        let ok = r.status().as_u16() == 200;
        last = r.text().await.unwrap_or_default();
        ok
    })
    .await;
    assert_eq!(last, "ready: store, discord (gateway)");
    assert_eq!(fake.gateway_stats().identifies, 1);
    assert_eq!(bot.get("/discord/interactions").await.status().as_u16(), 404, "no HTTP endpoint in gateway mode");

    // Discord closes the session for good (disallowed intents): not ready, and why.
    fake.gateway_close(4014, "Disallowed intent(s).");
    until("not ready after a fatal close", 20, async || bot.get("/readyz").await.status().as_u16() == 503).await;
    let why = bot.get("/readyz").await.text().await.unwrap_or_default();
    assert!(why.starts_with("the Discord gateway stopped: ") && why.contains("4014"), "{why}");
    assert!(!bot.log_text().contains(BOT), "the bot token is never logged");
    let status = bot.terminate();
    assert!(status.success(), "{status}");
}
