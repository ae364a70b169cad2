//! Who the console under `runbot serve` acts as is decided by the connection, not by the
//! client: against the real binary, a loopback console refuses to start on a non-loopback
//! address and acts only as `[console] local_identity`; behind an authenticating proxy only
//! the configured proxy's header names the user — a peer elsewhere is refused whatever its
//! `Host`, header or body say.

use crate::common::{PROXY_USER_HEADER, Runbot, button, text, until};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

/// A serve config with a two-person approval, a runbook that creates a marker file once
/// approved, and `console` as its `[console]` section.
fn write_config(dir: &Path, listen: &str, console: &str) -> std::path::PathBuf {
    let d = dir.display();
    std::fs::write(
        dir.join("runbot.toml"),
        format!(
            "[server]\nlisten = \"{listen}\"\n[store]\nurl = \"sqlite://{d}/state.db\"\n[engine]\nrunbooks = \"runbooks.toml\"\n\
             update_interval_ms = 100\n[groups]\nsre = [\"console:alice\", \"console:bob\"]\n[[approvals]]\napprovers = [\"sre\"]\n\
             [services.alpha.environments.prod.vars]\nmarker = \"{d}/alpha.marker\"\n{console}"
        ),
    )
    .expect("write config");
    std::fs::write(
        dir.join("runbooks.toml"),
        "[runbooks.touch]\nsummary = \"create a marker file after approval\"\ntarget = \"service\"\n\
         [[runbooks.touch.steps]]\nname = \"Approval\"\nkind = \"approval\"\n\
         [[runbooks.touch.steps]]\nname = \"Touch\"\nkind = \"command\"\nargv = [\"touch\", \"{marker}\"]\n",
    )
    .expect("write runbooks");
    dir.join("runbot.toml")
}

/// A client whose connections come from `source` (any 127.x.y.z is loopback on Linux), naming
/// no user unless a request does.
fn client_from(source: &str) -> reqwest::Client {
    let ip: IpAddr = source.parse().expect("source address");
    reqwest::Client::builder().local_address(ip).timeout(Duration::from_secs(10)).build().expect("client")
}

async fn post(http: &reqwest::Client, bot: &Runbot, api: &str, user: Option<&str>, host: Option<&str>, body: &Value) -> (StatusCode, String) {
    let mut req = http.post(bot.url(&format!("/console/api/{api}"))).json(body);
    if let Some(u) = user {
        req = req.header(PROXY_USER_HEADER, u);
    }
    if let Some(h) = host {
        req = req.header(reqwest::header::HOST, h);
    }
    let r = req.send().await.unwrap_or_else(|e| panic!("POST {api}: {e}"));
    (r.status(), r.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_refuses_a_loopback_console_on_a_non_loopback_listen_address_naming_the_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "0.0.0.0:0", "");
    let out = std::process::Command::new(crate::common::BIN).args(["serve", "--config"]).arg(&config).output().expect("runbot serve");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "serve started on 0.0.0.0 with a loopback console: {err}");
    for key in ["server.listen", "auth = \"loopback\"", "[console] enabled = false", "trusted_proxies"] {
        assert!(err.contains(key), "the refusal names {key}: {err}");
    }
    let check = std::process::Command::new(crate::common::BIN).arg("check-config").arg(&config).output().expect("check-config");
    assert!(!check.status.success() && String::from_utf8_lossy(&check.stderr).contains("server.listen"), "check-config says it too");

    // Off, or behind a proxy, the same address is accepted.
    let off = write_config(dir.path(), "0.0.0.0:0", "[console]\nenabled = false\n");
    let ok = std::process::Command::new(crate::common::BIN).arg("check-config").arg(&off).output().expect("check-config");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let proxied = write_config(dir.path(), "0.0.0.0:0", "[console]\nauth = \"proxy\"\ntrusted_proxies = [\"10.0.0.5\"]\n");
    let ok = std::process::Command::new(crate::common::BIN).arg("check-config").arg(&proxied).output().expect("check-config");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
}

#[tokio::test(flavor = "multi_thread")]
async fn behind_a_proxy_only_the_trusted_peer_names_the_user_and_forged_requests_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = crate::common::free_port();
    let listen = format!("127.0.0.1:{port}");
    let config = write_config(dir.path(), &listen, "[console]\nauth = \"proxy\"\ntrusted_proxies = [\"127.0.0.2\"]\n");
    let mut bot = Runbot::serve(&config, port, &dir.path().join("runbot.log")).await;
    let proxy = client_from("127.0.0.2");
    let stranger = client_from("127.0.0.3");
    let marker = dir.path().join("alpha.marker");

    // The attack from a peer that is not the proxy: forged Host, identity and header.
    let forged = json!({"identity": "console:bob", "channel": "ops", "text": "/ops run touch alpha"});
    for (who, http) in [("127.0.0.3", &stranger), ("127.0.0.1", &bot.http)] {
        let (status, body) = post(http, &bot, "command", Some("bob"), Some(&listen), &forged).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "a command from {who}: {body}");
        assert!(body.contains("authenticating proxy"), "{body}");
        let r = http.get(bot.url("/console/api/messages?channel=ops")).header(PROXY_USER_HEADER, "bob").send().await.expect("get");
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "reading from {who}");
    }

    // The proxy must name someone, and the body cannot name someone else.
    let (status, body) = post(&proxy, &bot, "command", None, None, &forged).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, body) = post(&proxy, &bot, "command", Some("alice"), None, &forged).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "alice's session naming bob: {body}");
    assert!(body.contains("you are console:alice"), "{body}");
    let (status, body) = post(&proxy, &bot, "command", Some("bob@example.com"), None, &json!({"channel": "ops", "text": "/ops help"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a user name that is not an identity: {body}");

    // Through the proxy, alice's header is alice: the page learns it and cannot pick.
    let st: Value =
        proxy.get(bot.url("/console/api/state")).header(PROXY_USER_HEADER, "alice").send().await.expect("state").json().await.expect("JSON");
    assert_eq!((&st["pick"], &st["identity"]), (&json!(false), &json!("console:alice")), "{st}");
    let (status, body) = post(&proxy, &bot, "command", Some("alice"), None, &json!({"channel": "ops", "text": "/ops run touch alpha"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("R-1 created"), "{body}");

    // From here the helpers go through the proxy (they name the body's identity in the header).
    let mut observer = reqwest::header::HeaderMap::new();
    observer.insert(PROXY_USER_HEADER, reqwest::header::HeaderValue::from_static("observer"));
    bot.http = reqwest::Client::builder().local_address("127.0.0.2".parse::<IpAddr>().ok()).default_headers(observer).build().expect("client");
    until("R-1 offers Approve", 15, async || bot.status("ops", "R-1").await.is_some_and(|m| button(&m, "approve").is_some())).await;
    let m = bot.status("ops", "R-1").await.expect("status");
    let approve = button(&m, "approve").expect("approve");
    let click = json!({"channel": "ops", "message_id": m["id"], "action_id": "approve", "value": approve["value"]});

    // bob's name from a stranger, and bob's name in alice's session, approve nothing.
    let (status, _) = post(&stranger, &bot, "action", Some("bob"), Some(&listen), &click).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let mut as_bob_in_alices_session = click.clone();
    as_bob_in_alices_session["identity"] = json!("console:bob");
    let (status, _) = post(&proxy, &bot, "action", Some("alice"), None, &as_bob_in_alices_session).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // alice, the requester, may not approve her own request.
    let r = bot.click("console:alice", &m, &approve).await;
    assert!(!text(&r).contains("approved"), "{r}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let still = bot.status("ops", "R-1").await.expect("status");
    assert!(button(&still, "approve").is_some() && !marker.exists(), "R-1 still waits for someone else: {still}");

    // bob, named by the proxy, approves; the step runs.
    let r = bot.click("console:bob", &m, &approve).await;
    assert!(text(&r).contains("approved"), "{r}");
    until("R-1 succeeded", 15, async || bot.status("ops", "R-1").await.is_some_and(|m| text(&m["message"]).contains("Succeeded"))).await;
    assert!(marker.exists(), "the approved step ran");
    let log = bot.log_text();
    assert!(log.contains("console request refused") && log.contains("127.0.0.3"), "refusals are logged with the peer");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_loopback_console_acts_only_as_its_local_identity() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = crate::common::free_port();
    let listen = format!("127.0.0.1:{port}");
    let config = write_config(dir.path(), &listen, "[console]\nlocal_identity = \"console:alice\"\nidentities = [\"console:bob\"]\n");
    let bot = Runbot::serve(&config, port, &dir.path().join("runbot.log")).await;
    let http = client_from("127.0.0.1");

    let st: Value = http.get(bot.url("/console/api/state")).send().await.expect("state").json().await.expect("JSON");
    assert_eq!((&st["pick"], &st["identity"], &st["identities"]), (&json!(false), &json!("console:alice"), &json!(["console:alice"])), "{st}");
    let as_bob = json!({"identity": "console:bob", "channel": "ops", "text": "/ops whoami"});
    let (status, body) = post(&http, &bot, "command", Some("bob"), None, &as_bob).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "serve has no picker, and ignores proxy headers here: {body}");
    let mine = json!({"channel": "ops", "text": "/ops whoami"});
    let (status, body) = post(&http, &bot, "command", None, Some("attacker.example"), &mine).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a request addressed to another host (DNS rebinding): {body}");
    let (status, body) = post(&http, &bot, "command", None, None, &mine).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("console:alice"), "whoami answers alice: {body}");
    assert!(bot.log_text().contains("runbot serve ignores it"), "the unused picker list is warned about");
    assert!(!bot.log_text().contains('\u{1b}'), "a log written to a file carries no terminal colour codes");
    drop(bot);

    // Without local_identity the console shows messages and does nothing.
    let port = crate::common::free_port();
    let config = write_config(dir.path(), &format!("127.0.0.1:{port}"), "");
    let bot = Runbot::serve(&config, port, &dir.path().join("runbot2.log")).await;
    let st: Value = http.get(bot.url("/console/api/state")).send().await.expect("state").json().await.expect("JSON");
    assert_eq!((&st["pick"], &st["identity"]), (&json!(false), &Value::Null), "{st}");
    let (status, body) =
        post(&http, &bot, "command", None, None, &json!({"identity": "console:alice", "channel": "ops", "text": "/ops whoami"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("local_identity"), "the refusal says what to configure: {body}");
}
