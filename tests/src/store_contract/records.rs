//! Store contract, append-only records: the hash-chained audit log under concurrent appenders,
//! delivery de-duplication and step output.

use super::{create_sample, t0};
use chrono::TimeDelta;
use runbot_commands::audit::{self, AuditEntry};
use runbot_commands::model::ExecState;
use runbot_commands::ports::Store;
use std::collections::BTreeSet;
use std::sync::Arc;

const ENTRIES: u64 = 50;
const TASKS: u64 = 8;

/// 50 entries from 8 concurrent tasks form one intact chain of consecutive records.
pub async fn audit_chain(store: Arc<dyn Store>) {
    let (before, _) = store.audit_log().await.expect("audit_log");
    let before = before.len() as u64;

    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut appended = Vec::new();
            for i in (0..ENTRIES).filter(|i| i % TASKS == task) {
                let entry = AuditEntry {
                    // Nanoseconds on purpose: what is returned must equal what is read back.
                    at: t0() + TimeDelta::milliseconds(i as i64) + TimeDelta::nanoseconds(789),
                    kind: if i % 2 == 0 { "command".into() } else { "approval".into() },
                    actor: (i % 3 != 0).then(|| format!("console:user{task}")),
                    execution: (i % 5 != 0).then(|| format!("R-{i}")),
                    detail: serde_json::json!({ "i": i, "task": task, "text": "/ops status ✓", "f": 0.5 }),
                };
                let record = store.append_audit(&entry).await.expect("append_audit");
                assert_eq!(record.entry.kind, entry.kind);
                assert_eq!(record.entry.detail, entry.detail);
                appended.push(record);
            }
            appended
        }));
    }
    let mut appended = Vec::new();
    for t in tasks {
        appended.extend(t.await.expect("task"));
    }

    let (records, head) = store.audit_log().await.expect("audit_log");
    let total = before + ENTRIES;
    let head_ref = head.as_ref().map(|(s, h)| (*s, h.as_str()));
    assert_eq!(audit::verify(&records, head_ref), Ok(total), "the chain verifies");
    assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), (1..=total).collect::<Vec<_>>());
    let last = records.last().expect("records");
    assert_eq!(head, Some((last.seq, last.hash.clone())), "the head is the last record");

    for r in &appended {
        let stored = &records[(r.seq - 1) as usize];
        assert_eq!(stored, r, "what append_audit returned is what was stored");
    }
    let seen: BTreeSet<u64> = records[before as usize..].iter().filter_map(|r| r.entry.detail.get("i").and_then(|v| v.as_u64())).collect();
    assert_eq!(seen, (0..ENTRIES).collect::<BTreeSet<_>>(), "every entry is in the log exactly once");

    let mut tampered = records.clone();
    tampered[3].entry.detail = serde_json::json!({ "i": 999 });
    assert!(audit::verify(&tampered, head_ref).is_err(), "the stored chain is really linked");
}

/// A delivery key is first exactly once, also when raced.
pub async fn deliveries(store: Arc<dyn Store>) {
    let now = t0();
    assert!(store.first_delivery("evt-1", now).await.expect("first_delivery"));
    assert!(!store.first_delivery("evt-1", now).await.expect("first_delivery"), "a replay is not first");
    assert!(store.first_delivery("evt-2", now).await.expect("first_delivery"), "keys are independent");
    assert!(!store.first_delivery("evt-1", now + TimeDelta::hours(1)).await.expect("first_delivery"));

    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move { store.first_delivery("evt-race", now).await.expect("first_delivery") }));
    }
    let mut firsts = 0;
    for t in tasks {
        firsts += usize::from(t.await.expect("task"));
    }
    assert_eq!(firsts, 1, "exactly one racer sees the delivery first");
}

/// Output chunks concatenate in append order, per execution and step.
pub async fn step_output(store: Arc<dyn Store>) {
    let a = create_sample(&store, "output-svc", ExecState::Running, None).await;
    let b = create_sample(&store, "output-svc", ExecState::Running, None).await;
    assert_eq!(store.output(a.id, 0).await.expect("output"), "", "no output yet");

    store.append_output(a.id, 0, "hello ").await.expect("append_output");
    store.append_output(a.id, 1, "other step").await.expect("append_output");
    store.append_output(b.id, 0, "other execution").await.expect("append_output");
    store.append_output(a.id, 0, "world\n").await.expect("append_output");
    store.append_output(a.id, 0, "ünïcode ✓ 'quotes' \"and\" $1\n").await.expect("append_output");

    assert_eq!(store.output(a.id, 0).await.expect("output"), "hello world\nünïcode ✓ 'quotes' \"and\" $1\n");
    assert_eq!(store.output(a.id, 1).await.expect("output"), "other step");
    assert_eq!(store.output(b.id, 0).await.expect("output"), "other execution");
    assert_eq!(store.output(a.id, 2).await.expect("output"), "");

    let mut expected = String::new();
    for i in 0..100 {
        let chunk = format!("{i},");
        store.append_output(b.id, 3, &chunk).await.expect("append_output");
        expected.push_str(&chunk);
    }
    assert_eq!(store.output(b.id, 3).await.expect("output"), expected, "many chunks stay in order");
}

/// Artifacts: kept per execution in order; the same name replaces the earlier content.
pub async fn artifacts(store: Arc<dyn Store>) {
    let a = create_sample(&store, "artifact-svc", ExecState::Running, None).await;
    let b = create_sample(&store, "artifact-svc", ExecState::Running, None).await;
    assert!(store.artifacts(a.id).await.expect("artifacts").is_empty());
    store.put_artifact(a.id, "logs-v1.2.6.txt", "===== pod x =====\npanic: 'quoted' ✓\n").await.expect("put");
    store.put_artifact(a.id, "tasks.txt", "t1").await.expect("put");
    store.put_artifact(b.id, "other.txt", "b").await.expect("put");
    store.put_artifact(a.id, "logs-v1.2.6.txt", "replaced").await.expect("put again");
    let got = store.artifacts(a.id).await.expect("artifacts");
    assert_eq!(got, [("tasks.txt".to_string(), "t1".to_string()), ("logs-v1.2.6.txt".to_string(), "replaced".to_string())]);
    assert_eq!(store.artifacts(b.id).await.expect("artifacts"), [("other.txt".to_string(), "b".to_string())]);
}

/// A save and its audit records commit together: both land, or (on a conflict) neither.
pub async fn save_with_audit(store: Arc<dyn Store>) {
    let mut x = create_sample(&store, "audited-svc", ExecState::Running, None).await;
    let (_, v1) = super::must_load(&store, x.id).await;
    let (before, _) = store.audit_log().await.expect("audit_log");
    let entry =
        |n: u64| AuditEntry { at: t0(), kind: "step".into(), actor: None, execution: Some(x.id.to_string()), detail: serde_json::json!({ "n": n }) };

    x.notes.push("audited".into());
    let v2 = store.save_audited(&x, v1, &[entry(1), entry(2)]).await.expect("save_audited");
    assert!(v2 > v1);
    let (loaded, _) = super::must_load(&store, x.id).await;
    assert_eq!(loaded.notes.last().map(String::as_str), Some("audited"));
    let (after, head) = store.audit_log().await.expect("audit_log");
    assert_eq!(after.len(), before.len() + 2, "both records were appended");
    let head_ref = head.as_ref().map(|(s, h)| (*s, h.as_str()));
    assert_eq!(audit::verify(&after, head_ref), Ok(after.len() as u64), "and chained");
    let ns: Vec<u64> = after[before.len()..].iter().filter_map(|r| r.entry.detail["n"].as_u64()).collect();
    assert_eq!(ns, [1, 2], "in order");

    // A stale version: the save is refused and no record is written.
    let res = store.save_audited(&x, v1, &[entry(3)]).await;
    assert_eq!(res, Err(runbot_commands::ports::StoreError::Conflict(x.id)));
    let (again, _) = store.audit_log().await.expect("audit_log");
    assert_eq!(again.len(), after.len(), "a refused save writes no audit record");
}
