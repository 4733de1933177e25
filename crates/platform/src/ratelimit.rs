//! A keyed token-bucket rate limiter, shared by every service that limits callers
//! (ingest per tenant today; login and token exchange can use the same type).
//!
//! In-process and per replica: with N replicas a caller gets up to N times the rate.
//! That bounds abuse of one process, which is the point; a global limit needs shared
//! state (a gateway or Redis) and is out of scope here. Memory is bounded: when more
//! than `max_keys` callers are tracked, buckets that have refilled completely (and so
//! carry no information) are dropped.

use std::{
    collections::HashMap,
    hash::Hash,
    sync::Mutex,
    time::{Duration, Instant},
};

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
mod tests {
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
