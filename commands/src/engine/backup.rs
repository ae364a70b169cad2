//! `/ops backup status <db>`: what the database's archive holds right now — the newest full
//! backup, the newest archived WAL, the recoverable window, WAL gaps, and what is past
//! retention — read from its catalog and judged against the configured freshness.

use super::{Engine, Reply};
use crate::config::parse_duration;
use crate::message::Message;
use chrono::{DateTime, Utc};

/// A duration for people: `2d 3h`, `5h 12m`, `14m`, `40s`.
fn human(secs: u64) -> String {
    let (d, h, m) = (secs / 86400, secs % 86400 / 3600, secs % 3600 / 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{secs}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, 0) => format!("{h}h"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, 0, _) => format!("{d}d"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

fn at(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

impl Engine {
    pub(super) async fn backup_status(&self, database: &str) -> Reply {
        let settings = self.settings();
        let Some(db) = settings.config.databases.get(database) else {
            let known: Vec<&str> = settings.config.databases.keys().map(|s| s.as_str()).collect();
            return Reply::private(format!(
                "'{database}' is not a configured database. Configured: {}.",
                if known.is_empty() { "none".into() } else { known.join(", ") }
            ));
        };
        let (Some(cfg), Some(catalog)) = (&db.backup, self.catalogs().get(database).cloned()) else {
            return Reply::private(format!("{database} has no backup archive configured ([databases.{database}.backup])."));
        };
        let snapshot = match catalog.snapshot().await {
            Ok(s) => s,
            Err(e) => return Reply::private(format!("Could not read the backup catalog of {database}: {e}")),
        };
        let now = self.now();
        let a = snapshot.analyze();
        let limit = |s: &str, default: u64| parse_duration(s).map(|d| d.as_secs()).unwrap_or(default) as i64;
        let (full_max, wal_max, retention) =
            (limit(&cfg.full_max_age, 26 * 3600), limit(&cfg.wal_max_age, 20 * 60), limit(&cfg.retention, 30 * 86400));
        let age = |t: DateTime<Utc>| (now - t).num_seconds().max(0);
        let mut problems = Vec::new();
        let mut m = Message::default().with_title(format!("Backups of {database}"));
        m.fields.push(("Archive".into(), catalog.location()));
        match a.newest_backup.as_ref().and_then(|b| b.end_time.map(|t| (b, t))) {
            Some((b, end)) => {
                m.fields.push(("Last full backup".into(), format!("{} — ended {} ({} ago)", b.id, at(end), human(age(end) as u64))));
                if age(end) > full_max {
                    problems.push(format!("the newest full backup is {} old (limit {})", human(age(end) as u64), human(full_max as u64)));
                }
            }
            None => {
                m.fields.push(("Last full backup".into(), "none completed".into()));
                problems.push("no completed full backup".into());
            }
        }
        match &a.newest_wal {
            Some((name, t)) => {
                m.fields.push(("Newest WAL".into(), format!("{name} — archived {} ({} ago)", at(*t), human(age(*t) as u64))));
                if age(*t) > wal_max {
                    problems.push(format!("the newest WAL is {} old (limit {})", human(age(*t) as u64), human(wal_max as u64)));
                }
            }
            None => {
                m.fields.push(("Newest WAL".into(), "none archived".into()));
                problems.push("no WAL archived".into());
            }
        }
        let window: Vec<String> = a.window.iter().map(|r| format!("{} → {}", at(r.from), at(r.to))).collect();
        m.fields.push((
            "Restorable".into(),
            if window.is_empty() { "nothing (no usable backup with its WAL)".into() } else { window.join("; ") },
        ));
        if !a.gaps.is_empty() {
            let gaps: Vec<String> = a.gaps.iter().map(|g| format!("{}..{}", g.first_name, g.last_name)).collect();
            m.fields.push(("WAL gaps".into(), gaps.join(", ")));
            problems.push(format!("{} WAL gap(s): times behind a gap cannot be restored", a.gaps.len()));
        }
        let expired = snapshot.backups.iter().filter(|b| b.end_time.is_some_and(|t| age(t) > retention)).count();
        m.fields.push((
            "Retention".into(),
            format!("{} kept; {expired} full backup(s) past it ({} backups in all, {} WAL segments)", human(retention as u64), snapshot.backups.len(), snapshot.wal_segments),
        ));
        m.text = if problems.is_empty() {
            "✅ Backups are fresh and the window has no gap.".into()
        } else {
            format!("⚠ {}.", problems.join("; "))
        };
        Reply { message: m, ephemeral: true }
    }
}
