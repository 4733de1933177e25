//! Rate limiting primitives shared by every service. Two shapes:
//!
//! - [`RateLimiter`]: a keyed request rate (`per_second`, `burst`): governor's keyed
//!   GCRA limiter (the token-bucket arithmetic) on a key store that bounds memory by a
//!   cap on tracked keys. Used by ingest per tenant; [`RateLimiter::sample`] turns it
//!   into a sampler for repetitive records (one audit row per burst, with the count of
//!   those left out).
//! - [`FailureBackoff`]: exponential backoff on *failed attempts* per key, used by the
//!   API's credential endpoints.
//!
//! Both are in-process and per replica: with N replicas a caller gets up to N times the
//! allowance, which still bounds abuse of one process (a global limit needs shared
//! state, such as a gateway, and is out of scope). Memory is bounded by `max_keys`,
//! and a new key is always admitted (no party holding keys can lock others out).

mod backoff;
mod rate;

use std::time::Duration;

pub use backoff::{Attempt, BackoffConfig, FailureBackoff};
pub use rate::{DEFAULT_MAX_KEYS, RateLimiter};

/// Whole seconds for a `Retry-After` header: never 0, rounded up.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0).max(u64::from(wait.is_zero()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_whole_seconds_rounded_up_and_never_zero() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }
}
