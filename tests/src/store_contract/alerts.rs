//! Store contract, the alerts posted: one record per fingerprint, claimed by exactly one of
//! several racing processes, replaced whole, and forgotten (with old resolved ones).

use super::{secs, t0};
use runbot_commands::ports::{PostedAlert, Store};
use serde_json::json;
use std::sync::Arc;

fn alert(fingerprint: &str, message: &str, firing: bool, at_secs: i64) -> PostedAlert {
    PostedAlert {
        fingerprint: fingerprint.into(),
        message: message.into(),
        firing,
        doc: json!({"labels": {"alertname": "KubePodCrashLooping", "note": "✓ \"quoted\""}, "n": 0.5}),
        updated_at: t0() + secs(at_secs),
    }
}

/// The first insert of a fingerprint wins (also among racers), a save replaces it whole and
/// reads back equal, forgetting removes it and resolved alerts older than the cut.
pub async fn alerts(store: Arc<dyn Store>) {
    assert_eq!(store.alert("a1e0").await.expect("alert"), None, "nothing stored yet");
    let first = alert("a1e0", "", true, 0);
    assert!(store.insert_alert(&first).await.expect("insert"), "the first insert stores it");
    assert!(!store.insert_alert(&alert("a1e0", "other", true, 1)).await.expect("insert"), "a second insert does not");
    let mut stored = store.alert("a1e0").await.expect("alert").expect("stored");
    stored.updated_at = first.updated_at;
    assert_eq!(stored.message, "", "the second insert changed nothing");
    assert_eq!(stored.doc, first.doc);

    let posted = alert("a1e0", "msg-17", false, 5);
    store.save_alert(&posted).await.expect("save");
    let read = store.alert("a1e0").await.expect("alert").expect("stored");
    assert_eq!((read.message.as_str(), read.firing, &read.doc), ("msg-17", false, &posted.doc));
    assert_eq!(read.updated_at.timestamp(), posted.updated_at.timestamp());

    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move { store.insert_alert(&alert("a1e1", &format!("m{i}"), true, 0)).await.expect("insert") }));
    }
    let mut won = 0;
    for t in tasks {
        won += usize::from(t.await.expect("task"));
    }
    assert_eq!(won, 1, "exactly one racer claims the alert");

    store.save_alert(&alert("a1e2", "m", false, 1)).await.expect("save");
    store.save_alert(&alert("a1e3", "m", true, 1)).await.expect("save");
    store.forget_alert("a1e1", t0() + secs(3)).await.expect("forget");
    assert_eq!(store.alert("a1e1").await.expect("alert"), None, "forgotten");
    assert_eq!(store.alert("a1e2").await.expect("alert"), None, "resolved before the cut: forgotten");
    assert!(store.alert("a1e3").await.expect("alert").is_some(), "a firing alert is kept");
    assert!(store.alert("a1e0").await.expect("alert").is_some(), "resolved after the cut: kept");
}
