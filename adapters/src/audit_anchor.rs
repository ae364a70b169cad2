//! Anchors of the audit chain's head outside the store: at an interval and at shutdown, the
//! head (sequence number, hash, key id, time, instance), HMAC'd with the audit key, is written
//! as an S3 object (`<prefix>/anchors/<instance>/<seq>.json` and `.../latest.json`, under S3
//! Object Lock when configured and the bucket has it) and/or posted in audit channels. One
//! replica anchors at a time (the store role [`ROLE`]). `runbot audit verify` reads the newest
//! anchor back ([`S3Anchors::newest`]) and checks the stored chain reaches it unchanged.

use crate::backup::{S3Config, parse_s3_url};
use crate::store_sql::SqlStore;
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ObjectLockEnabled, ObjectLockMode};
use chrono::Utc;
use runbot_commands::audit::{Anchor, AuditKey};
use runbot_commands::config::{AuditS3Config, Settings};
use runbot_commands::message::Message;
use runbot_commands::ports::Store;
use runbot_commands::ports::chat::Chat;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The store role of the replica that anchors.
pub const ROLE: &str = "audit-anchor";

/// The largest anchor object read back (an anchor is a few hundred bytes).
const MAX_ANCHOR_BYTES: usize = 64 * 1024;

/// Anchors as objects in an S3 bucket.
pub struct S3Anchors {
    client: aws_sdk_s3::Client,
    bucket: String,
    /// `<prefix>/anchors/` (or `anchors/` without a prefix).
    dir: String,
    /// Object Lock mode and retention days for each `<seq>.json`.
    lock: Option<(ObjectLockMode, u32)>,
}

/// An instance name as one S3 key segment.
fn key_segment(instance: &str) -> String {
    instance.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect()
}

impl S3Anchors {
    /// From `[audit.s3]` (or its `url` replaced by `url`); `secret(name)` reads a `[secrets]` entry.
    pub fn from_config(cfg: &AuditS3Config, url: Option<&str>, secret: impl Fn(&str) -> Result<String, String>) -> Result<S3Anchors, String> {
        let mut config = S3Config::new(cfg.endpoint.as_deref(), &cfg.region, &secret(&cfg.access_key_secret)?, &secret(&cfg.secret_key_secret)?);
        if let Some(path_style) = cfg.path_style {
            config.force_path_style = path_style;
        }
        let (bucket, prefix) = parse_s3_url(url.unwrap_or(&cfg.url))?;
        let dir = if prefix.is_empty() { "anchors/".to_string() } else { format!("{prefix}/anchors/") };
        let lock = (cfg.object_lock_days > 0).then(|| {
            let mode = if cfg.object_lock_mode == "GOVERNANCE" { ObjectLockMode::Governance } else { ObjectLockMode::Compliance };
            (mode, cfg.object_lock_days)
        });
        Ok(S3Anchors { client: config.client()?, bucket, dir, lock })
    }

    /// `s3://bucket/<prefix>/anchors/`.
    pub fn location(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.dir)
    }

    /// With Object Lock configured: whether the bucket has it enabled. A bucket without it
    /// (or a server without the API, like the test server) is an error that says so — anchors
    /// are then written without a lock, never reported as locked.
    pub async fn check_lock(&self) -> Result<(), String> {
        if self.lock.is_none() {
            return Ok(());
        }
        let out = self.client.get_object_lock_configuration().bucket(&self.bucket).send().await.map_err(|e| {
            format!(
                "object_lock_days is set but bucket {} does not report an Object Lock configuration ({}): anchors are written without a lock",
                self.bucket,
                DisplayErrorContext(&e)
            )
        })?;
        match out.object_lock_configuration().and_then(|c| c.object_lock_enabled()) {
            Some(ObjectLockEnabled::Enabled) => Ok(()),
            _ => Err(format!(
                "object_lock_days is set but bucket {} does not have Object Lock enabled: anchors are written without a lock",
                self.bucket
            )),
        }
    }

    /// Writes `anchor` as `<instance>/<seq>.json` (20 digits, so key order is sequence
    /// order), locked when `locked`, then as `<instance>/latest.json`. Returns the first key.
    pub async fn put(&self, anchor: &Anchor, locked: bool) -> Result<String, String> {
        let body = serde_json::to_vec(anchor).map_err(|e| format!("encoding the anchor: {e}"))?;
        let dir = format!("{}{}/", self.dir, key_segment(&anchor.instance));
        let key = format!("{dir}{:020}.json", anchor.seq);
        let mut req = self.client.put_object().bucket(&self.bucket).key(&key).content_type("application/json").body(ByteStream::from(body.clone()));
        if let (true, Some((mode, days))) = (locked, &self.lock) {
            let until = Utc::now() + chrono::Duration::days(i64::from(*days));
            req = req.object_lock_mode(mode.clone()).object_lock_retain_until_date(aws_sdk_s3::primitives::DateTime::from_secs(until.timestamp()));
        }
        req.send().await.map_err(|e| format!("writing s3://{}/{key}: {}", self.bucket, DisplayErrorContext(&e)))?;
        let latest = format!("{dir}latest.json");
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&latest)
            .content_type("application/json")
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| format!("writing s3://{}/{latest}: {}", self.bucket, DisplayErrorContext(&e)))?;
        Ok(key)
    }

    /// The anchor with the highest sequence number under the anchors folder, of any instance,
    /// with its key; `None` when there is none.
    pub async fn newest(&self) -> Result<Option<(String, Anchor)>, String> {
        let mut best: Option<(u64, String)> = None;
        let mut token: Option<String> = None;
        loop {
            let mut req = self.client.list_objects_v2().bucket(&self.bucket).prefix(&self.dir);
            if let Some(t) = token.take() {
                req = req.continuation_token(t);
            }
            let page = req.send().await.map_err(|e| format!("listing {}: {}", self.location(), DisplayErrorContext(&e)))?;
            for key in page.contents().iter().filter_map(|o| o.key()) {
                let seq = key.rsplit('/').next().and_then(|n| n.strip_suffix(".json")).and_then(|n| n.parse::<u64>().ok());
                if let Some(seq) = seq
                    && best.as_ref().is_none_or(|(s, _)| seq > *s)
                {
                    best = Some((seq, key.to_string()));
                }
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) && !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
        let Some((_, key)) = best else { return Ok(None) };
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
            .map_err(|e| format!("reading s3://{}/{key}: {}", self.bucket, DisplayErrorContext(&e)))?;
        let mut body = out.body;
        let mut buf = Vec::new();
        while let Some(chunk) = body.try_next().await.map_err(|e| format!("reading s3://{}/{key}: {e}", self.bucket))? {
            if buf.len() + chunk.len() > MAX_ANCHOR_BYTES {
                return Err(format!("s3://{}/{key} is larger than {MAX_ANCHOR_BYTES} bytes: not an anchor", self.bucket));
            }
            buf.extend_from_slice(&chunk);
        }
        let anchor = Anchor::parse(&String::from_utf8_lossy(&buf)).map_err(|e| format!("s3://{}/{key}: {e}", self.bucket))?;
        Ok(Some((format!("s3://{}/{key}", self.bucket), anchor)))
    }
}

/// Writes anchors of one store's audit head (see the module docs).
pub struct Anchorer {
    store: Arc<SqlStore>,
    key: AuditKey,
    instance: String,
    every: Duration,
    s3: Option<S3Anchors>,
    /// Whether `s3`'s bucket confirmed Object Lock (checked once, at the first anchor).
    locked: Mutex<Option<bool>>,
    /// Channels anchors are posted in.
    channels: Vec<(Arc<dyn Chat>, String)>,
    /// The head anchored last by this process: an unchanged head is not anchored again.
    last: Mutex<Option<(u64, String)>>,
}

impl Anchorer {
    /// From `[audit]`: `None` without a key or without anywhere to anchor. `chat(platform)`:
    /// the configured chat adapter of a platform.
    pub fn from_settings(
        settings: &Settings,
        store: Arc<SqlStore>,
        chat: impl Fn(&str) -> Option<Arc<dyn Chat>>,
    ) -> Result<Option<Arc<Anchorer>>, String> {
        let cfg = &settings.config.audit;
        let Some(key) = settings.audit_keys.current.clone() else { return Ok(None) };
        let s3 = match &cfg.s3 {
            Some(s3) => Some(
                S3Anchors::from_config(s3, None, |name| {
                    settings.secrets.get(name).map(|s| s.expose().to_string()).ok_or_else(|| format!("audit.s3: no secret '{name}'"))
                })
                .map_err(|e| format!("audit.s3: {e}"))?,
            ),
            None => None,
        };
        let mut channels = Vec::new();
        for (platform, channel) in &cfg.anchor_channels {
            let c = chat(platform).ok_or_else(|| format!("audit.anchor_channels.{platform}: '{platform}' is not a configured chat platform"))?;
            channels.push((c, channel.clone()));
        }
        if s3.is_none() && channels.is_empty() {
            return Ok(None);
        }
        Ok(Some(Arc::new(Anchorer {
            store,
            key,
            instance: settings.instance.clone(),
            every: Duration::from_secs(cfg.anchor_interval_secs.max(1)),
            s3,
            locked: Mutex::new(None),
            channels,
            last: Mutex::new(None),
        })))
    }

    /// Anchors the head now if this replica holds [`ROLE`] and the head moved since its last
    /// anchor. Returns the anchor written (`None`: nothing to do); an error names each place
    /// that failed (the others were still written).
    pub async fn anchor(&self) -> Result<Option<Anchor>, String> {
        let now = Utc::now();
        let hold = chrono::Duration::from_std(self.every * 2 + Duration::from_secs(30)).unwrap_or(chrono::Duration::minutes(15));
        if !self.store.lead(ROLE, &self.instance, now + hold, now).await.map_err(|e| format!("taking the {ROLE} role: {e}"))? {
            return Ok(None);
        }
        let (seq, hash) = self.store.audit_head().await.map_err(|e| e.to_string())?;
        if self.last.lock().map(|l| l.as_ref() == Some(&(seq, hash.clone()))).unwrap_or(false) {
            return Ok(None);
        }
        let anchor = Anchor::new(&self.key, &self.instance, seq, &hash, now);
        let mut failed = Vec::new();
        if let Some(s3) = &self.s3 {
            let known = self.locked.lock().ok().and_then(|l| *l);
            let locked = match known {
                Some(l) => l,
                None => {
                    let l = match s3.check_lock().await {
                        Ok(()) => true,
                        Err(why) => {
                            tracing::error!(error = %why, "audit anchors: object lock unavailable");
                            false
                        }
                    };
                    if let Ok(mut k) = self.locked.lock() {
                        *k = Some(l);
                    }
                    l
                }
            };
            match s3.put(&anchor, locked).await {
                Ok(key) => tracing::info!(seq, key = %key, locked, "audit head anchored in S3"),
                Err(e) => failed.push(e),
            }
        }
        for (chat, channel) in &self.channels {
            match chat.post(channel, None, &Message::text(anchor.line())).await {
                Ok(_) => tracing::info!(seq, platform = chat.platform(), %channel, "audit head anchored in the audit channel"),
                Err(e) => failed.push(format!("posting the anchor in {} channel {channel}: {e}", chat.platform())),
            }
        }
        if !failed.is_empty() {
            return Err(failed.join("; "));
        }
        if let Ok(mut l) = self.last.lock() {
            *l = Some((seq, hash));
        }
        Ok(Some(anchor))
    }

    /// Anchors at once and then every `[audit] anchor_interval_secs`; failures are logged and
    /// retried at the next tick.
    pub fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(me.every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = me.anchor().await {
                    tracing::error!(error = %e, "could not anchor the audit head");
                }
            }
        })
    }

    /// The last anchor, at shutdown: after the commands in flight finished, before the store
    /// closes.
    pub async fn at_shutdown(&self) {
        match self.anchor().await {
            Ok(Some(a)) => tracing::info!(seq = a.seq, "audit head anchored at shutdown"),
            Ok(None) => tracing::info!("audit head not anchored at shutdown: anchored already, or another replica holds the {ROLE} role"),
            Err(e) => tracing::error!(error = %e, "could not anchor the audit head at shutdown"),
        }
    }
}
