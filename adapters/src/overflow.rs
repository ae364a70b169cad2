//! What the chat adapters share about a status message's overflow (the parts that do not fit
//! in the message and go to its thread): which overflow was last posted under each message, so
//! an edit re-posts it only when it changed.

use serde_json::Value;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

/// The overflow last posted, by message key (`CHANNEL/ID`).
#[derive(Debug, Default)]
pub struct OverflowMemo(Mutex<HashMap<String, u64>>);

impl OverflowMemo {
    /// A fingerprint of the overflow parts.
    pub fn fingerprint(parts: &[Value]) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for p in parts {
            p.to_string().hash(&mut h);
        }
        h.finish()
    }

    /// Whether exactly this overflow was already posted under `key`.
    pub fn posted(&self, key: &str, fingerprint: u64) -> bool {
        self.0.lock().map(|m| m.get(key) == Some(&fingerprint)).unwrap_or(false)
    }

    /// Records that this overflow is now posted under `key`.
    pub fn remember(&self, key: &str, fingerprint: u64) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(key.to_string(), fingerprint);
        }
    }
}
