//! A bounded memo of verified tokens, keyed by the SHA-256 of the token's exact bytes,
//! so a client sending the same token again skips the Ed25519 verification. Each
//! entry lives until its token expires (moka's per-entry expiry); the memo holds at
//! most `max` entries and evicts the least useful when full, never everything at
//! once. Only tokens that passed full verification are stored; a hit re-checks
//! expiry, and different bytes (a tampered token) never hit.

use std::time::{Duration, Instant};

use axum::http::HeaderValue;
use moka::{Expiry, sync::Cache};
use platform::auth::{Claims, TokenError, TokenVerifier};

#[derive(Debug)]
pub struct VerifiedTokens {
    entries: Cache<[u8; 32], Claims>,
}

/// An entry expires with its token.
struct UntilTokenExpiry;

impl Expiry<[u8; 32], Claims> for UntilTokenExpiry {
    fn expire_after_create(&self, _: &[u8; 32], claims: &Claims, _: Instant) -> Option<Duration> {
        let left = claims.exp.saturating_sub(now());
        Some(Duration::from_secs(u64::try_from(left).unwrap_or(0)))
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

impl VerifiedTokens {
    pub fn new(max: u64) -> Self {
        Self {
            entries: Cache::builder()
                .max_capacity(max)
                .expire_after(UntilTokenExpiry)
                .build(),
        }
    }

    fn key(token: &str) -> [u8; 32] {
        use sha2::Digest as _;
        sha2::Sha256::digest(token.as_bytes()).into()
    }

    /// Verifies `Authorization: Bearer …`, from the memo when these exact bytes passed before.
    pub fn verify(
        &self,
        verifier: &TokenVerifier,
        header: Option<&HeaderValue>,
    ) -> Result<Claims, TokenError> {
        let key = header
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(|t| Self::key(t.trim()));
        if let Some(claims) = key
            .as_ref()
            .and_then(|k| self.entries.get(k))
            .filter(|c| c.exp > now())
        {
            return Ok(claims);
        }
        let claims = verifier.verify_bearer(header)?;
        if let Some(key) = key {
            self.entries.insert(key, claims.clone());
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::tests::{claims, keys, sign};

    #[test]
    fn the_verified_token_memo_rechecks_expiry_and_never_matches_other_bytes() {
        let k = keys();
        let verifier = TokenVerifier::from_public_pems(std::slice::from_ref(&k.public)).unwrap();
        let memo = VerifiedTokens::new(2);
        let header = |t: &str| HeaderValue::from_str(&format!("Bearer {t}")).unwrap();
        let c = claims("kpis:read");
        let good = sign(&k, &c);
        assert_eq!(memo.verify(&verifier, Some(&header(&good))).unwrap(), c);
        assert_eq!(memo.verify(&verifier, Some(&header(&good))).unwrap(), c);
        // An entry past its token's expiry is not used: the token is verified again.
        let key = VerifiedTokens::key(&good);
        memo.entries.insert(
            key,
            Claims {
                exp: 0,
                ..c.clone()
            },
        );
        assert_eq!(memo.verify(&verifier, Some(&header(&good))).unwrap(), c);
        // An expired entry for bytes that never verify is refused, not served.
        let expired = Claims {
            exp: c.iat - 60,
            nbf: c.iat - 120,
            ..c.clone()
        };
        memo.entries.insert(VerifiedTokens::key("forged"), expired);
        assert!(memo.verify(&verifier, Some(&header("forged"))).is_err());
        // A live entry lives as long as its token, not longer.
        let live = UntilTokenExpiry.expire_after_create(&key, &c, Instant::now());
        assert!(
            live.is_some_and(|d| d <= Duration::from_secs(300) && d >= Duration::from_secs(290))
        );
        // Bounded, without forgetting everything at once.
        for _ in 0..5 {
            let t = sign(&k, &claims("kpis:read"));
            memo.verify(&verifier, Some(&header(&t))).unwrap();
        }
        memo.entries.run_pending_tasks();
        assert!(memo.entries.entry_count() <= 2);
    }
}
