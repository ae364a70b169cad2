//! Command quotas per identity and per channel (governor, GCRA). In memory, per process;
//! with a store shared by several processes the engine also counts them in the store
//! (`Store::take_quota`, the same GCRA with [`gcra`]'s numbers), so replicas share them.

use crate::config::LimitsConfig;
use governor::clock::{Clock, MonotonicClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use std::num::NonZeroU32;
use std::time::Duration;

/// std's monotonic clock rather than governor's default (quanta): quanta calibrates the TSC on
/// first use — a busy loop of clock reads, a fifth of a start-up's instructions — to save
/// nanoseconds per check that a chat command does not need.
type Keyed = RateLimiter<String, DefaultKeyedStateStore<String>, MonotonicClock>;

pub struct Limits {
    identity: Keyed,
    channel: Keyed,
    clock: MonotonicClock,
}

fn keyed(per_minute: u32) -> Keyed {
    RateLimiter::new(quota(per_minute), DefaultKeyedStateStore::default(), MonotonicClock)
}

fn quota(per_minute: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(per_minute.max(1)).unwrap_or(NonZeroU32::MIN))
}

impl Limits {
    pub fn new(cfg: &LimitsConfig) -> Self {
        Limits { identity: keyed(cfg.per_identity_per_minute), channel: keyed(cfg.per_channel_per_minute), clock: MonotonicClock }
    }

    /// `Err(wait)` when the identity or the channel is over its quota.
    pub fn check(&self, identity: &str, channel: &str) -> Result<(), (&'static str, Duration)> {
        if let Err(nu) = self.identity.check_key(&identity.to_string()) {
            return Err(("you are", nu.wait_time_from(self.clock.now())));
        }
        if let Err(nu) = self.channel.check_key(&channel.to_string()) {
            return Err(("this channel is", nu.wait_time_from(self.clock.now())));
        }
        if self.identity.len() > 10_000 {
            self.identity.retain_recent();
            self.channel.retain_recent();
        }
        Ok(())
    }
}

/// GCRA's numbers for a quota of `per_minute` commands a minute, burst the same: the emission
/// interval and the tolerance, in microseconds.
pub fn gcra(per_minute: u32) -> (i64, i64) {
    let n = i64::from(per_minute.max(1));
    let interval = 60_000_000 / n;
    (interval, interval * (n - 1))
}

/// A wait in microseconds as a `Duration` (never negative).
pub fn wait_micros(us: i64) -> Duration {
    Duration::from_micros(u64::try_from(us).unwrap_or(0))
}
