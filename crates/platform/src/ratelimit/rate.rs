//! [`RateLimiter`]: `per_second` requests on average, bursts of up to `burst`, per key.
//!
//! The arithmetic is governor's keyed GCRA limiter (equivalent to a token bucket).
//! The keys it tracks live in [`Keys`], a state store of ours, because governor's own
//! stores cannot keep memory bounded: their `retain_recent` only drops keys whose
//! state is the same as a fresh one, so a spray of keys that are all in use grows the
//! map without limit. [`Keys`] holds at most `max_keys`: when full, the half whose
//! state is nearest to a fresh one (smallest theoretical arrival time) is dropped,
//! which removes idle keys first and costs a dropped key at most its unused burst.
//! A new key is always admitted, so whoever holds many keys cannot lock others out,
//! and a key that is being refused is the last to be dropped, so spraying new keys
//! does not reset it.

use std::{
    collections::HashMap,
    fmt,
    hash::Hash,
    num::NonZeroU32,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use governor::{
    Quota,
    clock::{Clock, MonotonicClock},
    middleware::NoOpMiddleware,
    nanos::Nanos,
    state::StateStore,
};

/// Keys tracked per limiter: a tenant or a subject is a few dozen bytes, so a few MB.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

/// The slowest rate a limiter keeps exactly (one request a day); a slower one is
/// taken as this (governor's arithmetic is in `u64` nanoseconds).
const SLOWEST_PERIOD: Duration = Duration::from_secs(24 * 60 * 60);

type Gcra<K, C> = governor::RateLimiter<K, Keys<K>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// `per_second` requests on average, bursts of up to `burst`, per key.
pub struct RateLimiter<K: Hash + Eq + Clone, C: Clock = MonotonicClock> {
    /// `None`: no limit.
    gcra: Option<Gcra<K, C>>,
    /// The same store as the limiter's (shared), for the refusal counts.
    keys: Keys<K>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// `per_second <= 0` disables the limit.
    pub fn new(per_second: f64, burst: u32) -> Self {
        Self::with_clock(per_second, burst, DEFAULT_MAX_KEYS, MonotonicClock)
    }
}

impl<K: Hash + Eq + Clone, C: Clock> RateLimiter<K, C> {
    /// A limiter tracking at most `max_keys` keys, on `clock`.
    pub fn with_clock(per_second: f64, burst: u32, max_keys: usize, clock: C) -> Self {
        let keys = Keys::new(max_keys);
        Self {
            gcra: quota(per_second, burst)
                .map(|quota| governor::RateLimiter::new(quota, keys.clone(), clock)),
            keys,
        }
    }

    /// Takes one request's allowance for `key`, or says how long to wait for one.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        let Some(gcra) = &self.gcra else {
            return Ok(());
        };
        gcra.check_key(key)
            .map_err(|refused| refused.wait_time_from(gcra.clock().now()))
    }

    /// For records that may repeat without bound (a client hammering a forbidden
    /// route): `Some(n)` when this one may be written, `n` being how many of the key
    /// were refused since the last one written (write it with the record); `None` when
    /// this one is only counted. Counts are never lost or counted twice while the key
    /// is tracked; which record carries a refusal that races with an admission is not
    /// fixed.
    pub fn sample(&self, key: &K) -> Option<u64> {
        self.check(key).ok().map(|()| self.keys.take_refused(key))
    }

    /// Keys tracked now.
    pub fn tracked(&self) -> usize {
        self.keys.lock().len()
    }
}

impl<K: Hash + Eq + Clone, C: Clock> fmt::Debug for RateLimiter<K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("limited", &self.gcra.is_some())
            .field("max_keys", &self.keys.max)
            .field("tracked", &self.tracked())
            .finish()
    }
}

/// The quota of `per_second` and `burst`; `None` (no limit) unless `per_second > 0`.
fn quota(per_second: f64, burst: u32) -> Option<Quota> {
    if per_second.is_nan() || per_second <= 0.0 {
        return None;
    }
    let period = Duration::try_from_secs_f64(1.0 / per_second)
        .unwrap_or(SLOWEST_PERIOD)
        .clamp(Duration::from_nanos(1), SLOWEST_PERIOD);
    // A burst's span (period × burst) must fit governor's nanoseconds, with room.
    let longest = u64::MAX / 4 / u64::try_from(period.as_nanos()).unwrap_or(u64::MAX);
    let burst = u32::try_from(u64::from(burst).min(longest)).unwrap_or(u32::MAX);
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(period).map(|q| q.allow_burst(burst))
}

/// One key's state: governor's theoretical arrival time, and the refusals since the
/// last admission (for [`RateLimiter::sample`]).
#[derive(Debug, Clone, Copy)]
struct Tracked {
    tat: Nanos,
    refused: u64,
}

/// At most `max` keys' states, shared between the limiter and its owner.
#[derive(Debug, Clone)]
struct Keys<K> {
    max: usize,
    map: Arc<Mutex<HashMap<K, Tracked>>>,
}

impl<K: Hash + Eq + Clone> Keys<K> {
    fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            map: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, Tracked>> {
        // A poisoned lock only means another thread panicked between two counter
        // updates; the map is still usable.
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn take_refused(&self, key: &K) -> u64 {
        self.lock()
            .get_mut(key)
            .map_or(0, |t| std::mem::take(&mut t.refused))
    }
}

/// Drops the half of the keys whose state is nearest to a fresh one (ties at the
/// median go too). Linear, and at most once per `max / 2` new keys.
fn make_room<K>(map: &mut HashMap<K, Tracked>) {
    let mut tats: Vec<Nanos> = map.values().map(|t| t.tat).collect();
    let half = tats.len() / 2;
    let (_, &mut cutoff, _) = tats.select_nth_unstable(half);
    map.retain(|_, t| t.tat > cutoff);
}

impl<K: Hash + Eq + Clone> StateStore for Keys<K> {
    type Key = K;

    fn measure_and_replace<T, F, E>(&self, key: &K, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let mut map = self.lock();
        if let Some(tracked) = map.get_mut(key) {
            return match f(Some(tracked.tat)) {
                Ok((outcome, tat)) => {
                    tracked.tat = tat;
                    Ok(outcome)
                }
                Err(refused) => {
                    tracked.refused = tracked.refused.saturating_add(1);
                    Err(refused)
                }
            };
        }
        let (outcome, tat) = f(None)?;
        if map.len() >= self.max {
            make_room(&mut map);
        }
        map.insert(key.clone(), Tracked { tat, refused: 0 });
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;

    use super::*;

    fn limiter(
        per_second: f64,
        burst: u32,
        max_keys: usize,
    ) -> (RateLimiter<u64, FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        (
            RateLimiter::with_clock(per_second, burst, max_keys, clock.clone()),
            clock,
        )
    }

    #[test]
    fn bursts_then_refills_per_key() {
        let (limiter, clock) = limiter(2.0, 3, 10);
        for _ in 0..3 {
            assert!(limiter.check(&1).is_ok());
        }
        let wait = limiter.check(&1).unwrap_err();
        assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500));
        // Another key is not affected.
        assert!(limiter.check(&2).is_ok());
        // Half a second later one token is back.
        clock.advance(Duration::from_millis(500));
        assert!(limiter.check(&1).is_ok());
        assert!(limiter.check(&1).is_err());
    }

    #[test]
    fn sampling_counts_what_it_leaves_out() {
        let (limiter, clock) = limiter(1.0, 2, 10);
        assert_eq!(limiter.sample(&1), Some(0));
        assert_eq!(limiter.sample(&1), Some(0));
        for _ in 0..5 {
            assert_eq!(limiter.sample(&1), None);
        }
        assert_eq!(limiter.sample(&2), Some(0), "keys are independent");
        // The next record admitted carries the five left out, then the count restarts.
        clock.advance(Duration::from_secs(1));
        assert_eq!(limiter.sample(&1), Some(5));
        assert_eq!(limiter.sample(&1), None);
        clock.advance(Duration::from_secs(1));
        assert_eq!(limiter.sample(&1), Some(1));
    }

    #[test]
    fn memory_is_bounded_and_a_new_key_is_always_admitted() {
        let (limiter, clock) = limiter(1.0, 3, 10);
        // Keys that go idle, then keys all in use at the same moment: never more than
        // the cap, and every new key gets its allowance.
        for k in 0..100 {
            assert!(limiter.check(&k).is_ok(), "key {k} refused");
            clock.advance(Duration::from_secs(1));
            assert!(limiter.tracked() <= 10);
        }
        for k in 100..1_000 {
            assert!(limiter.check(&k).is_ok(), "key {k} refused");
            assert!(limiter.tracked() <= 10);
        }
    }

    #[test]
    fn a_spray_of_new_keys_does_not_reset_a_limited_key() {
        let (limiter, _clock) = limiter(1.0, 3, 10);
        while limiter.check(&0).is_ok() {}
        for _ in 0..20 {
            assert!(limiter.check(&0).is_err());
        }
        for k in 1..1_000 {
            let _ = limiter.check(&k);
            assert!(limiter.check(&0).is_err(), "reset after {k} other keys");
        }
        assert_eq!(limiter.sample(&0), None);
    }

    #[test]
    fn no_rate_means_no_limit() {
        for per_second in [0.0, -1.0, f64::NAN] {
            let (limiter, _) = limiter(per_second, 1, 10);
            for _ in 0..100 {
                assert!(limiter.check(&1).is_ok());
            }
            assert_eq!(limiter.sample(&1), Some(0));
            assert_eq!(limiter.tracked(), 0);
        }
        // Extreme settings neither panic nor overflow.
        for (per_second, burst) in [(1e-30, u32::MAX), (1e30, u32::MAX), (f64::INFINITY, 1)] {
            let (limiter, _) = limiter(per_second, burst, 10);
            assert!(limiter.check(&1).is_ok());
        }
    }
}
