//! `POST /v1/auth/token`: the password grant (users) and the client-credentials grant
//! (an API key traded for a short-lived token), throttled per account (exponential
//! backoff) and per client address (slowed down, never locked out for long), every
//! outcome audited. Password verification runs a bounded number at a time: beyond
//! that the answer is 503 with `Retry-After`, at once and without hashing.
//!
//! There are no refresh tokens: a token lives `BEACON_TOKEN_TTL_MINUTES` (15 by
//! default) and the client signs in again (the dashboard asks the user; a machine
//! re-trades its API key). Every token therefore passes the one place that checks a
//! disabled user or a revoked key, and no long-lived bearer secret exists besides the
//! API key itself.

use axum::{Json, extract::State, http::StatusCode};
use platform::{
    auth::scope,
    http::Problem,
    ratelimit::{Attempt, BackoffConfig, FailureBackoff, retry_after_secs},
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    AppState, api_keys,
    audit::{self, Event, action},
    credentials::{Email, constant_time_eq, parse_api_key},
    error::{ApiError, Context as _},
    extract::{AppJson, Meta},
    openapi::TokenErrors,
    tenant::TenantTx,
};

#[derive(sqlx::FromRow)]
struct LoginRow {
    user_id: Uuid,
    tenant_id: Uuid,
    password_hash: String,
    role: String,
    disabled: bool,
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    key_id: Uuid,
    tenant_id: Uuid,
    secret_hash: Vec<u8>,
    scopes: Vec<String>,
    revoked: bool,
}

/// A token request: `grant_type` selects the fields.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(tag = "grant_type", rename_all = "snake_case", deny_unknown_fields)]
pub enum TokenRequest {
    /// A user's e-mail and password.
    Password {
        #[schema(max_length = 254)]
        username: String,
        #[schema(max_length = 1024)]
        password: String,
    },
    /// An API key (`bk_<prefix>_<secret>`).
    ClientCredentials {
        #[schema(max_length = 100)]
        client_secret: String,
    },
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    access_token: String,
    /// Always `Bearer`.
    token_type: &'static str,
    /// Seconds.
    expires_in: i64,
    /// Space-separated scopes.
    scope: String,
}

fn invalid_credentials() -> Problem {
    Problem::new(
        StatusCode::UNAUTHORIZED,
        "invalid-credentials",
        "Invalid credentials",
    )
}

fn throttled(wait: std::time::Duration) -> Problem {
    Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too-many-attempts",
        "Too many failed attempts, retry later",
    )
    .retry_after(retry_after_secs(wait))
}

/// Sign-ins refused (429) by a throttle, by `reason`: `account`, `address` or `both`.
pub(crate) const LOGIN_THROTTLED: &str = "auth_login_throttled_total";
/// Sign-ins refused for bad credentials (wrong, unknown, disabled, revoked, malformed).
pub(crate) const LOGIN_FAILURES: &str = "auth_login_failures_total";
/// Password sign-ins refused (503) because every verification slot was busy.
pub(crate) const LOGIN_BUSY: &str = "api_login_busy_total";

/// Login throttles: per account and per client address.
#[derive(Debug)]
pub struct LoginThrottle {
    pub account: FailureBackoff,
    pub address: FailureBackoff,
}

/// One sign-in attempt, admitted by both throttles and counted against both keys until
/// it is finished.
struct Attempts<'a> {
    account: Option<Attempt<'a>>,
    address: Option<Attempt<'a>>,
}

impl LoginThrottle {
    pub fn new(account: BackoffConfig, address: BackoffConfig) -> Self {
        Self {
            account: FailureBackoff::new(account),
            address: FailureBackoff::new(address),
        }
    }

    /// Admits an attempt on both keys, or answers 429 with the longer wait.
    fn begin(&self, account: Option<&str>, address: Option<&str>) -> Result<Attempts<'_>, Problem> {
        let account = account.map(|k| self.account.begin(k)).transpose();
        let address = address.map(|k| self.address.begin(k)).transpose();
        let (reason, wait) = match (account, address) {
            (Ok(account), Ok(address)) => return Ok(Attempts { account, address }),
            (Err(w), Ok(_)) => ("account", w),
            (Ok(_), Err(w)) => ("address", w),
            (Err(a), Err(b)) => ("both", a.max(b)),
        };
        metrics::counter!(LOGIN_THROTTLED, "reason" => reason).increment(1);
        tracing::warn!(reason, "login throttled");
        Err(throttled(wait))
    }
}

impl Attempts<'_> {
    /// Every refused sign-in ends here (`auth_login_failures_total`).
    fn failed(self) {
        metrics::counter!(LOGIN_FAILURES).increment(1);
        for attempt in [self.account, self.address].into_iter().flatten() {
            attempt.failed();
        }
    }

    /// The account's failures are forgotten; the address's are not (one success
    /// behind a shared address says nothing about the other attempts from it).
    fn succeeded(self) {
        if let Some(account) = self.account {
            account.succeeded();
        }
    }
}

/// The per-address throttle key: an IPv4 address, or the /64 an IPv6 address is in
/// (one host or home usually holds a whole /64, so it could rotate single addresses).
fn address_key(client: &str) -> String {
    match client.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => {
            let s = v6.segments();
            let net = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
            format!("addr:{net}/64")
        }
        _ => format!("addr:{client}"),
    }
}

/// What a successful grant issues a token for.
struct Grant {
    sub: String,
    tenant: Uuid,
    scopes: String,
    kind: &'static str,
}

/// Why a well-formed credential was refused: the account or key when it exists (its
/// tenant and actor, for the audit row), and the reason (logged and audited, never
/// told the caller).
struct Refusal {
    who: Option<(Uuid, String)>,
    reason: &'static str,
}

/// A credential in the form the look-up needs, with its throttle key.
enum Credential {
    /// A valid e-mail address (canonical) and a password of acceptable length.
    Password { email: Email, password: String },
    /// An API key's public prefix and the hash of its secret.
    Key { prefix: String, hash: Vec<u8> },
}

impl Credential {
    /// The grant's name, the per-account throttle key when the account can be named
    /// (the canonical e-mail, the form PostgreSQL stores and compares, or the key's
    /// public prefix), and the credential when it is well-formed.
    fn parse(request: TokenRequest) -> (&'static str, Option<String>, Option<Self>) {
        match request {
            TokenRequest::Password { username, password } => {
                let email = Email::parse(&username);
                let account = email.as_ref().map(|e| format!("user:{e}"));
                let credential = email
                    .filter(|_| password.len() <= 1024)
                    .map(|email| Self::Password { email, password });
                ("password", account, credential)
            }
            TokenRequest::ClientCredentials { client_secret } => {
                let key = parse_api_key(&client_secret);
                let account = key.as_ref().map(|(prefix, _)| format!("key:{prefix}"));
                let credential = key.map(|(prefix, hash)| Self::Key { prefix, hash });
                ("client_credentials", account, credential)
            }
        }
    }
}

/// Every grant takes this one path: throttled on the account and the client address;
/// a malformed credential costs an address failure and no look-up; a refusal is a
/// failure on both keys, an audit row and the one answer every refusal gets.
async fn grant(state: &AppState, meta: &Meta, request: TokenRequest) -> Result<Grant, ApiError> {
    let address = meta.client_addr.as_deref().map(address_key);
    let (kind, account, credential) = Credential::parse(request);
    let attempts = state
        .throttle
        .begin(account.as_deref(), address.as_deref())?;
    let Some(credential) = credential else {
        attempts.failed();
        return Err(invalid_credentials().into());
    };
    let checked = match credential {
        Credential::Password { email, password } => check_password(state, &email, password).await?,
        Credential::Key { prefix, hash } => check_key(state, &prefix, &hash).await?,
    };
    match checked {
        Ok((sub, tenant, scopes)) => {
            attempts.succeeded();
            Ok(Grant {
                sub,
                tenant,
                scopes,
                kind,
            })
        }
        Err(Refusal { who, reason }) => {
            attempts.failed();
            let (tenant, actor) = match who {
                Some((tenant, actor)) => (Some(tenant), actor),
                None => (None, "anonymous".to_owned()),
            };
            let event = Event {
                actor: &actor,
                action: action::LOGIN,
                outcome: "failure",
                details: json!({ "grant": kind, "reason": reason }),
            };
            audit::record(&state.pool, tenant, meta, event).await;
            tracing::info!(grant = kind, reason, "login refused");
            Err(invalid_credentials().into())
        }
    }
}

/// A credential's verdict: the subject, tenant and scopes it grants, or why not.
type Checked = Result<(String, Uuid, String), Refusal>;

/// The password check. Unknown account and wrong password do the same work (a
/// look-up and one verification, a bounded number at a time) and get the same answer.
async fn check_password(
    state: &AppState,
    email: &Email,
    password: String,
) -> Result<Checked, ApiError> {
    let permit = state.hashing.try_acquire().inspect_err(|_| {
        metrics::counter!(LOGIN_BUSY).increment(1);
        tracing::warn!("password verification busy");
    })?;
    let row: Option<LoginRow> = sqlx::query_as(
        "SELECT user_id, tenant_id, password_hash, role, disabled FROM app.login_lookup($1)",
    )
    .bind(email.as_str())
    .fetch_optional(&state.pool)
    .await
    .context("looking up a login")?;
    let password_ok = permit
        .verify(password, row.as_ref().map(|r| r.password_hash.clone()))
        .await;
    Ok(match row {
        Some(r) if password_ok && !r.disabled => {
            let scopes = if r.role == "admin" {
                format!(
                    "{} {} {}",
                    scope::KPIS_READ,
                    scope::TENANT_ADMIN,
                    scope::SUBJECTS_ERASE
                )
            } else {
                scope::KPIS_READ.to_owned()
            };
            Ok((format!("user:{}", r.user_id), r.tenant_id, scopes))
        }
        Some(r) => Err(Refusal {
            who: Some((r.tenant_id, format!("user:{}", r.user_id))),
            reason: if password_ok {
                "disabled"
            } else {
                "wrong password"
            },
        }),
        None => Err(Refusal {
            who: None,
            reason: "unknown account",
        }),
    })
}

/// The API-key check: the secret's hash compared in constant time; a key that works
/// records its last use.
async fn check_key(state: &AppState, prefix: &str, hash: &[u8]) -> Result<Checked, ApiError> {
    let row: Option<KeyRow> = sqlx::query_as(
        "SELECT key_id, tenant_id, secret_hash, scopes, revoked FROM app.api_key_lookup($1)",
    )
    .bind(prefix)
    .fetch_optional(&state.pool)
    .await
    .context("looking up an API key")?;
    Ok(match row {
        Some(r) if !r.revoked && constant_time_eq(&r.secret_hash, hash) => {
            if let Err(e) = mark_key_used(state, r.tenant_id, r.key_id).await {
                tracing::warn!(error = %e, "cannot record the key's last use");
            }
            Ok((format!("key:{}", r.key_id), r.tenant_id, r.scopes.join(" ")))
        }
        Some(r) => Err(Refusal {
            who: Some((r.tenant_id, format!("key:{}", r.key_id))),
            reason: if r.revoked { "revoked" } else { "wrong secret" },
        }),
        None => Err(Refusal {
            who: None,
            reason: "unknown key",
        }),
    })
}

/// Records the key's last use in a transaction of its own: a failure is logged by the
/// caller and does not cost the client its token.
async fn mark_key_used(state: &AppState, tenant: Uuid, key: Uuid) -> Result<(), ApiError> {
    let mut tx = TenantTx::begin(&state.pool, tenant).await?;
    api_keys::queries::mark_used(&mut tx, key).await?;
    tx.commit().await
}

/// Issue an access token: password grant (users) or client-credentials grant (API keys).
/// An unknown user and a wrong password get the same answer after the same work.
#[utoipa::path(post, path = "/v1/auth/token", operation_id = "issueToken", tag = "auth", request_body = TokenRequest,
    responses((status = 200, body = TokenResponse), TokenErrors))]
pub async fn token(
    State(state): State<AppState>,
    meta: Meta,
    AppJson(request): AppJson<TokenRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    let Grant {
        sub,
        tenant,
        scopes,
        kind: grant,
    } = grant(&state, &meta, request).await?;
    let (access_token, claims) = state.signer.sign(sub, tenant, &scopes).map_err(|e| {
        tracing::error!(error = %e, "signing failed");
        Problem::internal()
    })?;
    let mut tx = TenantTx::begin(&state.pool, tenant).await?;
    if grant == "password" {
        audit::success(
            &mut tx,
            &meta,
            &claims.sub,
            action::LOGIN,
            json!({ "grant": grant }),
        )
        .await?;
    }
    audit::success(
        &mut tx,
        &meta,
        &claims.sub,
        action::TOKEN_ISSUED,
        json!({ "grant": grant, "scope": claims.scope, "jti": claims.jti, "exp": claims.exp }),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(sub = %claims.sub, tenant = %claims.tenant, "token issued");
    Ok(Json(TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in: claims.exp - claims.iat,
        scope: claims.scope,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_client_is_keyed_on_its_64() {
        assert_eq!(address_key("192.0.2.7"), "addr:192.0.2.7");
        assert_eq!(
            address_key("2001:db8:1:2:aaaa:bbbb:cccc:dddd"),
            "addr:2001:db8:1:2::/64"
        );
        assert_eq!(
            address_key("2001:db8:1:2::1"),
            address_key("2001:db8:1:2:ffff::9")
        );
        assert_ne!(
            address_key("2001:db8:1:2::1"),
            address_key("2001:db8:1:3::1")
        );
    }
}
