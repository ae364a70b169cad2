use super::*;
use chrono::TimeZone;

const SEG: u64 = DEFAULT_WAL_SEGMENT_SIZE;

fn t(s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 18, 0, 0).unwrap() + chrono::Duration::seconds(s as i64)
}

fn w(tli: u32, segno: u64) -> WalName {
    WalName { timeline: tli, segno }
}

fn backup(id: &str, tli: u32, begin: u64, end: u64, end_time: u32) -> BaseBackup {
    BaseBackup {
        id: id.into(),
        status: "DONE".into(),
        begin_time: Some(t(end_time - 1)),
        end_time: Some(t(end_time)),
        timeline: tli,
        begin_wal: Some(w(tli, begin)),
        end_wal: Some(w(tli, end)),
        stored_bytes: None,
    }
}

/// Segment n of timeline tli is uploaded at second 100*tli + 10*n.
fn snapshot(backups: Vec<BaseBackup>, segs: &[(u32, u64)], histories: Vec<TimelineHistory>) -> CatalogSnapshot {
    let mut b = WalRunsBuilder::new();
    for &(tli, n) in segs {
        b.add(w(tli, n), t(100 * tli + 10 * n as u32));
    }
    let wal_segments = b.segments();
    CatalogSnapshot { location: "test".into(), wal_segment_size: SEG, backups, wal_runs: b.finish(), wal_segments, histories, newest_wal: None }
}

#[test]
fn wal_names_round_trip_with_the_segment_size() {
    let n = WalName::parse("000000010000000100000002", SEG).unwrap();
    assert_eq!(n, w(1, 258));
    assert_eq!(n.file_name(SEG), "000000010000000100000002");
    let big = 64 * 1024 * 1024;
    assert_eq!(WalName::parse("000000030000000200000005.gz", big).unwrap(), w(3, 2 * 64 + 5));
    assert_eq!(w(3, 133).file_name(big), "000000030000000200000005");
    assert!(WalName::parse("00000001000000000000010", SEG).is_none(), "23 chars");
    assert!(WalName::parse("00000001000000000000010G", SEG).is_none());
    assert!(WalName::parse("000000010000000000000100", SEG).is_none(), "seg 0x100 > 255 at 16 MiB");
    assert!(WalName::parse("000000010000000000000001", 1000).is_none(), "not a power of two");
    assert_eq!(parse_lsn("0/5022A88"), Some(0x5022A88));
    assert_eq!(parse_lsn("1/0"), Some(1 << 32));
    assert_eq!(parse_lsn("x/0"), None);
}

#[test]
fn runs_merge_in_any_order_and_count_each_segment_once() {
    let mut b = WalRunsBuilder::new();
    for n in [5, 3, 4, 9, 1, 2, 4, 10] {
        b.add(w(1, n), t(n as u32));
    }
    b.add(w(2, 4), t(50));
    assert_eq!(b.segments(), 8);
    let runs = b.finish();
    assert_eq!(
        runs,
        vec![
            WalRun { timeline: 1, first: 1, last: 5, newest_upload: t(5) },
            WalRun { timeline: 1, first: 9, last: 10, newest_upload: t(10) },
            WalRun { timeline: 2, first: 4, last: 4, newest_upload: t(50) },
        ]
    );
}

#[test]
fn history_files_parse_and_bad_lines_are_named() {
    let h = TimelineHistory::parse(3, "1\t0/5022A88\tbefore 2026-11-27 18:18:41.96802+00\n\n2\t0/7000000\tno recovery target specified\n").unwrap();
    assert_eq!(h.switches.len(), 2);
    assert_eq!(h.switches[0], TimelineSwitch { parent: 1, switch_lsn: 0x5022A88, reason: "before 2026-11-27 18:18:41.96802+00".into() });
    let err = TimelineHistory::parse(2, "1\tzz\tx\n").unwrap_err();
    assert!(err.contains("line 1") && err.contains("LSN"), "{err}");
}

#[test]
fn contiguous_archive_gives_one_window_and_checks_targets() {
    let s = snapshot(vec![backup("b1", 1, 2, 2, 25), backup("b2", 1, 6, 6, 65)], &(1..=10).map(|n| (1, n)).collect::<Vec<_>>(), vec![]);
    let a = s.analyze();
    assert_eq!(a.timeline_path, vec![(1, 0)]);
    assert!(a.gaps.is_empty(), "{:?}", a.gaps);
    assert_eq!(a.window, vec![RecoverableRange { from: t(25), to: t(200) }]);
    assert_eq!(a.earliest(), Some(t(25)));
    assert_eq!(a.latest(), Some(t(200)));
    assert_eq!(a.newest_backup.as_ref().map(|b| b.id.as_str()), Some("b2"));

    // The newest backup that ended before the target.
    assert_eq!(a.restore_point(t(50)).unwrap().backup_id, "b1");
    assert_eq!(a.restore_point(t(66)).unwrap().backup_id, "b2");
    assert_eq!(a.restore_point(t(65)).unwrap().backup_id, "b1", "end must be strictly before the target");
    let e = a.restore_point(t(20)).unwrap_err();
    assert_eq!(e, Unreachable::BeforeFirstBackup { target: t(20), earliest: t(25) });
    assert!(e.to_string().contains("earliest restorable time is 2026-11-27 18:00:25.000 UTC"), "{e}");
    assert!(matches!(a.restore_point(t(201)), Err(Unreachable::AfterLatest { .. })));
}

#[test]
fn a_missing_segment_splits_the_window_and_is_reported() {
    let segs: Vec<(u32, u64)> = [2, 3, 4, 6, 7, 8, 9].iter().map(|n| (1, *n)).collect();
    let s = snapshot(vec![backup("b1", 1, 2, 2, 25), backup("b2", 1, 7, 7, 75)], &segs, vec![]);
    let a = s.analyze();
    assert_eq!(a.gaps.len(), 1);
    assert_eq!(a.gaps[0].first_name, "000000010000000000000005");
    assert_eq!(a.gaps[0].last_name, "000000010000000000000005");
    // b1 covers [25, 140], b2 [75, 190]: one merged range.
    assert_eq!(a.window, vec![RecoverableRange { from: t(25), to: t(190) }]);
    // b1 reaches only segment 4 (uploaded at 140): targets up to there are fine.
    assert_eq!(a.restore_point(t(70)).unwrap().backup_id, "b1", "b2 ends at 75");
    assert_eq!(a.restore_point(t(150)).unwrap().backup_id, "b2");

    // A backup that ends behind the gap is not usable at all.
    let s = snapshot(vec![backup("b1", 1, 2, 2, 25), backup("bx", 1, 4, 6, 60)], &segs, vec![]);
    let a = s.analyze();
    let bx = a.reaches.iter().find(|r| r.backup_id == "bx").unwrap();
    assert!(!bx.usable);
    assert!(bx.problem.as_deref().unwrap().contains("000000010000000000000006"), "{bx:?}");
    // Past the reach of every usable backup, but the archive goes on after the hole.
    let e = a.restore_point(t(180)).unwrap_err();
    assert!(
        matches!(&e, Unreachable::InGap { reach_before, resumes: None, gap: Some(g), .. }
        if *reach_before == t(140) && g.first_name == "000000010000000000000005"),
        "{e:?}"
    );

    // A target between the ranges is in the gap.
    let mut s = snapshot(vec![backup("b1", 1, 2, 2, 25), backup("b2", 1, 7, 7, 175)], &segs, vec![]);
    s.location = "x".into();
    let a = s.analyze();
    assert_eq!(a.window, vec![RecoverableRange { from: t(25), to: t(140) }, RecoverableRange { from: t(175), to: t(190) }]);
    let e = a.restore_point(t(150)).unwrap_err();
    match &e {
        Unreachable::InGap { gap, resumes, reach_before, .. } => {
            assert_eq!(gap.as_ref().unwrap().first_name, "000000010000000000000005");
            assert_eq!(*resumes, Some(t(175)));
            assert_eq!(*reach_before, t(140));
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("missing 000000010000000000000005"), "{e}");
}

#[test]
fn recovery_follows_the_newest_timeline_from_its_branch_segment() {
    // TLI 2 branched at 0/5022A88 (segment 5): segment 5 and up come from timeline 2.
    let hist = TimelineHistory::parse(2, "1\t0/5022A88\tbefore 2026-11-27 18:18:41.96802+00\n").unwrap();
    let mut segs: Vec<(u32, u64)> = (2..=5).map(|n| (1, n)).collect();
    segs.extend((5..=8).map(|n| (2, n)));
    let s = snapshot(vec![backup("b1", 1, 2, 2, 25)], &segs, vec![hist.clone()]);
    let a = s.analyze();
    assert_eq!(a.timeline_path, vec![(1, 0), (2, 5)]);
    assert!(a.gaps.is_empty(), "{:?}", a.gaps);
    assert_eq!(a.reaches[0].reached, Some(w(2, 8)));
    assert_eq!(a.latest(), Some(t(280)));

    // Timeline 1's copy of the branch segment does not stand in for timeline 2's.
    let mut segs: Vec<(u32, u64)> = (2..=6).map(|n| (1, n)).collect();
    segs.extend((6..=8).map(|n| (2, n)));
    let s = snapshot(vec![backup("b1", 1, 2, 2, 25)], &segs, vec![hist.clone()]);
    let a = s.analyze();
    assert_eq!(a.gaps.len(), 1, "{:?}", a.gaps);
    assert_eq!(a.gaps[0].first_name, "000000020000000000000005");
    assert_eq!(a.reaches[0].reached, Some(w(1, 4)));

    // A backup taken on timeline 2 after the switch works from there.
    let s = snapshot(vec![backup("b2", 2, 7, 7, 275)], &(5..=9).map(|n| (2, n)).collect::<Vec<_>>(), vec![hist]);
    let a = s.analyze();
    assert!(a.reaches[0].usable);
    assert_eq!(a.window, vec![RecoverableRange { from: t(275), to: t(290) }]);

    // A backup on a timeline that is not an ancestor of the newest one is not usable.
    let hist3 = TimelineHistory::parse(3, "1\t0/5000000\tx\n").unwrap();
    let mut segs: Vec<(u32, u64)> = (2..=8).map(|n| (1, n)).collect();
    segs.extend((5..=9).map(|n| (3, n)));
    segs.push((2, 7));
    let s = snapshot(vec![backup("on2", 2, 7, 7, 270), backup("b1", 1, 2, 2, 25)], &segs, vec![hist3]);
    let a = s.analyze();
    let on2 = a.reaches.iter().find(|r| r.backup_id == "on2").unwrap();
    assert!(!on2.usable && on2.problem.as_deref().unwrap().contains("not an ancestor"), "{on2:?}");
    assert_eq!(a.restore_point(t(300)).unwrap().backup_id, "b1");
}

#[test]
fn no_backup_means_nothing_is_restorable() {
    let s = snapshot(vec![], &[(1, 1), (1, 2)], vec![]);
    let a = s.analyze();
    assert!(a.window.is_empty() && a.gaps.is_empty());
    assert_eq!(a.restore_point(t(10)), Err(Unreachable::NoBackup));
    let mut failed = backup("f", 1, 1, 1, 5);
    failed.status = "FAILED".into();
    let a = snapshot(vec![failed], &[(1, 1), (1, 2)], vec![]).analyze();
    assert_eq!(a.restore_point(t(10)), Err(Unreachable::NoBackup));
}

#[test]
fn prune_keeps_the_backup_the_window_start_needs_and_its_wal() {
    let mut failed = backup("failed-old", 1, 1, 1, 5);
    failed.status = "FAILED".into();
    let snap = snapshot(
        vec![failed, backup("b1", 1, 2, 2, 10), backup("b2", 1, 5, 5, 20), backup("b3", 1, 8, 8, 40)],
        &(2..=10).map(|n| (1, n)).collect::<Vec<_>>(),
        vec![],
    );
    // Window starts at t(30): b2 (ended t(20)) is the newest before it and stays.
    let plan = snap.prune_plan(t(130), chrono::Duration::seconds(100));
    assert_eq!(plan.backups, ["b1", "failed-old"]);
    assert_eq!(plan.wal_before, Some(w(1, 5)));
    assert_eq!(plan.keeps.as_deref(), Some("b2"));
    // Nothing older than the window: nothing to delete.
    let plan = snap.prune_plan(t(110), chrono::Duration::seconds(100));
    assert!(plan.is_empty(), "{plan:?}");
    assert_eq!(plan.keeps.as_deref(), Some("b1"));
}
