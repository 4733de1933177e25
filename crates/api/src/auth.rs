//! `POST /v1/auth/token`: the password grant (users) and the client-credentials grant
//! (an API key traded for a short-lived token), throttled per account and per client
//! address with exponential backoff, every outcome audited.
//!
//! There are no refresh tokens: a token lives `BEACON_TOKEN_TTL_MINUTES` (15 by
//! default) and the client signs in again (the dashboard asks the user; a machine
//! re-trades its API key). Every token therefore passes the one place that checks a
//! disabled user or a revoked key, and no long-lived bearer secret exists besides the
//! API key itself.

use axum::{Json, extract::State, http::StatusCode};
use platform::{auth::scope, http::Problem};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    AppState,
    audit::{self, Event, action},
    credentials::{constant_time_eq, parse_api_key, verify_password},
    extract::{AppJson, Meta},
    routes::{TokenErrors, db_problem},
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
    .retry_after(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
}

/// Who is signing in, for throttling and the audit log.
struct Attempt {
    account_key: Option<String>,
    address_key: Option<String>,
}

impl AppState {
    fn check_throttle(&self, a: &Attempt) -> Result<(), Problem> {
        let account = a
            .account_key
            .as_deref()
            .map_or(Ok(()), |k| self.throttle.account.check(k));
        let address = a
            .address_key
            .as_deref()
            .map_or(Ok(()), |k| self.throttle.address.check(k));
        match (account, address) {
            (Ok(()), Ok(())) => Ok(()),
            (Err(w), Ok(())) | (Ok(()), Err(w)) => Err(throttled(w)),
            (Err(a), Err(b)) => Err(throttled(a.max(b))),
        }
    }

    fn record_failure(&self, a: &Attempt) {
        if let Some(k) = &a.account_key {
            self.throttle.account.failure(k);
        }
        if let Some(k) = &a.address_key {
            self.throttle.address.failure(k);
        }
    }
}

/// Issue an access token: password grant (users) or client-credentials grant (API keys).
/// An unknown user and a wrong password get the same answer after the same work.
#[utoipa::path(post, path = "/v1/auth/token", tag = "auth", request_body = TokenRequest,
    responses((status = 200, body = TokenResponse), TokenErrors))]
pub async fn token(
    State(state): State<AppState>,
    meta: Meta,
    AppJson(request): AppJson<TokenRequest>,
) -> Result<Json<TokenResponse>, Problem> {
    let account_key = match &request {
        TokenRequest::Password { username, .. } => {
            Some(format!("user:{}", username.trim().to_lowercase()))
        }
        TokenRequest::ClientCredentials { client_secret } => {
            parse_api_key(client_secret).map(|(prefix, _)| format!("key:{prefix}"))
        }
    };
    let attempt = Attempt {
        account_key,
        address_key: meta.client_addr.as_ref().map(|a| format!("addr:{a}")),
    };
    if let Err(problem) = state.check_throttle(&attempt) {
        tracing::warn!("login throttled");
        return Err(problem);
    }
    let (sub, tenant, scopes, grant) = match request {
        TokenRequest::Password { username, password } => {
            if username.len() > 254 || password.len() > 1024 {
                state.record_failure(&attempt);
                return Err(invalid_credentials());
            }
            let row: Option<LoginRow> = sqlx::query_as(
                "SELECT user_id, tenant_id, password_hash, role, disabled FROM app.login_lookup($1)",
            )
            .bind(username.trim())
            .fetch_optional(&state.pool)
            .await
            .map_err(db_problem)?;
            let password_ok = {
                let stored = row.as_ref().map(|r| r.password_hash.clone());
                tokio::task::spawn_blocking(move || verify_password(&password, stored.as_deref()))
                    .await
                    .unwrap_or(false)
            };
            match row {
                Some(LoginRow {
                    user_id,
                    tenant_id,
                    role,
                    disabled: false,
                    ..
                }) if password_ok => {
                    let scopes = if role == "admin" {
                        format!("{} {}", scope::KPIS_READ, scope::TENANT_ADMIN)
                    } else {
                        scope::KPIS_READ.to_owned()
                    };
                    (format!("user:{user_id}"), tenant_id, scopes, "password")
                }
                row => {
                    state.record_failure(&attempt);
                    let (tenant, actor, reason) = match &row {
                        Some(r) if r.disabled && password_ok => {
                            (Some(r.tenant_id), format!("user:{}", r.user_id), "disabled")
                        }
                        Some(r) => (
                            Some(r.tenant_id),
                            format!("user:{}", r.user_id),
                            "wrong password",
                        ),
                        None => (None, "anonymous".to_owned(), "unknown account"),
                    };
                    audit::record(
                        &state.pool,
                        tenant,
                        &meta,
                        Event {
                            actor: &actor,
                            action: action::LOGIN,
                            outcome: "failure",
                            details: json!({ "grant": "password", "reason": reason }),
                        },
                    )
                    .await;
                    tracing::info!(reason, "login refused");
                    return Err(invalid_credentials());
                }
            }
        }
        TokenRequest::ClientCredentials { client_secret } => {
            let Some((prefix, hash)) = parse_api_key(&client_secret) else {
                state.record_failure(&attempt);
                return Err(invalid_credentials());
            };
            let row: Option<KeyRow> = sqlx::query_as(
                "SELECT key_id, tenant_id, secret_hash, scopes, revoked FROM app.api_key_lookup($1)",
            )
            .bind(&prefix)
            .fetch_optional(&state.pool)
            .await
            .map_err(db_problem)?;
            match row {
                Some(KeyRow {
                    key_id,
                    tenant_id,
                    secret_hash,
                    scopes,
                    revoked: false,
                }) if constant_time_eq(&secret_hash, &hash) => (
                    format!("key:{key_id}"),
                    tenant_id,
                    scopes.join(" "),
                    "client_credentials",
                ),
                row => {
                    state.record_failure(&attempt);
                    let (tenant, actor, reason) = match &row {
                        Some(r) if r.revoked => {
                            (Some(r.tenant_id), format!("key:{}", r.key_id), "revoked")
                        }
                        Some(r) => (
                            Some(r.tenant_id),
                            format!("key:{}", r.key_id),
                            "wrong secret",
                        ),
                        None => (None, "anonymous".to_owned(), "unknown key"),
                    };
                    audit::record(
                        &state.pool,
                        tenant,
                        &meta,
                        Event {
                            actor: &actor,
                            action: action::LOGIN,
                            outcome: "failure",
                            details: json!({ "grant": "client_credentials", "reason": reason }),
                        },
                    )
                    .await;
                    return Err(invalid_credentials());
                }
            }
        }
    };
    if let Some(k) = &attempt.account_key {
        state.throttle.account.success(k);
    }
    let (access_token, claims) = state.signer.sign(sub, tenant, &scopes).map_err(|e| {
        tracing::error!(error = %e, "signing failed");
        Problem::internal()
    })?;
    let mut tx = platform::db::begin_for_tenant(&state.pool, tenant)
        .await
        .map_err(db_problem)?;
    if grant == "password" {
        audit::record_in(
            &mut tx,
            Some(tenant),
            &meta,
            Event {
                actor: &claims.sub,
                action: action::LOGIN,
                outcome: "success",
                details: json!({ "grant": grant }),
            },
        )
        .await
        .map_err(db_problem)?;
    }
    audit::record_in(
        &mut tx,
        Some(tenant),
        &meta,
        Event {
            actor: &claims.sub,
            action: action::TOKEN_ISSUED,
            outcome: "success",
            details: json!({ "grant": grant, "scope": claims.scope, "jti": claims.jti, "exp": claims.exp }),
        },
    )
    .await
    .map_err(db_problem)?;
    tx.commit().await.map_err(db_problem)?;
    tracing::info!(sub = %claims.sub, tenant = %claims.tenant, "token issued");
    Ok(Json(TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in: claims.exp - claims.iat,
        scope: claims.scope,
    }))
}
