//! Rate limiting primitives shared by every service. Two shapes:
//!
//! - [`RateLimiter`]: a keyed token bucket (`per_second`, `burst`) for request rates,
//!   used by ingest per tenant.
//! - [`FailureBackoff`]: exponential backoff on *failed attempts* per key (an account,
//!   a client address, an API-key prefix), used by the API's credential endpoints:
//!   the first `free_failures` failures within `window` cost nothing, every further one
//!   doubles the wait before the next attempt, up to `max_delay`; a success resets it.
//!
//! Both are in-process and per replica: with N replicas a caller gets up to N times the
//! allowance, which still bounds abuse of one process (a global limit needs shared
//! state, such as a gateway, and is out of scope). Memory is bounded by `max_keys`.

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
    last_failure: Instant,
    blocked_until: Option<Instant>,
}

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
        match self.lock().get(key).and_then(|e| e.blocked_until) {
            Some(until) if until > now => Err(until - now),
            _ => Ok(()),
        }
    }

    /// Records a failed attempt; returns the wait now imposed on `key`, if any.
    pub fn failure(&self, key: &str) -> Option<Duration> {
        self.failure_at(key, Instant::now())
    }

    fn failure_at(&self, key: &str, now: Instant) -> Option<Duration> {
        let c = self.config;
        let mut entries = self.lock();
        if entries.len() >= c.max_keys && !entries.contains_key(key) {
            entries.retain(|_, e| now.duration_since(e.last_failure) < c.window);
            if entries.len() >= c.max_keys {
                // Still full: forget the least recently failed half.
                let mut ages: Vec<Instant> = entries.values().map(|e| e.last_failure).collect();
                ages.sort_unstable();
                let cutoff = ages[ages.len() / 2];
                entries.retain(|_, e| e.last_failure > cutoff);
            }
        }
        let entry = entries.entry(key.to_owned()).or_insert(Entry {
            failures: 0,
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

    /// Forgets `key`'s failures (after a successful attempt).
    pub fn success(&self, key: &str) {
        self.lock().remove(key);
    }

    /// Number of tracked keys.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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

// ------------------------------------------------------------------ token bucket

use std::hash::Hash;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// `per_second` requests on average, bursts of up to `burst`, per key.
#[derive(Debug)]
pub struct RateLimiter<K> {
    per_second: f64,
    burst: f64,
    max_keys: usize,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// `per_second <= 0` disables the limit.
    pub fn new(per_second: f64, burst: u32) -> Self {
        Self {
            per_second,
            burst: f64::from(burst.max(1)),
            max_keys: 100_000,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key`, or says how long to wait before one is available.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: &K, now: Instant) -> Result<(), Duration> {
        if self.per_second <= 0.0 {
            return Ok(());
        }
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= self.max_keys && !buckets.contains_key(key) {
            let (rate, burst) = (self.per_second, self.burst);
            buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * rate < burst
            });
        }
        let bucket = buckets.entry(key.clone()).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / self.per_second,
            ))
        }
    }
}

/// Whole seconds for a `Retry-After` header: never 0, rounded up.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0).max(u64::from(wait.is_zero()))
}

#[cfg(test)]
mod token_bucket_tests {
    use super::*;

    #[test]
    fn bursts_then_refills_per_key() {
        let limiter = RateLimiter::new(2.0, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check_at(&"a", t0).is_ok());
        }
        let wait = limiter.check_at(&"a", t0).unwrap_err();
        assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500));
        // Another key is not affected.
        assert!(limiter.check_at(&"b", t0).is_ok());
        // Half a second later one token is back.
        assert!(
            limiter
                .check_at(&"a", t0 + Duration::from_millis(500))
                .is_ok()
        );
        assert!(
            limiter
                .check_at(&"a", t0 + Duration::from_millis(500))
                .is_err()
        );
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }

    #[test]
    fn memory_is_bounded() {
        let mut limiter = RateLimiter::new(1000.0, 1);
        limiter.max_keys = 10;
        let t0 = Instant::now();
        for k in 0..100 {
            let _ = limiter.check_at(&k, t0 + Duration::from_secs(k));
        }
        assert!(limiter.buckets.lock().unwrap().len() <= 11);
        assert!(RateLimiter::new(0.0, 1).check(&1).is_ok());
    }
}
