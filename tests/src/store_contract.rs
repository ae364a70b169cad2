//! The `Store` contract: one suite every store backend (memory, SQLite, PostgreSQL) must pass,
//! so the engine can rely on identical semantics whichever store it is given.
//!
//! [`run_all`] expects a fresh, empty store. The per-concern functions can run on a store
//! other concerns have used: each uses its own target names and only asserts about the
//! executions it created.

mod alerts;
mod executions;
mod inbox;
mod leases;
mod records;

pub use alerts::alerts;
pub use executions::{concurrent_creates, create_load_roundtrip, ids, list_filters, locks, optimistic_save};
pub use inbox::{inbound_consumed_by_one_execution, inbound_recorded_once, inbound_taken_over};
pub use leases::{claims, edits, fencing, orphans, quotas, roles, slots};
pub use records::{audit_chain, deliveries, save_with_audit, step_output};

use chrono::{DateTime, TimeDelta, Utc};
use runbot_commands::model::{
    Approval, ArtifactRef, Decision, ExecState, Execution, ExecutionId, FollowUp, Identity, MessageRef, Origin, PolicySnapshot, StepProcess,
    StepRecord, StepStatus, Target,
};
use runbot_commands::ports::Store;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Runs every concern against `store`, which must be fresh.
pub async fn run_all(store: Arc<dyn Store>) {
    store.ping().await.expect("ping on a fresh store");
    let (records, head) = store.audit_log().await.expect("audit_log on a fresh store");
    assert!(records.is_empty() && head.is_none(), "a fresh store has an empty audit log and no head");

    ids(store.clone()).await;
    create_load_roundtrip(store.clone()).await;
    locks(store.clone()).await;
    optimistic_save(store.clone()).await;
    concurrent_creates(store.clone()).await;
    list_filters(store.clone()).await;
    claims(store.clone()).await;
    orphans(store.clone()).await;
    fencing(store.clone()).await;
    edits(store.clone()).await;
    roles(store.clone()).await;
    quotas(store.clone()).await;
    slots(store.clone()).await;
    audit_chain(store.clone()).await;
    deliveries(store.clone()).await;
    step_output(store.clone()).await;
    records::artifacts(store.clone()).await;
    save_with_audit(store.clone()).await;
    inbound_recorded_once(store.clone()).await;
    inbound_consumed_by_one_execution(store.clone()).await;
    inbound_taken_over(store.clone()).await;
    alerts(store.clone()).await;
    store.ping().await.expect("ping after the suite");
}

/// A fixed instant with nanoseconds, so round-trips must preserve full precision in documents.
pub fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000, 123_456_789).expect("a valid timestamp")
}

pub fn secs(n: i64) -> TimeDelta {
    TimeDelta::seconds(n)
}

/// A complete execution document with every field populated.
pub fn sample(id: ExecutionId, target: &str, state: ExecState) -> Execution {
    let at = t0();
    let mut vars = BTreeMap::new();
    vars.insert("version".to_string(), "1.4.2".to_string());
    vars.insert("env".to_string(), "prod".to_string());
    Execution {
        resolved: Vec::new(),
        id,
        runbook: "deploy".into(),
        command: format!("/ops deploy {target} 1.4.2 --env prod"),
        vars,
        target: Target { kind: "service".into(), name: target.into(), env: "prod".into() },
        mutating: true,
        requester: Identity::new("console:alice"),
        requester_person: "alice".into(),
        origin: Origin { platform: "console".into(), channel: "ops".into(), thread: Some("t-1".into()) },
        incident_channel: "ops".into(),
        state,
        steps: vec![
            StepRecord {
                name: "check".into(),
                kind: "http_check".into(),
                idempotent: true,
                action: "GET https://example.invalid/health".into(),
                params: serde_json::json!({ "url": "https://example.invalid/health", "expect": 200 }),
                status: StepStatus::Succeeded,
                attempts: 1,
                started_at: Some(at),
                finished_at: Some(at + secs(2)),
                summary: Some("200 OK in 41 ms — ✓".into()),
                process: Some(StepProcess { host: "runbot-0".into(), pid: 4242, start_ticks: 1_234_567 }),
            },
            StepRecord {
                name: "deploy".into(),
                kind: "shell".into(),
                idempotent: false,
                action: "deploy.sh 1.4.2".into(),
                params: serde_json::json!({ "argv": ["deploy.sh", "1.4.2"], "ratio": 0.25 }),
                status: StepStatus::Pending,
                attempts: 0,
                started_at: None,
                finished_at: None,
                summary: None,
                process: None,
            },
        ],
        current: 1,
        policy: Some(PolicySnapshot { groups: vec!["sre".into()], required: 1, self_approval: false, expiry_secs: 900 }),
        approvals: vec![Approval {
            person: "bob".into(),
            identity: Identity::new("slack:U024BE7LH"),
            decision: Decision::Approve,
            at: at + secs(1),
            fingerprint: "fp-1".into(),
        }],
        fingerprint: "fp-1".into(),
        expires_at: Some(at + secs(900)),
        messages: vec![MessageRef { platform: "console".into(), channel: "ops".into(), id: format!("m-{}", id.0), final_sent: false }],
        notes: vec!["planned".into()],
        artifacts: vec![ArtifactRef { name: "logs-v1.2.6.txt".into(), bytes: 42 }],
        follow_up: Some(FollowUp {
            label: "Rollback".into(),
            runbook: "rollback".into(),
            after_step: 1,
            unless_step: None,
            carry: None,
            spent: None,
        }),
        inbox: None,
        rollback: None,
        cancel_requested: None,
        created_at: at,
        updated_at: at,
        finished_at: None,
    }
}

/// Allocates an id and stores a sample execution for it.
pub async fn create_sample(store: &Arc<dyn Store>, target: &str, state: ExecState, lock_key: Option<&str>) -> Execution {
    let id = store.next_id().await.expect("next_id");
    let exec = sample(id, target, state);
    store.create(&exec, lock_key).await.expect("create");
    exec
}

/// Loads an execution that must exist.
pub async fn must_load(store: &Arc<dyn Store>, id: ExecutionId) -> (Execution, i64) {
    let v = store.load(id).await.expect("load").unwrap_or_else(|| panic!("{id} should exist"));
    (v.value, v.version)
}
