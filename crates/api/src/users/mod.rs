//! Users of the caller's tenant (admins only; the route table says so). Every query
//! runs in the caller's tenant transaction, so another tenant's id is simply not found.

mod queries;

use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use domain::admin::{CreatedUser, NewUser, Role, User, UserChange, UserList};
use platform::http::Problem;
use rand::RngCore;
use serde::Deserialize;
use serde_json::json;
use utoipa::IntoParams;

use crate::{
    AppState,
    audit::{self, action},
    credentials::Email,
    error::ApiError,
    extract::{AppJson, AppQuery, Id, Meta, PageSize, offset, text},
    openapi::Errors,
    tenant::Tenant,
};

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

/// Users of the caller's tenant.
#[utoipa::path(get, path = "/v1/users", operation_id = "listUsers", tag = "users", params(PageQuery),
    responses((status = 200, body = UserList), Errors))]
pub async fn list_users(
    tenant: Tenant,
    AppQuery(q): AppQuery<PageQuery>,
) -> Result<Json<UserList>, ApiError> {
    let limit = PageSize::parse(q.limit, 50)?;
    let offset = offset(q.offset)?;
    let mut tx = tenant.begin().await?;
    let users = queries::list(&mut tx, limit, offset).await?;
    tx.commit().await?;
    Ok(Json(UserList { users }))
}

/// One user of the caller's tenant.
#[utoipa::path(get, path = "/v1/users/{id}", operation_id = "getUser", tag = "users", params(("id" = Uuid, Path)),
    responses((status = 200, body = User), Errors))]
pub async fn get_user(tenant: Tenant, Id(id): Id) -> Result<Json<User>, ApiError> {
    let mut tx = tenant.begin().await?;
    let user = queries::get(&mut tx, id).await?;
    tx.commit().await?;
    Ok(Json(user.ok_or_else(Problem::not_found)?))
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
    tenant: Tenant,
    meta: Meta,
    AppJson(new): AppJson<NewUser>,
) -> Result<impl IntoResponse, ApiError> {
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
    let mut tx = tenant.begin().await?;
    let user = queries::insert(
        &mut tx,
        tenant.id(),
        &email,
        &display_name,
        &hash,
        new.role.as_str(),
    )
    .await?;
    audit::success(
        &mut tx,
        &meta,
        tenant.caller.actor(),
        action::USER_CREATED,
        json!({ "user": user.id, "role": user.role }),
    )
    .await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedUser {
            user,
            initial_password,
        }),
    ))
}

/// Change a user's role or disable/enable them. Takes effect at their next token
/// exchange (tokens are short-lived). Admins cannot demote or disable themselves.
#[utoipa::path(patch, path = "/v1/users/{id}", operation_id = "updateUser", tag = "users", params(("id" = Uuid, Path)),
    request_body = UserChange, responses((status = 200, body = User), Errors))]
pub async fn update_user(
    tenant: Tenant,
    meta: Meta,
    Id(id): Id,
    AppJson(change): AppJson<UserChange>,
) -> Result<Json<User>, ApiError> {
    let mut tx = tenant.begin().await?;
    let (role, disabled) = queries::lock(&mut tx, id)
        .await?
        .ok_or_else(Problem::not_found)?;
    if tenant.caller.user_id() == Some(id)
        && (change.role == Some(Role::Viewer) || change.disabled == Some(true))
    {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "conflict",
            "Admins cannot demote or disable themselves",
        )
        .into());
    }
    let user = queries::update(&mut tx, id, change.role.map(Role::as_str), change.disabled).await?;
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
        audit::success(&mut tx, &meta, tenant.caller.actor(), a, details).await?;
    }
    tx.commit().await?;
    Ok(Json(user))
}
