//! Readiness follows what runbot can really do (issue 14): a Socket Mode connection whose peer
//! went silent — open TCP, no hello, no pong — is noticed by runbot's pings, `/readyz` answers
//! 503 while it is not connected, and runbot reconnects by itself once Slack answers again. A
//! store that does not take writes (here: its write lock held by another process) makes
//! `/readyz` 503 too, and ready again once writes go through.

use crate::common::{Runbot, free_port, until};
use sqlx::{Connection, SqliteConnection};
use std::ffi::OsString;

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_socket_mode_connection_is_noticed_readyz_is_503_until_runbot_has_reconnected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let slack = runbot_sandbox::slack::FakeSlack::start("xoxb-live", "xapp-live").await.expect("fake Slack");
    let port = free_port();
    let config = dir.path().join("runbot.toml");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n[store]\nurl = \"sqlite://{}/state.db\"\n[console]\nenabled = false\n\
         [slack]\nbot_token = \"env:RUNBOT_TEST_SLACK_BOT\"\napp_token = \"env:RUNBOT_TEST_SLACK_APP\"\napi_url = \"{}\"\nsocket_ping_secs = 1\n",
        dir.path().display(),
        slack.api_url()
    );
    std::fs::write(&config, text).expect("config");
    let args: Vec<OsString> = vec!["serve".into(), "--config".into(), config.into()];
    let bot =
        Runbot::spawn_with(args, &[("RUNBOT_TEST_SLACK_BOT", "xoxb-live"), ("RUNBOT_TEST_SLACK_APP", "xapp-live")], port, &dir.path().join("log"))
            .await;
    let ready = async || {
        let r = bot.get("/readyz").await;
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    };
    until("ready once Socket Mode is connected", 20, async || ready().await.0 == 200).await;
    let connections = slack.socket_connections();

    // Slack goes silent: the socket stays open, nothing comes back, not even a pong.
    slack.socket_silence(true);
    let t = std::time::Instant::now();
    until("/readyz reports the dead connection", 10, async || ready().await.0 == 503).await;
    eprintln!("silent connection noticed after {} ms", t.elapsed().as_millis());
    assert_eq!(ready().await, (503, "Slack Socket Mode is not connected".to_string()));
    let metrics = bot.get("/metrics").await.text().await.unwrap_or_default();
    assert!(
        metrics.lines().any(|l| l.strip_prefix("runbot_slack_socket_dead_total ").is_some_and(|n| n.parse::<u64>().is_ok_and(|n| n >= 1))),
        "{metrics}"
    );
    // Reconnecting to a Slack that stays silent does not make runbot ready.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(ready().await.0, 503, "not ready while no connection has been greeted");

    slack.socket_silence(false);
    until("ready again after reconnecting", 40, async || ready().await.0 == 200).await;
    assert!(slack.socket_connections() > connections, "runbot opened a new connection");
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_is_503_while_the_store_does_not_take_writes_and_200_once_it_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = dir.path().join("runbot.toml");
    let db = dir.path().join("state.db");
    std::fs::write(&config, format!("[server]\nlisten = \"127.0.0.1:{port}\"\n[store]\nurl = \"sqlite://{}\"\n", db.display())).expect("config");
    let bot = Runbot::serve(&config, port, &dir.path().join("log")).await;
    let ready = async || {
        let r = bot.get("/readyz").await;
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    };
    until("ready", 20, async || ready().await.0 == 200).await;

    // Another process holds the store's write lock: reads still work, writes cannot.
    let mut other = SqliteConnection::connect(&format!("sqlite://{}", db.display())).await.expect("open the store");
    sqlx::query("BEGIN IMMEDIATE").execute(&mut other).await.expect("take the write lock");
    until("/readyz reports the store", 10, async || ready().await.0 == 503).await;
    let (_, body) = ready().await;
    assert!(body.starts_with("store cannot write: "), "{body}");
    assert!(bot.get("/healthz").await.status().is_success(), "alive, just not ready");

    sqlx::query("ROLLBACK").execute(&mut other).await.expect("release the write lock");
    until("ready again once writes go through", 10, async || ready().await.0 == 200).await;
}
