//! Subject erasure: a tenant erases one of its end users (`user_key`). The api records
//! the request in the erasure ledger (`app.erasures`) and answers 202 at once; the
//! transform deletes the subject's events in bounded steps and recomputes the facts and
//! attribution that depended on them (`pipeline::erasure`), and
//! `GET /v1/subjects/erasures/{id}` says how far it got.
//!
//! The subject is named by a keyed hash, [`SubjectKey::hash`] (HMAC-SHA256 of the
//! tenant and the `user_key`, key from `BEACON_SUBJECT_HASH_KEY_FILE`): in the audit
//! log, in answers, and in the ledger once the events are gone. The `user_key` itself
//! is kept only while its events are being deleted. At most
//! `BEACON_MAX_PENDING_ERASURES` erasures per tenant are open at once (429 beyond).

pub(crate) mod queries;

use std::{fmt, time::Duration};

use axum::{
    Json,
    extract::{Path, State},
    http::{HeaderValue, StatusCode, header},
    response::IntoResponse,
};
use domain::admin::Erasure;
use hmac::{Hmac, Mac as _};
use platform::http::Problem;
use serde_json::json;
use sha2::Sha256;
use uuid::Uuid;

use crate::{
    AppState,
    audit::{self, action},
    error::{ApiError, bad_request},
    extract::{Id, Meta},
    openapi::{Errors, ProblemDoc},
    tenant::Tenant,
};

/// Longest `user_key` accepted (characters). Events carry at most the loader's
/// `BEACON_MAX_STRING_LEN` (256 by default); this leaves room for a raised limit.
pub const MAX_USER_KEY_CHARS: usize = 1024;

/// Shortest hash key accepted (bytes).
pub const MIN_KEY_BYTES: usize = 32;

/// How long a caller refused for too many open erasures is told to wait.
const RETRY_AFTER: Duration = Duration::from_secs(60);

/// The key subjects are hashed with. Never printed.
#[derive(Clone)]
pub struct SubjectKey(Vec<u8>);

impl fmt::Debug for SubjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SubjectKey(..)")
    }
}

impl SubjectKey {
    /// A key of at least [`MIN_KEY_BYTES`] bytes (surrounding white space ignored).
    pub fn new(bytes: &[u8]) -> anyhow::Result<Self> {
        let key = bytes.trim_ascii();
        anyhow::ensure!(
            key.len() >= MIN_KEY_BYTES,
            "the subject hash key must be at least {MIN_KEY_BYTES} bytes"
        );
        Ok(Self(key.to_vec()))
    }

    /// A random key, for tests and tools that never compare hashes across processes.
    pub fn random() -> Self {
        Self(rand::random::<[u8; 32]>().to_vec())
    }

    /// HMAC-SHA256(key, tenant id (16 bytes) ‖ user_key): the same `user_key` in two
    /// tenants hashes differently, and without the key nobody can test a guess.
    pub fn hash(&self, tenant: Uuid, user_key: &str) -> [u8; 32] {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC accepts keys of any length");
        mac.update(tenant.as_bytes());
        mac.update(user_key.as_bytes());
        let mut hash = [0; 32];
        hash.copy_from_slice(&mac.finalize().into_bytes());
        hash
    }
}

/// Erasure settings of the api.
#[derive(Debug, Clone)]
pub struct Erasures {
    pub key: SubjectKey,
    /// Open (not completed) erasures per tenant; more answer 429.
    pub max_pending: u32,
}

fn check_user_key(user_key: &str) -> Result<(), ApiError> {
    let len = user_key.chars().count();
    if len == 0 || len > MAX_USER_KEY_CHARS || user_key.chars().any(char::is_control) {
        return Err(bad_request(format!(
            "user_key must be 1 to {MAX_USER_KEY_CHARS} characters without control characters"
        ))
        .into());
    }
    Ok(())
}

/// Erase one end user: every raw event with this `user_key` in the caller's tenant is
/// deleted, and the daily facts and attribution are recomputed without them. Answers
/// 202 with the erasure (the same one again while an erasure of this subject is still
/// open); follow it at `GET /v1/subjects/erasures/{id}`. Events of the same `user_key`
/// received after the erasure completed are new data and are kept.
#[utoipa::path(delete, path = "/v1/subjects/{user_key}", operation_id = "eraseSubject", tag = "subjects",
    params(("user_key" = String, Path, description = "The end user's key, as events carry it (URL-encoded; 1 to 1024 characters)")),
    responses(
        (status = 202, body = Erasure, description = "Accepted; `Location` names the erasure",
            headers(("Location" = String, description = "/v1/subjects/erasures/{id}"))),
        (status = 429, body = ProblemDoc, content_type = "application/problem+json",
            description = "Too many erasures of this tenant are still open; see Retry-After",
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        Errors))]
pub async fn erase(
    State(state): State<AppState>,
    tenant: Tenant,
    meta: Meta,
    Path(user_key): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    check_user_key(&user_key)?;
    let hash = state.erasures.key.hash(tenant.id(), &user_key);
    let mut tx = tenant.begin().await?;
    // One request of this tenant at a time: the open-erasure count cannot be raced.
    queries::lock_tenant(&mut tx, tenant.id()).await?;
    let erasure = match queries::open_for(&mut tx, &hash).await? {
        // Already asked for and still open: the same erasure, nothing new recorded.
        Some(open) => open,
        None => {
            let open = queries::count_open(&mut tx).await?;
            if open >= i64::from(state.erasures.max_pending) {
                return Err(Problem::too_many_requests(RETRY_AFTER)
                    .detail(format!(
                        "{open} erasures of this tenant are still in progress (at most {}); retry when one completes",
                        state.erasures.max_pending
                    ))
                    .into());
            }
            let erasure = queries::insert(
                &mut tx,
                tenant.id(),
                &hash,
                &user_key,
                tenant.caller.actor(),
            )
            .await?;
            audit::success(
                &mut tx,
                &meta,
                tenant.caller.actor(),
                action::SUBJECT_ERASURE_REQUESTED,
                json!({ "erasure": erasure.id, "subject_hash": erasure.subject_hash }),
            )
            .await?;
            erasure
        }
    };
    tx.commit().await?;
    let location = HeaderValue::from_str(&format!("/v1/subjects/erasures/{}", erasure.id))
        .map_err(|_| Problem::internal())?;
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(erasure),
    ))
}

/// One erasure of the caller's tenant: `pending` while the subject's events are being
/// deleted, `recomputing` while the attribution of the days it converted on is
/// recomputed, then `completed`.
#[utoipa::path(get, path = "/v1/subjects/erasures/{id}", operation_id = "getErasure", tag = "subjects",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Erasure), Errors))]
pub async fn get(tenant: Tenant, Id(id): Id) -> Result<Json<Erasure>, ApiError> {
    let mut tx = tenant.begin().await?;
    let erasure = queries::get(&mut tx, id).await?;
    tx.commit().await?;
    Ok(Json(erasure.ok_or_else(Problem::not_found)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_keyed_and_per_tenant() {
        let key = SubjectKey::new(&[7; 32]).unwrap();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(key.hash(a, "u1"), key.hash(a, "u1"));
        assert_ne!(key.hash(a, "u1"), key.hash(b, "u1"));
        assert_ne!(key.hash(a, "u1"), key.hash(a, "u2"));
        let other = SubjectKey::new(&[8; 32]).unwrap();
        assert_ne!(key.hash(a, "u1"), other.hash(a, "u1"));
        assert!(SubjectKey::new(b"  short key \n").is_err());
        assert_eq!(format!("{key:?}"), "SubjectKey(..)");
    }

    /// The hash is HMAC-SHA256(key, tenant id's 16 bytes ‖ user_key): the vector the
    /// restore procedure's SQL (`hmac(uuid_send(tenant) || convert_to(user_key,
    /// 'UTF8'), key, 'sha256')`, docs/SECURITY.md §9) gives too.
    #[test]
    fn hash_matches_the_replay_procedures_sql() {
        let key = SubjectKey::new(b"abcdefghijklmnopqrstuvwxyz012345").unwrap();
        let tenant: Uuid = "6f9619ff-8b86-d011-b42d-00c04fc964ff".parse().unwrap();
        assert_eq!(
            hex::encode(key.hash(tenant, "subject-42")),
            "583362aed1324c6aef01697a3d3e63cb1299e6a06cd5219eef11e013e83f7708"
        );
    }

    #[test]
    fn user_keys_are_bounded() {
        assert!(check_user_key("u-1").is_ok());
        assert!(check_user_key("").is_err());
        assert!(check_user_key("a\u{0}b").is_err());
        assert!(check_user_key(&"x".repeat(MAX_USER_KEY_CHARS)).is_ok());
        assert!(check_user_key(&"x".repeat(MAX_USER_KEY_CHARS + 1)).is_err());
    }
}
