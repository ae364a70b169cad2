//! Store contract, the chat inbox: a received command is recorded once with its audit record,
//! consumed by at most one execution, and taken over when its owner is gone.

use super::{sample, secs, t0};
use chrono::{DateTime, Utc};
use runbot_commands::audit::AuditEntry;
use runbot_commands::model::ExecState;
use runbot_commands::ports::{Inbound, InboxClaim, Store, StoreError};
use serde_json::json;
use std::sync::Arc;

fn item(key: &str, owner: &str, lease: i64) -> Inbound {
    Inbound {
        key: key.into(),
        platform: "slack".into(),
        received_at: t0(),
        owner: owner.into(),
        lease_until: t0() + secs(lease),
        payload: json!({"work": {"text": format!("/ops run probe {key}")}}),
        done: false,
    }
}

fn claim(owner: &str, own: bool, until: DateTime<Utc>, now: DateTime<Utc>, forget_before: DateTime<Utc>) -> InboxClaim {
    InboxClaim { owner: owner.into(), own, until, now, forget_before }
}

fn entry(key: &str) -> AuditEntry {
    AuditEntry { at: t0(), kind: "slack.command".into(), actor: Some("slack:U1".into()), execution: None, detail: json!({"inbox": key}) }
}

async fn audit_count(store: &Arc<dyn Store>, key: &str) -> usize {
    store.audit_log().await.expect("audit_log").0.iter().filter(|r| r.entry.detail["inbox"] == key).count()
}

/// A key is recorded once, with one audit record, also when the same delivery races itself.
pub async fn inbound_recorded_once(store: Arc<dyn Store>) {
    assert!(store.record_inbound(item("in-1", "a", 30), entry("in-1")).await.expect("record"));
    assert!(!store.record_inbound(item("in-1", "a", 30), entry("in-1")).await.expect("record"), "a repeat is not recorded");
    assert_eq!(audit_count(&store, "in-1").await, 1, "a repeat leaves no second audit record");
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move { store.record_inbound(item("in-race", "a", 30), entry("in-race")).await.expect("record") }));
    }
    let mut new = 0;
    for t in tasks {
        new += usize::from(t.await.expect("task"));
    }
    assert_eq!(new, 1, "exactly one racer records the command");
    assert_eq!(audit_count(&store, "in-race").await, 1);
    let (records, head) = store.audit_log().await.expect("audit_log");
    runbot_commands::audit::verify(&records, head.as_ref().map(|(s, h)| (*s, h.as_str()))).expect("the chain stays intact");
}

/// An execution created from a received command consumes it; a second execution from the same
/// command is refused and leaves nothing behind (no execution, no lock, no audit record).
pub async fn inbound_consumed_by_one_execution(store: Arc<dyn Store>) {
    store.record_inbound(item("in-create", "a", 30), entry("in-create")).await.expect("record");
    let first = store.next_id().await.expect("id");
    let mut exec = sample(first, "inbox-svc", ExecState::Running);
    exec.inbox = Some("in-create".into());
    store.create_audited(&exec, Some("inbox-svc/prod"), &[entry("in-create")]).await.expect("the first creation consumes it");
    assert_eq!(store.load(first).await.expect("load").expect("stored").value.inbox.as_deref(), Some("in-create"));
    // The first execution finishes: its lock is free, so only the consumed inbox entry refuses.
    let (mut done, version) = super::must_load(&store, first).await;
    done.state = ExecState::Succeeded;
    store.save(&done, version).await.expect("save");
    let second = store.next_id().await.expect("id");
    let mut again = sample(second, "inbox-svc", ExecState::Running);
    again.inbox = Some("in-create".into());
    let before = audit_count(&store, "in-create").await;
    match store.create_audited(&again, Some("inbox-svc/prod"), &[entry("in-create")]).await {
        Err(StoreError::AlreadyProcessed(k)) => assert_eq!(k, "in-create"),
        other => panic!("a consumed command must not create again, got {other:?}"),
    }
    assert!(store.load(second).await.expect("load").is_none(), "nothing stored");
    assert_eq!(audit_count(&store, "in-create").await, before, "no audit record from the refused creation");
    let third = store.next_id().await.expect("id");
    store.create(&sample(third, "inbox-svc", ExecState::Running), Some("inbox-svc/prod")).await.expect("the lock was not taken by the refusal");
    // Nothing left to take over: the consumed entry is done.
    let claimed = store.claim_inbound(&claim("b", true, t0() + secs(600), t0() + secs(300), t0() - secs(1))).await.expect("claim");
    assert!(claimed.iter().all(|i| i.key != "in-create"), "a consumed command is not taken over");
}

/// Unprocessed entries: a restarted owner takes its own at once, another process only once the
/// lease ran out; done entries are never taken, and old done ones are forgotten.
pub async fn inbound_taken_over(store: Arc<dyn Store>) {
    store.record_inbound(item("in-own", "proc-a", 30), entry("in-own")).await.expect("record");
    store.record_inbound(item("in-other", "proc-b", 30), entry("in-other")).await.expect("record");
    store.record_inbound(item("in-done", "proc-a", 30), entry("in-done")).await.expect("record");
    store.inbound_done(&["in-done".to_string(), "unknown-key".to_string()]).await.expect("done");
    // Answered when received (help, a typo): recorded processed, in the same single write.
    let answered = Inbound { done: true, ..item("in-answered", "proc-a", 0) };
    assert!(store.record_inbound(answered.clone(), entry("in-answered")).await.expect("record"));
    assert!(!store.record_inbound(answered.clone(), entry("in-answered")).await.expect("record"), "a repeat of an answered command is a repeat");
    assert_eq!(audit_count(&store, "in-answered").await, 1, "an answered command has its audit record");
    let keys =
        |v: Vec<Inbound>| v.into_iter().map(|i| i.key).filter(|k| k.starts_with("in-o") || k == "in-done" || k == "in-answered").collect::<Vec<_>>();
    // Within the lease: proc-a restarted takes only its own; proc-c nothing.
    let now = t0() + secs(5);
    assert_eq!(keys(store.claim_inbound(&claim("proc-c", false, now + secs(30), now, t0() - secs(1))).await.expect("claim")), Vec::<String>::new());
    let own = store.claim_inbound(&claim("proc-a", true, now + secs(30), now, t0() - secs(1))).await.expect("claim");
    assert_eq!(keys(own.clone()), vec!["in-own".to_string()]);
    assert_eq!(own[0].owner, "proc-a");
    assert_eq!(own[0].payload, item("in-own", "", 0).payload, "the payload comes back as recorded");
    // Past proc-b's lease anyone may take it; the new lease then protects it from a third.
    let later = t0() + secs(31);
    let taken = store.claim_inbound(&claim("proc-c", false, later + secs(30), later, t0() - secs(1))).await.expect("claim");
    assert_eq!(keys(taken), vec!["in-other".to_string()]);
    assert_eq!(
        keys(store.claim_inbound(&claim("proc-d", false, later + secs(30), later, t0() - secs(1))).await.expect("claim")),
        Vec::<String>::new()
    );
    // Forgetting done entries received before a time makes their key recordable again.
    store.claim_inbound(&claim("proc-c", false, later, later, t0() + secs(1))).await.expect("forget");
    assert!(store.record_inbound(item("in-done", "proc-a", 30), entry("in-done")).await.expect("record"), "forgotten");
    assert!(store.record_inbound(answered.clone(), entry("in-answered")).await.expect("record"), "an answered one is forgotten alike");
    assert!(!store.record_inbound(item("in-own", "proc-a", 30), entry("in-own")).await.expect("record"), "unprocessed ones are kept");
}
