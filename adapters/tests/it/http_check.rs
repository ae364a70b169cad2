//! `ReqwestCheck` (the smoke test's GET) against the sandbox's smoke endpoint on 127.0.0.1,
//! including one that follows a Deployment of the fake cluster.

use runbot_adapters::http_check::ReqwestCheck;
use runbot_commands::ports::{HttpCheck, HttpCheckError};
use runbot_sandbox::kube::{FakeCluster, Timing};
use runbot_sandbox::smoke::{Health, SmokeServer};
use std::sync::Arc;
use std::time::{Duration, Instant};

const NS: &str = "promotions-ns";
const T: Duration = Duration::from_secs(2);

fn addr() -> std::net::SocketAddr {
    "127.0.0.1:0".parse().expect("addr")
}

#[tokio::test(flavor = "multi_thread")]
async fn status_body_and_elapsed() {
    let check = ReqwestCheck::new().expect("client");
    let ok = SmokeServer::start(addr(), Arc::new(|| (200, "ok 1.4.2".to_string()))).await.expect("smoke");
    let a = check.get(&format!("{}/health", ok.url()), T).await.expect("answer");
    assert_eq!((a.status, a.body.as_str()), (200, "ok 1.4.2"));
    assert!(a.elapsed < T);
    assert_eq!(check.get(&format!("{}/", ok.url()), T).await.expect("answer").status, 200);
    assert_eq!(check.get(&format!("{}/nothing", ok.url()), T).await.expect("answer").status, 404);

    let down: Health = Arc::new(|| (503, "database unreachable".to_string()));
    let sick = SmokeServer::start(addr(), down).await.expect("smoke");
    let a = check.get(&format!("{}/health", sick.url()), T).await.expect("a 503 is an answer");
    assert_eq!((a.status, a.body.as_str()), (503, "database unreachable"));

    // Latency is measured; past the timeout there is no answer.
    ok.set_delay(Duration::from_millis(300));
    let a = check.get(&format!("{}/health", ok.url()), T).await.expect("slow answer");
    assert!(a.elapsed >= Duration::from_millis(300), "{:?}", a.elapsed);
    let t = Instant::now();
    let err = check.get(&format!("{}/health", ok.url()), Duration::from_millis(100)).await.expect_err("timeout");
    assert!(matches!(err, HttpCheckError::Timeout(_)), "{err:?}");
    let err = err.to_string();
    assert!(err.contains("timed out after 100ms") && err.contains("/health"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(1));

    // Big bodies are cut at 64 KiB; invalid UTF-8 is replaced, not an error.
    let big = SmokeServer::start(addr(), Arc::new(|| (200, "x".repeat(200 * 1024)))).await.expect("smoke");
    let a = check.get(&format!("{}/health", big.url()), T).await.expect("answer");
    assert_eq!(a.body.len(), 64 * 1024);
    ok.shutdown().await;
    sick.shutdown().await;
    big.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_answer_at_all_is_an_error_saying_why() {
    let check = ReqwestCheck::new().expect("client");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let err = check.get(&format!("http://127.0.0.1:{port}/health"), T).await.expect_err("refused");
    assert!(matches!(err, HttpCheckError::Transport(_)), "{err:?}");
    let err = err.to_string();
    assert!(err.contains("connection refused") && err.contains(&format!("127.0.0.1:{port}")), "{err}");
    // The URL is shown without credentials or query.
    let err = check.get(&format!("http://user:pw@127.0.0.1:{port}/health?token=abc"), T).await.expect_err("refused");
    assert!(matches!(err, HttpCheckError::Transport(_)), "{err:?}");
    let err = err.to_string();
    assert!(!err.contains("pw") && !err.contains("abc"), "{err}");
    // TLS to a plain-HTTP port: a TLS error, not a hang.
    let plain = SmokeServer::start(addr(), Arc::new(|| (200, "ok".to_string()))).await.expect("smoke");
    let err = check.get(&plain.url().replace("http://", "https://"), T).await.expect_err("not TLS");
    assert!(matches!(err, HttpCheckError::Transport(_)), "{err:?}");
    let err = err.to_string();
    assert!(err.contains("TLS") || err.contains("tls") || err.contains("ssl"), "{err}");
    let err = check.get("ftp://127.0.0.1/x", T).await.expect_err("scheme");
    assert!(matches!(err, HttpCheckError::InvalidUrl(_)), "{err:?}");
    let err = err.to_string();
    assert!(err.contains("http"), "{err}");
    plain.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn health_follows_the_running_image() {
    let cluster = FakeCluster::start(addr(), Timing::fast()).await.expect("sandbox");
    let smoke =
        SmokeServer::following_deployment(addr(), &cluster, NS, "promotions-api", |image: &str| !image.ends_with(":1.5.0-bad")).await.expect("smoke");
    let check = ReqwestCheck::new().expect("client");
    let url = format!("{}/health", smoke.url());
    let get = async || check.get(&url, T).await.expect("answer");

    let a = get().await;
    assert_eq!(a.status, 503);
    assert!(a.body.contains("deployment promotions-ns/promotions-api not found"), "{}", a.body);

    cluster.deploy(NS, "promotions-api", "registry.local/promotions-api:1.4.2", 2);
    wait_for(async || get().await.status == 200).await;
    assert_eq!(get().await.body, "ok 1.4.2");

    // A release whose pods get Ready but whose image is broken.
    cluster.deploy(NS, "promotions-api", "registry.local/promotions-api:1.5.0-bad", 2);
    wait_for(async || get().await.status == 503).await;
    let a = get().await;
    assert!(a.body.contains("runs unhealthy image registry.local/promotions-api:1.5.0-bad"), "{}", a.body);
    // Rolled back: healthy again.
    cluster.deploy(NS, "promotions-api", "registry.local/promotions-api:1.4.2", 2);
    wait_for(async || get().await.body == "ok 1.4.2").await;
    assert!(smoke.hits() >= 5);
    smoke.shutdown().await;
    cluster.shutdown().await;
}

async fn wait_for<F: AsyncFnMut() -> bool>(mut f: F) {
    let t = Instant::now();
    while !f().await {
        assert!(t.elapsed() < Duration::from_secs(10), "timed out waiting");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
