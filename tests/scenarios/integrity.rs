//! `db-integrity` against a real PostgreSQL (a scratch database on the test server): critical
//! tables with minimum row counts and SQL checks, the result table in the thread, and a failed
//! check failing the step with what failed.

use runbot_adapters::integrity::PgChecker;
use runbot_adapters::store_sql;
use runbot_commands::model::StepStatus;
use runbot_tests::harness::{Options, RUNBOOKS, World};
use sqlx::{Connection, PgConnection};
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

const VERIFY: &str = r#"
[runbooks.verify-db]
summary = "Check a database against its integrity expectations"
target = "database"
mutating = false

[[runbooks.verify-db.steps]]
name = "Integrity"
kind = "db-integrity"

[runbooks.rehearse-db]
summary = "Rehearse a restore, then check the database against the rehearsed counts"
target = "database"
mutating = false

[[runbooks.rehearse-db.steps]]
name = "Rehearsal"
kind = "db-rehearse"

[[runbooks.rehearse-db.steps]]
name = "Integrity"
kind = "db-integrity"
"#;

fn server() -> String {
    std::env::var("RUNBOT_TEST_PG_URL").expect("RUNBOT_TEST_PG_URL is not set: run the tests with ./scripts/test.sh")
}

/// A scratch database with `promotions` (3 rows, one with a non-positive price) and an empty
/// `coupons`; dropped when the guard goes.
struct Scratch {
    name: String,
    url: String,
}

impl Scratch {
    async fn new() -> Scratch {
        // The URL is a secret, and any 8 characters of a secret are redacted: the name shares
        // no 8 characters with what the step reports ("integrity checks passed").
        let name = format!("runbot_scratch_{:016x}", RandomState::new().hash_one((std::process::id(), std::time::SystemTime::now())));
        let url = store_sql::create_database(&server(), &name).await.expect("scratch database");
        let mut c = PgConnection::connect(&url).await.expect("connect");
        sqlx::raw_sql(
            "CREATE TABLE promotions (id int PRIMARY KEY, price numeric NOT NULL);\
             INSERT INTO promotions VALUES (1, 10), (2, 20), (3, 0);\
             CREATE SCHEMA sales; CREATE TABLE sales.coupons (id int PRIMARY KEY);",
        )
        .execute(&mut c)
        .await
        .expect("seed");
        c.close().await.expect("close");
        Scratch { name, url }
    }
}

async fn world(scratch: &Scratch, integrity: &str) -> (World, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("db-url");
    std::fs::write(&secret, &scratch.url).expect("secret file");
    let extra = format!(
        "[secrets]\nrestored_db = \"file:{}\"\n\n[databases.promotions-db.integrity]\nurl_secret = \"restored_db\"\n{integrity}\n",
        secret.display()
    );
    let opts = Options { extra_config: extra, runbooks: format!("{RUNBOOKS}\n{VERIFY}"), checker: Some(Arc::new(PgChecker)), ..Options::default() };
    (World::with(opts).await, dir)
}

#[tokio::test(flavor = "multi_thread")]
async fn integrity_checks_pass_fail_and_explain() {
    let scratch = Scratch::new().await;
    let result = tokio::spawn({
        let url = scratch.url.clone();
        let name = scratch.name.clone();
        async move {
            let s = Scratch { name, url };
            // Everything as expected.
            let (w, _d) = world(&s, "tables = { promotions = 3, \"sales.coupons\" = 0 }\nchecks = [{ name = \"ids positive\", sql = \"SELECT bool_and(id > 0) FROM promotions\" }]").await;
            let id = w.request("console:alice", "/ops run verify-db promotions-db").await;
            let done = w.wait_state(id, "succeeded").await;
            assert_eq!(done.steps[0].summary.as_deref(), Some("all 3 integrity checks passed"));
            let out = w.output(id, 0).await;
            assert!(out.contains("✓ rows in promotions") && out.contains("3 rows (expected ≥ 3)"), "{out}");

            // Too few rows, a false check, a broken query: each named, the step fails.
            let (w, _d) = world(
                &s,
                "tables = { promotions = 1000 }\nchecks = [{ name = \"prices positive\", sql = \"SELECT bool_and(price > 0) FROM promotions\" }, { name = \"broken\", sql = \"SELECT nope FROM nowhere\" }]",
            )
            .await;
            let id = w.request("console:alice", "/ops run verify-db promotions-db").await;
            let failed = w.wait_state(id, "failed").await;
            assert_eq!(failed.steps[0].status, StepStatus::Failed);
            let why = failed.steps[0].summary.clone().unwrap_or_default();
            assert!(why.contains("rows in promotions: 3 rows (expected ≥ 1000)"), "{why}");
            assert!(why.contains("prices positive: false"), "{why}");
            assert!(why.contains("broken: ") && why.contains("nowhere"), "{why}");
            assert!(!why.contains(&s.url), "the database URL never shows");

            // Unreachable database: a clear failure, no URL in it.
            let gone = Scratch { name: s.name.clone(), url: s.url.replace(&s.name, "runbot_no_such_database") };
            let (w, _d) = world(&gone, "tables = { promotions = 1 }").await;
            let id = w.request("console:alice", "/ops run verify-db promotions-db").await;
            let failed = w.wait_state(id, "failed").await;
            let why = failed.steps[0].summary.clone().unwrap_or_default();
            assert!(why.contains("integrity checks could not run: cannot connect"), "{why}");
            assert!(!why.contains(&gone.url), "{why}");
        }
    })
    .await;
    let dropped = store_sql::drop_database(&server(), &scratch.name).await;
    if let Err(p) = result {
        std::panic::resume_unwind(p.into_panic());
    }
    dropped.expect("drop scratch");
}

/// After a rehearsal the integrity step wants exactly the rehearsed counts, not minimums: a
/// restore command that reports the table's real count passes; one whose rehearsal found a
/// row more fails on that table although its minimum is met. (The restore command here is a
/// stand-in printing what `db-restore.sh --rehearse` prints.)
#[tokio::test(flavor = "multi_thread")]
async fn the_integrity_step_requires_exactly_the_rehearsed_counts() {
    let scratch = Scratch::new().await;
    let result = tokio::spawn({
        let (url, name) = (scratch.url.clone(), scratch.name.clone());
        async move {
            let s = Scratch { name, url };
            let rehearsal = |promotions: u32| {
                format!(
                    r#"tables = {{ promotions = 1, "sales.coupons" = 0 }}
[databases.promotions-db.restore]
argv = ["sh", "-c", "printf 'rows promotions {promotions}\\nrows sales.coupons 0\\nsize 1048576\\ntook 2\\n'", "db-restore.sh"]
cutover = "none"
rehearse = true
rehearse_dir = "/tmp"
current_url_secret = "restored_db""#
                )
            };
            let (w, _d) = world(&s, &rehearsal(3)).await;
            let id = w.request("console:alice", "/ops run rehearse-db promotions-db").await;
            let done = w.wait_state(id, "succeeded").await;
            assert!(done.resolved.contains(&"rehearsed at T: promotions 3 — now: 3".to_string()), "{:?}", done.resolved);
            assert!(done.steps[0].summary.clone().unwrap_or_default().contains("took 2s and 1 MiB"), "{:?}", done.steps[0]);
            assert_eq!(done.steps[1].summary.as_deref(), Some("all 4 integrity checks passed"));

            let (w, _d) = world(&s, &rehearsal(4)).await;
            let id = w.request("console:alice", "/ops run rehearse-db promotions-db").await;
            let failed = w.wait_state(id, "failed").await;
            let why = failed.steps[1].summary.clone().unwrap_or_default();
            assert!(why.contains("rows in promotions as rehearsed: 3 rows (the rehearsal found 4 rows)"), "{why}");
            assert!(!why.contains("rows in promotions: "), "the minimum (1) is met: {why}");
        }
    })
    .await;
    let dropped = store_sql::drop_database(&server(), &scratch.name).await;
    if let Err(p) = result {
        std::panic::resume_unwind(p.into_panic());
    }
    dropped.expect("drop scratch");
}
