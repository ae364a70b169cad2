//! runbot's own Discord rate limiter (serenity's is off: it ignores a configured base URL).
//!
//! Discord tells the limits in every answer: `X-RateLimit-Bucket` names the bucket a route
//! belongs to, `X-RateLimit-Remaining` and `X-RateLimit-Reset-After` say how many requests are
//! left in it and when it refills; a 429 says `retry_after` and whether the limit was the
//! global one. Buckets are kept per major parameter (channel, guild, webhook, interaction). A
//! request waits when its bucket is known to be empty, or while a global 429 lasts; otherwise
//! it takes one of the remaining requests, so concurrent requests do not all rush an almost
//! empty bucket. Several replicas share a bucket too: once its limit and window are known,
//! [`Limiter::spacing`] says how far apart its requests go so that all processes together
//! stay within it (the slots are reserved in the shared store).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// What an answer said about its bucket.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    pub bucket: Option<String>,
    pub limit: Option<u32>,
    pub remaining: Option<u32>,
    pub reset_after: Option<Duration>,
}

impl Observed {
    /// Reads the `X-RateLimit-*` headers (absent or unreadable ones are `None`).
    pub fn from_headers(h: &reqwest::header::HeaderMap) -> Observed {
        let get = |k: &str| h.get(k).and_then(|v| v.to_str().ok()).map(str::trim);
        Observed {
            bucket: get("x-ratelimit-bucket").filter(|b| !b.is_empty() && b.len() <= 128).map(str::to_string),
            limit: get("x-ratelimit-limit").and_then(|v| v.parse().ok()),
            remaining: get("x-ratelimit-remaining").and_then(|v| v.parse().ok()),
            reset_after: get("x-ratelimit-reset-after").and_then(secs),
        }
    }
}

/// Seconds with decimals (`"0.250"`) as a duration; negative, huge or unreadable → `None`.
pub fn secs(v: &str) -> Option<Duration> {
    let f: f64 = v.trim().parse().ok()?;
    (f.is_finite() && (0.0..=86_400.0).contains(&f)).then(|| Duration::from_secs_f64(f))
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    remaining: u32,
    reset_at: Instant,
}

#[derive(Default)]
struct State {
    /// Route (`POST /channels/{channel}/messages`) → the bucket hash Discord named.
    route_bucket: HashMap<&'static str, String>,
    /// `hash-or-route:major` → what is left.
    buckets: HashMap<String, Bucket>,
    /// Bucket hash (or route) → its limit and the longest reset-after seen (its window).
    shapes: HashMap<String, (u32, Duration)>,
    global_until: Option<Instant>,
}

#[derive(Default)]
pub struct Limiter {
    st: Mutex<State>,
}

impl State {
    fn key(&self, route: &'static str, major: &str) -> String {
        format!("{}:{major}", self.shape_key(route))
    }

    fn shape_key(&self, route: &'static str) -> &str {
        self.route_bucket.get(route).map(String::as_str).unwrap_or(route)
    }
}

impl Limiter {
    pub fn new() -> Self {
        Self::default()
    }

    /// `None`: go now (one request of the bucket taken). `Some(d)`: wait `d`, then ask again.
    pub fn acquire(&self, route: &'static str, major: &str, now: Instant) -> Option<Duration> {
        let Ok(mut s) = self.st.lock() else { return None };
        if let Some(g) = s.global_until {
            if g > now {
                return Some(g - now);
            }
            s.global_until = None;
        }
        let key = s.key(route, major);
        let b = s.buckets.get_mut(&key)?;
        if b.reset_at <= now {
            // Refilled; the next answer says by how much.
            s.buckets.remove(&key);
            return None;
        }
        if b.remaining > 0 {
            b.remaining -= 1;
            return None;
        }
        Some(b.reset_at - now)
    }

    /// Records what an answer said.
    pub fn observe(&self, route: &'static str, major: &str, o: &Observed, now: Instant) {
        let Ok(mut s) = self.st.lock() else { return };
        if let Some(h) = &o.bucket {
            s.route_bucket.insert(route, h.clone());
        }
        let key = s.key(route, major);
        if let (Some(remaining), Some(after)) = (o.remaining, o.reset_after) {
            s.buckets.insert(key, Bucket { remaining, reset_at: now + after });
        }
        if let (Some(limit), Some(after)) = (o.limit.filter(|l| *l > 0), o.reset_after) {
            let shape = s.shape_key(route).to_string();
            let window = s.shapes.get(&shape).map_or(after, |(_, w)| (*w).max(after));
            s.shapes.insert(shape, (limit, window));
        }
        if s.buckets.len() > 10_000 {
            s.buckets.retain(|_, b| b.reset_at > now);
        }
    }

    /// For processes sharing a bucket: its key (`bucket:major`) and the time between two of its
    /// requests (window / limit, plus 10 %) that keeps them all within it; `None` while its shape is not
    /// known (no answer from it seen yet).
    pub fn spacing(&self, route: &'static str, major: &str) -> Option<(String, Duration)> {
        let s = self.st.lock().ok()?;
        let (limit, window) = s.shapes.get(s.shape_key(route)).copied()?;
        // A 10 % margin: requests reach Discord with some jitter, and its window starts at the
        // arrival of the first.
        Some((s.key(route, major), window / limit + window / 10))
    }

    /// Records a 429: the whole bot waits for a global one, the bucket for the others.
    pub fn limited(&self, route: &'static str, major: &str, retry_after: Duration, global: bool, now: Instant) {
        let Ok(mut s) = self.st.lock() else { return };
        let until = now + retry_after;
        if global {
            s.global_until = Some(s.global_until.map_or(until, |g| g.max(until)));
            return;
        }
        let key = s.key(route, major);
        let b = s.buckets.entry(key).or_insert(Bucket { remaining: 0, reset_at: until });
        b.remaining = 0;
        b.reset_at = b.reset_at.max(until);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: &str = "POST /channels/{channel}/messages";

    fn obs(remaining: u32, after_ms: u64) -> Observed {
        Observed { bucket: Some("abcd".into()), limit: Some(5), remaining: Some(remaining), reset_after: Some(Duration::from_millis(after_ms)) }
    }

    #[test]
    fn an_empty_bucket_waits_until_its_reset_per_major_parameter() {
        let l = Limiter::new();
        let t = Instant::now();
        assert_eq!(l.acquire(R, "1", t), None, "unknown buckets go");
        l.observe(R, "1", &obs(1, 800), t);
        assert_eq!(l.acquire(R, "1", t), None, "one left: taken");
        assert_eq!(l.acquire(R, "1", t), Some(Duration::from_millis(800)), "none left");
        assert_eq!(l.acquire(R, "2", t), None, "another channel is another bucket");
        assert_eq!(l.acquire(R, "1", t + Duration::from_millis(800)), None, "refilled");
    }

    #[test]
    fn routes_sharing_a_bucket_hash_share_its_state() {
        let l = Limiter::new();
        let t = Instant::now();
        const E: &str = "PATCH /channels/{channel}/messages/{message}";
        l.observe(R, "1", &obs(0, 500), t);
        l.observe(E, "1", &Observed { bucket: Some("abcd".into()), ..Observed::default() }, t);
        assert_eq!(l.acquire(E, "1", t), Some(Duration::from_millis(500)));
    }

    #[test]
    fn a_429_blocks_its_bucket_or_everything_when_global() {
        let l = Limiter::new();
        let t = Instant::now();
        l.limited(R, "1", Duration::from_millis(200), false, t);
        assert_eq!(l.acquire(R, "1", t), Some(Duration::from_millis(200)));
        assert_eq!(l.acquire(R, "2", t), None);
        l.limited(R, "1", Duration::from_secs(1), true, t);
        assert_eq!(l.acquire("PUT /applications/{application}/commands", "9", t), Some(Duration::from_secs(1)));
        assert_eq!(l.acquire(R, "2", t + Duration::from_secs(1)), None);
    }

    #[test]
    fn a_known_bucket_spaces_its_requests_by_window_over_limit() {
        let l = Limiter::new();
        let t = Instant::now();
        assert_eq!(l.spacing(R, "1"), None, "unknown until an answer is seen");
        l.observe(R, "1", &obs(4, 1000), t);
        l.observe(R, "1", &obs(3, 700), t);
        assert_eq!(l.spacing(R, "1"), Some(("abcd:1".to_string(), Duration::from_millis(300))), "5 per 1 s window, 10 % margin");
    }

    #[test]
    fn headers_parse_like_discord_sends_them() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("x-ratelimit-bucket", "d721dea6054f6322373d361f98e5c38b".parse().expect("v"));
        h.insert("x-ratelimit-limit", "5".parse().expect("v"));
        h.insert("x-ratelimit-remaining", "4".parse().expect("v"));
        h.insert("x-ratelimit-reset-after", "1.250".parse().expect("v"));
        let o = Observed::from_headers(&h);
        assert_eq!(o.remaining, Some(4));
        assert_eq!(o.limit, Some(5));
        assert_eq!(o.reset_after, Some(Duration::from_millis(1250)));
        assert_eq!(o.bucket.as_deref(), Some("d721dea6054f6322373d361f98e5c38b"));
        assert_eq!(secs("-1"), None);
        assert_eq!(secs("NaN"), None);
        assert_eq!(secs("0.2"), Some(Duration::from_millis(200)));
    }
}
