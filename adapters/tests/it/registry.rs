//! `RegistryClient` against the sandbox's fake registry on 127.0.0.1 (Docker Registry HTTP
//! API v2): tags present and absent, Basic and Bearer credentials good and bad, an
//! unreachable or silent registry — and the wire format the fake speaks.

use runbot_adapters::registry::{MANIFEST_ACCEPT, RegistryClient};
use runbot_commands::config::{Secret, SecretRef};
use runbot_commands::ports::{Registry, RegistryError};
use runbot_sandbox::registry::FakeRegistry;
use sha2::Digest as _;
use std::time::{Duration, Instant};

const PASSWORD: &str = "s3cret-Pa55";

async fn registry() -> FakeRegistry {
    FakeRegistry::start("127.0.0.1:0".parse().expect("addr")).await.expect("registry")
}

fn client() -> RegistryClient {
    RegistryClient::new(Duration::from_secs(2)).expect("client")
}

/// A `Secret` the way runbot gets one: resolved from a `file:` reference.
fn secret(dir: &tempfile::TempDir, value: &str) -> Secret {
    let path = dir.path().join(format!("pw-{}", value.len()));
    std::fs::write(&path, format!("{value}\n")).expect("write secret");
    format!("file:{}", path.display()).parse::<SecretRef>().expect("ref").resolve().expect("resolve")
}

#[tokio::test(flavor = "multi_thread")]
async fn tags_present_and_absent() {
    let reg = registry().await;
    reg.push("team/promotions-api", "1.4.2");
    let image = format!("{}/team/promotions-api", reg.host());
    let c = client();
    assert!(c.tag_exists(&image, "1.4.2").await.expect("ask"));
    assert!(!c.tag_exists(&image, "9.9.9").await.expect("ask"));
    assert!(!c.tag_exists(&format!("{}/team/unknown", reg.host()), "1.4.2").await.expect("ask"));
    // Nested repository paths.
    reg.push("org/team/deep/app", "v2");
    assert!(c.tag_exists(&format!("{}/org/team/deep/app", reg.host()), "v2").await.expect("ask"));

    // What was asked: a HEAD of the manifest, accepting the index and manifest types.
    let reqs = reg.requests();
    let first = &reqs[0];
    assert_eq!((first.method.as_str(), first.path.as_str()), ("HEAD", "/v2/team/promotions-api/manifests/1.4.2"));
    for t in [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ] {
        assert!(first.accept.contains(t), "{t} missing from {:?}", first.accept);
    }
    assert_eq!(first.auth_scheme, None);
    assert!(reqs.iter().all(|r| r.method == "HEAD"), "no GETs: {reqs:?}");

    // Bad input is an error, not "absent".
    assert!(c.tag_exists(&format!("{}/team/promotions-api:1.4.2", reg.host()), "1.4.2").await.is_err());
    assert!(c.tag_exists(&image, "bad tag").await.is_err());
    reg.shutdown().await;
}

/// The fake's answers, checked with a plain HTTP client.
#[tokio::test(flavor = "multi_thread")]
async fn the_fake_speaks_the_distribution_api() {
    let reg = registry().await;
    let digest = reg.push("team/app", "1.0");
    let http = reqwest::Client::new();
    let url = format!("{}/v2/team/app/manifests/1.0", reg.url());

    let base = http.get(format!("{}/v2/", reg.url())).send().await.expect("base");
    assert_eq!(base.status().as_u16(), 200);
    assert_eq!(base.headers()["docker-distribution-api-version"], "registry/2.0");

    let head = http.head(&url).header("accept", MANIFEST_ACCEPT).send().await.expect("head");
    assert_eq!(head.status().as_u16(), 200);
    assert_eq!(head.headers()["content-type"], "application/vnd.oci.image.index.v1+json");
    assert_eq!(head.headers()["docker-content-digest"].to_str().expect("digest"), digest);
    let len: usize = head.headers()["content-length"].to_str().expect("len").parse().expect("number");
    let get = http.get(&url).header("accept", MANIFEST_ACCEPT).send().await.expect("get");
    let body = get.bytes().await.expect("body");
    assert_eq!(body.len(), len, "HEAD announces the GET's length");
    assert_eq!(format!("sha256:{}", hex::encode(sha2::Sha256::digest(&body))), digest, "the digest is the body's sha256");
    let index: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(index["mediaType"], "application/vnd.oci.image.index.v1+json");
    let amd64 = index["manifests"].as_array().expect("manifests").iter().find(|m| m["platform"]["architecture"] == "amd64").expect("amd64");

    // A client that reads only image manifests gets the linux/amd64 one; by digest, as stored.
    let only = http.get(&url).header("accept", "application/vnd.oci.image.manifest.v1+json").send().await.expect("get");
    assert_eq!(only.headers()["content-type"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(only.headers()["docker-content-digest"].to_str().expect("digest"), amd64["digest"].as_str().expect("digest"));
    let by_digest = http.get(format!("{}/v2/team/app/manifests/{digest}", reg.url())).send().await.expect("get");
    assert_eq!(by_digest.status().as_u16(), 200);
    // One that reads neither: distribution's refusal.
    let none = http.get(&url).header("accept", "application/vnd.docker.distribution.manifest.v1+prettyjws").send().await.expect("get");
    assert_eq!(none.status().as_u16(), 404);
    let e: serde_json::Value = none.json().await.expect("json");
    assert_eq!(e["errors"][0]["code"], "MANIFEST_UNKNOWN");

    let missing = http.get(format!("{}/v2/team/app/manifests/2.0", reg.url())).header("accept", MANIFEST_ACCEPT).send().await.expect("get");
    assert_eq!(missing.status().as_u16(), 404);
    let e: serde_json::Value = missing.json().await.expect("json");
    assert_eq!(e, serde_json::json!({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown", "detail": {"Tag": "2.0"}}]}));

    let tags: serde_json::Value = http.get(format!("{}/v2/team/app/tags/list", reg.url())).send().await.expect("tags").json().await.expect("json");
    assert_eq!(tags, serde_json::json!({"name": "team/app", "tags": ["1.0"]}));
    assert!(reg.untag("team/app", "1.0"));
    assert_eq!(http.head(&url).header("accept", MANIFEST_ACCEPT).send().await.expect("head").status().as_u16(), 404);

    reg.require_basic("ci", PASSWORD);
    let r = http.get(format!("{}/v2/", reg.url())).send().await.expect("base");
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Basic realm=\"Registry Realm\"");
    let e: serde_json::Value = r.json().await.expect("json");
    assert_eq!(e["errors"][0]["code"], "UNAUTHORIZED");
    let r = http.get(format!("{}/v2/", reg.url())).basic_auth("ci", Some(PASSWORD)).send().await.expect("base");
    assert_eq!(r.status().as_u16(), 200);
    assert!(reg.requests().iter().all(|r| r.auth_scheme.as_deref() != Some(PASSWORD)), "only schemes are kept");
    reg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_credentials_good_and_bad() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reg = registry().await;
    reg.push("team/app", "1.0");
    reg.require_basic("ci", PASSWORD);
    let image = format!("{}/team/app", reg.host());

    // None configured: the registry's 401, named, with what is missing.
    let err = client().tag_exists(&image, "1.0").await.expect_err("no credentials");
    assert!(matches!(err, RegistryError::Unauthorized(_)), "{err:?}");
    let err = err.to_string();
    assert!(err.contains(&reg.host()) && err.contains("401") && err.contains("no credentials"), "{err}");

    let good = client().with_credentials(&reg.host(), "ci", secret(&dir, PASSWORD));
    assert!(good.tag_exists(&image, "1.0").await.expect("ask"));
    assert!(!good.tag_exists(&image, "2.0").await.expect("ask"));
    // The challenge was answered once; afterwards credentials go with the first request.
    let schemes: Vec<Option<String>> = reg.requests().into_iter().skip(1).map(|r| r.auth_scheme).collect();
    assert_eq!(schemes, [None, Some("Basic".to_string()), Some("Basic".to_string())]);

    let bad = client().with_credentials(&reg.host(), "ci", secret(&dir, "wrong-password"));
    let err = bad.tag_exists(&image, "1.0").await.expect_err("refused");
    assert!(matches!(err, RegistryError::Unauthorized(_)), "{err:?}");
    let err = err.to_string();
    assert!(err.contains(&reg.host()) && err.contains("401") && err.contains("credentials of ci were refused"), "{err}");
    assert!(!err.contains("wrong-password"), "never the password: {err}");
    reg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bearer_token_flow() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reg = registry().await;
    reg.push("team/app", "1.0");
    let image = format!("{}/team/app", reg.host());

    // Public images (anonymous tokens, like Docker Hub's).
    reg.require_bearer(None);
    let anon = client();
    assert!(anon.tag_exists(&image, "1.0").await.expect("ask"));
    let reqs = reg.requests();
    assert_eq!(reqs.len(), 3, "HEAD, token, HEAD: {reqs:?}");
    assert_eq!(reqs[1].method, "GET");
    assert!(reqs[1].path.starts_with("/token?"), "{:?}", reqs[1].path);
    assert!(reqs[1].path.contains("service=fake-registry") && reqs[1].path.contains("scope=repository%3Ateam%2Fapp%3Apull"), "{:?}", reqs[1].path);
    assert_eq!(reqs[1].auth_scheme, None, "anonymous");
    assert_eq!(reqs[2].auth_scheme.as_deref(), Some("Bearer"));
    // The token is reused for the same repository.
    assert!(!anon.tag_exists(&image, "2.0").await.expect("ask"));
    assert_eq!(reg.requests().len(), 4);

    // Private: the token service wants the credentials.
    reg.require_bearer(Some(("robot", PASSWORD)));
    let good = client().with_credentials(&reg.host(), "robot", secret(&dir, PASSWORD));
    assert!(good.tag_exists(&image, "1.0").await.expect("ask"));
    let token_req = reg.requests().into_iter().rfind(|r| r.path.starts_with("/token")).expect("token request");
    assert_eq!(token_req.auth_scheme.as_deref(), Some("Basic"));

    let err = client().tag_exists(&image, "1.0").await.expect_err("anonymous token has no access");
    assert!(matches!(err, RegistryError::Unauthorized(_)), "{err:?}");
    let err = err.to_string();
    assert!(err.contains("401") && err.contains("no pull access") && err.contains("team/app"), "{err}");
    let bad = client().with_credentials(&reg.host(), "robot", secret(&dir, "nope-nope"));
    let err = bad.tag_exists(&image, "1.0").await.expect_err("refused");
    assert!(matches!(err, RegistryError::Unauthorized(_)), "{err:?}");
    let err = err.to_string();
    assert!(err.contains("refused the credentials of robot") && err.contains("401"), "{err}");
    assert!(!err.contains("nope-nope"), "{err}");
    reg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_and_silent_registries() {
    // Nothing listens on the port any more.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let err = client().tag_exists(&format!("127.0.0.1:{port}/team/app"), "1.0").await.expect_err("refused");
    assert!(matches!(err, RegistryError::Transport(_)), "{err:?}");
    let err = err.to_string();
    assert!(err.contains(&format!("127.0.0.1:{port}")) && err.contains("connection refused"), "{err}");

    // Accepts and never answers: the timeout, not a hang.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = silent.local_addr().expect("addr");
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let c = RegistryClient::new(Duration::from_millis(300)).expect("client");
    let t = Instant::now();
    let err = c.tag_exists(&format!("{addr}/team/app"), "1.0").await.expect_err("timeout");
    assert!(matches!(err, RegistryError::Transport(_)), "{err:?}");
    let err = err.to_string();
    assert!(err.contains("timed out") && err.contains(&addr.to_string()), "{err}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    holder.abort();
}
