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

/// To the second: a restore's `--date` needs the exact earliest instant, not its minute.
fn at(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// A database's archive as read now: the status message and what is wrong with it.
pub(super) struct Freshness {
    pub message: Message,
    pub problems: Vec<String>,
    /// Identifies what is wrong, by the archive objects that make it wrong (the stale backup,
    /// the stale WAL, the gaps): an alert is posted once per key, so WAL that keeps arriving
    /// while the full backup stays stale does not alert again.
    pub key: String,
}

impl Engine {
    pub(super) async fn backup_status(&self, database: &str) -> Reply {
        match self.freshness(database).await {
            Ok(f) => Reply { message: f.message, ephemeral: true },
            Err(why) => Reply::private(why),
        }
    }

    async fn freshness(&self, database: &str) -> Result<Freshness, String> {
        let settings = self.settings();
        let Some(db) = settings.config.databases.get(database) else {
            let known: Vec<&str> = settings.config.databases.keys().map(|s| s.as_str()).collect();
            return Err(format!(
                "'{database}' is not a configured database. Configured: {}.",
                if known.is_empty() { "none".into() } else { known.join(", ") }
            ));
        };
        let (Some(cfg), Some(catalog)) = (&db.backup, self.catalogs().get(database).cloned()) else {
            return Err(format!("{database} has no backup archive configured ([databases.{database}.backup])."));
        };
        let snapshot = catalog.snapshot().await.map_err(|e| format!("Could not read the backup catalog of {database}: {e}"))?;
        let now = self.now();
        let a = snapshot.analyze();
        let limit = |s: &str, default: u64| parse_duration(s).map(|d| d.as_secs()).unwrap_or(default) as i64;
        let (full_max, wal_max, retention) =
            (limit(&cfg.full_max_age, 26 * 3600), limit(&cfg.wal_max_age, 20 * 60), limit(&cfg.retention, 30 * 86400));
        let age = |t: DateTime<Utc>| (now - t).num_seconds().max(0);
        let mut problems = Vec::new();
        let mut why = vec![database.to_string()];
        let mut m = Message::default().with_title(format!("Backups of {database}"));
        m.fields.push(("Archive".into(), catalog.location()));
        match a.newest_backup.as_ref().and_then(|b| b.end_time.map(|t| (b, t))) {
            Some((b, end)) => {
                let size = b.stored_bytes.map(|n| format!(", {}", super::render::bytes(n))).unwrap_or_default();
                m.fields.push(("Last full backup".into(), format!("{} — ended {} ({} ago){size}", b.id, at(end), human(age(end) as u64))));
                if age(end) > full_max {
                    problems.push(format!("the newest full backup is {} old (limit {})", human(age(end) as u64), human(full_max as u64)));
                    why.push(format!("full-old@{}", b.id));
                }
            }
            None => {
                m.fields.push(("Last full backup".into(), "none completed".into()));
                problems.push("no completed full backup".into());
                why.push("no-full".into());
            }
        }
        match &a.newest_wal {
            Some((name, t)) => {
                m.fields.push(("Newest WAL".into(), format!("{name} — archived {} ({} ago)", at(*t), human(age(*t) as u64))));
                if age(*t) > wal_max {
                    problems.push(format!("the newest WAL is {} old (limit {})", human(age(*t) as u64), human(wal_max as u64)));
                    why.push(format!("wal-old@{name}"));
                }
            }
            None => {
                m.fields.push(("Newest WAL".into(), "none archived".into()));
                problems.push("no WAL archived".into());
                why.push("no-wal".into());
            }
        }
        let window: Vec<String> = a.window.iter().map(|r| format!("{} → {}", at(r.from), at(r.to))).collect();
        m.fields.push(("Restorable".into(), if window.is_empty() { "nothing (no usable backup with its WAL)".into() } else { window.join("; ") }));
        if !a.gaps.is_empty() {
            let gaps: Vec<String> = a.gaps.iter().map(|g| format!("{}..{}", g.first_name, g.last_name)).collect();
            m.fields.push(("WAL gaps".into(), gaps.join(", ")));
            problems.push(format!("{} WAL gap(s): times behind a gap cannot be restored", a.gaps.len()));
            why.push(format!("gaps@{}", gaps.join(",")));
        }
        let expired = snapshot.backups.iter().filter(|b| b.end_time.is_some_and(|t| age(t) > retention)).count();
        m.fields.push((
            "Retention".into(),
            format!(
                "{} kept; {expired} full backup(s) past it ({} backups in all, {} WAL segments)",
                human(retention as u64),
                snapshot.backups.len(),
                snapshot.wal_segments
            ),
        ));
        m.text =
            if problems.is_empty() { "✅ Backups are fresh and the window has no gap.".into() } else { format!("⚠ {}.", problems.join("; ")) };
        Ok(Freshness { message: m, problems, key: why.join(":") })
    }

    /// Checks every database with a backup archive every `every`; posts to its alert channels
    /// once when it turns stale (or gappy); when it recovers, edits that alert to say so and
    /// posts once that it is healthy again. Alerts are de-duplicated through the store, so a
    /// restart does not repeat one; the open alerts and their messages are in the audit trail,
    /// so a replica that takes the monitor over (or a restarted one) resolves the alerts
    /// another posted instead of forgetting them.
    pub fn spawn_backup_monitor(&self, every: std::time::Duration) -> tokio::task::JoinHandle<()> {
        let engine = self.clone();
        tokio::spawn(async move {
            let mut alerting = OpenAlerts::new();
            let mut leading = false;
            loop {
                // One replica at a time checks (the role moves on when it stops renewing).
                let lead = engine.leads("backup-monitor", (every * 3).max(engine.lease())).await;
                if lead && !leading {
                    // Newly leading: the alerts posted by whoever led before are still open.
                    alerting = engine.open_backup_alerts().await;
                }
                leading = lead;
                if lead {
                    engine.check_backups(&mut alerting).await;
                }
                tokio::time::sleep(every).await;
            }
        })
    }

    /// The backup alerts still open, by database, as the audit trail has them: the last
    /// `backup_alert` of each database, unless a recovery followed it.
    async fn open_backup_alerts(&self) -> OpenAlerts {
        let records = match self.store().audit_log().await {
            Ok((records, _)) => records,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the open backup alerts from the audit trail; new alerts only");
                return OpenAlerts::new();
            }
        };
        let mut open = OpenAlerts::new();
        for r in records.into_iter().filter(|r| r.entry.kind == "backup_alert") {
            let d = &r.entry.detail;
            let Some(db) = d["database"].as_str() else { continue };
            match d["key"].as_str() {
                Some(key) if d["problems"].as_array().is_some_and(|p| !p.is_empty()) => {
                    let messages = serde_json::from_value(d["messages"].clone()).unwrap_or_default();
                    open.insert(db.to_string(), OpenAlert { key: key.to_string(), messages });
                }
                _ => {
                    open.remove(db);
                }
            }
        }
        open
    }

    async fn check_backups(&self, alerting: &mut OpenAlerts) {
        let settings = self.settings();
        for (name, db) in &settings.config.databases {
            let Some(cfg) = &db.backup else { continue };
            let f = match self.freshness(name).await {
                Ok(f) => f,
                Err(why) => {
                    tracing::warn!(database = %name, error = %why, "backup check failed");
                    Freshness {
                        message: Message::text(why.clone()).with_title(format!("Backups of {name}")),
                        problems: vec![why],
                        key: format!("{name}:unreadable"),
                    }
                }
            };
            let env = db.env.clone().unwrap_or_else(|| "prod".into());
            let mut msg = f.message.clone();
            let resolved = if !f.problems.is_empty() {
                if alerting.get(name).is_some_and(|a| a.key == f.key) {
                    continue;
                }
                if !self.store().first_delivery(&format!("backup-alert:{}", f.key), self.now()).await.unwrap_or(false) {
                    // Posted before, by this monitor or another replica's, and not (yet) in the
                    // audit trail: open all the same, so its recovery is said.
                    let messages = alerting.remove(name).map(|a| a.messages).unwrap_or_default();
                    alerting.insert(name.clone(), OpenAlert { key: f.key.clone(), messages });
                    continue;
                }
                None
            } else {
                let Some(old) = alerting.remove(name) else { continue };
                if !self.store().first_delivery(&format!("backup-recovered:{}", old.key), self.now()).await.unwrap_or(false) {
                    continue;
                }
                Some(old)
            };
            let mut posted = Vec::new();
            if let Some(old) = &resolved {
                // The alert itself now says it is over, then one message says so.
                msg.text = format!("✅ Resolved: backups of {name} are healthy again.");
                for m in &old.messages {
                    let Some(chat) = self.chats().get(&m.platform) else { continue };
                    if let Err(e) = chat.update(&m.channel, &m.id, &msg).await {
                        tracing::error!(database = %name, platform = %m.platform, error = %e, "could not mark a backup alert resolved");
                    }
                }
                msg.text = format!("✅ Backups of {name} are healthy again.");
            } else {
                msg.text = format!("⚠ Backups of {name} need attention: {}.", f.problems.join("; "));
            }
            for platform in self.chats().platforms().map(str::to_string).collect::<Vec<_>>() {
                let channel = cfg.alert_channels.get(&platform).map(|s| s.as_str()).or_else(|| settings.incident_channel(&env, &platform));
                let (Some(channel), Some(chat)) = (channel, self.chats().get(&platform)) else { continue };
                match chat.post(channel, None, &msg).await {
                    Ok(id) => posted.push(AlertMessage { platform: platform.clone(), channel: channel.to_string(), id }),
                    Err(e) => tracing::error!(database = %name, platform = %platform, error = %e, "could not post a backup alert"),
                }
            }
            let detail = match &resolved {
                Some(old) => serde_json::json!({"database": name, "problems": f.problems, "resolved": old.key}),
                None => serde_json::json!({"database": name, "problems": f.problems, "key": f.key, "messages": posted}),
            };
            self.audit("backup_alert", None, None, detail).await;
            if resolved.is_none() {
                alerting.insert(name.clone(), OpenAlert { key: f.key.clone(), messages: posted });
            }
        }
    }
}

/// A posted backup alert: the messages to edit when it resolves.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct AlertMessage {
    platform: String,
    channel: String,
    id: String,
}

/// An open backup alert: what is wrong ([`Freshness::key`]) and where it was posted.
struct OpenAlert {
    key: String,
    messages: Vec<AlertMessage>,
}

type OpenAlerts = std::collections::BTreeMap<String, OpenAlert>;
