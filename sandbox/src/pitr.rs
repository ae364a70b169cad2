//! A real point-in-time-recovery world for tests: a PostgreSQL 15 primary archiving its WAL
//! with barman-cloud to the sandbox S3 server, a base backup, rows written in batches, the time
//! T noted, more rows and a destructive mistake after T, then the primary stopped — ready for
//! `deploy/scripts/db-restore.sh` to restore T.
//!
//! Needs PostgreSQL 15 server binaries (/usr/lib/postgresql/15/bin, or `RUNBOT_TEST_PG_BIN`) and
//! barman-cloud (`RUNBOT_TEST_BARMAN_BIN`, or on PATH): `./scripts/test.sh` installs both. Every
//! child process is started with argv (no shell); run as root, PostgreSQL and barman run as the
//! `postgres` user (runuser). PostgreSQL instances stop when dropped, also on panic.

use crate::s3;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub const BUCKET: &str = "pitr";
pub const SOURCE: &str = "s3://pitr/cluster";
pub const SERVER: &str = "promotions-db";

/// How child processes are run: directly, or as `postgres` when the test runs as root.
#[derive(Clone)]
pub struct Runner {
    pub as_postgres: Option<(u32, u32)>,
    pub path: String,
    pub env: Vec<(&'static str, String)>,
}

impl Runner {
    /// `program` as a command: `runuser -u postgres -- program` when root; a clean environment
    /// with PATH (PostgreSQL, barman), UTC, C locale and the S3 credentials.
    pub fn command(&self, program: &Path) -> Command {
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

    /// The argv prefix that runs a program the way [`Runner::command`] does.
    pub fn argv_prefix(&self) -> Vec<String> {
        match self.as_postgres {
            Some(_) => vec!["runuser".into(), "-u".into(), "postgres".into(), "--".into()],
            None => Vec::new(),
        }
    }

    pub fn run(&self, program: &Path, args: &[&str]) -> Output {
        let mut c = self.command(program);
        c.args(args);
        c.output().unwrap_or_else(|e| panic!("run {}: {e}", program.display()))
    }

    pub fn ok(&self, program: &Path, args: &[&str]) -> String {
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

    pub fn own(&self, path: &Path) {
        if let Some((uid, gid)) = self.as_postgres {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown to postgres");
        }
    }
}

/// A PostgreSQL instance, stopped (immediate) when dropped, whatever happened.
pub struct Pg {
    pub runner: Runner,
    pub pg_bin: PathBuf,
    pub data: PathBuf,
    pub socket_dir: PathBuf,
    pub port: u16,
}

impl Pg {
    pub fn psql(&self, sql: &str) -> String {
        let port = self.port.to_string();
        let sock = self.socket_dir.to_str().expect("utf-8 path");
        self.runner
            .ok(
                &self.pg_bin.join("psql"),
                &["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", sock, "-p", &port, "-U", "postgres", "-d", "postgres", "-c", sql],
            )
            .trim()
            .to_owned()
    }

    /// `postgres://` URL of this instance over its Unix socket.
    pub fn url(&self) -> String {
        format!("postgres://postgres@localhost/postgres?host={}&port={}", self.socket_dir.display(), self.port)
    }

    pub fn stop(&self) {
        let data = self.data.to_str().expect("utf-8 path");
        let _ = self.runner.run(&self.pg_bin.join("pg_ctl"), &["-D", data, "-m", "fast", "-w", "-t", "30", "stop"]);
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        if self.data.join("postmaster.pid").exists() {
            let data = self.data.to_str().unwrap_or_default();
            let _ = self.runner.run(&self.pg_bin.join("pg_ctl"), &["-D", data, "-m", "immediate", "-w", "-t", "30", "stop"]);
        }
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

fn find_barman_bin() -> PathBuf {
    if let Ok(dir) = std::env::var("RUNBOT_TEST_BARMAN_BIN") {
        return PathBuf::from(dir);
    }
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&path).find(|d| d.join("barman-cloud-wal-restore").is_file()).unwrap_or_else(|| {
        panic!(
            "barman-cloud is not installed: run the tests with ./scripts/test.sh, which installs it \
             (pip install 'barman[cloud]') and sets RUNBOT_TEST_BARMAN_BIN"
        )
    })
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("id -u");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// The world after the mistake: see the module docs.
pub struct PitrWorld {
    /// Scratch space readable by `postgres`, short (Unix socket names are limited).
    pub tmp: tempfile::TempDir,
    pub work: PathBuf,
    pub s3: s3::S3Server,
    pub runner: Runner,
    pub pg_bin: PathBuf,
    pub barman_bin: PathBuf,
    /// `deploy/scripts/db-restore.sh`.
    pub script: PathBuf,
    /// The stopped primary (kept so it is cleaned up).
    pub primary: Pg,
    /// RFC 3339 (`…Z`) times: when the base backup started, and T.
    pub backup_start: String,
    pub target: String,
    /// The WAL segment holding batch A (deleting it puts T behind a gap).
    pub segment_a: String,
    /// How long the backup took, and the whole setup.
    pub took: (Duration, Duration),
}

impl PitrWorld {
    /// Builds the world (blocking; ~15 s). At T, `items` holds `seed:100, a:200, b:300` and
    /// `orders` 50 rows; after T, batch `c` was added, batch `a` deleted and `orders` dropped.
    pub fn start() -> PitrWorld {
        let started = Instant::now();
        let pg_bin = PathBuf::from(std::env::var("RUNBOT_TEST_PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into()));
        assert!(pg_bin.join("postgres").is_file(), "PostgreSQL 15 server binaries not found in {} (scripts/test.sh installs them)", pg_bin.display());
        let barman_bin = find_barman_bin();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/scripts/db-restore.sh").canonicalize().expect("db-restore.sh");

        let tmp = tempfile::Builder::new().prefix("runbot-pitr-").tempdir_in("/tmp").expect("tempdir");
        let work = tmp.path().to_path_buf();
        let s3_root = work.join("s3");
        std::fs::create_dir(&s3_root).expect("s3 root");
        let server = s3::start(&s3_root).expect("start the sandbox S3 server");
        server.create_bucket(BUCKET).expect("bucket");

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
                env.push(("HOME", work.to_str().expect("utf-8").to_owned()));
                env
            },
        };
        runner.own(&work);
        let w = |p: &str| work.join(p).to_str().expect("utf-8").to_owned();

        runner.ok(
            &pg_bin.join("initdb"),
            &["-D", &w("primary"), "-U", "postgres", "--auth=trust", "--no-sync", "--no-instructions", "--encoding=UTF8", "--no-locale"],
        );
        let archive_command =
            format!("{} --endpoint-url {} -z {SOURCE} {SERVER} %p", barman_bin.join("barman-cloud-wal-archive").display(), server.url());
        let port = free_port();
        let conf = format!(
            "listen_addresses = ''\nport = {port}\nunix_socket_directories = '{}'\nwal_level = replica\narchive_mode = on\n\
             archive_command = '{archive_command}'\ntimezone = 'UTC'\nlog_timezone = 'UTC'\nfsync = off\n\
             max_parallel_workers_per_gather = 0\n",
            work.display()
        );
        let conf_path = work.join("primary/postgresql.conf");
        let mut all = std::fs::read_to_string(&conf_path).expect("postgresql.conf");
        all.push_str(&conf);
        std::fs::write(&conf_path, all).expect("postgresql.conf");
        let primary = Pg { runner: runner.clone(), pg_bin: pg_bin.clone(), data: work.join("primary"), socket_dir: work.clone(), port };
        runner.ok(&pg_bin.join("pg_ctl"), &["-D", &w("primary"), "-l", &w("primary.log"), "-w", "-t", "60", "start"]);

        primary.psql("create table items (id int primary key, batch text not null); create table orders (id int primary key)");
        primary.psql("insert into items select g, 'seed' from generate_series(1, 100) g; insert into orders select generate_series(1, 50)");
        let now = "select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')";
        let backup_start = primary.psql(now);
        let sock = work.to_str().expect("utf-8").to_owned();
        let port_s = port.to_string();
        runner.ok(
            &barman_bin.join("barman-cloud-backup"),
            &["--endpoint-url", server.url(), "--immediate-checkpoint", "-h", &sock, "-p", &port_s, "-U", "postgres", SOURCE, SERVER],
        );
        let t_backup = started.elapsed();

        // Batch A lands in its own segment, then batch B, then T.
        primary.psql("insert into items select g, 'a' from generate_series(101, 300) g");
        let segment_a = primary.psql("select pg_walfile_name(pg_current_wal_insert_lsn())");
        primary.psql("select pg_switch_wal()");
        primary.psql("insert into items select g, 'b' from generate_series(301, 600) g");
        std::thread::sleep(Duration::from_millis(20));
        let target = primary.psql(now);
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
        primary.stop();
        PitrWorld {
            tmp,
            work,
            s3: server,
            runner,
            pg_bin,
            barman_bin,
            script,
            primary,
            backup_start,
            target,
            segment_a,
            took: (t_backup, started.elapsed()),
        }
    }

    /// A path in the scratch space.
    pub fn path(&self, p: &str) -> String {
        self.work.join(p).to_str().expect("utf-8").to_owned()
    }

    /// db-restore.sh's arguments to restore `date` into `pgdata`, served on `port`.
    pub fn restore_args(&self, date: &str, pgdata: &str, port: u16) -> Vec<String> {
        [
            "--date",
            date,
            "--source",
            SOURCE,
            "--server-name",
            SERVER,
            "--pgdata",
            pgdata,
            "--endpoint-url",
            self.s3.url(),
            "--port",
            &port.to_string(),
            "--socket-dir",
            self.work.to_str().expect("utf-8"),
            "--pg-bin",
            self.pg_bin.to_str().expect("utf-8"),
            "--timeout",
            "120",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// Starts the primary again, mistake and all (it was stopped once its WAL was archived):
    /// the server the writers use, for restores that act on it (in place) or beside it.
    pub fn start_primary(&self) {
        let data = self.primary.data.to_str().expect("utf-8");
        let log = self.path("primary-again.log");
        self.runner.ok(&self.pg_bin.join("pg_ctl"), &["-D", data, "-l", &log, "-w", "-t", "60", "start"]);
    }

    /// `sql`'s result through a `postgres://` URL, as a client of that URL would read it.
    pub fn psql_url(&self, url: &str, sql: &str) -> String {
        self.runner.ok(&self.pg_bin.join("psql"), &["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql]).trim().to_owned()
    }

    /// A handle on an instance restored into `pgdata` on `port` (stopped when dropped).
    pub fn instance(&self, pgdata: &str, port: u16) -> Pg {
        Pg { runner: self.runner.clone(), pg_bin: self.pg_bin.clone(), data: PathBuf::from(pgdata), socket_dir: self.work.clone(), port }
    }
}

/// A Secret object (for the sandbox cluster's `put_object`) holding `key` = `value`, as the
/// writers of a database read its URL.
pub fn secret_object(namespace: &str, name: &str, key: &str, value: &str) -> serde_json::Value {
    use base64::Engine as _;
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": { "namespace": namespace, "name": name },
        "type": "Opaque",
        "data": { key: base64::engine::general_purpose::STANDARD.encode(value) },
    })
}

/// The text of `key` in a Secret object (`data` is base64), if it is there.
pub fn secret_value(secret: &serde_json::Value, key: &str) -> Option<String> {
    use base64::Engine as _;
    let b64 = secret["data"][key].as_str()?;
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64).ok()?).ok()
}
