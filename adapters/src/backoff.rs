//! Reconnect pacing shared by runbot's long-lived connections (Slack Socket Mode, the Discord
//! gateway): from 500 ms, doubled after each failure up to a cap, with jitter so that replicas
//! cut off together do not reconnect in step; back to the start once a connection worked.

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use std::time::Duration;

const FIRST: Duration = Duration::from_millis(500);

pub struct Reconnect {
    builder: ExponentialBuilder,
    current: ExponentialBackoff,
    max: Duration,
}

impl Reconnect {
    /// Waits of at most `max` (plus its jitter, under as much again).
    pub fn new(max: Duration) -> Self {
        let builder = ExponentialBuilder::new().with_min_delay(FIRST).with_max_delay(max).with_factor(2.0).with_jitter().without_max_times();
        Reconnect { current: (&builder).build(), builder, max }
    }

    /// How long to wait before the next attempt.
    pub fn next_wait(&mut self) -> Duration {
        self.current.next().unwrap_or(self.max)
    }

    /// A connection worked: the next failure waits the shortest time again.
    pub fn reset(&mut self) {
        self.current = (&self.builder).build();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_to_the_cap_with_jitter_and_start_over_after_a_reset() {
        let mut r = Reconnect::new(Duration::from_secs(4));
        let waits: Vec<Duration> = (0..8).map(|_| r.next_wait()).collect();
        assert!(waits[0] >= FIRST && waits[0] < FIRST * 2, "{waits:?}");
        assert!(waits[2] >= FIRST * 4, "doubled twice: {waits:?}");
        assert!(waits.iter().all(|w| *w < Duration::from_secs(8)), "capped (jitter below as much again): {waits:?}");
        assert!(waits[6] >= Duration::from_secs(4), "at the cap: {waits:?}");
        r.reset();
        let again = r.next_wait();
        assert!(again >= FIRST && again < FIRST * 2, "{again:?}");
    }
}
