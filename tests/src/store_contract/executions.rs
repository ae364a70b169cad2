//! Store contract, executions: id allocation, document round-trips, target locks, optimistic
//! concurrency, racing creates and listing.

use super::{create_sample, must_load, sample};
use runbot_commands::model::{ExecState, ExecutionId};
use runbot_commands::ports::{ListFilter, Store, StoreError};
use std::collections::HashSet;
use std::sync::Arc;

/// Ids increase and never repeat, also when allocated concurrently.
pub async fn ids(store: Arc<dyn Store>) {
    let a = store.next_id().await.expect("next_id");
    let b = store.next_id().await.expect("next_id");
    assert!(a.0 > 0, "ids start above zero");
    assert!(b > a, "ids increase: {a} then {b}");

    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..25 {
                got.push(store.next_id().await.expect("concurrent next_id"));
            }
            got
        }));
    }
    let mut all = HashSet::new();
    for t in tasks {
        let got = t.await.expect("task");
        assert!(got.windows(2).all(|w| w[0] < w[1]), "each task sees increasing ids: {got:?}");
        for id in got {
            assert!(id > b, "{id} was allocated after {b}");
            assert!(all.insert(id), "{id} was handed out twice");
        }
    }
    assert_eq!(all.len(), 200);
    let c = store.next_id().await.expect("next_id");
    assert!(all.iter().all(|id| *id < c), "{c} is above every earlier id");
}

/// What is created is what is loaded, field for field; a second create of the same id fails.
pub async fn create_load_roundtrip(store: Arc<dyn Store>) {
    let exec = create_sample(&store, "rt-svc", ExecState::AwaitingApproval, None).await;
    let (loaded, version) = must_load(&store, exec.id).await;
    assert_eq!(loaded, exec, "the document round-trips exactly");

    let unused = store.next_id().await.expect("next_id");
    assert!(store.load(unused).await.expect("load").is_none(), "an unknown id loads as None");

    let mut dup = sample(exec.id, "rt-svc", ExecState::Running);
    dup.notes.push("duplicate".into());
    assert!(store.create(&dup, None).await.is_err(), "creating an existing id must fail");
    let (after, after_version) = must_load(&store, exec.id).await;
    assert_eq!((after, after_version), (exec, version), "a failed create changes nothing");
}

/// A lock names its holder, survives non-terminal saves and is released by a terminal save.
pub async fn locks(store: Arc<dyn Store>) {
    let key = "service:lock-svc@prod";
    let mut a = create_sample(&store, "lock-svc", ExecState::Running, Some(key)).await;

    let b = sample(store.next_id().await.expect("next_id"), "lock-svc", ExecState::AwaitingApproval);
    let err = store.create(&b, Some(key)).await.expect_err("the key is held by a");
    assert_eq!(err, StoreError::Locked { key: key.into(), holder: a.id });
    assert!(store.load(b.id).await.expect("load").is_none(), "a refused create stores nothing");

    let other = create_sample(&store, "lock-svc", ExecState::Running, Some("service:lock-svc@staging")).await;
    let unlocked = create_sample(&store, "lock-svc", ExecState::Running, None).await;
    assert!(other.id > a.id && unlocked.id > other.id);

    let (_, v) = must_load(&store, a.id).await;
    a.notes.push("still running".into());
    let v = store.save(&a, v).await.expect("non-terminal save");
    let err = store.create(&b, Some(key)).await.expect_err("a non-terminal save keeps the lock");
    assert_eq!(err, StoreError::Locked { key: key.into(), holder: a.id });

    a.state = ExecState::Succeeded;
    let v = store.save(&a, v).await.expect("terminal save");
    store.create(&b, Some(key)).await.expect("the lock was released by the terminal save");

    let c = sample(store.next_id().await.expect("next_id"), "lock-svc", ExecState::Running);
    let err = store.create(&c, Some(key)).await.expect_err("b holds the key now");
    assert_eq!(err, StoreError::Locked { key: key.into(), holder: b.id });

    // Saving the old holder again must not release the new holder's lock.
    a.notes.push("final message sent".into());
    store.save(&a, v).await.expect("second terminal save");
    let err = store.create(&c, Some(key)).await.expect_err("b still holds the key");
    assert_eq!(err, StoreError::Locked { key: key.into(), holder: b.id });

    let staging = sample(store.next_id().await.expect("next_id"), "lock-svc", ExecState::Running);
    let err = store.create(&staging, Some("service:lock-svc@staging")).await.expect_err("other key held");
    assert_eq!(err, StoreError::Locked { key: "service:lock-svc@staging".into(), holder: other.id });
}

/// Saves need the current version: stale → Conflict, unknown → NotFound.
pub async fn optimistic_save(store: Arc<dyn Store>) {
    let mut x = create_sample(&store, "occ-svc", ExecState::Running, None).await;
    let (_, v1) = must_load(&store, x.id).await;

    x.notes.push("one".into());
    let v2 = store.save(&x, v1).await.expect("save with the current version");
    assert!(v2 > v1, "the version moves on ({v1} → {v2})");
    let (loaded, loaded_v) = must_load(&store, x.id).await;
    assert_eq!((loaded, loaded_v), (x.clone(), v2));

    let mut stale = x.clone();
    stale.notes.push("two".into());
    assert_eq!(store.save(&stale, v1).await, Err(StoreError::Conflict(x.id)));
    let (loaded, loaded_v) = must_load(&store, x.id).await;
    assert_eq!((loaded, loaded_v), (x.clone(), v2), "a conflicting save changes nothing");

    let v3 = store.save(&stale, v2).await.expect("save after re-reading");
    assert!(v3 > v2);
    assert_eq!(store.save(&stale, v2).await, Err(StoreError::Conflict(x.id)), "each version saves once");

    let ghost = sample(store.next_id().await.expect("next_id"), "occ-svc", ExecState::Running);
    assert_eq!(store.save(&ghost, 1).await, Err(StoreError::NotFound(ghost.id)));

    // Eight writers read the same version; exactly one save lands, the rest conflict.
    let (_, v) = must_load(&store, x.id).await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        let mut mine = stale.clone();
        mine.notes.push(format!("writer {i}"));
        tasks.push(tokio::spawn(async move { (mine.clone(), store.save(&mine, v).await) }));
    }
    let mut landed = Vec::new();
    for t in tasks {
        match t.await.expect("task") {
            (doc, Ok(new_v)) => landed.push((doc, new_v)),
            (_, Err(e)) => assert_eq!(e, StoreError::Conflict(x.id)),
        }
    }
    assert_eq!(landed.len(), 1, "exactly one of the racing saves lands");
    let (loaded, loaded_v) = must_load(&store, x.id).await;
    assert_eq!((loaded, loaded_v), landed.remove(0), "the winner's document is stored");
}

/// Eight tasks create on one key at once: exactly one wins, the others name it as holder.
pub async fn concurrent_creates(store: Arc<dyn Store>) {
    for round in 0..3 {
        let key = format!("service:race-svc-{round}@prod");
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let store = store.clone();
            let key = key.clone();
            tasks.push(tokio::spawn(async move {
                let id = store.next_id().await.expect("next_id");
                let exec = sample(id, "race-svc", ExecState::Running);
                (id, store.create(&exec, Some(&key)).await)
            }));
        }
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.expect("task"));
        }
        let winners: Vec<ExecutionId> = results.iter().filter(|(_, r)| r.is_ok()).map(|(id, _)| *id).collect();
        assert_eq!(winners.len(), 1, "round {round}: exactly one create wins: {results:?}");
        let winner = winners[0];
        for (id, r) in &results {
            if *id == winner {
                continue;
            }
            assert_eq!(r, &Err(StoreError::Locked { key: key.clone(), holder: winner }), "round {round}");
            assert!(store.load(*id).await.expect("load").is_none(), "a losing create stores nothing");
        }
        assert!(store.load(winner).await.expect("load").is_some());
    }
}

/// Newest first, the active and target filters, and the limit.
pub async fn list_filters(store: Arc<dyn Store>) {
    let target = "list-svc";
    let states = [ExecState::Running, ExecState::Succeeded, ExecState::AwaitingApproval, ExecState::Failed, ExecState::Running];
    let mut created = Vec::new();
    for s in states {
        created.push(create_sample(&store, target, s, None).await);
    }
    let _noise = create_sample(&store, "list-other", ExecState::Running, None).await;
    let newest_first: Vec<_> = created.iter().rev().cloned().collect();

    let by_target = |active_only, limit| ListFilter { active_only, target: Some(target.into()), limit };
    assert_eq!(store.list(&by_target(false, 0)).await.expect("list"), newest_first);

    let active: Vec<ExecutionId> = store.list(&by_target(true, 0)).await.expect("list").iter().map(|e| e.id).collect();
    assert_eq!(active, vec![created[4].id, created[2].id, created[0].id]);

    let two: Vec<ExecutionId> = store.list(&by_target(false, 2)).await.expect("list").iter().map(|e| e.id).collect();
    assert_eq!(two, vec![created[4].id, created[3].id]);

    let one_active = store.list(&by_target(true, 1)).await.expect("list");
    assert_eq!(one_active.iter().map(|e| e.id).collect::<Vec<_>>(), vec![created[4].id]);

    let everything = store.list(&ListFilter::default()).await.expect("list");
    assert!(everything.windows(2).all(|w| w[0].id > w[1].id), "newest first, no repeats");
    for e in &created {
        assert!(everything.iter().any(|x| x.id == e.id), "unfiltered list has {}", e.id);
    }
    let all_active = store.list(&ListFilter { active_only: true, ..Default::default() }).await.expect("list");
    assert!(all_active.iter().all(|e| !e.state.is_terminal()), "active_only returns no terminal executions");
    assert!(all_active.iter().any(|e| e.target.name == "list-other"));

    let none = ListFilter { target: Some("list-nothing".into()), ..Default::default() };
    assert!(store.list(&none).await.expect("list").is_empty());

    let mut last = created[4].clone();
    let (_, v) = must_load(&store, last.id).await;
    last.state = ExecState::Cancelled;
    store.save(&last, v).await.expect("save");
    let active: Vec<ExecutionId> = store.list(&by_target(true, 0)).await.expect("list").iter().map(|e| e.id).collect();
    assert_eq!(active, vec![created[2].id, created[0].id], "a terminal save leaves the active list");
}
