//! A per-method budget of Slack Web API calls for the whole workspace — how Slack limits
//! `chat.update` (Tier 3: "per API method per app per workspace", not per channel). Calls are
//! spaced `60 s / per_minute` apart, counted by this process and, when the store is shared, by
//! every replica together (slots reserved in the store, like the channels' pacing). Callers
//! queue for their turn; a call marked urgent (a final state) goes ahead of the others, and a
//! 429's Retry-After pushes the next turn past it.

use runbot_commands::ports::Store;
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// One caller waiting for its turn: urgent first, then first come.
struct Waiter {
    urgent: bool,
    seq: u64,
    go: oneshot::Sender<()>,
}

impl PartialEq for Waiter {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Waiter {}
impl PartialOrd for Waiter {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Waiter {
    /// The heap's greatest is served first: urgent over not, then the lower sequence number.
    fn cmp(&self, o: &Self) -> Ordering {
        self.urgent.cmp(&o.urgent).then(o.seq.cmp(&self.seq))
    }
}

#[derive(Default)]
struct Queue {
    /// Someone is taking a turn (reserving a slot and waiting for it).
    busy: bool,
    seq: u64,
    waiting: BinaryHeap<Waiter>,
    /// This process's own next free slot (and a 429's back-off).
    next: Option<Instant>,
}

pub struct MethodBudget {
    /// The store key of the shared slots, `slack:method:chat.update`.
    key: String,
    /// Between two calls; zero = not paced.
    interval: Duration,
    queue: Mutex<Queue>,
    shared: OnceLock<Arc<dyn Store>>,
}

/// Hands the turn to the next waiter when dropped (also when the holder's future is dropped).
struct Turn<'a>(&'a MethodBudget);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let Ok(mut q) = self.0.queue.lock() else { return };
        while let Some(w) = q.waiting.pop() {
            if w.go.send(()).is_ok() {
                return;
            }
        }
        q.busy = false;
    }
}

impl MethodBudget {
    /// `per_minute` calls of `method` a minute; 0 = not paced.
    pub fn new(method: &str, per_minute: u32) -> MethodBudget {
        let interval = if per_minute == 0 { Duration::ZERO } else { Duration::from_secs(60) / per_minute };
        MethodBudget { key: format!("slack:method:{method}"), interval, queue: Mutex::new(Queue::default()), shared: OnceLock::new() }
    }

    /// Counts the calls together with every process sharing `store`.
    pub fn share(&self, store: Arc<dyn Store>) {
        let _ = self.shared.set(store);
    }

    /// Waits for this caller's turn and slot: returns when the call may be sent.
    pub async fn wait(&self, urgent: bool) {
        if self.interval.is_zero() {
            return;
        }
        let _turn = self.turn(urgent).await;
        let asked = Instant::now();
        let local = {
            let Ok(mut q) = self.queue.lock() else { return };
            let now = Instant::now();
            let slot = q.next.filter(|t| *t > now).unwrap_or(now);
            q.next = Some(slot + self.interval);
            slot - now
        };
        let shared = match self.shared.get() {
            Some(store) => store.take_slot(&self.key, self.interval, chrono::Utc::now()).await.unwrap_or_else(|e| {
                tracing::warn!(method = %self.key, error = %e, "shared method budget unavailable; counting this process's calls only");
                Duration::ZERO
            }),
            None => Duration::ZERO,
        };
        // Counted from when the slot was asked for, not from the store's answer.
        let wait = local.max(shared);
        if !wait.is_zero() {
            tokio::time::sleep_until(asked + wait).await;
        }
    }

    /// Keeps every call of this process back until `wait` (a 429's Retry-After) has passed.
    pub fn back_off(&self, wait: Duration) {
        if let Ok(mut q) = self.queue.lock() {
            let until = Instant::now() + wait;
            if q.next.is_none_or(|t| t < until) {
                q.next = Some(until);
            }
        }
    }

    async fn turn(&self, urgent: bool) -> Turn<'_> {
        let rx = {
            let Ok(mut q) = self.queue.lock() else { return Turn(self) };
            if !q.busy {
                q.busy = true;
                None
            } else {
                let (go, rx) = oneshot::channel();
                q.seq += 1;
                let seq = q.seq;
                q.waiting.push(Waiter { urgent, seq, go });
                Some(rx)
            }
        };
        if let Some(rx) = rx {
            // The sender is only dropped unsent with the whole budget.
            let _ = rx.await;
        }
        Turn(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn calls_are_spaced_by_the_budget_and_a_final_state_goes_first() {
        let b = Arc::new(MethodBudget::new("chat.update", 600)); // 100 ms apart
        let order = Arc::new(Mutex::new(Vec::new()));
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        for (i, urgent) in [(0, false), (1, false), (2, false), (3, true)] {
            let (b, order) = (b.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                b.wait(urgent).await;
                order.lock().unwrap().push((i, t0.elapsed().as_millis()));
            }));
            tokio::task::yield_now().await;
        }
        for t in tasks {
            t.await.unwrap();
        }
        let order = order.lock().unwrap().clone();
        // 0 takes the free slot, 1 waits for the next; the final state (3) overtakes 2, queued
        // before it.
        assert_eq!(order.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![0, 1, 3, 2]);
        for (k, (_, ms)) in order.iter().enumerate() {
            assert!(*ms >= 100 * k as u128, "call {k} went out {ms} ms after the first, before its slot: {order:?}");
        }
    }

    #[tokio::test]
    async fn a_retry_after_holds_back_the_next_call() {
        let b = MethodBudget::new("chat.update", 600);
        b.wait(false).await;
        b.back_off(Duration::from_secs(1));
        let t = Instant::now();
        b.wait(true).await;
        assert!(t.elapsed() >= Duration::from_millis(1000), "the next call went out {:?} after a 1 s Retry-After", t.elapsed());
    }
}
