//! `GitHubCi` (octocrab) against the sandbox's fake GitHub: run listings with filters, runs by
//! id, tags (lightweight and annotated), dispatches followed to their conclusion, and the
//! errors a person reads in the channel (422, 401, 500, timeouts).

use futures::FutureExt;
use runbot_adapters::github::GitHubCi;
use runbot_commands::ports::{Ci, CiError, RunQuery, WorkflowRun};
use runbot_sandbox::github::{DispatchHook, FakeGitHub, Timing};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const REPO: &str = "acme/promotions";
const MAIN_SHA: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";
const FEATURE_SHA: &str = "9fceb02d0ae598e95dc970b74767f19372d61af8";
const RELEASE_SHA: &str = "1f7a7a472abf3dd9643fd615f6da379c4acb3e3a";

async fn fake() -> FakeGitHub {
    let gh = FakeGitHub::start("127.0.0.1:0".parse().expect("addr"), Timing::fast()).await.expect("fake GitHub");
    gh.add_workflow(REPO, "ci.yml", "CI", &[]);
    gh.add_workflow(REPO, "deploy.yml", "Deploy", &["environment", "image_tag"]);
    gh.set_branch(REPO, "main", MAIN_SHA);
    gh.set_branch(REPO, "feature/x", FEATURE_SHA);
    gh
}

fn client(gh: &FakeGitHub, token: Option<&str>) -> GitHubCi {
    GitHubCi::new(&gh.url(), token, Duration::from_secs(5)).expect("client")
}

fn query(branch: Option<&str>, event: Option<&str>, per_page: u8) -> RunQuery {
    RunQuery { branch: branch.map(str::to_string), event: event.map(str::to_string), per_page }
}

/// Polls the run through the port until it is completed.
async fn follow(ci: &GitHubCi, id: u64) -> (WorkflowRun, Vec<String>) {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let run = ci.run(REPO, id).await.expect("run");
        if seen.last() != Some(&run.status) {
            seen.push(run.status.clone());
        }
        if run.status == "completed" {
            return (run, seen);
        }
        assert!(tokio::time::Instant::now() < deadline, "run {id} never completed: {seen:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn latest_runs_on_a_branch_newest_first() {
    let gh = fake().await;
    let old = gh.push_run(REPO, "ci.yml", "main", "aaaa", "push", "completed", Some("success"));
    let other = gh.push_run(REPO, "ci.yml", "feature/x", FEATURE_SHA, "push", "completed", Some("failure"));
    let deploy = gh.push_run(REPO, "deploy.yml", "main", MAIN_SHA, "workflow_dispatch", "completed", Some("success"));
    let new = gh.push_run(REPO, "ci.yml", "main", MAIN_SHA, "push", "in_progress", None);
    let ci = client(&gh, None);

    let runs = ci.runs(REPO, "ci.yml", &query(Some("main"), None, 10)).await.expect("runs");
    let ids: Vec<u64> = runs.iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![new, old], "main's CI runs, newest first; not feature/x's, not deploy.yml's");
    let latest = &runs[0];
    assert_eq!(latest.head_sha, MAIN_SHA);
    assert_eq!(latest.head_branch.as_deref(), Some("main"));
    assert_eq!(latest.name, "CI");
    assert_eq!((latest.status.as_str(), latest.conclusion.as_deref()), ("in_progress", None));
    assert_eq!(runs[1].state(), "completed/success");
    assert!(runs[1].succeeded() && !latest.succeeded());
    assert_eq!(latest.html_url, format!("https://github.com/{REPO}/actions/runs/{new}"));
    assert_eq!(latest.run_number, 3, "the third run of ci.yml");

    // The filters travel as GitHub's query parameters.
    let call = gh.calls().into_iter().last().expect("a call");
    assert_eq!(call.method, "GET");
    assert!(call.path.starts_with("/repos/acme/promotions/actions/workflows/ci.yml/runs?"), "{}", call.path);
    assert!(call.path.contains("branch=main") && call.path.contains("per_page=10"), "{}", call.path);

    // per_page limits, newest kept.
    let one = ci.runs(REPO, "ci.yml", &query(Some("main"), None, 1)).await.expect("runs");
    assert_eq!(one.iter().map(|r| r.id).collect::<Vec<_>>(), vec![new]);
    // A branch with slashes, and the event filter.
    let feat = ci.runs(REPO, "ci.yml", &query(Some("feature/x"), Some("push"), 5)).await.expect("runs");
    assert_eq!(feat.iter().map(|r| r.id).collect::<Vec<_>>(), vec![other]);
    let none = ci.runs(REPO, "ci.yml", &query(Some("main"), Some("workflow_dispatch"), 5)).await.expect("runs");
    assert!(none.is_empty(), "{none:?}");
    // The workflow by numeric id.
    let wid = gh.workflow_id(REPO, "deploy.yml").expect("id");
    let by_id = ci.runs(REPO, &wid.to_string(), &query(None, None, 0)).await.expect("runs");
    assert_eq!(by_id.iter().map(|r| r.id).collect::<Vec<_>>(), vec![deploy]);

    // An unknown workflow is GitHub's 404, named.
    let e = ci.runs(REPO, "nope.yml", &query(Some("main"), None, 5)).await.unwrap_err();
    assert_eq!(
        e,
        CiError::Api { status: 404, message: "GitHub answered 404 Not Found for GET /repos/acme/promotions/actions/workflows/nope.yml/runs".into() }
    );
    // Names that are not a repository or a workflow never reach GitHub.
    let before = gh.calls().len();
    let e = ci.runs("acme", "ci.yml", &query(None, None, 5)).await.unwrap_err();
    assert!(matches!(&e, CiError::Invalid(m) if m.contains("owner/name")), "{e:?}");
    assert!(ci.runs(REPO, "../x", &query(None, None, 5)).await.is_err());
    assert_eq!(gh.calls().len(), before);
    gh.shutdown().await;
}

#[tokio::test]
async fn a_run_by_id() {
    let gh = fake().await;
    let id = gh.push_run(REPO, "ci.yml", "main", MAIN_SHA, "push", "completed", Some("failure"));
    let ci = client(&gh, None);
    let run = ci.run(REPO, id).await.expect("run");
    assert_eq!(run.id, id);
    assert_eq!(run.name, "CI");
    assert_eq!(run.event, "push");
    assert_eq!(run.head_sha, MAIN_SHA);
    assert_eq!(run.state(), "completed/failure");
    assert!(!run.succeeded());

    gh.set_run_state(id, "completed", Some("success"));
    assert!(ci.run(REPO, id).await.expect("run").succeeded(), "the state is read again, not cached");

    let e = ci.run(REPO, id + 1000).await.unwrap_err();
    assert_eq!(
        e,
        CiError::Api { status: 404, message: format!("GitHub answered 404 Not Found for GET /repos/acme/promotions/actions/runs/{}", id + 1000) }
    );
    gh.shutdown().await;
}

#[tokio::test]
async fn tags_lightweight_and_annotated_are_peeled_to_commits() {
    let gh = fake().await;
    gh.add_tag(REPO, "v1.4.0", MAIN_SHA, false);
    gh.add_tag(REPO, "v1.5.0", RELEASE_SHA, true);
    gh.add_tag(REPO, "release/2026.01", FEATURE_SHA, true);
    let ci = client(&gh, None);

    assert_eq!(ci.tag_commit(REPO, "v1.4.0").await.expect("tag"), Some(MAIN_SHA.to_string()));
    let object = gh.tag_object(REPO, "v1.5.0").expect("annotated");
    assert_ne!(object, RELEASE_SHA);
    assert_eq!(ci.tag_commit(REPO, "v1.5.0").await.expect("tag"), Some(RELEASE_SHA.to_string()), "the commit, not the tag object");
    assert!(gh.calls().iter().any(|c| c.path == format!("/repos/acme/promotions/git/tags/{object}")), "the tag object was read");
    assert_eq!(ci.tag_commit(REPO, "refs/tags/release/2026.01").await.expect("tag"), Some(FEATURE_SHA.to_string()));

    // No such tag (in a repository that exists): None, not an error.
    assert_eq!(ci.tag_commit(REPO, "v9.9.9").await.expect("no tag"), None);
    // A repository that does not exist (or that the token cannot see) is not "no such tag".
    let e = ci.tag_commit("acme/ghost", "v1.4.0").await.unwrap_err();
    assert!(matches!(e, CiError::Api { status: 404, .. }) && e.to_string().contains("404 Not Found for GET /repos/acme/ghost"), "{e}");
    gh.shutdown().await;
}

fn recording_hook(result: bool, seen: Arc<Mutex<Vec<BTreeMap<String, String>>>>) -> DispatchHook {
    Arc::new(move |inputs| {
        let seen = seen.clone();
        async move {
            seen.lock().expect("lock").push(inputs);
            result
        }
        .boxed()
    })
}

#[tokio::test]
async fn a_dispatch_creates_a_run_that_is_followed_to_success() {
    let gh = fake().await;
    // An older run on main that must not be mistaken for the dispatched one.
    let older = gh.push_run(REPO, "deploy.yml", "main", "cccc", "workflow_dispatch", "completed", Some("failure"));
    let seen = Arc::new(Mutex::new(Vec::new()));
    gh.on_dispatch(REPO, "deploy.yml", recording_hook(true, seen.clone()));
    let ci = client(&gh, None);

    let inputs = BTreeMap::from([("environment".to_string(), "production".to_string()), ("image_tag".to_string(), "1.5.0".to_string())]);
    ci.dispatch(REPO, "deploy.yml", "main", &inputs).await.expect("dispatch");
    let post = gh.calls().into_iter().find(|c| c.method == "POST").expect("the dispatch");
    assert_eq!(post.path, "/repos/acme/promotions/actions/workflows/deploy.yml/dispatches");
    assert_eq!(post.body, serde_json::json!({"ref": "main", "inputs": {"environment": "production", "image_tag": "1.5.0"}}));
    assert_eq!(post.status, 204);

    let runs = ci.runs(REPO, "deploy.yml", &query(Some("main"), Some("workflow_dispatch"), 5)).await.expect("runs");
    assert_eq!(runs.len(), 2, "{runs:?}");
    let run = runs[0].clone();
    assert_ne!(run.id, older);
    assert_eq!(run.head_sha, MAIN_SHA, "dispatched on main's head");
    assert_eq!(run.event, "workflow_dispatch");
    assert_ne!(run.status, "completed", "just dispatched");

    let (done, states) = follow(&ci, run.id).await;
    assert!(done.succeeded(), "{}", done.state());
    assert_eq!(states.last().map(String::as_str), Some("completed"));
    assert!(states.iter().any(|s| s == "in_progress") || states.first().map(String::as_str) == Some("queued"), "{states:?}");
    assert_eq!(*seen.lock().expect("lock"), vec![inputs.clone()], "the run called the deploy with the inputs");
    let fake_run = gh.runs(REPO).into_iter().find(|r| r.id == run.id).expect("fake's run");
    assert_eq!(fake_run.inputs, inputs);
    gh.shutdown().await;
}

#[tokio::test]
async fn a_dispatched_run_whose_deploy_fails_concludes_failure() {
    let gh = fake().await;
    gh.add_tag(REPO, "v1.5.0", RELEASE_SHA, true);
    let seen = Arc::new(Mutex::new(Vec::new()));
    gh.on_dispatch(REPO, "deploy.yml", recording_hook(false, seen.clone()));
    let ci = client(&gh, None);
    // On a tag this time.
    ci.dispatch(REPO, "deploy.yml", "v1.5.0", &BTreeMap::new()).await.expect("dispatch");
    let runs = ci.runs(REPO, "deploy.yml", &query(Some("v1.5.0"), None, 1)).await.expect("runs");
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].head_sha, RELEASE_SHA);
    let (done, _) = follow(&ci, runs[0].id).await;
    assert_eq!(done.state(), "completed/failure");
    assert!(!done.succeeded());
    assert_eq!(seen.lock().expect("lock").len(), 1);
    gh.shutdown().await;
}

#[tokio::test]
async fn refused_dispatches_come_back_as_clear_errors() {
    let gh = fake().await;
    let ci = client(&gh, None);
    let bad = BTreeMap::from([("environment".to_string(), "prod".to_string()), ("force".to_string(), "yes".to_string())]);
    let e = ci.dispatch(REPO, "deploy.yml", "main", &bad).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"GitHub answered 422 Unexpected inputs provided: ["force"] for POST /repos/acme/promotions/actions/workflows/deploy.yml/dispatches"#
    );
    assert!(matches!(e, CiError::Api { status: 422, .. }), "{e:?}");
    let e = ci.dispatch(REPO, "deploy.yml", "no-such-branch", &BTreeMap::new()).await.unwrap_err().to_string();
    assert!(e.starts_with("GitHub answered 422 No ref found for: no-such-branch for POST "), "{e}");
    let e = ci.dispatch(REPO, "gone.yml", "main", &BTreeMap::new()).await.unwrap_err().to_string();
    assert!(e.starts_with("GitHub answered 404 Not Found for POST /repos/acme/promotions/actions/workflows/gone.yml"), "{e}");
    assert!(gh.runs(REPO).is_empty(), "no run was created");
    gh.shutdown().await;
}

#[tokio::test]
async fn a_wrong_token_is_a_401_that_does_not_echo_the_token() {
    let gh = fake().await;
    gh.set_token(Some("ghp_RightToken0000000000000000000000"));
    gh.push_run(REPO, "ci.yml", "main", MAIN_SHA, "push", "completed", Some("success"));
    let wrong = "ghp_WrongToken1111111111111111111111";
    let ci = client(&gh, Some(wrong));
    let e = ci.runs(REPO, "ci.yml", &query(Some("main"), None, 1)).await.unwrap_err();
    assert_eq!(
        e,
        CiError::Api {
            status: 401,
            message: "GitHub answered 401 Bad credentials for GET /repos/acme/promotions/actions/workflows/ci.yml/runs".into()
        }
    );
    let e = ci.dispatch(REPO, "deploy.yml", "main", &BTreeMap::new()).await.unwrap_err().to_string();
    assert!(e.contains("401 Bad credentials") && !e.contains(wrong), "{e}");
    assert!(!format!("{ci:?}").contains(wrong));
    // Without a token at all.
    let anon = client(&gh, None);
    let e = anon.run(REPO, 1).await.unwrap_err().to_string();
    assert!(e.contains("401 Requires authentication"), "{e}");
    // The right token works, sent as a bearer token.
    let ok = client(&gh, Some("ghp_RightToken0000000000000000000000"));
    assert_eq!(ok.runs(REPO, "ci.yml", &query(Some("main"), None, 1)).await.expect("runs").len(), 1);
    assert!(gh.runs(REPO).iter().all(|r| r.event != "workflow_dispatch"), "the refused dispatch created nothing");
    gh.shutdown().await;
}

#[tokio::test]
async fn a_server_error_surfaces_and_is_not_retried() {
    let gh = fake().await;
    let id = gh.push_run(REPO, "ci.yml", "main", MAIN_SHA, "push", "completed", Some("success"));
    let ci = client(&gh, None);
    gh.fail_next("GET", "/actions/runs/", 500, 1);
    let e = ci.run(REPO, id).await.unwrap_err();
    assert_eq!(
        e,
        CiError::Api { status: 500, message: format!("GitHub answered 500 Server Error for GET /repos/acme/promotions/actions/runs/{id}") }
    );
    let tries = gh.calls().iter().filter(|c| c.path.contains("/actions/runs/")).count();
    assert_eq!(tries, 1, "not retried behind the caller's back");
    assert!(ci.run(REPO, id).await.expect("the next one").succeeded());

    // A dispatch refused by a 503 is an error too (and was sent once).
    gh.fail_next("post", "/dispatches", 503, 1);
    let e = ci.dispatch(REPO, "deploy.yml", "main", &BTreeMap::new()).await.unwrap_err().to_string();
    assert!(e.starts_with("GitHub answered 503 Service Unavailable for POST"), "{e}");
    assert_eq!(gh.calls().iter().filter(|c| c.method == "POST").count(), 1);
    gh.shutdown().await;
}

#[tokio::test]
async fn silence_and_refusal_are_bounded_and_named() {
    // A server that accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = silent.local_addr().expect("addr");
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let ci = GitHubCi::new(&format!("http://{addr}"), Some("ghp_x"), Duration::from_millis(300)).expect("client");
    let started = std::time::Instant::now();
    let e = ci.run(REPO, 1).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3), "bounded by the timeout");
    assert_eq!(e, CiError::Timeout("GitHub did not answer GET /repos/acme/promotions/actions/runs/1 within 0.3 s".into()));
    holder.abort();

    // Nothing listening.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = closed.local_addr().expect("addr");
    drop(closed);
    let ci = GitHubCi::new(&format!("http://{addr}/api/v3"), None, Duration::from_secs(2)).expect("client");
    let e = ci.tag_commit(REPO, "v1").await.unwrap_err();
    assert!(
        matches!(&e, CiError::Transport(m) if m.starts_with("GitHub could not be reached for GET /repos/acme/promotions/git/ref/tags/v1")),
        "{e}"
    );
}

/// The fake speaks GitHub's wire format: octocrab's own typed models read it, and every
/// answer carries the rate-limit headers.
#[tokio::test]
async fn the_fake_answers_in_octocrabs_models() {
    let gh = fake().await;
    let id = gh.push_run(REPO, "ci.yml", "main", MAIN_SHA, "push", "completed", Some("success"));
    gh.push_run(REPO, "ci.yml", "main", MAIN_SHA, "push", "queued", None);
    gh.add_tag(REPO, "v2", RELEASE_SHA, true);
    let crab = octocrab::Octocrab::builder().base_uri(gh.url()).expect("uri").build().expect("octocrab");

    let page = crab.workflows("acme", "promotions").list_runs("ci.yml").branch("main").per_page(1u8).send().await.expect("typed runs");
    assert_eq!(page.total_count, Some(2));
    assert_eq!(page.items.len(), 1);
    assert!(page.next.is_some(), "a Link header to the next page");
    let run = crab.workflows("acme", "promotions").get(id.into()).await.expect("typed run");
    assert_eq!((run.id.0, run.head_branch.as_str(), run.conclusion.as_deref()), (id, "main", Some("success")));
    let r = crab.git("acme", "promotions").get_ref(&octocrab::params::repos::Reference::Tag("v2".into())).await.expect("typed ref");
    let octocrab::models::repos::Object::Tag { sha, .. } = r.object else { panic!("annotated: {:?}", r.object) };
    let tag = crab.git("acme", "promotions").get_tag(sha).await.expect("typed tag");
    assert_eq!(tag.object.map(|o| (o.r#type, o.sha)), Some(("commit".to_string(), RELEASE_SHA.to_string())));

    let resp = reqwest::Client::new()
        .get(format!("{}/repos/acme/promotions/actions/runs/{id}", gh.url()))
        .header("user-agent", "runbot-test")
        .send()
        .await
        .expect("raw");
    for h in ["x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset", "x-ratelimit-used", "x-ratelimit-resource"] {
        assert!(resp.headers().contains_key(h), "missing {h}");
    }
    // No User-Agent: GitHub's 403.
    let resp = reqwest::Client::new().get(format!("{}/repos/acme/promotions", gh.url())).send().await.expect("raw");
    assert_eq!(resp.status().as_u16(), 403);
    gh.shutdown().await;
}
