//! Store contract, leases: claiming and renewing executions, and what a (re)started process
//! finds to pick up.

use super::{create_sample, must_load, secs, t0};
use runbot_commands::model::{ExecState, ExecutionId};
use runbot_commands::ports::{Store, StoreError};
use std::sync::Arc;

/// Another owner is refused until the lease expires; the holder renews; leases are not versions.
pub async fn claims(store: Arc<dyn Store>) {
    let t = t0();
    let e = create_sample(&store, "claim-svc", ExecState::Running, None).await;
    let (_, version) = must_load(&store, e.id).await;
    let claim = |owner: &'static str, until: i64, now: i64| {
        let store = store.clone();
        async move { store.claim(e.id, owner, t + secs(until), t + secs(now)).await.expect("claim") }
    };

    assert!(claim("a", 30, 0).await, "a free lease is taken");
    assert!(!claim("b", 40, 10).await, "another owner is refused while the lease runs");
    assert!(claim("a", 60, 20).await, "the holder renews");
    assert!(!claim("b", 90, 45).await, "the renewal moved the expiry (30 s would have passed)");
    assert!(!claim("b", 90, 59).await, "still refused just before expiry");
    assert!(claim("b", 120, 61).await, "an expired lease is taken over");
    assert!(!claim("a", 150, 62).await, "the old holder lost it");
    assert!(claim("b", 180, 100).await, "the new holder renews");

    let (_, after) = must_load(&store, e.id).await;
    assert_eq!(after, version, "claiming does not change the document version");

    let ghost = store.next_id().await.expect("next_id");
    assert_eq!(store.claim(ghost, "a", t + secs(30), t).await, Err(StoreError::NotFound(ghost)));
}

/// Non-terminal executions with a free, expired or own lease, plus terminal ones whose final
/// message is pending; in id order.
pub async fn orphans(store: Arc<dyn Store>) {
    let t = t0() + secs(10_000);
    let free = create_sample(&store, "orphan-svc", ExecState::Running, None).await;
    let other = create_sample(&store, "orphan-svc", ExecState::Running, None).await;
    let own = create_sample(&store, "orphan-svc", ExecState::AwaitingApproval, None).await;
    let expired = create_sample(&store, "orphan-svc", ExecState::Running, None).await;
    let pending = create_sample(&store, "orphan-svc", ExecState::Succeeded, None).await;
    let mut delivered = super::sample(store.next_id().await.expect("next_id"), "orphan-svc", ExecState::Failed);
    delivered.messages.iter_mut().for_each(|m| m.final_sent = true);
    store.create(&delivered, None).await.expect("create");
    let mut silent = super::sample(store.next_id().await.expect("next_id"), "orphan-svc", ExecState::Rejected);
    silent.messages.clear();
    store.create(&silent, None).await.expect("create");

    assert!(store.claim(other.id, "p2", t + secs(60), t).await.expect("claim"));
    assert!(store.claim(own.id, "p1", t + secs(60), t).await.expect("claim"));
    assert!(store.claim(expired.id, "p2", t - secs(1), t - secs(30)).await.expect("claim"));
    assert!(store.claim(pending.id, "p2", t + secs(60), t).await.expect("claim"));

    let mine = [free.id, other.id, own.id, expired.id, pending.id, delivered.id, silent.id];
    let found = |owner: &'static str, now| {
        let store = store.clone();
        async move {
            let all = store.orphans(owner, now).await.expect("orphans");
            assert!(all.windows(2).all(|w| w[0] < w[1]), "orphans are in id order: {all:?}");
            all.into_iter().filter(|id| mine.contains(id)).collect::<Vec<ExecutionId>>()
        }
    };

    assert_eq!(found("p1", t).await, vec![free.id, own.id, expired.id, pending.id]);
    assert_eq!(found("p2", t).await, vec![free.id, other.id, expired.id, pending.id]);
    assert_eq!(found("p1", t + secs(61)).await, vec![free.id, other.id, own.id, expired.id, pending.id], "expired leases are orphans");

    // Delivering the final message takes a terminal execution off the list.
    let (mut doc, v) = must_load(&store, pending.id).await;
    doc.messages.iter_mut().for_each(|m| m.final_sent = true);
    store.save(&doc, v).await.expect("save");
    // Finishing one takes it off too; taking a lease by p1 keeps it on p1's list only.
    let (mut doc, v) = must_load(&store, free.id).await;
    doc.state = ExecState::Cancelled;
    doc.messages.iter_mut().for_each(|m| m.final_sent = true);
    store.save(&doc, v).await.expect("save");
    assert!(store.claim(expired.id, "p1", t + secs(60), t).await.expect("claim"));

    assert_eq!(found("p1", t).await, vec![own.id, expired.id]);
    assert_eq!(found("p2", t).await, vec![other.id]);
}
