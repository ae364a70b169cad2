//! How much chat work may wait behind the acknowledgements.
//!
//! A chat adapter acknowledges a command at once and runs it afterwards. When commands arrive
//! faster than the engine finishes them (a burst of `/ops history` against a busy store), the
//! work waiting behind the acks would otherwise grow without bound — each waiting command holds
//! its request, its reply channel and a place in the store's queue (measured: 390 MB after six
//! seconds of 13,000 commands/s that each read the store). [`Backlog`] bounds it: a command
//! takes a place before it is recorded and gives it back when its work is done; when every
//! place is taken it waits a little (back-pressure: the acks slow down to the engine's pace),
//! then is refused with [`BUSY`], recorded nowhere and run nowhere, so the person knows to
//! retry. Answers ready before the ack (help, whoami) hold their place only for that instant.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Commands whose work may be in flight at once, per chat adapter.
pub const DEFAULT_LIMIT: usize = 512;
/// How long a command waits for a place before it is refused: well inside Slack's 3 seconds
/// (and Discord's) for the acknowledgement.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(2);
/// What the person is told when their command is refused.
pub const BUSY: &str = "runbot is busy with many commands right now and did not take yours: nothing was done. Try again in a moment.";

#[derive(Debug)]
pub struct Backlog {
    places: Arc<Semaphore>,
    limit: usize,
    wait: Duration,
    refused: AtomicU64,
}

impl Default for Backlog {
    fn default() -> Self {
        Backlog::new(DEFAULT_LIMIT, DEFAULT_WAIT)
    }
}

impl Backlog {
    pub fn new(limit: usize, wait: Duration) -> Backlog {
        Backlog { places: Arc::new(Semaphore::new(limit)), limit, wait, refused: AtomicU64::new(0) }
    }

    /// A place for one command's work (given back when dropped), or `None` — counted — when
    /// none freed up within the wait.
    pub async fn admit(&self) -> Option<OwnedSemaphorePermit> {
        if let Ok(p) = self.places.clone().try_acquire_owned() {
            return Some(p);
        }
        match tokio::time::timeout(self.wait, self.places.clone().acquire_owned()).await {
            Ok(Ok(p)) => Some(p),
            _ => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Commands refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Describes `NAME_busy` (refused commands; samples `NAME_busy_total`) and `NAME_in_flight`.
    pub fn encode(&self, enc: &mut runbot_commands::metrics::DescriptorEncoder<'_>, name: &str, what: &str) -> std::fmt::Result {
        use runbot_commands::metrics::{counter, gauge};
        counter(enc, &format!("{name}_busy"), &format!("{what} refused because too many were in flight."), self.refused())?;
        let in_flight = i64::try_from(self.in_flight()).unwrap_or(i64::MAX);
        gauge(enc, &format!("{name}_in_flight"), &format!("{what} whose work is in flight (at most {}).", self.limit), in_flight)
    }

    /// Commands whose work is in flight now.
    pub fn in_flight(&self) -> usize {
        self.limit - self.places.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn places_are_bounded_waited_for_and_given_back() {
        let b = Arc::new(Backlog::new(2, Duration::from_millis(50)));
        let one = b.admit().await.expect("a place");
        let two = b.admit().await.expect("a place");
        assert_eq!(b.in_flight(), 2);
        assert!(b.admit().await.is_none(), "full: refused after the wait");
        assert_eq!(b.refused(), 1);
        // A place freed during the wait is taken.
        let waiter = tokio::spawn({
            let b = b.clone();
            async move { b.admit().await.is_some() }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(one);
        assert!(waiter.await.expect("join"), "a place freed within the wait");
        drop(two);
        assert_eq!(b.in_flight(), 0);
        assert_eq!(b.refused(), 1);
    }
}
