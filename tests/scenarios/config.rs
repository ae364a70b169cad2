//! Configuration: the shipped example and the demo world validate; a broken config reports
//! every problem with its key path; secrets resolve by reference and never print.

use runbot_commands::config::Settings;
use runbot_commands::steps::StepKinds;
use std::path::Path;

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[test]
fn the_example_config_in_deploy_is_valid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("cdn-token");
    std::fs::write(&secret, "s3cr3t-cdn-token\n").expect("write secret");
    let text = std::fs::read_to_string(repo().join("deploy/runbot.example.toml")).expect("example config");
    // Point the secrets at files instead of the environment (tests must not mutate env).
    let text = text.replace("env:RUNBOT_CDN_TOKEN", &format!("file:{}", secret.display()));
    let other = dir.path().join("other-secret");
    std::fs::write(&other, "another-secret\n").expect("write secret");
    let text = text.replace("env:RUNBOT_BACKUP_S3_KEY", &format!("file:{}", other.display()));
    let text = text.replace("env:RUNBOT_BACKUP_S3_SECRET", &format!("file:{}", other.display()));
    let text = text.replace("env:RUNBOT_RESTORED_DB_URL", &format!("file:{}", other.display()));
    let settings =
        Settings::from_toml(&text, &repo().join("deploy"), &StepKinds::shipped()).unwrap_or_else(|p| panic!("example config has problems: {p:?}"));
    assert!(settings.runbooks.contains_key("rollout-restart"));
    assert!(settings.runbooks.contains_key("purge-cdn"));
    assert_eq!(settings.secrets["cdn_token"].expose(), "s3cr3t-cdn-token");
    assert_eq!(format!("{:?}", settings.secrets["cdn_token"]), "***");
    assert!(!format!("{settings:?}").contains("s3cr3t-cdn-token"), "settings must never print a secret");
    assert_eq!(settings.redactor.redact("token=s3cr3t-cdn-token"), "token=***");
}

#[test]
fn the_demo_world_is_valid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let urls = runbot_sandbox::demo::Urls {
        kube: "http://127.0.0.1:6443".into(),
        github: "http://127.0.0.1:6444".into(),
        registry: "127.0.0.1:6445".into(),
        smoke: "http://127.0.0.1:6446".into(),
    };
    let path = runbot_sandbox::demo::prepare(dir.path(), "127.0.0.1:8080", &urls, Path::new("/bin/true")).expect("prepare demo");
    let settings = Settings::load(&path, &StepKinds::shipped()).unwrap_or_else(|p| panic!("demo config: {p:?}"));
    assert!(settings.runbooks.contains_key("cache-flush"));
    assert!(settings.runbooks.contains_key("deploy") && settings.runbooks.contains_key("rollback"));
    assert_eq!(settings.config.services["promotions"].environments["prod"].driver, Some(runbot_commands::config::Driver::Helm));
    assert!(dir.path().join("bin/helm").is_symlink() && dir.path().join("charts/promotions/Chart.yaml").is_file());
    assert!(settings.config.store.url.starts_with("sqlite://"));
}

#[test]
fn every_problem_is_reported_with_its_key_path() {
    let text = r#"
[server]
listen = "nowhere"
[store]
url = "mysql://db"
[groups]
sre = ["alice", "console:bob"]
[[approvals]]
approvers = ["sre", "ghosts"]
required = 3
expiry = "30 minutes"
[services.promotions]
version_pattern = "("
[services.promotions.environments.prod]
[secrets]
token = "hunter2"
[limits]
per_identity_per_minute = 0
[engine]
update_interval_ms = 0
bogus = 1
"#;
    let problems = Settings::from_toml(text, Path::new("."), &StepKinds::shipped()).expect_err("must fail");
    let shown: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    for needle in [
        "server.listen",
        "store.url",
        "groups.sre[0]: 'alice' is not an identity",
        "approvals[0].approvers: no group named 'ghosts'",
        "approvals[0].required",
        "approvals[0].expiry: '30 minutes' is not a duration",
        "services.promotions.version_pattern",
        "secrets.token",
        "limits.per_identity_per_minute",
        "engine.bogus",
    ] {
        assert!(shown.iter().any(|s| s.contains(needle)), "no problem mentions {needle:?}; got:\n{}", shown.join("\n"));
    }
}

#[test]
fn runbooks_are_checked_against_the_step_kinds_and_variables() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("rb.toml"),
        r#"
[runbooks.bad]
summary = "x"
target = "service"
[[runbooks.bad.steps]]
name = "change before approval"
kind = "command"
argv = ["touch", "{nowhere}"]
[[runbooks.bad.steps]]
name = "teleport"
kind = "teleport"
[[runbooks.bad.steps]]
name = "secret in argv"
kind = "command"
argv = ["curl", "{secret.token}"]
"#,
    )
    .expect("write");
    let text = "[engine]\nrunbooks = \"rb.toml\"\n";
    let problems = Settings::from_toml(text, dir.path(), &StepKinds::shipped()).expect_err("must fail");
    let shown = problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n");
    assert!(shown.contains("runbooks.bad.steps[0]: a step before the approval must be idempotent"), "{shown}");
    assert!(shown.contains("unknown variable {nowhere}"), "{shown}");
    assert!(shown.contains("runbooks.bad.steps[1].kind: unknown step kind 'teleport'"), "{shown}");
    assert!(shown.contains("secrets go in `env`"), "{shown}");
    assert!(shown.contains("runbooks.bad.steps: a mutating runbook needs an approval step"), "{shown}");
}
