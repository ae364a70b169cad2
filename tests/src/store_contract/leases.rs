//! Store contract, leases: claiming and renewing executions, and what a (re)started process
//! finds to pick up.

use super::{create_sample, must_load, secs, t0};
use runbot_commands::model::{ExecState, ExecutionId};
use runbot_commands::ports::{Fence, Store, StoreError};
use std::sync::Arc;

/// Another owner is refused until the lease expires; the holder renews; leases are not versions.
pub async fn claims(store: Arc<dyn Store>) {
    let t = t0();
    let e = create_sample(&store, "claim-svc", ExecState::Running, None).await;
    let (_, version) = must_load(&store, e.id).await;
    let claim = |owner: &'static str, until: i64, now: i64| {
        let store = store.clone();
        async move { store.claim(e.id, owner, t + secs(until), t + secs(now)).await.expect("claim").is_some() }
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

    assert!(store.claim(other.id, "p2", t + secs(60), t).await.expect("claim").is_some());
    assert!(store.claim(own.id, "p1", t + secs(60), t).await.expect("claim").is_some());
    assert!(store.claim(expired.id, "p2", t - secs(1), t - secs(30)).await.expect("claim").is_some());
    assert!(store.claim(pending.id, "p2", t + secs(60), t).await.expect("claim").is_some());

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
    assert!(store.claim(expired.id, "p1", t + secs(60), t).await.expect("claim").is_some());

    assert_eq!(found("p1", t).await, vec![own.id, expired.id]);
    assert_eq!(found("p2", t).await, vec![other.id]);
}

/// Fencing: the epoch stays while a holder renews and rises whenever the lease is taken anew
/// (expired, released); a holder's fenced write with an old epoch is refused and changes
/// nothing, one with the current epoch is saved.
pub async fn fencing(store: Arc<dyn Store>) {
    let t = t0();
    let e = create_sample(&store, "fence-svc", ExecState::Running, None).await;
    let a1 = store.claim(e.id, "a", t + secs(30), t).await.expect("claim").expect("a free lease is taken");
    let a1b = store.claim(e.id, "a", t + secs(40), t + secs(10)).await.expect("claim").expect("renewed");
    assert_eq!(a1, a1b, "a renewal keeps the epoch");
    let b = store.claim(e.id, "b", t + secs(90), t + secs(50)).await.expect("claim").expect("an expired lease is taken over");
    assert!(b > a1, "a takeover raises the epoch ({a1} → {b})");

    // a was paused through the takeover: its write, with its old token, is fenced off.
    let (mut doc, v) = must_load(&store, e.id).await;
    doc.notes.push("written by a stale holder".into());
    let stale = Fence { owner: "a".into(), epoch: a1 };
    assert_eq!(store.save_fenced(&doc, v, &[], &stale).await, Err(StoreError::Fenced(e.id)));
    let (after, v_after) = must_load(&store, e.id).await;
    assert_eq!(v_after, v, "a fenced write changes nothing");
    assert!(!after.notes.iter().any(|n| n.contains("stale")));
    let current = Fence { owner: "b".into(), epoch: b };
    assert_eq!(store.save_fenced(&doc, v, &[], &current).await, Ok(v + 1), "the holder's write is saved");
    assert_eq!(store.save_fenced(&doc, v, &[], &current).await, Err(StoreError::Conflict(e.id)), "versions still count");

    // Released: the next claim succeeds at once, before the stored expiry, with a new epoch;
    // releasing someone else's lease does nothing.
    store.release(e.id, "a").await.expect("release by a non-holder");
    assert!(store.claim(e.id, "c", t + secs(90), t + secs(60)).await.expect("claim").is_none(), "b still holds it");
    store.release(e.id, "b").await.expect("release");
    let c = store.claim(e.id, "c", t + secs(90), t + secs(60)).await.expect("claim").expect("a released lease is free");
    assert!(c > b);
    let (_, v) = must_load(&store, e.id).await;
    assert_eq!(store.save_fenced(&doc, v, &[], &current).await, Err(StoreError::Fenced(e.id)), "b's token ended with its release");
    // The same owner taking a lease back after someone else held it gets a new epoch too.
    store.release(e.id, "c").await.expect("release");
    let a2 = store.claim(e.id, "a", t + secs(120), t + secs(61)).await.expect("claim").expect("taken back");
    assert!(a2 > c && a2 != a1);
}

/// Status edits are monotonic: an edit is sent only for a version newer than every one
/// claimed, or the newest claimed while it is not yet delivered (its sender may have died); a
/// delivered version is not sent again; a confirmation says whether a newer one was claimed.
pub async fn edits(store: Arc<dyn Store>) {
    let e = create_sample(&store, "edit-svc", ExecState::Running, None).await;
    let id = e.id;
    assert!(store.claim_edit(id, 0, 3).await.expect("claim_edit"), "a first edit may be sent");
    assert!(store.claim_edit(id, 0, 3).await.expect("claim_edit"), "the newest claimed, not yet delivered: may be sent again");
    assert!(store.claim_edit(id, 0, 5).await.expect("claim_edit"), "a newer one may be sent");
    assert!(!store.claim_edit(id, 0, 4).await.expect("claim_edit"), "an older one than claimed is never sent");
    assert!(!store.confirm_edit(id, 0, 3).await.expect("confirm_edit"), "5 was claimed after 3: 3 may have overwritten it");
    assert!(store.confirm_edit(id, 0, 5).await.expect("confirm_edit"), "5 is the newest");
    assert!(!store.claim_edit(id, 0, 5).await.expect("claim_edit"), "a delivered version is not sent again");
    assert!(!store.claim_edit(id, 0, 2).await.expect("claim_edit"));
    assert!(store.claim_edit(id, 0, 6).await.expect("claim_edit"));
    // Each message of an execution counts for itself.
    assert!(store.claim_edit(id, 1, 2).await.expect("claim_edit"), "another message has its own record");
    assert!(store.confirm_edit(id, 1, 2).await.expect("confirm_edit"));
    // A confirmation of a version never claimed (its claim raced a restart) still records it.
    assert!(store.confirm_edit(id, 2, 9).await.expect("confirm_edit"));
    assert!(!store.claim_edit(id, 2, 9).await.expect("claim_edit"));
}

/// A role is held by one owner at a time, renewed by it, and moves on when it expires.
pub async fn roles(store: Arc<dyn Store>) {
    let t = t0();
    assert!(store.lead("contract-role", "a", t + secs(10), t).await.expect("lead"), "a free role is taken");
    assert!(!store.lead("contract-role", "b", t + secs(15), t + secs(5)).await.expect("lead"), "held by a");
    assert!(store.lead("contract-role", "a", t + secs(20), t + secs(9)).await.expect("lead"), "a renews");
    assert!(!store.lead("contract-role", "b", t + secs(25), t + secs(15)).await.expect("lead"), "the renewal counts");
    assert!(store.lead("contract-other", "b", t + secs(25), t + secs(15)).await.expect("lead"), "roles are independent");
    assert!(store.lead("contract-role", "b", t + secs(40), t + secs(21)).await.expect("lead"), "an expired role moves on");
    assert!(!store.lead("contract-role", "a", t + secs(50), t + secs(22)).await.expect("lead"), "and a lost it");
}

/// Quotas counted in the store (GCRA, burst = the per-minute count): the burst passes, the
/// next is refused with the wait until one is allowed, a refusal consumes nothing, and keys
/// are independent.
pub async fn quotas(store: Arc<dyn Store>) {
    let t = t0();
    for i in 0..3 {
        assert_eq!(store.take_quota("contract:q", 3, t).await, Ok(None), "command {i} of the burst");
    }
    let wait = store.take_quota("contract:q", 3, t).await.expect("take_quota").expect("the 4th within the minute is refused");
    assert_eq!(wait.as_secs(), 20, "one more is allowed 20 s later ({wait:?})");
    assert!(store.take_quota("contract:q", 3, t + secs(19)).await.expect("take_quota").is_some(), "not before");
    assert_eq!(store.take_quota("contract:q", 3, t + secs(20)).await, Ok(None), "the refusals consumed nothing");
    assert!(store.take_quota("contract:q", 3, t + secs(20)).await.expect("take_quota").is_some());
    assert_eq!(store.take_quota("contract:other", 3, t).await, Ok(None), "another key has its own quota");
}

/// Shared write slots (chat pacing across processes): each reservation gets the next slot,
/// `interval` after the previous one, and a key with no recent writes is free at once.
pub async fn slots(store: Arc<dyn Store>) {
    let t = t0();
    let every = std::time::Duration::from_millis(1000);
    assert_eq!(store.take_slot("contract:ch", every, t).await, Ok(std::time::Duration::ZERO), "a free channel");
    assert_eq!(store.take_slot("contract:ch", every, t).await, Ok(every), "the next one a second later");
    assert_eq!(store.take_slot("contract:ch", every, t + secs(1)).await, Ok(every), "reserved slots stay reserved");
    assert_eq!(store.take_slot("contract:other", every, t).await, Ok(std::time::Duration::ZERO), "channels are independent");
    assert_eq!(store.take_slot("contract:ch", every, t + secs(10)).await, Ok(std::time::Duration::ZERO), "free again after a quiet while");
}
