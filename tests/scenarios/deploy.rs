//! The deploy and rollback runbooks end to end: the engine with the shipped kinds, GitHub
//! through octocrab against the fake GitHub, the registry client against the fake registry,
//! the kube driver and the `helm` stand-in against the sandbox cluster, the `docker` stand-in
//! against a sandbox Swarm, and the smoke test over HTTP against an endpoint whose health
//! follows the running image.

use runbot_adapters::github::GitHubCi;
use runbot_adapters::http_check::ReqwestCheck;
use runbot_adapters::kubernetes::KubeCluster;
use runbot_adapters::registry::RegistryClient;
use runbot_commands::message::Message;
use runbot_commands::model::ExecutionId;
use runbot_commands::ports::{Cluster, Clusters, Store};
use runbot_commands::steps::deploy::{DeployConnections, Tools};
use runbot_sandbox::github::{self, FakeGitHub};
use runbot_sandbox::kube::{Behavior, FakeCluster, Timing};
use runbot_sandbox::registry::FakeRegistry;
use runbot_sandbox::smoke::SmokeServer;
use runbot_sandbox::standins::swarm::{SandboxSwarm, SwarmBehavior};
use runbot_tests::harness::{Options, World, created};
use std::sync::Arc;
use std::time::{Duration, Instant};

const NS: &str = "catalog-ns";
const DEP: &str = "catalog-api";
const REPO: &str = "acme/catalog";
const GOOD_SHA: &str = "1111111111111111111111111111111111111111";

struct Sandbox {
    world: World,
    cluster: FakeCluster,
    gh: FakeGitHub,
    registry: FakeRegistry,
    _smoke: SmokeServer,
    image: String,
    chart: String,
    _dir: tempfile::TempDir,
}

fn field<'a>(m: &'a Message, name: &str) -> &'a str {
    m.fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).unwrap_or("")
}

fn images(cluster: &FakeCluster) -> Vec<String> {
    let mut v: Vec<String> = cluster
        .pods(NS)
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter_map(|p| p["spec"]["containers"][0]["image"].as_str().map(str::to_string))
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Runs the `helm` stand-in once (the release's first revision, as a team would have it).
fn helm(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_sandbox-helm")).args(args).output().expect("helm stand-in")
}

/// A catalog service on driver `driver`: v1.2.4 running (Helm revision 1), v1.2.5 healthy,
/// v1.2.6 crash-looping; CI green on main at the commit tagged v1.2.5.
async fn sandbox(driver: &str) -> Sandbox {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = FakeCluster::start("127.0.0.1:0".parse().expect("addr"), Timing::fast()).await.expect("cluster");
    let registry = FakeRegistry::start("127.0.0.1:0".parse().expect("addr")).await.expect("registry");
    let image = format!("{}/catalog-api", registry.host());
    for v in ["v1.2.4", "v1.2.5", "v1.2.6"] {
        registry.push("catalog-api", v);
    }
    cluster
        .behave_image(&format!("{image}:v1.2.6"), Behavior::CrashLoop { exit_code: 1, logs: vec!["panic: config key PROMO_RULES missing".into()] });
    let chart = dir.path().join("catalog");
    std::fs::create_dir_all(&chart).expect("chart dir");
    std::fs::write(chart.join("Chart.yaml"), "apiVersion: v2\nname: catalog\nversion: 0.3.1\nappVersion: \"1.2.4\"\n").expect("Chart.yaml");
    std::fs::write(chart.join("values.yaml"), format!("deployment: {DEP}\nreplicaCount: 2\nimage:\n  repository: {image}\n  tag: v1.2.4\n"))
        .expect("values");
    let chart = chart.display().to_string();
    let first =
        helm(&["upgrade", "--install", "catalog-release", &chart, "-n", NS, "--wait", "--timeout", "20s", "--kube-apiserver", &cluster.url()]);
    assert!(first.status.success(), "first release: {}", String::from_utf8_lossy(&first.stderr));

    cluster.put_object(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "catalog-db", "namespace": NS},
        "data": {"password": "czNjcjN0"}
    }));
    let gh = FakeGitHub::start("127.0.0.1:0".parse().expect("addr"), github::Timing::fast()).await.expect("github");
    gh.set_token(Some("ghp_sandbox"));
    gh.add_workflow(REPO, "ci.yml", "CI", &[]);
    gh.add_workflow(REPO, "deploy.yml", "Deploy", &["version", "environment"]);
    gh.set_branch(REPO, "main", GOOD_SHA);
    gh.add_tag(REPO, "v1.2.5", GOOD_SHA, true);
    gh.add_tag(REPO, "v1.2.6", GOOD_SHA, false);
    gh.push_run(REPO, "ci.yml", "main", GOOD_SHA, "push", "completed", Some("success"));

    let swarm_file = dir.path().join("swarm.json");
    let smoke = if driver == "swarm" {
        // The sandbox Swarm: stack_app on v1.2.4, v1.2.6 crashing; healthy while every running
        // task runs a good image.
        let swarm = SandboxSwarm::create(&swarm_file).expect("swarm");
        swarm.set_timing(Duration::from_millis(200)).expect("timing");
        swarm.set_behavior(&format!("{image}:v1.2.6"), SwarmBehavior::Crash { exit_code: 1, error: None }).expect("behaviour");
        swarm.deploy_service("stack_app", &format!("{image}:v1.2.4"), 2).expect("service");
        let health: runbot_sandbox::smoke::Health = Arc::new(move || match swarm.running_images("stack_app") {
            Ok(imgs) if !imgs.is_empty() && imgs.iter().all(|i| !i.ends_with(":v1.2.6")) => (200, format!("ok {}", imgs.join(","))),
            Ok(imgs) => (503, format!("not serving: {imgs:?}")),
            Err(e) => (503, e.to_string()),
        });
        SmokeServer::start("127.0.0.1:0".parse().expect("addr"), health).await.expect("smoke")
    } else {
        SmokeServer::following_deployment("127.0.0.1:0".parse().expect("addr"), &cluster, NS, DEP, |img| !img.ends_with(":v1.2.6"))
            .await
            .expect("smoke")
    };
    let compose = dir.path().join("compose.yml");
    std::fs::write(&compose, format!("services:\n  app:\n    image: {image}:${{VERSION}}\n    deploy:\n      replicas: 2\n")).expect("compose");
    let token = dir.path().join("gh-token");
    std::fs::write(&token, "ghp_sandbox").expect("token");
    let section = match driver {
        "helm" => format!(
            "[services.catalog.environments.prod.helm]\nrelease = \"catalog-release\"\nchart = \"{chart}\"\ntimeout = \"4s\"\nargs = [\"--kube-apiserver\", \"{}\"]\n",
            cluster.url()
        ),
        "pipeline" => format!(
            "[services.catalog.environments.prod.pipeline]\nworkflow = \"deploy.yml\"\npoll = \"1s\"\ntimeout = \"30s\"\n[services.catalog.environments.prod.helm]\nrelease = \"catalog-release\"\nchart = \"{chart}\"\ntimeout = \"10s\"\nargs = [\"--kube-apiserver\", \"{}\"]\n",
            cluster.url()
        ),
        _ => format!(
            "[services.catalog.environments.prod.swarm]\nstack = \"stack\"\nservice = \"stack_app\"\nimage = \"{image}\"\ncompose = \"{}\"\nhost = \"sandbox://{}\"\ntimeout = \"5s\"\n",
            compose.display(),
            swarm_file.display()
        ),
    };
    let k8s = if driver == "swarm" {
        format!("image = \"{image}\"\n")
    } else {
        format!("namespace = \"{NS}\"\nselector = \"app={DEP}\"\ndeployment = \"{DEP}\"\nimage = \"{image}\"\nsecrets = [\"catalog-db\"]\n")
    };
    let extra = format!(
        r#"
[secrets]
gh = "file:{token}"

[clusters.sandbox]
url = "{cluster}"

[github]
api_url = "{gh}"
token_secret = "gh"

[registries."{host}"]
insecure = true

[services.catalog.ci]
repo = "{REPO}"
workflow = "ci.yml"

[services.catalog.environments.prod]
cluster = "sandbox"
driver = "{driver}"
{k8s}
[services.catalog.environments.prod.smoke]
url = "{smoke}/health"
body = "ok"
attempts = 3
backoff = "1s"
timeout = "2s"

{section}
"#,
        token = token.display(),
        cluster = cluster.url(),
        gh = gh.url(),
        host = registry.host(),
        smoke = smoke.url(),
    );
    let kube = KubeCluster::from_url(&cluster.url(), Duration::from_secs(5)).expect("kube driver");
    let clusters = Clusters::new().with("sandbox", Arc::new(kube));
    let deploy = DeployConnections {
        clusters: clusters.clone(),
        ci: Some(Arc::new(GitHubCi::new(&gh.url(), Some("ghp_sandbox"), Duration::from_secs(5)).expect("github client"))),
        registry: Some(Arc::new(RegistryClient::new(Duration::from_secs(5)).expect("registry client").with_insecure(&registry.host()))),
        http: Some(Arc::new(ReqwestCheck::new().expect("http client"))),
        tools: Tools { helm: Some(env!("CARGO_BIN_EXE_sandbox-helm").into()), docker: Some(env!("CARGO_BIN_EXE_sandbox-docker").into()) },
        services: Default::default(),
        databases: Default::default(),
    };
    let world = World::with(Options { extra_config: extra, clusters, deploy, patience: Duration::from_secs(40), ..Options::default() }).await;
    Sandbox { world, cluster, gh, registry, _smoke: smoke, image, chart, _dir: dir }
}

async fn wait_ready_on(cluster: &FakeCluster, image: &str) {
    let t = Instant::now();
    while images(cluster) != [image.to_string()] {
        assert!(t.elapsed() < Duration::from_secs(20), "pods never all on {image}: {:?}", images(cluster));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn green_deploy_with_helm() {
    let s = sandbox("helm").await;
    let w = &s.world;
    let id = w.request("console:alice", "/ops deploy catalog v1.2.5").await;
    let plan = w.wait_text(id, "Waiting for approval").await;
    let text = plan.all_text();
    assert!(text.contains("CI green on main") && text.contains("on the commit of tag v1.2.5"), "{text}");
    assert!(text.contains("prerequisites present") && text.contains("Secret catalog-db"), "{text}");
    assert!(text.contains("helm upgrade --install catalog-release"), "the exact action is shown: {text}");
    assert_eq!(images(&s.cluster), [format!("{}:v1.2.4", s.image)], "nothing changes before the approval");
    w.click("console:bob", id, "approve").await;
    let done = w.wait_state(id, "succeeded").await;
    assert!(done.steps[4].summary.clone().unwrap_or_default().contains("Ready on v1.2.5"), "{:?}", done.steps[4]);
    assert!(done.steps[5].summary.clone().unwrap_or_default().contains("200 in"), "latency shown: {:?}", done.steps[5]);
    wait_ready_on(&s.cluster, &format!("{}:v1.2.5", s.image)).await;
    let kube = KubeCluster::from_url(&s.cluster.url(), Duration::from_secs(5)).expect("driver");
    let h = kube.helm_history(NS, "catalog-release").await.expect("history");
    assert_eq!(h.iter().map(|r| (r.revision, r.status.as_str())).collect::<Vec<_>>(), [(1, "superseded"), (2, "deployed")]);
    let thread = w.chat.thread(&w.status_message_id(id).await).iter().map(|p| p.message.all_text()).collect::<Vec<_>>().join("\n");
    assert!(thread.contains("has been upgraded. Happy Helming!"), "helm's output streamed to the thread:\n{thread}");
}

#[tokio::test(flavor = "multi_thread")]
async fn red_ci_is_refused_before_approval() {
    let s = sandbox("helm").await;
    let run = s.gh.push_run(REPO, "ci.yml", "main", GOOD_SHA, "push", "completed", Some("failure"));
    let id = s.world.request("console:alice", "/ops deploy catalog v1.2.5").await;
    let failed = s.world.wait_state(id, "failed").await;
    assert_eq!(failed.current, 1, "stopped at the CI gate");
    assert_eq!(failed.steps[2].status, runbot_commands::model::StepStatus::Pending, "nobody was asked");
    let why = failed.steps[1].summary.clone().unwrap_or_default();
    assert!(why.contains("completed/failure") && why.contains(&format!("/actions/runs/{run}")), "state and link: {why}");
    assert_eq!(images(&s.cluster), [format!("{}:v1.2.4", s.image)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tag_on_another_commit_is_refused() {
    let s = sandbox("helm").await;
    s.gh.add_tag(REPO, "v1.2.7", "2222222222222222222222222222222222222222", false);
    s.registry.push("catalog-api", "v1.2.7");
    let id = s.world.request("console:alice", "/ops deploy catalog v1.2.7").await;
    let failed = s.world.wait_state(id, "failed").await;
    let why = failed.steps[1].summary.clone().unwrap_or_default();
    assert!(why.contains("tag v1.2.7 points at 2222222") && why.contains("1111111"), "{why}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_image_is_refused_by_the_preflight() {
    let s = sandbox("helm").await;
    s.gh.add_tag(REPO, "v1.2.9", GOOD_SHA, false);
    let id = s.world.request("console:alice", "/ops deploy catalog v1.2.9").await;
    let failed = s.world.wait_state(id, "failed").await;
    assert_eq!(failed.current, 0);
    let why = failed.steps[0].summary.clone().unwrap_or_default();
    assert!(why.contains("catalog-api:v1.2.9 does not exist in the registry"), "{why}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_permission_or_secret_is_refused_by_the_preflight() {
    let s = sandbox("helm").await;
    s.cluster.deny("patch", "deployments.apps", NS);
    let id = s.world.request("console:alice", "/ops deploy catalog v1.2.5").await;
    let failed = s.world.wait_state(id, "failed").await;
    assert_eq!(failed.current, 0);
    let why = failed.steps[0].summary.clone().unwrap_or_default();
    assert!(why.contains("runbot may not patch deployments.apps in catalog-ns"), "{why}");

    let gone = reqwest::Client::new().delete(format!("{}/api/v1/namespaces/{NS}/secrets/catalog-db", s.cluster.url())).send().await.expect("delete");
    assert!(gone.status().is_success());
    let id = s.world.request("console:alice", "/ops deploy catalog v1.2.5").await;
    let failed = s.world.wait_state(id, "failed").await;
    let why = failed.steps[0].summary.clone().unwrap_or_default();
    assert!(why.contains("Secret catalog-db does not exist in catalog-ns"), "{why}");
    assert_eq!(images(&s.cluster), [format!("{}:v1.2.4", s.image)], "nothing changed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crashing_version_fails_offers_rollback_and_the_rollback_restores_service() {
    let s = sandbox("helm").await;
    let w = &s.world;
    // v1.2.5 first, so the history has a good revision before the bad one.
    let id = w.request("console:alice", "/ops deploy catalog v1.2.5").await;
    w.wait_text(id, "Waiting for approval").await;
    w.click("console:bob", id, "approve").await;
    w.wait_state(id, "succeeded").await;

    let id = w.request("console:alice", "/ops deploy catalog v1.2.6").await;
    w.wait_text(id, "Waiting for approval").await;
    w.click("console:bob", id, "approve").await;
    let failed = w.wait_state(id, "failed").await;
    assert_eq!(failed.current, 3, "failed at the rollout: {:?}", failed.steps[3]);
    let why = failed.steps[3].summary.clone().unwrap_or_default();
    assert!(why.contains("UPGRADE FAILED"), "helm's stderr in the step: {why}");
    let thread = w.chat.thread(&w.status_message_id(id).await).iter().map(|p| p.message.all_text()).collect::<Vec<_>>().join("\n");
    assert!(thread.contains("Error: UPGRADE FAILED"), "helm's stderr in the thread:\n{thread}");
    let msg = w.wait_text(id, "Failed at step 4").await;
    let labels: Vec<&str> = msg.buttons.iter().map(|b| b.label.as_str()).collect();
    assert_eq!(labels, ["Rollback"]);

    // [Rollback]: a rollback execution, its own approval, current → target shown first.
    let rollback_button = w.button(id, "follow_up").await;
    let reply = w.click("console:bob", id, "follow_up").await;
    let rb = created(&reply);
    let plan = w.wait_text(rb, "Waiting for approval").await;
    let acts = field(&plan, "Acts on").to_string();
    assert!(acts.contains("from revision 3 · version v1.2.6 · failed") && acts.contains("to revision 2 · version v1.2.5"), "{acts}");
    w.click("console:alice", rb, "approve").await;
    let done = w.wait_state(rb, "succeeded").await;
    wait_ready_on(&s.cluster, &format!("{}:v1.2.5", s.image)).await;
    assert!(done.steps[5].summary.clone().unwrap_or_default().contains("200"), "smoke passes: {:?}", done.steps[5]);
    let kube = KubeCluster::from_url(&s.cluster.url(), Duration::from_secs(5)).expect("driver");
    let h = kube.helm_history(NS, "catalog-release").await.expect("history");
    let last = h.last().expect("a revision");
    assert_eq!((last.revision, last.status.as_str(), last.description.as_str()), (4, "deployed", "Rollback to 2"));

    // The failed deploy's [Rollback] was used: pressed again (a late or second click), it is
    // refused and creates nothing — it would roll back the healthy release.
    let before = w.executions().await.len();
    let again = w.click_value("console:carol", &rollback_button, Some("late-rollback")).await;
    assert!(again.message.text.contains(&format!("was used by {rb}")), "{}", again.message.text);
    assert_eq!(w.executions().await.len(), before, "nothing was created");
    let msg = w.wait_message(id, "the used [Rollback] removed", |m| m.buttons.is_empty()).await;
    assert!(msg.all_text().contains(&format!("[Rollback] used by {rb}")), "{}", msg.all_text());

    // The failed version's logs were kept, listed, and can be shown in the thread.
    assert_eq!(done.artifacts.len(), 1, "{:?}", done.artifacts);
    let kept = w.store.artifacts(rb).await.expect("artifacts");
    assert!(kept[0].0.contains("v1.2.6") && kept[0].1.contains("panic: config key PROMO_RULES missing"), "{:?}", kept[0].0);
    let audited: Vec<serde_json::Value> = w.audit().await.into_iter().filter(|r| r.entry.kind == "artifact").map(|r| r.entry.detail).collect();
    assert_eq!(audited.len(), 1, "the artifact is in the audit log with the step's result");
    assert_eq!(audited[0]["name"], kept[0].0.as_str());
    let msg = w.wait_text(rb, "Succeeded").await;
    assert!(field(&msg, "Artifacts").contains(&kept[0].0));
    w.click("console:carol", rb, "artifacts").await;
    let t = Instant::now();
    loop {
        let thread = w.chat.thread(&w.status_message_id(rb).await).iter().map(|p| p.message.all_text()).collect::<Vec<_>>().join("\n");
        if thread.contains("Artifact logs-") && thread.contains("PROMO_RULES") {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "artifact never shown:\n{thread}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rollback_to_a_named_version_and_a_second_deploy_is_refused_by_the_lock() {
    let s = sandbox("helm").await;
    let w = &s.world;
    let id = w.request("console:alice", "/ops deploy catalog v1.2.5").await;
    w.wait_text(id, "Waiting for approval").await;
    let reply = w.cmd("console:carol", "/ops deploy catalog v1.2.5").await;
    assert!(reply.message.all_text().contains("is busy") && reply.message.all_text().contains(&id.to_string()), "{}", reply.message.all_text());
    w.click("console:bob", id, "approve").await;
    w.wait_state(id, "succeeded").await;

    let rb = w.request("console:alice", "/ops rollback catalog --to v1.2.4").await;
    let plan = w.wait_text(rb, "Waiting for approval").await;
    assert!(field(&plan, "Acts on").contains("to revision 1 · version v1.2.4"), "{}", field(&plan, "Acts on"));
    w.click("console:bob", rb, "approve").await;
    w.wait_state(rb, "succeeded").await;
    wait_ready_on(&s.cluster, &format!("{}:v1.2.4", s.image)).await;

    // --to a revision; a revision the history does not have is refused before approval.
    let rb = w.request("console:alice", "/ops rollback catalog --to 2").await;
    let plan = w.wait_text(rb, "Waiting for approval").await;
    assert!(
        field(&plan, "Acts on").contains("from revision 3 · version v1.2.4") && field(&plan, "Acts on").contains("to revision 2 · version v1.2.5"),
        "{}",
        field(&plan, "Acts on")
    );
    w.click("console:alice", rb, "reject").await;
    w.wait_state(rb, "rejected").await;
    let rb = w.request("console:alice", "/ops rollback catalog --to 9").await;
    let failed = w.wait_state(rb, "failed").await;
    let why = failed.steps[0].summary.clone().unwrap_or_default();
    assert!(why.contains("no revision 9 (kept: 1, 2, 3)"), "{why}");
}

/// The deploy workflow "runs helm upgrade" (the seed's pipeline): here, the helm stand-in,
/// waiting for the rollout or not; the run succeeds when helm does (and the environment
/// input is prod).
fn pipeline_runs_helm(s: &Sandbox, wait: bool) {
    let (url, chart) = (s.cluster.url(), s.chart.clone());
    s.gh.on_dispatch(
        REPO,
        "deploy.yml",
        Arc::new(move |inputs| {
            let (url, chart) = (url.clone(), chart.clone());
            Box::pin(async move {
                let v = inputs.get("version").cloned().unwrap_or_default();
                let prod = inputs.get("environment").map(String::as_str) == Some("prod");
                let out = tokio::task::spawn_blocking(move || {
                    let set = format!("image.tag={v}");
                    let mut args = vec!["upgrade", "--install", "catalog-release", &chart, "-n", NS, "--set", &set, "--kube-apiserver", &url];
                    if wait {
                        args.extend(["--wait", "--timeout", "20s"]);
                    }
                    helm(&args)
                })
                .await
                .expect("helm ran");
                prod && out.status.success()
            })
        }),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn green_deploy_with_the_pipeline_driver() {
    let s = sandbox("pipeline").await;
    pipeline_runs_helm(&s, true);
    let id = s.world.request("console:alice", "/ops deploy catalog v1.2.5").await;
    s.world.wait_text(id, "Waiting for approval").await;
    s.world.click("console:bob", id, "approve").await;
    let done = s.world.wait_state(id, "succeeded").await;
    let rollout = done.steps[3].summary.clone().unwrap_or_default();
    assert!(rollout.contains("deploy run #") && rollout.contains("succeeded") && rollout.contains("/actions/runs/"), "{rollout}");
    wait_ready_on(&s.cluster, &format!("{}:v1.2.5", s.image)).await;
    let dispatched = s.gh.calls().into_iter().filter(|c| c.method == "POST" && c.path.ends_with("/dispatches")).count();
    assert_eq!(dispatched, 1);
}

/// A pipeline run that succeeds while the new pods crash: verification waits, then names
/// the pods and why, and the deploy offers [Rollback].
#[tokio::test(flavor = "multi_thread")]
async fn a_green_pipeline_with_crashing_pods_fails_verification_naming_them() {
    let s = sandbox("pipeline").await;
    // A pipeline that does not wait for its pods.
    pipeline_runs_helm(&s, false);
    let id = s.world.request("console:alice", "/ops deploy catalog v1.2.6").await;
    s.world.wait_text(id, "Waiting for approval").await;
    s.world.click("console:bob", id, "approve").await;
    let failed = s.world.wait_state(id, "failed").await;
    assert_eq!(failed.current, 4, "the run succeeded, verification failed: {:?}", failed.steps[3]);
    let why = failed.steps[4].summary.clone().unwrap_or_default();
    assert!(
        why.contains("did not roll out to v1.2.6 within 10s") && why.contains("catalog-api-") && why.contains("restarts, last exit 1 (Error)"),
        "{why}"
    );
    let msg = s.world.wait_text(id, "Failed at step 5").await;
    assert_eq!(msg.buttons.iter().map(|b| b.label.as_str()).collect::<Vec<_>>(), ["Rollback"]);
}

fn swarm_images(s: &Sandbox) -> Vec<String> {
    let mut v = SandboxSwarm::open(s._dir.path().join("swarm.json")).running_images("stack_app").expect("swarm");
    v.sort();
    v.dedup();
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn swarm_deploy_then_a_crashing_version_is_rolled_back_with_service_update() {
    let s = sandbox("swarm").await;
    let w = &s.world;
    let id = w.request("console:alice", "/ops deploy catalog v1.2.5").await;
    let plan = w.wait_text(id, "Waiting for approval").await;
    assert!(plan.all_text().contains("VERSION=v1.2.5 docker -H sandbox://") && plan.all_text().contains("stack deploy -c"), "{}", plan.all_text());
    w.click("console:bob", id, "approve").await;
    let done = w.wait_state(id, "succeeded").await;
    assert!(done.steps[4].summary.clone().unwrap_or_default().contains("converged: 2/2 tasks running"), "{:?}", done.steps[4]);
    assert_eq!(swarm_images(&s), [format!("{}:v1.2.5", s.image)]);

    let id = w.request("console:alice", "/ops deploy catalog v1.2.6").await;
    w.wait_text(id, "Waiting for approval").await;
    w.click("console:bob", id, "approve").await;
    let failed = w.wait_state(id, "failed").await;
    assert_eq!(failed.current, 4, "the tasks never converge: {:?}", failed.steps[4]);
    assert!(failed.steps[4].summary.clone().unwrap_or_default().contains("non-zero exit"), "which tasks and why: {:?}", failed.steps[4]);
    let reply = w.click("console:bob", id, "follow_up").await;
    let rb = created(&reply);
    let plan = w.wait_text(rb, "Waiting for approval").await;
    let acts = field(&plan, "Acts on").to_string();
    assert!(acts.contains(":v1.2.6") && acts.contains(&format!("to image {}:v1.2.5", s.image)), "{acts}");
    w.click("console:alice", rb, "approve").await;
    let done = w.wait_state(rb, "succeeded").await;
    assert!(done.steps[3].summary.clone().unwrap_or_default().contains("docker service update succeeded"), "{:?}", done.steps[3]);
    let thread = w.chat.thread(&w.status_message_id(rb).await).iter().map(|p| p.message.all_text()).collect::<Vec<_>>().join("\n");
    assert!(thread.contains(&format!("service update --detach --image {}:v1.2.5 stack_app", s.image)), "{thread}");
    assert_eq!(swarm_images(&s), [format!("{}:v1.2.5", s.image)]);
    assert!(done.steps[5].summary.clone().unwrap_or_default().contains("200"), "smoke passes: {:?}", done.steps[5]);
    assert_eq!(done.artifacts.len(), 1, "the task list is kept");
}

/// v1.2.5 deployed, then v1.2.6 failed at its rollout (it crashes): returns the failed deploy.
async fn good_then_failed_deploy(w: &World) -> ExecutionId {
    async fn deploy(w: &World, version: &str, end: &str) -> ExecutionId {
        let id = w.request("console:alice", &format!("/ops deploy catalog {version}")).await;
        w.wait_text(id, "Waiting for approval").await;
        w.click("console:bob", id, "approve").await;
        w.wait_state(id, end).await;
        id
    }
    deploy(w, "v1.2.5", "succeeded").await;
    deploy(w, "v1.2.6", "failed").await
}

/// A failed deploy's [Rollback] is bound to the state it was offered for: once the release was
/// rolled back by hand (`/ops rollback`), the old button would roll back the healthy release —
/// it is refused, creates nothing, and leaves the failed deploy's message.
#[tokio::test(flavor = "multi_thread")]
async fn a_stale_rollback_button_is_refused_after_the_release_moved_on() {
    let s = sandbox("helm").await;
    let w = &s.world;
    let failed = good_then_failed_deploy(w).await;
    let stale = w.button(failed, "follow_up").await;

    // Someone rolls back by hand instead of pressing the button.
    let rb = w.request("console:carol", "/ops rollback catalog").await;
    w.wait_text(rb, "Waiting for approval").await;
    w.click("console:bob", rb, "approve").await;
    w.wait_state(rb, "succeeded").await;
    wait_ready_on(&s.cluster, &format!("{}:v1.2.5", s.image)).await;

    let before = w.executions().await.len();
    let r = w.click_value("console:alice", &stale, Some("stale-rollback")).await;
    let t = &r.message.text;
    assert!(t.contains("no longer applies") && t.contains(&rb.to_string()) && t.contains("Nothing was started"), "{t}");
    assert_eq!(w.executions().await.len(), before, "nothing was created");
    w.wait_message(failed, "the stale [Rollback] removed", |m| m.buttons.is_empty()).await;
    let kube = KubeCluster::from_url(&s.cluster.url(), Duration::from_secs(5)).expect("driver");
    let last = kube.helm_history(NS, "catalog-release").await.expect("history").pop().expect("a revision");
    assert_eq!((last.revision, last.description.as_str()), (4, "Rollback to 2"), "no second rollback");
}

/// The recomputed plan guards the button too: when the release left the failed version
/// outside runbot (no newer execution to point at), [Rollback] reads the release's current
/// revision and refuses.
#[tokio::test(flavor = "multi_thread")]
async fn a_rollback_button_reads_the_release_before_it_creates_anything() {
    let s = sandbox("helm").await;
    let w = &s.world;
    let failed = good_then_failed_deploy(w).await;
    let button = w.button(failed, "follow_up").await;
    // The failed deploy's record is rewritten as if it had deployed another version: what the
    // release runs now (v1.2.6) is then not what that deploy left.
    let mut exec = w.exec(failed).await;
    exec.vars.insert("version".into(), "v1.2.7".into());
    let v = w.store.load(failed).await.expect("load").expect("exists").version;
    w.store.save(&exec, v).await.expect("save");

    let before = w.executions().await.len();
    let r = w.click_value("console:alice", &button, Some("moved-on")).await;
    let t = &r.message.text;
    assert!(t.contains("is no longer on v1.2.7") && t.contains("runs v1.2.6"), "{t}");
    assert_eq!(w.executions().await.len(), before, "nothing was created");
}
