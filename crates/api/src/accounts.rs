//! Users and API keys of the caller's tenant (admins only; the route table says so).
//! Every query runs in a transaction scoped to the caller's tenant, so another
//! tenant's id is simply not found.

use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use platform::http::Problem;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    AppState,
    audit::{self, Event, action},
    credentials::{Email, new_api_key},
    extract::{AppJson, AppQuery, Caller, Id, Meta, text},
    routes::{Errors, db_problem, page_size},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Admin,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Admin => "admin",
        }
    }
}

#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct User {
    id: Uuid,
    email: String,
    display_name: String,
    /// `viewer` or `admin`.
    role: String,
    disabled: bool,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    created_at: time::OffsetDateTime,
}

const USER_COLUMNS: &str =
    "id, email, display_name, role, disabled_at IS NOT NULL AS disabled, created_at";

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 1..=100, default 50.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    /// Rows to skip, at most 10000.
    #[param(minimum = 0, maximum = 10000)]
    offset: Option<u32>,
}

pub(crate) fn offset(o: Option<u32>) -> Result<i64, Problem> {
    match o.unwrap_or(0) {
        n if n <= 10_000 => Ok(i64::from(n)),
        _ => Err(
            Problem::new(StatusCode::BAD_REQUEST, "bad-request", "Invalid query")
                .detail("offset must be at most 10000"),
        ),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserList {
    users: Vec<User>,
}

/// Users of the caller's tenant.
#[utoipa::path(get, path = "/v1/users", operation_id = "listUsers", tag = "users", params(PageQuery),
    responses((status = 200, body = UserList), Errors))]
pub async fn list_users(
    State(state): State<AppState>,
    caller: Caller,
    AppQuery(q): AppQuery<PageQuery>,
) -> Result<Json<UserList>, Problem> {
    let limit = page_size(q.limit, 50)?;
    let offset = offset(q.offset)?;
    let mut tx = platform::db::begin_for_tenant(&state.pool, caller.tenant())
        .await
        .map_err(db_problem)?;
    let users = sqlx::query_as(&format!(
        "SELECT {USER_COLUMNS} FROM app.users ORDER BY created_at, id LIMIT $1 OFFSET $2"
    ))
    .bind(i64::from(limit))
    .bind(offset)
    .fetch_all(&mut *tx)
    .await
    .map_err(db_problem)?;
    tx.commit().await.map_err(db_problem)?;
    Ok(Json(UserList { users }))
}

/// One user of the caller's tenant.
#[utoipa::path(get, path = "/v1/users/{id}", operation_id = "getUser", tag = "users", params(("id" = Uuid, Path)),
    responses((status = 200, body = User), Errors))]
pub async fn get_user(
    State(state): State<AppState>,
    caller: Caller,
    Id(id): Id,
) -> Result<Json<User>, Problem> {
    let mut tx = platform::db::begin_for_tenant(&state.pool, caller.tenant())
        .await
        .map_err(db_problem)?;
    let user: Option<User> = sqlx::query_as(&format!(
        "SELECT {USER_COLUMNS} FROM app.users WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(db_problem)?;
    tx.commit().await.map_err(db_problem)?;
    user.map(Json).ok_or_else(Problem::not_found)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    #[schema(format = Email, max_length = 254)]
    email: String,
    #[schema(min_length = 1, max_length = 200)]
    display_name: String,
    role: Role,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedUser {
    user: User,
    /// Shown once: hand it to the user over a trusted channel.
    initial_password: String,
}

fn email(value: &str) -> Result<Email, Problem> {
    Email::parse(value).ok_or_else(|| {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable",
            "Invalid request body",
        )
        .detail("email is not a valid address (printable ASCII, at most 254 characters)")
    })
}

/// Invite a user: creates the account with a random initial password, shown once.
#[utoipa::path(post, path = "/v1/users", operation_id = "createUser", tag = "users", request_body = NewUser,
    responses((status = 201, body = CreatedUser), Errors))]
pub async fn create_user(
    State(state): State<AppState>,
    caller: Caller,
    meta: Meta,
    AppJson(new): AppJson<NewUser>,
) -> Result<impl IntoResponse, Problem> {
    let email = email(&new.email)?;
    let display_name = text("display_name", &new.display_name, 200)?;
    let mut raw = [0u8; 18];
    rand::rng().fill_bytes(&mut raw);
    let initial_password = hex::encode(raw);
    let hash = state
        .hashing
        .try_acquire()?
        .hash(initial_password.clone())
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "hashing failed");
            Problem::internal()
        })?;
    let mut tx = platform::db::begin_for_tenant(&state.pool, caller.tenant())
        .await
        .map_err(db_problem)?;
    let user: User = sqlx::query_as(&format!(
        "INSERT INTO app.users (id, tenant_id, email, display_name, password_hash, role)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING {USER_COLUMNS}"
    ))
    .bind(Uuid::new_v4())
    .bind(caller.tenant())
    .bind(email.as_str())
    .bind(&display_name)
    .bind(&hash)
    .bind(new.role.as_str())
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(d) if d.constraint() == Some("users_email_key") => Problem::new(
            StatusCode::CONFLICT,
            "conflict",
            "This e-mail address cannot be used",
        ),
        _ => db_problem(e),
    })?;
    audit::record_in(
        &mut tx,
        Some(caller.tenant()),
        &meta,
        Event {
            actor: caller.actor(),
            action: action::USER_CREATED,
            outcome: "success",
            details: json!({ "user": user.id, "role": user.role }),
        },
    )
    .await
    .map_err(db_problem)?;
    tx.commit().await.map_err(db_problem)?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedUser {
            user,
            initial_password,
        }),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserChange {
    role: Option<Role>,
    disabled: Option<bool>,
}

/// Change a user's role or disable/enable them. Takes effect at their next token
/// exchange (tokens are short-lived). Admins cannot demote or disable themselves.
#[utoipa::path(patch, path = "/v1/users/{id}", operation_id = "updateUser", tag = "users", params(("id" = Uuid, Path)),
    request_body = UserChange, responses((status = 200, body = User), Errors))]
pub async fn update_user(
    State(state): State<AppState>,
    caller: Caller,
    meta: Meta,
    Id(id): Id,
    AppJson(change): AppJson<UserChange>,
) -> Result<Json<User>, Problem> {
    let mut tx = platform::db::begin_for_tenant(&state.pool, caller.tenant())
        .await
        .map_err(db_problem)?;
    let current: Option<(String, bool)> = sqlx::query_as(
        "SELECT role, disabled_at IS NOT NULL FROM app.users WHERE id = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(db_problem)?;
    let (role, disabled) = current.ok_or_else(Problem::not_found)?;
    if caller.user_id() == Some(id)
        && (change.role == Some(Role::Viewer) || change.disabled == Some(true))
    {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "conflict",
            "Admins cannot demote or disable themselves",
        ));
    }
    let user: User = sqlx::query_as(&format!(
        "UPDATE app.users SET role = coalesce($2, role),
             disabled_at = CASE WHEN $3::boolean IS NULL THEN disabled_at
                                WHEN $3 THEN coalesce(disabled_at, now()) ELSE NULL END
         WHERE id = $1 RETURNING {USER_COLUMNS}"
    ))
    .bind(id)
    .bind(change.role.map(Role::as_str))
    .bind(change.disabled)
    .fetch_one(&mut *tx)
    .await
    .map_err(db_problem)?;
    let mut events = Vec::new();
    if user.role != role {
        events.push((
            action::USER_ROLE_CHANGED,
            json!({ "user": id, "from": role, "to": user.role }),
        ));
    }
    if user.disabled != disabled {
        let a = if user.disabled {
            action::USER_DISABLED
        } else {
            action::USER_ENABLED
        };
        events.push((a, json!({ "user": id })));
    }
    for (a, details) in events {
        audit::record_in(
            &mut tx,
            Some(caller.tenant()),
            &meta,
            Event {
                actor: caller.actor(),
                action: a,
                outcome: "success",
                details,
            },
        )
        .await
        .map_err(db_problem)?;
    }
    tx.commit().await.map_err(db_problem)?;
    Ok(Json(user))
}

// ------------------------------------------------------------------------- API keys

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum KeyScope {
    #[serde(rename = "events:write")]
    EventsWrite,
    #[serde(rename = "kpis:read")]
    KpisRead,
}

impl KeyScope {
    fn as_str(self) -> &'static str {
        match self {
            Self::EventsWrite => "events:write",
            Self::KpisRead => "kpis:read",
        }
    }
}

#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct ApiKey {
    id: Uuid,
    name: String,
    /// The public part of the key (`bk_<prefix>_…`).
    prefix: String,
    scopes: Vec<String>,
    created_by: Option<Uuid>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    created_at: time::OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    revoked_at: Option<time::OffsetDateTime>,
    /// When a token was last issued for this key, to the minute (null: never used).
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    last_used_at: Option<time::OffsetDateTime>,
}

const KEY_COLUMNS: &str =
    "id, name, prefix, scopes, created_by, created_at, revoked_at, last_used_at";

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct KeyQuery {
    /// Keys whose prefix starts with this (hex, up to 12 characters).
    #[param(max_length = 12, pattern = "^[0-9a-f]{0,12}$")]
    prefix: Option<String>,
    /// 1..=100, default 50.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    #[param(minimum = 0, maximum = 10000)]
    offset: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyList {
    keys: Vec<ApiKey>,
}

/// API keys of the caller's tenant, optionally by prefix. Secrets are never shown again.
#[utoipa::path(get, path = "/v1/api-keys", operation_id = "listApiKeys", tag = "api-keys", params(KeyQuery),
    responses((status = 200, body = KeyList), Errors))]
pub async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
    AppQuery(q): AppQuery<KeyQuery>,
) -> Result<Json<KeyList>, Problem> {
    let limit = page_size(q.limit, 50)?;
    let offset = offset(q.offset)?;
    if let Some(p) = &q.prefix
        && (p.len() > 12
            || !p
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    {
        return Err(
            Problem::new(StatusCode::BAD_REQUEST, "bad-request", "Invalid query")
                .detail("prefix must be up to 12 lower-case hex characters"),
        );
    }
    let mut tx = platform::db::begin_for_tenant(&state.pool, caller.tenant())
        .await
        .map_err(db_problem)?;
    let keys = sqlx::query_as(&format!(
        "SELECT {KEY_COLUMNS} FROM app.api_keys WHERE ($1::text IS NULL OR starts_with(prefix, $1))
         ORDER BY created_at, id LIMIT $2 OFFSET $3"
    ))
    .bind(&q.prefix)
    .bind(i64::from(limit))
    .bind(offset)
    .fetch_all(&mut *tx)
    .await
    .map_err(db_problem)?;
    tx.commit().await.map_err(db_problem)?;
    Ok(Json(KeyList { keys }))
}

/// One API key of the caller's tenant.
#[utoipa::path(get, path = "/v1/api-keys/{id}", operation_id = "getApiKey", tag = "api-keys", params(("id" = Uuid, Path)),
    responses((status = 200, body = ApiKey), Errors))]
pub async fn get_key(
    State(state): State<AppState>,
    caller: Caller,
    Id(id): Id,
) -> Result<Json<ApiKey>, Problem> {
    let mut tx = platform::db::begin_for_tenant(&state.pool, caller.tenant())
        .await
        .map_err(db_problem)?;
    let key: Option<ApiKey> = sqlx::query_as(&format!(
        "SELECT {KEY_COLUMNS} FROM app.api_keys WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(db_problem)?;
    tx.commit().await.map_err(db_problem)?;
    key.map(Json).ok_or_else(Problem::not_found)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    #[schema(min_length = 1, max_length = 200)]
    name: String,
    /// Distinct scopes.
    #[schema(min_items = 1, max_items = 2)]
    scopes: Vec<KeyScope>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKey {
    key: ApiKey,
    /// The full key, shown once. Only its SHA-256 is stored.
    secret: String,
}

/// Create an API key; its secret is in this answer and nowhere else, ever.
#[utoipa::path(post, path = "/v1/api-keys", operation_id = "createApiKey", tag = "api-keys", request_body = NewKey,
    responses((status = 201, body = CreatedKey), Errors))]
pub async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    meta: Meta,
    AppJson(new): AppJson<NewKey>,
) -> Result<impl IntoResponse, Problem> {
    let name = text("name", &new.name, 200)?;
    let mut scopes: Vec<&str> = new.scopes.iter().map(|s| s.as_str()).collect();
    scopes.sort_unstable();
    scopes.dedup();
    if scopes.is_empty() || scopes.len() != new.scopes.len() {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable",
            "Invalid request body",
        )
        .detail("scopes must be a non-empty list without repetitions"));
    }
    let generated = new_api_key();
    let mut tx = platform::db::begin_for_tenant(&state.pool, caller.tenant())
        .await
        .map_err(db_problem)?;
    let key: ApiKey = sqlx::query_as(&format!(
        "INSERT INTO app.api_keys (id, tenant_id, name, prefix, secret_hash, scopes, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {KEY_COLUMNS}"
    ))
    .bind(Uuid::new_v4())
    .bind(caller.tenant())
    .bind(&name)
    .bind(&generated.prefix)
    .bind(&generated.secret_hash)
    .bind(&scopes)
    .bind(caller.user_id())
    .fetch_one(&mut *tx)
    .await
    .map_err(db_problem)?;
    audit::record_in(
        &mut tx,
        Some(caller.tenant()),
        &meta,
        Event {
            actor: caller.actor(),
            action: action::API_KEY_CREATED,
            outcome: "success",
            details: json!({ "key": key.id, "prefix": key.prefix, "scopes": key.scopes }),
        },
    )
    .await
    .map_err(db_problem)?;
    tx.commit().await.map_err(db_problem)?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            key,
            secret: generated.token,
        }),
    ))
}

/// Revoke an API key. The next token exchange with it fails; tokens already issued
/// expire on their own (minutes).
#[utoipa::path(delete, path = "/v1/api-keys/{id}", operation_id = "revokeApiKey", tag = "api-keys", params(("id" = Uuid, Path)),
    responses((status = 204, description = "Revoked (or already revoked)"), Errors))]
pub async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    meta: Meta,
    Id(id): Id,
) -> Result<StatusCode, Problem> {
    let mut tx = platform::db::begin_for_tenant(&state.pool, caller.tenant())
        .await
        .map_err(db_problem)?;
    let revoked: Option<(String, bool)> = sqlx::query_as(
        "UPDATE app.api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1
         RETURNING prefix, revoked_at = now()",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(db_problem)?;
    let (prefix, now) = revoked.ok_or_else(Problem::not_found)?;
    if now {
        audit::record_in(
            &mut tx,
            Some(caller.tenant()),
            &meta,
            Event {
                actor: caller.actor(),
                action: action::API_KEY_REVOKED,
                outcome: "success",
                details: json!({ "key": id, "prefix": prefix }),
            },
        )
        .await
        .map_err(db_problem)?;
    }
    tx.commit().await.map_err(db_problem)?;
    Ok(StatusCode::NO_CONTENT)
}
