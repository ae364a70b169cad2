//! What the chat adapters share about refusing a request's signature: why it was refused, and
//! the counters behind `runbot_<platform>_rejected_total{reason}`.

use runbot_commands::metrics::{self, DescriptorEncoder};
use std::sync::atomic::{AtomicU64, Ordering};

/// How far a request's timestamp may be from our clock, either way.
pub const MAX_SKEW_SECS: i64 = 300;

/// A signature timestamp header: unix seconds, digits only (at most 12), else `Malformed`.
pub fn parse_timestamp(ts: &str) -> Result<i64, Rejection> {
    match ts.parse() {
        Ok(t) if !ts.is_empty() && ts.len() <= 12 && ts.bytes().all(|b| b.is_ascii_digit()) => Ok(t),
        _ => Err(Rejection::Malformed),
    }
}

/// `Stale` when `t` is more than [`MAX_SKEW_SECS`] away from `now`, either way. Checked after
/// the signature, so a forged request is told apart from a replayed one.
pub fn within_window(t: i64, now: i64) -> Result<(), Rejection> {
    if (now - t).abs() > MAX_SKEW_SECS { Err(Rejection::Stale) } else { Ok(()) }
}

/// Why a request's signature was refused (answered 401 before its body was parsed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// A signature or timestamp header is absent.
    Missing,
    /// A header is there but not of the documented shape (hex digits of the right length,
    /// unix seconds).
    Malformed,
    /// The timestamp is more than five minutes from now (a replay, or a skewed clock).
    Stale,
    /// The signature does not match the body (forged, tampered, or signed with another key).
    Mismatch,
}

impl Rejection {
    pub const ALL: [Rejection; 4] = [Rejection::Missing, Rejection::Malformed, Rejection::Stale, Rejection::Mismatch];

    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::Missing => "missing",
            Rejection::Malformed => "malformed",
            Rejection::Stale => "stale",
            Rejection::Mismatch => "bad_signature",
        }
    }
}

/// Requests refused with 401, by reason.
#[derive(Debug, Default)]
pub struct Rejections {
    pub missing: AtomicU64,
    pub malformed: AtomicU64,
    pub stale: AtomicU64,
    pub bad_signature: AtomicU64,
}

impl Rejections {
    pub fn get(&self, r: Rejection) -> &AtomicU64 {
        match r {
            Rejection::Missing => &self.missing,
            Rejection::Malformed => &self.malformed,
            Rejection::Stale => &self.stale,
            Rejection::Mismatch => &self.bad_signature,
        }
    }

    /// Counts one refusal.
    pub fn count(&self, r: Rejection) {
        self.get(r).fetch_add(1, Ordering::Relaxed);
    }

    /// Total requests refused with 401.
    pub fn total(&self) -> u64 {
        Rejection::ALL.iter().map(|r| self.get(*r).load(Ordering::Relaxed)).sum()
    }

    /// Describes the refusals as counter family `name` (samples `name_total{reason}`).
    pub fn encode(&self, enc: &mut DescriptorEncoder<'_>, name: &str, help: &str) -> std::fmt::Result {
        let values: Vec<(&str, u64)> = Rejection::ALL.iter().map(|r| (r.as_str(), self.get(*r).load(Ordering::Relaxed))).collect();
        metrics::counters(enc, name, help, "reason", &values)
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Rejection::Missing => "signature headers missing",
            Rejection::Malformed => "signature headers malformed",
            Rejection::Mismatch => "signature does not match the body",
            Rejection::Stale => "timestamp outside the 5-minute window",
        })
    }
}

impl std::error::Error for Rejection {}
