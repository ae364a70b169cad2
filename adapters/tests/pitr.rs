//! Point-in-time recovery, end to end, on a real PostgreSQL 15:
//! a primary archives its WAL with barman-cloud-wal-archive to the sandbox S3 server
//! (s3s-fs, SigV4 checked), barman-cloud-backup takes a base backup, rows are written, the
//! time T is noted, more rows are written and a mistake is made (DELETE + DROP TABLE); then
//! `deploy/scripts/db-restore.sh --date T` restores into a new data directory on another
//! port, and the restored database must hold exactly the rows of T. The backup catalog
//! (`BarmanS3Catalog`) reads the very same bucket. Then: a date before the first backup is
//! refused, bad input is refused, and once a WAL segment needed for T is deleted the catalog
//! reports the gap and the restore fails loudly.
//!
//! Needs PostgreSQL 15 server binaries (/usr/lib/postgresql/15/bin, or RUNBOT_TEST_PG_BIN)
//! and barman-cloud (RUNBOT_TEST_BARMAN_BIN, or on PATH): `./scripts/test.sh` installs both.
//! Every child process is started with argv (no shell). Run as root, PostgreSQL and barman run
//! as the `postgres` user (runuser). PostgreSQL instances are stopped on drop, also on panic.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use runbot_adapters::backup::{BarmanS3Catalog, S3Config, S3Credentials};
use runbot_commands::ports::backup::{BackupCatalog, CatalogAnalysis, Unreachable};
use runbot_sandbox::s3;

const BUCKET: &str = "pitr";
const SOURCE: &str = "s3://pitr/cluster";
const SERVER: &str = "promotions-db";

/// How child processes are run: directly, or as `postgres` when the test runs as root.
struct Runner {
    as_postgres: Option<(u32, u32)>,
    path: String,
    env: Vec<(&'static str, String)>,
}

impl Runner {
    fn command(&self, program: &Path) -> Command {
        let mut c = match self.as_postgres {
            Some(_) => {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(program);
                c
            }
            None => Command::new(program),
        };
        c.env_clear().env("PATH", &self.path).env("TZ", "UTC").env("LC_ALL", "C.UTF-8");
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    fn run(&self, program: &Path, args: &[&str]) -> Output {
        let mut c = self.command(program);
        c.args(args);
        c.output().unwrap_or_else(|e| panic!("run {}: {e}", program.display()))
    }

    fn ok(&self, program: &Path, args: &[&str]) -> String {
        let out = self.run(program, args);
        assert!(
            out.status.success(),
            "{} {:?} failed ({}):\nstdout: {}\nstderr: {}",
            program.display(),
            args,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn own(&self, path: &Path) {
        if let Some((uid, gid)) = self.as_postgres {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown to postgres");
        }
    }
}

/// A PostgreSQL instance stopped (immediate) when dropped, whatever happened.
struct Pg<'a> {
    runner: &'a Runner,
    pg_bin: PathBuf,
    data: PathBuf,
    socket_dir: PathBuf,
    port: u16,
}

impl Pg<'_> {
    fn psql(&self, sql: &str) -> String {
        let port = self.port.to_string();
        let sock = self.socket_dir.to_str().unwrap();
        self.runner
            .ok(
                &self.pg_bin.join("psql"),
                &["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", sock, "-p", &port, "-U", "postgres", "-d", "postgres", "-c", sql],
            )
            .trim()
            .to_owned()
    }

    fn stop(&self) {
        let data = self.data.to_str().unwrap();
        let _ = self.runner.run(&self.pg_bin.join("pg_ctl"), &["-D", data, "-m", "fast", "-w", "-t", "30", "stop"]);
    }
}

impl Drop for Pg<'_> {
    fn drop(&mut self) {
        if self.data.join("postmaster.pid").exists() {
            let data = self.data.to_str().unwrap();
            let _ = self.runner.run(&self.pg_bin.join("pg_ctl"), &["-D", data, "-m", "immediate", "-w", "-t", "30", "stop"]);
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn find_barman_bin() -> PathBuf {
    if let Ok(dir) = std::env::var("RUNBOT_TEST_BARMAN_BIN") {
        return PathBuf::from(dir);
    }
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .find(|d| d.join("barman-cloud-wal-restore").is_file())
        .unwrap_or_else(|| {
            panic!(
                "barman-cloud is not installed: run the tests with ./scripts/test.sh, which installs it \
                 (pip install 'barman[cloud]') and sets RUNBOT_TEST_BARMAN_BIN"
            )
        })
}

fn catalog_for(server: &s3::S3Server) -> BarmanS3Catalog {
    let config = S3Config {
        endpoint_url: Some(server.url().to_owned()),
        region: s3::REGION.into(),
        force_path_style: true,
        credentials: S3Credentials {
            access_key_id: s3::ACCESS_KEY.into(),
            secret_access_key: s3::SECRET_KEY.into(),
            session_token: None,
        },
    };
    BarmanS3Catalog::new(&config, SOURCE, SERVER).expect("catalog")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn point_in_time_restore_with_barman_cloud_and_db_restore_sh() {
    let started = Instant::now();
    let pg_bin = PathBuf::from(std::env::var("RUNBOT_TEST_PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into()));
    assert!(pg_bin.join("postgres").is_file(), "PostgreSQL 15 server binaries not found in {} (scripts/test.sh installs them)", pg_bin.display());
    let barman_bin = find_barman_bin();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/scripts/db-restore.sh").canonicalize().unwrap();

    // Scratch space readable by `postgres`; short paths (Unix socket names are limited).
    let tmp = tempfile::Builder::new().prefix("runbot-pitr-").tempdir_in("/tmp").unwrap();
    let work = tmp.path().to_path_buf();
    let s3_root = work.join("s3");
    std::fs::create_dir(&s3_root).unwrap();
    let server = s3::start(&s3_root).expect("start the sandbox S3 server");
    server.create_bucket(BUCKET).unwrap();

    let as_postgres = if is_root() {
        let id = |flag: &str| -> u32 {
            let out = Command::new("id").args([flag, "postgres"]).output().expect("id postgres");
            String::from_utf8_lossy(&out.stdout).trim().parse().expect("the postgres user exists")
        };
        Some((id("-u"), id("-g")))
    } else {
        None
    };
    let runner = Runner {
        as_postgres,
        path: format!("{}:{}:/usr/sbin:/usr/bin:/sbin:/bin", barman_bin.display(), pg_bin.display()),
        env: {
            let mut env = server.client_env();
            env.push(("HOME", work.to_str().unwrap().to_owned()));
            env
        },
    };
    runner.own(&work);
    let w = |p: &str| work.join(p).to_str().unwrap().to_owned();

    // ------------------------------------------------------------ primary, archiving to S3
    runner.ok(&pg_bin.join("initdb"), &["-D", &w("primary"), "-U", "postgres", "--auth=trust", "--no-sync", "--no-instructions", "--encoding=UTF8", "--no-locale"]);
    let archive_command = format!(
        "{} --endpoint-url {} -z {SOURCE} {SERVER} %p",
        barman_bin.join("barman-cloud-wal-archive").display(),
        server.url()
    );
    let conf = format!(
        "listen_addresses = ''\nport = {}\nunix_socket_directories = '{}'\nwal_level = replica\narchive_mode = on\n\
         archive_command = '{archive_command}'\ntimezone = 'UTC'\nlog_timezone = 'UTC'\nfsync = off\n\
         max_parallel_workers_per_gather = 0\n",
        free_port(),
        work.display()
    );
    let port: u16 = conf.lines().find_map(|l| l.strip_prefix("port = ")).unwrap().parse().unwrap();
    let conf_path = work.join("primary/postgresql.conf");
    let mut all = std::fs::read_to_string(&conf_path).unwrap();
    all.push_str(&conf);
    std::fs::write(&conf_path, all).unwrap();
    let primary = Pg { runner: &runner, pg_bin: pg_bin.clone(), data: work.join("primary"), socket_dir: work.clone(), port };
    runner.ok(&pg_bin.join("pg_ctl"), &["-D", &w("primary"), "-l", &w("primary.log"), "-w", "-t", "60", "start"]);

    primary.psql("create table items (id int primary key, batch text not null); create table orders (id int primary key)");
    primary.psql("insert into items select g, 'seed' from generate_series(1, 100) g; insert into orders select generate_series(1, 50)");

    let backup_start = primary.psql("select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')");
    let sock = work.to_str().unwrap();
    let port_s = port.to_string();
    runner.ok(
        &barman_bin.join("barman-cloud-backup"),
        &["--endpoint-url", server.url(), "--immediate-checkpoint", "-h", sock, "-p", &port_s, "-U", "postgres", SOURCE, SERVER],
    );
    let t_backup = started.elapsed();

    // Batch A lands in its own segment (the one deleted at the end), then batch B, then T.
    primary.psql("insert into items select g, 'a' from generate_series(101, 300) g");
    let segment_a = primary.psql("select pg_walfile_name(pg_current_wal_insert_lsn())");
    primary.psql("select pg_switch_wal()");
    primary.psql("insert into items select g, 'b' from generate_series(301, 600) g");
    std::thread::sleep(Duration::from_millis(20));
    let target = primary.psql("select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')");
    std::thread::sleep(Duration::from_millis(20));
    // After T: more writes, then the mistake.
    primary.psql("insert into items select g, 'c' from generate_series(601, 1000) g");
    primary.psql("delete from items where batch = 'a'");
    primary.psql("drop table orders");
    assert_eq!(primary.psql("select count(*) from items"), "800");
    primary.psql("select pg_switch_wal()");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = primary.psql("select count(*) from pg_ls_archive_statusdir() where name like '%.ready'");
        if ready == "0" {
            break;
        }
        assert!(Instant::now() < deadline, "WAL not archived after 30 s: {ready} .ready files; see {}", w("primary.log"));
        std::thread::sleep(Duration::from_millis(200));
    }
    // "Scale the writers to 0": the old primary stops.
    primary.stop();
    let t_archive = started.elapsed();

    // ------------------------------------------------------------ the catalog, on the real output
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let catalog = catalog_for(&server);
    let snap = rt.block_on(catalog.snapshot()).expect("read the barman catalog");
    assert_eq!(snap.backups.len(), 1, "{snap:#?}");
    let b = &snap.backups[0];
    assert!(b.is_done() && b.timeline == 1, "{b:?}");
    assert!(b.begin_wal.is_some() && b.end_wal >= b.begin_wal, "{b:?}");
    assert_eq!(snap.wal_segment_size, 16 * 1024 * 1024);
    assert!(snap.histories.is_empty());
    let analysis: CatalogAnalysis = snap.analyze();
    assert_eq!(analysis.timeline_path, vec![(1, 0)]);
    assert!(analysis.gaps.is_empty(), "{:?}", analysis.gaps);
    let t_target = chrono::DateTime::parse_from_rfc3339(&target).unwrap().to_utc();
    let point = analysis.restore_point(t_target).expect("T is restorable");
    assert_eq!(point.backup_id, b.id);
    let end = b.end_time.unwrap();
    assert!(analysis.earliest() == Some(end) && analysis.latest().unwrap() >= t_target, "{:?}", analysis.window);
    let before = chrono::DateTime::parse_from_rfc3339(&backup_start).unwrap().to_utc();
    assert!(matches!(analysis.restore_point(before), Err(Unreachable::BeforeFirstBackup { .. })));

    // ------------------------------------------------------------ restore to T
    let restore_port = free_port().to_string();
    let restore_args = |date: &str, pgdata: &str| -> Vec<String> {
        [
            "--date", date, "--source", SOURCE, "--server-name", SERVER, "--pgdata", pgdata, "--endpoint-url", server.url(),
            "--port", &restore_port, "--socket-dir", sock, "--pg-bin", pg_bin.to_str().unwrap(), "--timeout", "120",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let args = restore_args(&target, &w("restore"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let restored = Pg {
        runner: &runner,
        pg_bin: pg_bin.clone(),
        data: work.join("restore"),
        socket_dir: work.clone(),
        port: restore_port.parse().unwrap(),
    };
    let out = runner.run(&script, &args);
    assert!(out.status.success(), "db-restore.sh failed ({}):\n{}", out.status, stderr(&out));
    let t_restore = started.elapsed();
    let log = stderr(&out);
    assert!(log.contains(&format!("using base backup {}", b.id)), "{log}");
    assert!(log.contains("recovery reached the target"), "{log}");
    // Exactly the rows of T: seed + A + B, the deleted batch is back, the dropped table too.
    assert_eq!(restored.psql("select pg_is_in_recovery()"), "f");
    assert_eq!(restored.psql("select count(*) from items"), "600");
    assert_eq!(restored.psql("select string_agg(batch || ':' || n, ',' order by batch) from (select batch, count(*) n from items group by batch) s"), "a:200,b:300,seed:100");
    assert_eq!(restored.psql("select count(*) from orders"), "50");
    assert_eq!(restored.psql("show archive_mode"), "off");
    restored.psql("insert into items values (5000, 'after-restore')"); // promoted: writable
    restored.stop();
    // The restored copy did not archive its new timeline into the catalog.
    let snap = rt.block_on(catalog.snapshot()).unwrap();
    assert!(snap.histories.is_empty() && snap.wal_runs.iter().all(|r| r.timeline == 1), "{snap:#?}");

    // ------------------------------------------------------------ refusals
    let out = runner.run(&script, &restore_args(&backup_start, &w("restore-early")).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!out.status.success());
    assert!(stderr(&out).contains("is before the end of the first base backup"), "{}", stderr(&out));
    assert!(!work.join("restore-early").exists(), "nothing restored when refused");

    let out = runner.run(&script, &restore_args("2026-13-01T00:00:00Z", &w("restore-bad")).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!out.status.success() && stderr(&out).contains("is not a valid date"), "{}", stderr(&out));
    let out = runner.run(&script, &restore_args("yesterday", &w("restore-bad")).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!out.status.success() && stderr(&out).contains("not an RFC 3339 time"), "{}", stderr(&out));
    let out = runner.run(&script, &restore_args(&target, &w("restore")).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!out.status.success() && stderr(&out).contains("is not empty"), "{}", stderr(&out));

    // ------------------------------------------------------------ a WAL segment needed for T is lost
    let key = format!("cluster/{SERVER}/wals/{}/{segment_a}.gz", &segment_a[..16]);
    let client = S3Config {
        endpoint_url: Some(server.url().to_owned()),
        region: s3::REGION.into(),
        force_path_style: true,
        credentials: S3Credentials { access_key_id: s3::ACCESS_KEY.into(), secret_access_key: s3::SECRET_KEY.into(), session_token: None },
    }
    .client()
    .unwrap();
    rt.block_on(client.head_object().bucket(BUCKET).key(&key).send()).unwrap_or_else(|e| panic!("{key} should exist: {e:?}"));
    rt.block_on(client.delete_object().bucket(BUCKET).key(&key).send()).unwrap();
    let analysis = rt.block_on(catalog.snapshot()).unwrap().analyze();
    assert_eq!(analysis.gaps.len(), 1, "{:?}", analysis.gaps);
    assert_eq!(analysis.gaps[0].first_name, segment_a);
    let e = analysis.restore_point(t_target).unwrap_err();
    assert!(matches!(e, Unreachable::InGap { .. }), "{e:?}");
    assert!(e.to_string().contains(&segment_a), "{e}");

    let out = runner.run(&script, &restore_args(&target, &w("restore-gap")).iter().map(String::as_str).collect::<Vec<_>>());
    let _gap_pg = Pg { runner: &runner, pg_bin: pg_bin.clone(), data: work.join("restore-gap"), socket_dir: work.clone(), port: 0 };
    assert!(!out.status.success(), "restore over a missing segment must fail:\n{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("error:") && err.contains("recovery ended before configured recovery target was reached"), "{err}");
    let t_total = started.elapsed();
    eprintln!(
        "pitr timings: backup {:.1}s, archive+stop {:.1}s, restore {:.1}s, total {:.1}s",
        t_backup.as_secs_f64(),
        t_archive.as_secs_f64(),
        t_restore.as_secs_f64(),
        t_total.as_secs_f64()
    );
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("id -u");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}
