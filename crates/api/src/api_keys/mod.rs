//! API keys of the caller's tenant (admins only; the route table says so). A key's
//! secret is shown once, at creation; only its SHA-256 is stored.

pub(crate) mod queries;

use axum::{Json, http::StatusCode, response::IntoResponse};
use domain::admin::{ApiKey, CreatedKey, KeyList, NewKey};
use platform::http::Problem;
use serde::Deserialize;
use serde_json::json;
use utoipa::IntoParams;

use crate::{
    audit::{self, action},
    credentials::new_api_key,
    error::ApiError,
    extract::{AppJson, AppQuery, Id, Meta, PageSize, bad_query, offset, text},
    openapi::Errors,
    tenant::Tenant,
};

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

/// API keys of the caller's tenant, optionally by prefix. Secrets are never shown again.
#[utoipa::path(get, path = "/v1/api-keys", operation_id = "listApiKeys", tag = "api-keys", params(KeyQuery),
    responses((status = 200, body = KeyList), Errors))]
pub async fn list_keys(
    tenant: Tenant,
    AppQuery(q): AppQuery<KeyQuery>,
) -> Result<Json<KeyList>, ApiError> {
    let limit = PageSize::parse(q.limit, 50)?;
    let offset = offset(q.offset)?;
    if let Some(p) = &q.prefix
        && (p.len() > 12
            || !p
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    {
        return Err(bad_query("prefix must be up to 12 lower-case hex characters").into());
    }
    let mut tx = tenant.begin().await?;
    let keys = queries::list(&mut tx, q.prefix.as_deref(), limit, offset).await?;
    tx.commit().await?;
    Ok(Json(KeyList { keys }))
}

/// One API key of the caller's tenant.
#[utoipa::path(get, path = "/v1/api-keys/{id}", operation_id = "getApiKey", tag = "api-keys", params(("id" = Uuid, Path)),
    responses((status = 200, body = ApiKey), Errors))]
pub async fn get_key(tenant: Tenant, Id(id): Id) -> Result<Json<ApiKey>, ApiError> {
    let mut tx = tenant.begin().await?;
    let key = queries::get(&mut tx, id).await?;
    tx.commit().await?;
    Ok(Json(key.ok_or_else(Problem::not_found)?))
}

/// Create an API key; its secret is in this answer and nowhere else, ever.
#[utoipa::path(post, path = "/v1/api-keys", operation_id = "createApiKey", tag = "api-keys", request_body = NewKey,
    responses((status = 201, body = CreatedKey), Errors))]
pub async fn create_key(
    tenant: Tenant,
    meta: Meta,
    AppJson(new): AppJson<NewKey>,
) -> Result<impl IntoResponse, ApiError> {
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
        .detail("scopes must be a non-empty list without repetitions")
        .into());
    }
    let generated = new_api_key();
    let mut tx = tenant.begin().await?;
    let key = queries::insert(
        &mut tx,
        tenant.id(),
        &name,
        &generated,
        &scopes,
        tenant.caller.user_id(),
    )
    .await?;
    audit::success(
        &mut tx,
        &meta,
        tenant.caller.actor(),
        action::API_KEY_CREATED,
        json!({ "key": key.id, "prefix": key.prefix, "scopes": key.scopes }),
    )
    .await?;
    tx.commit().await?;
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
pub async fn revoke_key(tenant: Tenant, meta: Meta, Id(id): Id) -> Result<StatusCode, ApiError> {
    let mut tx = tenant.begin().await?;
    let (prefix, now) = queries::revoke(&mut tx, id)
        .await?
        .ok_or_else(Problem::not_found)?;
    if now {
        audit::success(
            &mut tx,
            &meta,
            tenant.caller.actor(),
            action::API_KEY_REVOKED,
            json!({ "key": id, "prefix": prefix }),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
