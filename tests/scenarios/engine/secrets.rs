//! Secrets in the engine: an artifact a step keeps, and the execution stored, hold no secret —
//! not its whole value, not any 8 characters of it.

use runbot_commands::ports::Store;
use runbot_tests::harness::{Options, RUNBOOKS, World, created};

const CANARY: &str = "canary-Hk4vT9pQ2xW7mZ3s";

/// The 8-character runs of the canary that `text` contains.
fn leaks(text: &str) -> Vec<String> {
    let chars: Vec<char> = CANARY.chars().collect();
    chars.windows(8).map(|w| w.iter().collect::<String>()).filter(|w| text.contains(w.as_str())).collect()
}

const KEEP: &str = r#"
[runbooks.keep]
summary = "keeps an artifact holding a secret"
target = "service"
mutating = false
[[runbooks.keep.steps]]
name = "Keep it"
kind = "probe"
idempotent = true
counter = "keep"
artifact_secret = "canary"
"#;

#[tokio::test]
async fn an_artifact_holding_a_secret_or_half_of_one_is_stored_redacted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("canary");
    std::fs::write(&file, CANARY).expect("write secret");
    let world = World::with(Options {
        extra_config: format!("[secrets]\ncanary = \"file:{}\"\n", file.display()),
        runbooks: format!("{RUNBOOKS}\n{KEEP}"),
        ..Options::default()
    })
    .await;
    let id = created(&world.cmd("console:alice", "/ops run keep promotions").await);
    world.wait_state(id, "succeeded").await;
    let artifacts = world.store.artifacts(id).await.expect("artifacts");
    let (name, content) = artifacts.first().expect("an artifact was kept");
    assert_eq!(name, "secret.txt");
    assert_eq!(content, "whole:***\nhalf:***\n", "the artifact as stored");
    let exec = serde_json::to_string(&world.exec(id).await).expect("execution JSON");
    assert!(leaks(&exec).is_empty(), "the stored execution: {exec}");
    let audit = serde_json::to_string(&world.audit().await).expect("audit JSON");
    assert!(leaks(&audit).is_empty(), "the audit log: {audit}");
}
