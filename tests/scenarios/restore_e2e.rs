//! The emergency restore, end to end through the chat on a real PostgreSQL 15: a primary that
//! archived to the sandbox S3 with barman-cloud made a destructive mistake after T; `/ops
//! restore promotions-db --date T` proves T from the catalog, records the writers, waits for two
//! approvers, scales the writers (sandbox cluster) to 0, runs `deploy/scripts/db-restore.sh`,
//! checks the restored copy's integrity, and brings the writers back: the restored database has
//! exactly the rows of T. The built-in `restore` runbook is used, with the database's restore
//! command from the config. Then a restore command that fails leaves the writers at 0 and says
//! so, and a lost WAL segment makes T unreachable before anyone is asked.

use runbot_adapters::backup::{BarmanS3Catalog, S3Config};
use runbot_adapters::http_check::ReqwestCheck;
use runbot_adapters::integrity::PgChecker;
use runbot_adapters::kubernetes::KubeCluster;
use runbot_commands::model::StepStatus;
use runbot_commands::ports::{Catalogs, Clusters};
use runbot_commands::steps::deploy::DeployConnections;
use runbot_sandbox::pitr::{BUCKET, PitrWorld, SERVER, SOURCE, free_port};
use runbot_sandbox::s3;
use runbot_sandbox::smoke::SmokeServer;
use runbot_tests::harness::writers::{ready_pods, start_cluster};
use runbot_tests::harness::{Options, RUNBOOKS, World};
use std::sync::Arc;
use std::time::Duration;

fn s3_config(server: &s3::S3Server) -> S3Config {
    S3Config::new(Some(server.url()), s3::REGION, s3::ACCESS_KEY, s3::SECRET_KEY)
}

/// The database's restore command for the built-in `restore` runbook: the shipped
/// `deploy/scripts/db-restore.sh` (run as the PITR world's runner), with the S3 keys from
/// `[secrets]` in its environment.
fn restore_section(pitr: &PitrWorld, pgdata: &str, port: u16) -> String {
    let q = |s: &str| format!("{s:?}");
    let mut argv: Vec<String> = pitr.runner.argv_prefix().iter().map(|a| q(a)).collect();
    argv.push(q(pitr.script.to_str().expect("utf-8")));
    for a in ["--date", "{date}", "--source", "{source}", "--server-name", "{server_name}"] {
        argv.push(q(a));
    }
    for a in [
        "--pgdata",
        pgdata,
        "--endpoint-url",
        pitr.s3.url(),
        "--port",
        &port.to_string(),
        "--socket-dir",
        pitr.work.to_str().expect("utf-8"),
        "--pg-bin",
        pitr.pg_bin.to_str().expect("utf-8"),
        "--timeout",
        "120",
    ] {
        argv.push(q(a));
    }
    format!(
        r#"
[databases.promotions-db.restore]
argv = [{}]
timeout = "5m"
env = {{ PATH = {}, TZ = "UTC", HOME = {}, AWS_ACCESS_KEY_ID = "{{secret.s3_key}}", AWS_SECRET_ACCESS_KEY = "{{secret.s3_secret}}", AWS_DEFAULT_REGION = {} }}
"#,
        argv.join(", "),
        q(&pitr.runner.path),
        q(pitr.work.to_str().expect("utf-8")),
        q(s3::REGION),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_to_t_through_the_chat_with_two_approvers() {
    let pitr = tokio::task::spawn_blocking(PitrWorld::start).await.expect("the PITR world");
    let cluster = start_cluster().await;

    let port = free_port();
    let pgdata = pitr.path("restored");
    let restored = pitr.instance(&pgdata, port);
    let secrets = pitr.work.join("secrets");
    std::fs::create_dir(&secrets).expect("secrets dir");
    for (name, value) in [("s3-key", s3::ACCESS_KEY.to_string()), ("s3-secret", s3::SECRET_KEY.to_string()), ("restored-db", restored.url())] {
        std::fs::write(secrets.join(name), value).expect("secret file");
    }
    let s = |n: &str| secrets.join(n).display().to_string();
    // What must answer once the writers are back.
    let smoke = SmokeServer::start("127.0.0.1:0".parse().expect("addr"), Arc::new(|| (200, "ok".to_string()))).await.expect("smoke");
    let extra = format!(
        r#"
[secrets]
s3_key = "file:{}"
s3_secret = "file:{}"
restored_db = "file:{}"

[databases.promotions-db.backup]
source = "{SOURCE}"
server_name = "{SERVER}"
endpoint = "{}"
access_key_secret = "s3_key"
secret_key_secret = "s3_secret"

[databases.promotions-db.integrity]
url_secret = "restored_db"
tables = {{ items = 600, orders = 50 }}
checks = [{{ name = "exactly the rows of T", sql = "SELECT count(*) = 600 AND count(*) FILTER (WHERE batch = 'c') = 0 AND count(*) FILTER (WHERE batch = 'a') = 200 FROM items" }}]

[clusters.sandbox]
url = "{}"

[databases.promotions-db.smoke]
url = "{}/health"
body = "ok"
{}
"#,
        s("s3-key"),
        s("s3-secret"),
        s("restored-db"),
        pitr.s3.url(),
        cluster.url(),
        smoke.url(),
        restore_section(&pitr, &pgdata, port)
    );
    let catalog = BarmanS3Catalog::new(&s3_config(&pitr.s3), SOURCE, SERVER).expect("catalog");
    let opts = Options {
        extra_config: extra,
        // The built-in restore runbook; the generic sre policy (one approval) is raised to
        // the two the restore runbook asks for.
        runbooks: RUNBOOKS.to_string(),
        catalogs: Catalogs::new().with("promotions-db", Arc::new(catalog)),
        clusters: Clusters::new().with("sandbox", Arc::new(KubeCluster::from_url(&cluster.url(), Duration::from_secs(5)).expect("kube client"))),
        checker: Some(Arc::new(PgChecker)),
        patience: Duration::from_secs(120),
        deploy: DeployConnections { http: Some(Arc::new(ReqwestCheck::new().expect("http client"))), ..Default::default() },
        ..Options::default()
    };
    let world = World::with(opts).await;
    let cmd = format!("/ops restore promotions-db --date {}", pitr.target);

    // 1. Proven, approved by two people, restored to exactly T, writers back.
    let id = world.request("console:alice", &cmd).await;
    let plan = world.wait_text(id, "Waiting for approval: 0 of 2").await;
    let text = plan.all_text();
    assert!(text.contains("is restorable from base backup"), "{text}");
    assert!(text.contains("writer promotions-ns/promotions-api=3") && text.contains("writer promotions-ns/promotions-worker=2"), "{text}");
    world.click("console:bob", id, "approve").await;
    world.wait_text(id, "Waiting for approval: 1 of 2").await;
    assert_eq!(ready_pods(&cluster, "promotions-api"), 3, "nothing happens on one approval");
    world.click("console:carol", id, "approve").await;
    let done = world.wait_state(id, "succeeded").await;
    assert!(done.steps.iter().all(|s| s.status == StepStatus::Succeeded), "{:#?}", done.steps);
    assert_eq!(done.steps[5].summary.as_deref(), Some("all 3 integrity checks passed"));
    assert!(done.steps[7].summary.clone().unwrap_or_default().contains("/health 200 in"), "the database's smoke test: {:?}", done.steps[7]);
    assert_eq!(restored.psql("select count(*) from items"), "600");
    assert_eq!(
        restored.psql("select string_agg(batch || ':' || n, ',' order by batch) from (select batch, count(*) n from items group by batch) s"),
        "a:200,b:300,seed:100"
    );
    assert_eq!(restored.psql("select count(*) from orders"), "50");
    assert_eq!((ready_pods(&cluster, "promotions-api"), ready_pods(&cluster, "promotions-worker")), (3, 2), "writers back at their counts");
    let log = world.output(id, 4).await;
    assert!(log.contains("recovery reached the target"), "the restore's output is kept: {log}");
    assert!(!log.contains(s3::SECRET_KEY), "no secret in the output");

    // 2. The restore command fails (the target directory is not empty now): the writers stay
    //    at 0 and the message says what was already done.
    let id = world.request("console:alice", &cmd).await;
    world.wait_text(id, "Waiting for approval").await;
    world.click("console:bob", id, "approve").await;
    world.click("console:carol", id, "approve").await;
    let failed = world.wait_state(id, "failed").await;
    assert_eq!(failed.steps[4].status, StepStatus::Failed, "{:#?}", failed.steps);
    assert!(failed.steps[4].summary.clone().unwrap_or_default().contains("is not empty"), "{:?}", failed.steps[4]);
    assert_eq!(failed.steps[6].status, StepStatus::Pending, "writers not restarted");
    assert_eq!((ready_pods(&cluster, "promotions-api"), ready_pods(&cluster, "promotions-worker")), (0, 0));
    let msg = world.wait_text(id, "Failed at step 5").await;
    assert!(msg.all_text().contains("Already applied before the failure: Stop writers"), "{}", msg.all_text());

    // 3. A WAL segment T needs is lost: refused at once, nobody is asked.
    let key = format!("cluster/{SERVER}/wals/{}/{}.gz", &pitr.segment_a[..16], pitr.segment_a);
    let client = s3_config(&pitr.s3).client().expect("client");
    client.delete_object().bucket(BUCKET).key(&key).send().await.expect("delete the segment");
    let id = world.request("console:alice", &cmd).await;
    let refused = world.wait_state(id, "failed").await;
    let why = refused.steps[0].summary.clone().unwrap_or_default();
    assert!(why.contains("behind a WAL gap") && why.contains(&pitr.segment_a), "{why}");
    assert!(refused.approvals.is_empty());
    restored.stop();
    cluster.shutdown().await;
}
