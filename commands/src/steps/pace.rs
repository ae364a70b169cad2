//! The pacing of a step's repeated tries — the smoke test's attempts, `deploy-verify`'s polls —
//! through one helper over backon's backoff sequences, so no step does its own wait
//! arithmetic. No jitter: a step's waits are the ones its plan shows.

use backon::{BackoffBuilder, ConstantBuilder, ExponentialBuilder};
use std::time::Duration;

/// The waits between the tries of one step.
pub(crate) struct Pace {
    waits: Box<dyn Iterator<Item = Duration> + Send>,
}

impl Pace {
    /// `tries` tries: the first wait `first`, doubled after each try, at most `max`.
    pub(crate) fn doubling(first: Duration, max: Duration, tries: u32) -> Pace {
        let retries = tries.saturating_sub(1) as usize;
        let builder = ExponentialBuilder::new().with_min_delay(first).with_max_delay(max).with_factor(2.0).with_max_times(retries);
        Pace { waits: Box::new(builder.build()) }
    }

    /// A try every `every`, for as long as the caller keeps asking (it owns the deadline).
    pub(crate) fn every(every: Duration) -> Pace {
        Pace { waits: Box::new(ConstantBuilder::new().with_delay(every).without_max_times().build()) }
    }

    /// The next wait; `None` when no try is left.
    pub(crate) fn next_wait(&mut self) -> Option<Duration> {
        self.waits.next()
    }

    /// Waits before the next try; `false` (at once) when no try is left.
    pub(crate) async fn wait(&mut self) -> bool {
        match self.next_wait() {
            Some(d) => {
                tokio::time::sleep(d).await;
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubling_waits_start_at_the_backoff_double_up_to_the_cap_and_allow_exactly_the_tries() {
        let s = Duration::from_secs;
        let mut p = Pace::doubling(s(2), s(60), 7);
        let waits: Vec<Duration> = std::iter::from_fn(|| p.next_wait()).collect();
        assert_eq!(waits, vec![s(2), s(4), s(8), s(16), s(32), s(60)], "six waits between seven tries, capped, no jitter");
        assert_eq!(std::iter::from_fn(|| Pace::doubling(s(1), s(60), 1).next_wait()).next(), None, "one try: no wait");
    }

    #[test]
    fn every_waits_the_same_and_does_not_run_out() {
        let mut p = Pace::every(Duration::from_millis(500));
        assert!((0..1000).all(|_| p.next_wait() == Some(Duration::from_millis(500))));
    }
}
