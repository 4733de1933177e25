//! [`FailureBackoff`]: exponential backoff on *failed attempts* per key (an account, a
//! client address, an API-key prefix), used by the API's credential endpoints. The
//! first `free_failures` failures within `window` cost nothing, every further one
//! doubles the wait before the next attempt, up to `max_delay`; a success resets it.
//! An attempt is admitted with [`FailureBackoff::begin`] and counts as a failure while
//! it runs, so a burst of parallel attempts on one key cannot all start before the
//! first failure is recorded.
//!
//! Hand-written on purpose: this is not a rate (governor's limiters count cells per
//! period, not failures with a growing penalty and attempts in flight).

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// Settings of a [`FailureBackoff`].
#[derive(Debug, Clone, Copy)]
pub struct BackoffConfig {
    /// Failures allowed before any delay.
    pub free_failures: u32,
    /// Delay after the first failure beyond the free ones; doubles with each further one.
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// A key with no failure for this long is forgotten.
    pub window: Duration,
    /// At most this many keys are tracked; the least recently failed are dropped first.
    pub max_keys: usize,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            free_failures: 5,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(15 * 60),
            window: Duration::from_secs(60 * 60),
            max_keys: 100_000,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    /// Attempts admitted by [`FailureBackoff::begin`] and not finished yet.
    in_flight: u32,
    last_failure: Instant,
    blocked_until: Option<Instant>,
}

/// Wait suggested to a caller refused because its earlier attempts are still running.
const IN_FLIGHT_WAIT: Duration = Duration::from_secs(1);

/// Exponential backoff on failures, per key. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct FailureBackoff {
    config: BackoffConfig,
    entries: Mutex<HashMap<String, Entry>>,
}

impl FailureBackoff {
    pub fn new(config: BackoffConfig) -> Self {
        Self {
            config,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A poisoned lock only means another thread panicked mid-update of counters;
        // the map is still usable.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `Err(wait)` while `key` must wait before its next attempt.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        self.check_at(key, Instant::now())
    }

    /// Like [`check`](Self::check) for several keys at once: the longest wait wins.
    pub fn check_all<'a>(&self, keys: impl IntoIterator<Item = &'a str>) -> Result<(), Duration> {
        let now = Instant::now();
        let wait = keys
            .into_iter()
            .filter_map(|k| self.check_at(k, now).err())
            .max();
        wait.map_or(Ok(()), Err)
    }

    fn check_at(&self, key: &str, now: Instant) -> Result<(), Duration> {
        match self.lock().get(key) {
            Some(e) => self.verdict(e, now),
            None => Ok(()),
        }
    }

    /// Whether one more attempt may start now: not while blocked, and, once the free
    /// failures are used up (counting those in flight as failures), not while another
    /// attempt of the key is still running.
    fn verdict(&self, e: &Entry, now: Instant) -> Result<(), Duration> {
        if let Some(until) = e.blocked_until.filter(|u| *u > now) {
            return Err(until - now);
        }
        let failures = if now.duration_since(e.last_failure) >= self.config.window {
            0
        } else {
            e.failures
        };
        if e.in_flight > 0 && failures.saturating_add(e.in_flight) >= self.config.free_failures {
            return Err(IN_FLIGHT_WAIT);
        }
        Ok(())
    }

    /// Admits one attempt of `key`, or says how long to wait. The attempt counts against
    /// the key until it is finished with [`Attempt::failed`] or [`Attempt::succeeded`]
    /// (or dropped, which counts as neither).
    pub fn begin(&self, key: &str) -> Result<Attempt<'_>, Duration> {
        let now = Instant::now();
        let mut entries = self.lock();
        if let Some(e) = entries.get(key) {
            self.verdict(e, now)?;
        } else {
            self.make_room(&mut entries, now);
        }
        entries
            .entry(key.to_owned())
            .or_insert(Entry {
                failures: 0,
                in_flight: 0,
                last_failure: now,
                blocked_until: None,
            })
            .in_flight += 1;
        Ok(Attempt {
            backoff: self,
            key: key.to_owned(),
        })
    }

    fn finish(&self, key: &str) {
        let mut entries = self.lock();
        if let Some(e) = entries.get_mut(key) {
            e.in_flight = e.in_flight.saturating_sub(1);
            if e.in_flight == 0 && e.failures == 0 {
                entries.remove(key);
            }
        }
    }

    /// Drops expired keys when the map is full, then the least recently failed half.
    /// Keys with attempts in flight are kept.
    fn make_room(&self, entries: &mut HashMap<String, Entry>, now: Instant) {
        let c = self.config;
        if entries.len() < c.max_keys {
            return;
        }
        entries.retain(|_, e| e.in_flight > 0 || now.duration_since(e.last_failure) < c.window);
        if entries.len() >= c.max_keys {
            let mut ages: Vec<Instant> = entries.values().map(|e| e.last_failure).collect();
            ages.sort_unstable();
            let cutoff = ages[ages.len() / 2];
            entries.retain(|_, e| e.in_flight > 0 || e.last_failure > cutoff);
        }
    }

    /// Records a failed attempt; returns the wait now imposed on `key`, if any.
    pub fn failure(&self, key: &str) -> Option<Duration> {
        self.failure_at(key, Instant::now())
    }

    fn failure_at(&self, key: &str, now: Instant) -> Option<Duration> {
        let c = self.config;
        let mut entries = self.lock();
        if !entries.contains_key(key) {
            self.make_room(&mut entries, now);
        }
        let entry = entries.entry(key.to_owned()).or_insert(Entry {
            failures: 0,
            in_flight: 0,
            last_failure: now,
            blocked_until: None,
        });
        if now.duration_since(entry.last_failure) >= c.window {
            entry.failures = 0;
        }
        entry.failures = entry.failures.saturating_add(1);
        entry.last_failure = now;
        let over = entry.failures.saturating_sub(c.free_failures);
        if over == 0 {
            return None;
        }
        let factor = 1u32.checked_shl(over - 1).unwrap_or(u32::MAX);
        let delay = c.base_delay.saturating_mul(factor).min(c.max_delay);
        entry.blocked_until = Some(now + delay);
        Some(delay)
    }

    /// Forgets `key`'s failures (after a successful attempt); attempts still in flight
    /// keep counting.
    pub fn success(&self, key: &str) {
        let mut entries = self.lock();
        if let Some(e) = entries.get_mut(key) {
            if e.in_flight == 0 {
                entries.remove(key);
            } else {
                e.failures = 0;
                e.blocked_until = None;
            }
        }
    }

    /// Number of tracked keys.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An attempt admitted by [`FailureBackoff::begin`]: it counts against its key until
/// it is finished. Dropping it unfinished (a cancelled request) only releases it.
#[derive(Debug)]
#[must_use = "an attempt counts against its key until finished or dropped"]
pub struct Attempt<'a> {
    backoff: &'a FailureBackoff,
    key: String,
}

impl Attempt<'_> {
    /// The attempt failed: recorded as a failure of the key; returns the wait imposed.
    pub fn failed(self) -> Option<Duration> {
        self.backoff.failure(&self.key)
    }

    /// The attempt succeeded: the key's failures are forgotten.
    pub fn succeeded(self) {
        self.backoff.success(&self.key);
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        self.backoff.finish(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff(max_keys: usize) -> FailureBackoff {
        FailureBackoff::new(BackoffConfig {
            free_failures: 2,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(10),
            window: Duration::from_secs(100),
            max_keys,
        })
    }

    #[test]
    fn delay_doubles_after_the_free_failures_and_is_capped() {
        let b = backoff(10);
        let t = Instant::now();
        assert_eq!(b.failure_at("k", t), None);
        assert_eq!(b.failure_at("k", t), None);
        assert!(b.check_at("k", t).is_ok());
        let delays: Vec<_> = (0..6).filter_map(|_| b.failure_at("k", t)).collect();
        assert_eq!(
            delays,
            [1, 2, 4, 8, 10, 10].map(Duration::from_secs).to_vec()
        );
        assert_eq!(b.check_at("k", t), Err(Duration::from_secs(10)));
        assert!(b.check_at("k", t + Duration::from_secs(11)).is_ok());
        assert!(b.check_at("other", t).is_ok(), "keys are independent");
        b.success("k");
        assert!(b.check_at("k", t).is_ok());
    }

    #[test]
    fn attempts_in_flight_count_as_failures() {
        let b = backoff(10);
        // Two free failures: at most two attempts of a fresh key may run at once.
        let first = b.begin("k").unwrap();
        let second = b.begin("k").unwrap();
        assert_eq!(b.begin("k").unwrap_err(), IN_FLIGHT_WAIT);
        assert!(b.begin("other").is_ok(), "keys are independent");
        assert_eq!(first.failed(), None);
        // One failure recorded, one attempt running: the free failures are spoken for.
        assert!(b.begin("k").is_err());
        drop(second);
        // Dropped unfinished (a cancelled request): released, not counted.
        let third = b.begin("k").unwrap();
        assert_eq!(third.failed(), None);
        // Free failures used up: one attempt at a time, and it imposes the backoff.
        let fourth = b.begin("k").unwrap();
        assert!(b.begin("k").is_err());
        assert_eq!(fourth.failed(), Some(Duration::from_secs(1)));
        assert!(
            b.begin("k").unwrap_err() > Duration::from_millis(900),
            "blocked"
        );
        // A success forgets the failures, and a finished key is not kept.
        b.success("k");
        b.begin("k").unwrap().succeeded();
        assert!(!b.lock().contains_key("k"));
        assert!(b.is_empty());
    }

    #[test]
    fn keys_in_flight_survive_eviction() {
        let b = backoff(4);
        let running = b.begin("running").unwrap();
        let t = Instant::now();
        for i in 0..100 {
            b.failure_at(&format!("spray-{i}"), t + Duration::from_secs(i));
        }
        assert_eq!(b.lock()["running"].in_flight, 1);
        drop(running);
        assert!(!b.lock().contains_key("running"));
    }

    #[test]
    fn old_failures_are_forgotten_and_memory_is_bounded() {
        let b = backoff(4);
        let t = Instant::now();
        for _ in 0..3 {
            b.failure_at("k", t);
        }
        // After the window, the count starts over.
        assert_eq!(b.failure_at("k", t + Duration::from_secs(200)), None);
        for i in 0..100 {
            b.failure_at(&format!("spray-{i}"), t + Duration::from_secs(i));
        }
        assert!(b.len() <= 4, "{} keys tracked", b.len());
        let wait = b.check_all(["a", "b"]);
        assert!(wait.is_ok());
    }
}
