//! Command quotas per identity and per channel (governor, GCRA). In memory: each replica
//! counts for itself.

use crate::config::LimitsConfig;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::time::Duration;

pub struct Limits {
    identity: DefaultKeyedRateLimiter<String>,
    channel: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
}

fn quota(per_minute: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(per_minute.max(1)).unwrap_or(NonZeroU32::MIN))
}

impl Limits {
    pub fn new(cfg: &LimitsConfig) -> Self {
        Limits {
            identity: RateLimiter::keyed(quota(cfg.per_identity_per_minute)),
            channel: RateLimiter::keyed(quota(cfg.per_channel_per_minute)),
            clock: DefaultClock::default(),
        }
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
