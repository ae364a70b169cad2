//! Point-in-time recovery, end to end, on a real PostgreSQL 15 (the sandbox's `PitrWorld`:
//! a primary archiving with barman-cloud to the sandbox S3 server, a base backup, batches of
//! rows, the time T, more rows and a mistake after T): `deploy/scripts/db-restore.sh --date T`
//! restores into a new data directory on another port, and the restored database must hold
//! exactly the rows of T. The backup catalog (`BarmanS3Catalog`) reads the very same bucket.
//! Then: `--check` finds the PostgreSQL binaries without `--pg-bin` and changes nothing, an
//! old barman-cloud is refused with what to install, `--date latest` restores the end of the
//! archive, a date before the first backup is refused, bad input is refused, and once a WAL
//! segment needed for T is deleted the catalog reports the gap and the restore fails loudly.

use std::process::Output;
use std::time::Instant;

use runbot_adapters::backup::{BarmanS3Catalog, S3Config};
use runbot_commands::ports::backup::{BackupCatalog, CatalogAnalysis, Unreachable};
use runbot_sandbox::pitr::{BUCKET, PitrWorld, SERVER, SOURCE, free_port};
use runbot_sandbox::s3;

fn s3_config(server: &s3::S3Server) -> S3Config {
    S3Config::new(Some(server.url()), s3::REGION, s3::ACCESS_KEY, s3::SECRET_KEY)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn point_in_time_restore_with_barman_cloud_and_db_restore_sh() {
    let started = Instant::now();
    let world = PitrWorld::start();
    let (t_backup, t_archive) = world.took;
    let (server, runner, script, target, backup_start, segment_a) =
        (&world.s3, &world.runner, &world.script, world.target.clone(), world.backup_start.clone(), world.segment_a.clone());
    let w = |p: &str| world.path(p);

    // ------------------------------------------------------------ the catalog, on the real output
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let catalog = BarmanS3Catalog::new(&s3_config(server), SOURCE, SERVER).expect("catalog");
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
    let restore_port = free_port();
    let restore_args = |date: &str, pgdata: &str| world.restore_args(date, pgdata, restore_port);
    let args = restore_args(&target, &w("restore"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let restored = world.instance(&w("restore"), restore_port);
    let out = runner.run(script, &args);
    assert!(out.status.success(), "db-restore.sh failed ({}):\n{}", out.status, stderr(&out));
    let t_restore = started.elapsed();
    let log = stderr(&out);
    assert!(log.contains(&format!("using base backup {}", b.id)), "{log}");
    assert!(log.contains("recovery reached the target"), "{log}");
    // Exactly the rows of T: seed + A + B, the deleted batch is back, the dropped table too.
    assert_eq!(restored.psql("select pg_is_in_recovery()"), "f");
    assert_eq!(restored.psql("select count(*) from items"), "600");
    assert_eq!(
        restored.psql("select string_agg(batch || ':' || n, ',' order by batch) from (select batch, count(*) n from items group by batch) s"),
        "a:200,b:300,seed:100"
    );
    assert_eq!(restored.psql("select count(*) from orders"), "50");
    assert_eq!(restored.psql("show archive_mode"), "off");
    restored.psql("insert into items values (5000, 'after-restore')"); // promoted: writable
    restored.stop();
    // The restored copy did not archive its new timeline into the catalog.
    let snap = rt.block_on(catalog.snapshot()).unwrap();
    assert!(snap.histories.is_empty() && snap.wal_runs.iter().all(|r| r.timeline == 1), "{snap:#?}");

    // ------------------------------------------------------------ --check, binaries found, barman's version
    // A directory holding only pg_ctl and postgres (no psql), first on PATH, as some images'
    // /usr/local/bin has: without --pg-bin the script looks further (pg_config --bindir, the
    // Debian layout) instead of failing there.
    let links = world.work.join("links");
    std::fs::create_dir(&links).unwrap();
    for t in ["pg_ctl", "postgres"] {
        std::os::unix::fs::symlink(world.pg_bin.join(t), links.join(t)).unwrap();
    }
    let without_pg_bin = |date: &str, pgdata: &str| {
        let mut a = restore_args(date, pgdata);
        let at = a.iter().position(|x| x == "--pg-bin").expect("--pg-bin");
        a.drain(at..at + 2);
        a
    };
    let run_with_path = |path: &str, args: &[String]| {
        let mut c = runner.command(script);
        c.args(args).env("PATH", path);
        c.output().expect("run db-restore.sh")
    };
    let mut args = without_pg_bin(&target, &w("restore-check"));
    args.push("--check".into());
    let out = run_with_path(&format!("{}:{}", links.display(), runner.path), &args);
    let err = stderr(&out);
    assert!(out.status.success(), "--check without --pg-bin, a psql-less pg_ctl first on PATH:\n{err}");
    assert!(err.contains("check passed") && err.contains("PostgreSQL 15 binaries: ") && !err.contains(links.to_str().unwrap()), "{err}");
    assert!(err.contains("nothing was changed") && !world.work.join("restore-check").exists(), "{err}");
    // Debian 12's barman-cli-cloud is 3.4: refused, with what to install instead.
    let old = world.work.join("old-barman");
    std::fs::create_dir(&old).unwrap();
    for t in ["barman-cloud-backup-list", "barman-cloud-restore", "barman-cloud-wal-restore"] {
        std::fs::write(old.join(t), format!("#!/bin/sh\necho '{t} 3.4.0'\n")).unwrap();
        std::fs::set_permissions(old.join(t), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let out = run_with_path(&format!("{}:{}", old.display(), runner.path), &args);
    let err = stderr(&out);
    assert!(!out.status.success() && err.contains("barman-cloud 3.4.0") && err.contains("pip install 'barman[cloud]>=3.6'"), "{err}");

    // ------------------------------------------------------------ --date latest: the end of the archive
    let latest_port = free_port();
    let latest_args = world.restore_args("latest", &w("restore-latest"), latest_port);
    let latest = world.instance(&w("restore-latest"), latest_port);
    let out = runner.run(script, &latest_args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "--date latest:\n{}", stderr(&out));
    assert_eq!(latest.psql("select count(*) from items"), "800", "every archived change replayed, the mistake included");
    assert_eq!(latest.psql("select to_regclass('orders') is null"), "t");
    latest.stop();

    // A rehearsal of latest: the counts at the end of the archive on stdout, and the point it
    // reached; the scratch copy is gone afterwards.
    let mut args = world.restore_args("latest", &w("rehearse-latest"), free_port());
    args.extend(["--rehearse", "--count", "items", "--count", "orders"].map(String::from));
    let out = runner.run(script, &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "rehearsal of latest:\n{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(stdout.contains("rows items 800\nrows orders missing\nreached 20"), "{stdout}");
    assert!(!world.work.join("rehearse-latest").exists(), "the scratch copy is removed");

    // ------------------------------------------------------------ refusals
    let out = runner.run(script, &restore_args(&backup_start, &w("restore-early")).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!out.status.success());
    assert!(stderr(&out).contains("is before the end of the first base backup"), "{}", stderr(&out));
    assert!(!world.work.join("restore-early").exists(), "nothing restored when refused");

    let out = runner.run(script, &restore_args("2026-13-01T00:00:00Z", &w("restore-bad")).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!out.status.success() && stderr(&out).contains("is not a valid date"), "{}", stderr(&out));
    let out = runner.run(script, &restore_args("yesterday", &w("restore-bad")).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!out.status.success() && stderr(&out).contains("not an RFC 3339 time"), "{}", stderr(&out));
    let out = runner.run(script, &restore_args(&target, &w("restore")).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!out.status.success() && stderr(&out).contains("is not empty"), "{}", stderr(&out));

    // ------------------------------------------------------------ a WAL segment needed for T is lost
    let key = format!("cluster/{SERVER}/wals/{}/{segment_a}.gz", &segment_a[..16]);
    let client = s3_config(server).client().unwrap();
    rt.block_on(client.head_object().bucket(BUCKET).key(&key).send()).unwrap_or_else(|e| panic!("{key} should exist: {e:?}"));
    rt.block_on(client.delete_object().bucket(BUCKET).key(&key).send()).unwrap();
    let analysis = rt.block_on(catalog.snapshot()).unwrap().analyze();
    assert_eq!(analysis.gaps.len(), 1, "{:?}", analysis.gaps);
    assert_eq!(analysis.gaps[0].first_name, segment_a);
    let e = analysis.restore_point(t_target).unwrap_err();
    assert!(matches!(e, Unreachable::InGap { .. }), "{e:?}");
    assert!(e.to_string().contains(&segment_a), "{e}");

    let out = runner.run(script, &restore_args(&target, &w("restore-gap")).iter().map(String::as_str).collect::<Vec<_>>());
    let _gap_pg = world.instance(&w("restore-gap"), 0);
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
