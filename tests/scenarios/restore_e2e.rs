//! The emergency restore, end to end through the chat on a real PostgreSQL 15: a primary that
//! archived to the sandbox S3 with barman-cloud made a destructive mistake after T and still
//! serves the writers; `/ops restore promotions-db --date T` proves T from the catalog, runs the
//! preflight (the restore command's `--check`, the integrity checker, the cluster's grants),
//! rehearses T in a scratch directory (its counts in the plan beside today's), records the
//! writers, waits for two approvers, scales the writers (sandbox cluster) to 0, runs
//! `deploy/scripts/db-restore.sh`, checks the restored data (exactly the rehearsed counts),
//! moves the service to it and brings the writers back. The built-in `restore` runbook is
//! used, with the database's restore settings from the config, in both cutover modes:
//!
//! - in place: the server's own data directory is restored, the old one kept aside; then a
//!   restore that fails midway leaves the service on its old data, running, and says so, and
//!   a stale [Restart writers] is refused;
//! - switch: a restored instance beside the old server, then the Secret the writers read
//!   points at it (the old value kept); a preflight failure stops everything before approval;
//!   a restore failing midway switches nothing and says so.

use runbot_adapters::backup::{BarmanS3Catalog, S3Config};
use runbot_adapters::http_check::ReqwestCheck;
use runbot_adapters::integrity::PgChecker;
use runbot_adapters::kubernetes::KubeCluster;
use runbot_commands::model::StepStatus;
use runbot_commands::ports::{Catalogs, Cluster, Clusters};
use runbot_commands::steps::deploy::DeployConnections;
use runbot_sandbox::kube::FakeCluster;
use runbot_sandbox::pitr::{BUCKET, PitrWorld, SERVER, SOURCE, free_port, secret_object, secret_value};
use runbot_sandbox::s3;
use runbot_sandbox::smoke::SmokeServer;
use runbot_tests::harness::writers::{ready_pods, start_cluster};
use runbot_tests::harness::{Options, RUNBOOKS, World};
use std::sync::Arc;
use std::time::Duration;

fn s3_config(server: &s3::S3Server) -> S3Config {
    S3Config::new(Some(server.url()), s3::REGION, s3::ACCESS_KEY, s3::SECRET_KEY)
}

const ITEMS_AT_T: &str = "a:200,b:300,seed:100";
const BATCHES: &str = "select string_agg(batch || ':' || n, ',' order by batch) from (select batch, count(*) n from items group by batch) s";

/// The shipped `deploy/scripts/db-restore.sh` (run as the PITR world's runner) for
/// `database`, with the S3 keys from `[secrets]` in its environment and `settings` (cutover,
/// pgdata, port, rehearsal) added to the section. No `--pg-bin`: the script finds the
/// binaries itself. `path` is the PATH it gets.
fn restore_section(pitr: &PitrWorld, database: &str, path: &str, settings: &str) -> String {
    let q = |s: &str| format!("{s:?}");
    let mut argv: Vec<String> = pitr.runner.argv_prefix().iter().map(|a| q(a)).collect();
    argv.push(q(pitr.script.to_str().expect("utf-8")));
    for a in ["--date", "{date}", "--source", "{source}", "--server-name", "{server_name}"] {
        argv.push(q(a));
    }
    for a in ["--endpoint-url", pitr.s3.url(), "--socket-dir", pitr.work.to_str().expect("utf-8"), "--timeout", "120"] {
        argv.push(q(a));
    }
    format!(
        r#"
[databases.{database}.restore]
argv = [{}]
timeout = "5m"
rehearse_dir = {}
env = {{ PATH = {}, TZ = "UTC", HOME = {}, AWS_ACCESS_KEY_ID = "{{secret.s3_key}}", AWS_SECRET_ACCESS_KEY = "{{secret.s3_secret}}", AWS_DEFAULT_REGION = {} }}
{settings}
"#,
        argv.join(", "),
        q(pitr.work.to_str().expect("utf-8")),
        q(path),
        q(pitr.work.to_str().expect("utf-8")),
        q(s3::REGION),
    )
}

/// A database entry sharing the PITR world's archive (`promotions-db` itself, with its
/// writers, is in the harness's config).
fn database(pitr: &PitrWorld, name: &str, integrity_url_secret: &str) -> String {
    let head = if name == "promotions-db" {
        String::new()
    } else {
        format!("[databases.{name}]\nwriters = [\"promotions-ns/promotions-api\", \"promotions-ns/promotions-worker\"]\n")
    };
    format!(
        r#"
{head}
[databases.{name}.backup]
source = "{SOURCE}"
server_name = "{SERVER}"
endpoint = "{}"
access_key_secret = "s3_key"
secret_key_secret = "s3_secret"

[databases.{name}.integrity]
url_secret = "{integrity_url_secret}"
tables = {{ items = 1, orders = 1 }}
checks = [{{ name = "exactly the rows of T", sql = "SELECT count(*) = 600 AND count(*) FILTER (WHERE batch = 'c') = 0 AND count(*) FILTER (WHERE batch = 'a') = 200 FROM items" }}]
"#,
        pitr.s3.url()
    )
}

struct Setup {
    pitr: PitrWorld,
    cluster: FakeCluster,
    world: World,
    kube: KubeCluster,
    _smoke: SmokeServer,
}

/// The PITR world with the primary serving again, the sandbox cluster with the writers, and a
/// runbot whose config is `databases` plus the secrets (`secrets`: name → value, as files).
async fn setup(databases: impl FnOnce(&PitrWorld) -> (String, Vec<(&'static str, String)>)) -> Setup {
    let pitr = tokio::task::spawn_blocking(|| {
        let w = PitrWorld::start();
        w.start_primary();
        w
    })
    .await
    .expect("the PITR world");
    let cluster = start_cluster().await;
    let (dbs, mut secrets) = databases(&pitr);
    secrets.extend([("s3_key", s3::ACCESS_KEY.to_string()), ("s3_secret", s3::SECRET_KEY.to_string())]);
    let dir = pitr.work.join("secrets");
    std::fs::create_dir(&dir).expect("secrets dir");
    let mut section = String::from("[secrets]\n");
    for (name, value) in &secrets {
        std::fs::write(dir.join(name), value).expect("secret file");
        section.push_str(&format!("{name} = \"file:{}\"\n", dir.join(name).display()));
    }
    // What must answer once the writers are back.
    let smoke = SmokeServer::start("127.0.0.1:0".parse().expect("addr"), Arc::new(|| (200, "ok".to_string()))).await.expect("smoke");
    let extra = format!(
        "{section}\n[clusters.sandbox]\nurl = \"{}\"\n\n[databases.promotions-db.smoke]\nurl = \"{}/health\"\nbody = \"ok\"\n{dbs}",
        cluster.url(),
        smoke.url()
    );
    let catalog: Arc<BarmanS3Catalog> = Arc::new(BarmanS3Catalog::new(&s3_config(&pitr.s3), SOURCE, SERVER).expect("catalog"));
    let mut catalogs = Catalogs::new();
    for name in ["promotions-db", "promotions-db-nobarman"] {
        catalogs = catalogs.with(name, catalog.clone());
    }
    let kube = KubeCluster::from_url(&cluster.url(), Duration::from_secs(5)).expect("kube client");
    let opts = Options {
        extra_config: extra,
        // The built-in restore runbook; the generic sre policy (one approval) is raised to
        // the two the restore runbook asks for.
        runbooks: RUNBOOKS.to_string(),
        catalogs,
        clusters: Clusters::new().with("sandbox", Arc::new(kube.clone())),
        checker: Some(Arc::new(PgChecker)),
        patience: Duration::from_secs(120),
        deploy: DeployConnections { http: Some(Arc::new(ReqwestCheck::new().expect("http client"))), ..Default::default() },
        ..Options::default()
    };
    let world = World::with(opts).await;
    Setup { pitr, cluster, world, kube, _smoke: smoke }
}

fn writers(cluster: &FakeCluster) -> (usize, usize) {
    (ready_pods(cluster, "promotions-api"), ready_pods(cluster, "promotions-worker"))
}

/// In place: the server of the primary's data directory is stopped, its directory kept aside
/// as `primary.before-R-1`, T restored into it and served on its own address; a client of
/// that address reads exactly the rows of T. Then a restore that fails midway (a WAL segment
/// lost after the approval was asked) puts the old data back and starts it, says so, leaves
/// the writers at 0 with [Restart writers] — refused once they run again.
#[tokio::test(flavor = "multi_thread")]
async fn restore_in_place_through_the_chat_with_two_approvers() {
    let Setup { pitr, cluster, world, kube, _smoke } = setup(|pitr| {
        let primary = pitr.primary.data.to_str().expect("utf-8").to_string();
        let settings = format!("cutover = \"in-place\"\npgdata = {primary:?}\nport = {}\nrehearse = true\n", pitr.primary.port);
        let runner_path = pitr.runner.path.clone();
        let dbs = database(pitr, "promotions-db", "server") + &restore_section(pitr, "promotions-db", &runner_path, &settings);
        (dbs, vec![("server", pitr.primary.url())])
    })
    .await;
    let server = &pitr.primary;
    assert_eq!(server.psql("select count(*) from items"), "800", "the mistake is live");
    let cmd = format!("/ops restore promotions-db --date {}", pitr.target);

    // 1. Preflight, rehearsal, the plan naming the cutover; two approvals; T is served in place.
    let id = world.request("console:alice", &cmd).await;
    let plan = world.wait_text(id, "Waiting for approval: 0 of 2").await;
    let text = plan.all_text();
    assert!(text.contains("is restorable from base backup"), "{text}");
    assert!(text.contains("rehearsed at T: items 600 — now: 800"), "the rehearsed counts beside today's: {text}");
    assert!(text.contains("rehearsed at T: orders 50 — now: missing"), "{text}");
    assert!(text.contains("writer promotions-ns/promotions-api=3") && text.contains("writer promotions-ns/promotions-worker=2"), "{text}");
    let before = pitr.path("primary.before-R-1");
    let exec = world.wait_state(id, "awaiting_approval").await;
    assert!(exec.steps[1].summary.clone().unwrap_or_default().contains("the restore command's check passed"), "{:?}", exec.steps[1]);
    assert!(exec.steps[2].summary.clone().unwrap_or_default().contains("MiB of scratch disk, removed afterwards"), "{:?}", exec.steps[2]);
    assert!(
        exec.steps[6].action.contains(&format!("keep its data directory aside as {before} (nothing is deleted)")),
        "the approved plan names the cutover and what is kept aside: {}",
        exec.steps[6].action
    );
    assert!(!pitr.work.join("rehearsal-promotions-db-R-1").exists(), "the scratch copy is removed");
    assert_eq!(server.psql("select count(*) from items"), "800", "nothing changed before the approval");
    world.click("console:bob", id, "approve").await;
    world.wait_text(id, "Waiting for approval: 1 of 2").await;
    assert_eq!(writers(&cluster), (3, 2), "nothing happens on one approval");
    world.click("console:carol", id, "approve").await;
    let done = world.wait_state(id, "succeeded").await;
    assert!(done.steps.iter().all(|s| s.status == StepStatus::Succeeded), "{:#?}", done.steps);
    assert_eq!(done.steps[7].summary.as_deref(), Some("all 5 integrity checks passed"), "incl. the 2 rehearsed counts, exactly");
    // Where the writers connect: the server's own address.
    assert_eq!(server.psql("select count(*) from items"), "600");
    assert_eq!(server.psql(BATCHES), ITEMS_AT_T, "the mistake is gone");
    assert_eq!(server.psql("select count(*) from orders"), "50");
    assert_eq!(server.psql("select pg_is_in_recovery()"), "f");
    assert!(std::path::Path::new(&before).join("PG_VERSION").is_file(), "the old data directory is kept");
    assert_eq!(writers(&cluster), (3, 2), "writers back at their counts");
    let log = world.output(id, 6).await;
    assert!(log.contains("recovery reached the target") && log.contains("kept aside as"), "the restore's output is kept: {log}");
    assert!(!log.contains(s3::SECRET_KEY), "no secret in the output");

    // 2. The restore fails midway: the segment T needs goes after the plan was made.
    let id = world.request("console:alice", &cmd).await;
    world.wait_text(id, "Waiting for approval").await;
    let key = format!("cluster/{SERVER}/wals/{}/{}.gz", &pitr.segment_a[..16], pitr.segment_a);
    let client = s3_config(&pitr.s3).client().expect("client");
    client.delete_object().bucket(BUCKET).key(&key).send().await.expect("delete the segment");
    world.click("console:bob", id, "approve").await;
    world.click("console:carol", id, "approve").await;
    let failed = world.wait_state(id, "failed").await;
    assert_eq!(failed.steps[6].status, StepStatus::Failed, "{:#?}", failed.steps);
    let why = failed.steps[6].summary.clone().unwrap_or_default();
    assert!(why.contains("the service is left on its old data") && why.contains("running again"), "{why}");
    assert_eq!(server.psql("select count(*) from items"), "600", "the server runs on what it held before");
    assert!(!pitr.work.join("primary.before-R-2").exists(), "the old data went back in place");
    assert_eq!(failed.steps[9].status, StepStatus::Pending, "writers not restarted");
    assert_eq!(writers(&cluster), (0, 0));
    let msg = world.wait_text(id, "Failed at step 7").await;
    assert!(msg.all_text().contains("Already applied before the failure: Stop writers"), "{}", msg.all_text());

    // 3. Writers restarted by hand: the [Restart writers] left on the message is stale.
    let button = world.button(id, "follow_up").await;
    kube.scale("promotions-ns", "promotions-api", 3).await.expect("scale");
    kube.scale("promotions-ns", "promotions-worker", 2).await.expect("scale");
    let r = world.click_value("console:bob", &button, Some("by-hand")).await;
    assert!(r.message.text.contains("already run at their recorded counts"), "{}", r.message.text);
    assert_eq!(world.executions().await.len(), 2, "nothing was created");
    server.stop();
    cluster.shutdown().await;
}

/// Switch: T restored beside the old server, then the Secret the writers read points at it —
/// a client connecting with the Secret's URL reads exactly the rows of T, the old value is
/// kept in the Secret and the old server is untouched. A preflight failure (barman-cloud not
/// on the restore command's PATH; the restored instance's port taken) stops the request
/// before anyone is asked, nothing stopped. A restore failing midway switches nothing.
#[tokio::test(flavor = "multi_thread")]
async fn restore_side_by_side_then_switch_through_the_chat_with_two_approvers() {
    let port = free_port();
    let Setup { pitr, cluster, world, _smoke, .. } = setup(|pitr| {
        let restored = format!("postgres://postgres@localhost/postgres?host={}&port={port}", pitr.work.display());
        let settings = format!(
            "cutover = \"switch\"\npgdata = {:?}\nport = {port}\nrehearse = true\ncurrent_url_secret = \"current\"\n\
             [databases.promotions-db.restore.switch]\nsecret = \"promotions-ns/promotions-db\"\nkey = \"url\"\nurl_secret = \"restored\"\n",
            pitr.path("restored-{execution}")
        );
        let runner_path = pitr.runner.path.clone();
        let no_barman: String = runner_path.split(':').filter(|d| *d != pitr.barman_bin.to_str().expect("utf-8")).collect::<Vec<_>>().join(":");
        let dbs = database(pitr, "promotions-db", "restored")
            + &restore_section(pitr, "promotions-db", &runner_path, &settings)
            + &database(pitr, "promotions-db-nobarman", "restored")
            + &restore_section(pitr, "promotions-db-nobarman", &no_barman, &format!("cutover = \"none\"\npgdata = {:?}\n", pitr.path("nobarman")));
        (dbs, vec![("restored", restored), ("current", pitr.primary.url())])
    })
    .await;
    cluster.put_object(secret_object("promotions-ns", "promotions-db", "url", &pitr.primary.url()));
    let secret = || cluster.object("v1", "Secret", "promotions-ns", "promotions-db").expect("the writers' Secret");

    // 0. barman-cloud is not on the restore command's PATH: found before anyone is asked.
    let id = world.request("console:alice", &format!("/ops restore promotions-db-nobarman --date {}", pitr.target)).await;
    let refused = world.wait_state(id, "failed").await;
    let why = refused.steps[1].summary.clone().unwrap_or_default();
    assert!(why.contains("'barman-cloud-backup-list' not found on PATH") && why.contains("pip install 'barman[cloud]>=3.6'"), "{why}");
    assert!(why.contains("Nothing was stopped or changed"), "{why}");
    assert!(refused.approvals.is_empty() && refused.steps[3].status == StepStatus::Pending);
    assert_eq!(writers(&cluster), (3, 2));

    // 0b. runbot may not patch the writers' Secret: said before anyone is asked.
    let cmd = format!("/ops restore promotions-db --date {}", pitr.target);
    cluster.deny("patch", "secrets", "promotions-ns");
    let id = world.request("console:alice", &cmd).await;
    let refused = world.wait_state(id, "failed").await;
    let why = refused.steps[1].summary.clone().unwrap_or_default();
    assert!(why.contains("the cluster does not let runbot patch secrets in promotions-ns: grant it in runbot's Role"), "{why}");
    assert!(refused.approvals.is_empty());
    cluster.allow_all();

    // 1. Rehearsed, approved by two people, restored beside the old server, switched.
    let id = world.request("console:alice", &cmd).await;
    let plan = world.wait_text(id, "Waiting for approval: 0 of 2").await;
    let text = plan.all_text();
    assert!(text.contains("rehearsed at T: items 600 — now: 800") && text.contains("rehearsed at T: orders 50 — now: missing"), "{text}");
    let exec = world.wait_state(id, "awaiting_approval").await;
    assert!(
        exec.steps[8].action.contains("point key url of Secret promotions-ns/promotions-db") && exec.steps[8].action.contains("url-before-R-3"),
        "the approved plan names the switch and what is kept: {}",
        exec.steps[8].action
    );
    world.click("console:bob", id, "approve").await;
    world.click("console:carol", id, "approve").await;
    let done = world.wait_state(id, "succeeded").await;
    assert!(done.steps.iter().all(|s| s.status == StepStatus::Succeeded), "{:#?}", done.steps);
    // Where the writers connect now: the Secret's URL.
    let url = secret_value(&secret(), "url").expect("url");
    assert_eq!(pitr.psql_url(&url, "select count(*) from items"), "600");
    assert_eq!(pitr.psql_url(&url, BATCHES), ITEMS_AT_T, "the mistake is gone");
    assert_eq!(pitr.psql_url(&url, "select count(*) from orders"), "50");
    assert_eq!(secret_value(&secret(), "url-before-R-3").as_deref(), Some(pitr.primary.url().as_str()), "the old value is kept");
    assert_eq!(pitr.primary.psql("select count(*) from items"), "800", "the old server is untouched");
    assert_eq!(writers(&cluster), (3, 2), "writers back at their counts");
    let restored = pitr.instance(&pitr.path("restored-R-3"), port);

    // 2. Again: the restored instance's port is taken now — the preflight says so, nothing stops.
    let id = world.request("console:alice", &cmd).await;
    let refused = world.wait_state(id, "failed").await;
    let why = refused.steps[1].summary.clone().unwrap_or_default();
    assert!(why.contains(&format!("a server already listens on port {port}")), "{why}");
    assert!(refused.approvals.is_empty());
    assert_eq!(writers(&cluster), (3, 2));

    // 3. The restore fails midway (the segment T needs is lost after the plan was made):
    //    nothing is switched, the Secret and the old server are as they were, and it says so.
    restored.stop();
    let id = world.request("console:alice", &cmd).await;
    world.wait_text(id, "Waiting for approval").await;
    let key = format!("cluster/{SERVER}/wals/{}/{}.gz", &pitr.segment_a[..16], pitr.segment_a);
    s3_config(&pitr.s3).client().expect("client").delete_object().bucket(BUCKET).key(&key).send().await.expect("delete the segment");
    world.click("console:bob", id, "approve").await;
    world.click("console:carol", id, "approve").await;
    let failed = world.wait_state(id, "failed").await;
    let why = failed.steps[6].summary.clone().unwrap_or_default();
    assert!(why.contains("recovery failed") && why.contains("Nothing was switched: the writers' Secret still points at the old database"), "{why}");
    assert_eq!(failed.steps[8].status, StepStatus::Pending, "no cutover");
    assert_eq!(secret_value(&secret(), "url"), Some(url), "the Secret is as it was");
    assert_eq!(secret_value(&secret(), "url-before-R-5"), None);
    assert_eq!(pitr.primary.psql("select count(*) from items"), "800", "the old server runs, untouched");
    assert_eq!(writers(&cluster), (0, 0), "the writers wait for [Restart writers]");
    cluster.shutdown().await;
}
