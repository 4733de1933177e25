//! Campaign metadata of the caller's tenant: display name and archive flag
//! (`app.campaigns`). Everyone in the tenant reads; admins write.

use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use platform::http::Problem;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    AppState,
    audit::{self, Event, action},
    extract::{AppJson, AppQuery, Caller, Id, Meta, text},
    routes::{Errors, db_problem, page_size},
};

#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct Campaign {
    id: Uuid,
    name: String,
    archived: bool,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    created_at: time::OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    updated_at: time::OffsetDateTime,
}

const COLUMNS: &str = "id, name, archived, created_at, updated_at";

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CampaignQuery {
    /// Only archived (`true`) or only active (`false`) campaigns; both when absent.
    archived: Option<bool>,
    /// 1..=100, default 50.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    #[param(minimum = 0, maximum = 10000)]
    offset: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CampaignList {
    campaigns: Vec<Campaign>,
}

fn conflict(e: sqlx::Error) -> Problem {
    match &e {
        sqlx::Error::Database(d) if d.constraint() == Some("campaigns_tenant_name_key") => {
            Problem::new(
                StatusCode::CONFLICT,
                "conflict",
                "A campaign with this name exists",
            )
        }
        _ => db_problem(e),
    }
}

/// Campaign metadata of the caller's tenant.
#[utoipa::path(get, path = "/v1/campaigns", operation_id = "listCampaigns", tag = "campaigns", params(CampaignQuery),
    responses((status = 200, body = CampaignList), Errors))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    AppQuery(q): AppQuery<CampaignQuery>,
) -> Result<Json<CampaignList>, Problem> {
    let limit = page_size(q.limit, 50)?;
    let offset = crate::accounts::offset(q.offset)?;
    let mut tx = platform::db::begin_for_tenant(&state.pool, caller.tenant())
        .await
        .map_err(db_problem)?;
    let campaigns = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM app.campaigns WHERE ($1::boolean IS NULL OR archived = $1)
         ORDER BY name, id LIMIT $2 OFFSET $3"
    ))
    .bind(q.archived)
    .bind(i64::from(limit))
    .bind(offset)
    .fetch_all(&mut *tx)
    .await
    .map_err(db_problem)?;
    tx.commit().await.map_err(db_problem)?;
    Ok(Json(CampaignList { campaigns }))
}

/// One campaign of the caller's tenant.
#[utoipa::path(get, path = "/v1/campaigns/{id}", operation_id = "getCampaign", tag = "campaigns", params(("id" = Uuid, Path)),
    responses((status = 200, body = Campaign), Errors))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Id(id): Id,
) -> Result<Json<Campaign>, Problem> {
    let mut tx = platform::db::begin_for_tenant(&state.pool, caller.tenant())
        .await
        .map_err(db_problem)?;
    let c: Option<Campaign> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM app.campaigns WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(db_problem)?;
    tx.commit().await.map_err(db_problem)?;
    c.map(Json).ok_or_else(Problem::not_found)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCampaign {
    /// The campaign name as events carry it.
    #[schema(min_length = 1, max_length = 200)]
    name: String,
    #[serde(default)]
    archived: bool,
}

/// Create campaign metadata.
#[utoipa::path(post, path = "/v1/campaigns", operation_id = "createCampaign", tag = "campaigns", request_body = NewCampaign,
    responses((status = 201, body = Campaign), Errors))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    meta: Meta,
    AppJson(new): AppJson<NewCampaign>,
) -> Result<impl IntoResponse, Problem> {
    let name = text("name", &new.name, 200)?;
    let mut tx = platform::db::begin_for_tenant(&state.pool, caller.tenant())
        .await
        .map_err(db_problem)?;
    let c: Campaign = sqlx::query_as(&format!(
        "INSERT INTO app.campaigns (id, tenant_id, name, archived) VALUES ($1, $2, $3, $4)
         RETURNING {COLUMNS}"
    ))
    .bind(Uuid::new_v4())
    .bind(caller.tenant())
    .bind(&name)
    .bind(new.archived)
    .fetch_one(&mut *tx)
    .await
    .map_err(conflict)?;
    audit::record_in(
        &mut tx,
        Some(caller.tenant()),
        &meta,
        Event {
            actor: caller.actor(),
            action: action::CAMPAIGN_CREATED,
            outcome: "success",
            details: json!({ "campaign": c.id }),
        },
    )
    .await
    .map_err(db_problem)?;
    tx.commit().await.map_err(db_problem)?;
    Ok((StatusCode::CREATED, Json(c)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignChange {
    #[schema(min_length = 1, max_length = 200)]
    name: Option<String>,
    archived: Option<bool>,
}

/// Rename or (un)archive a campaign.
#[utoipa::path(patch, path = "/v1/campaigns/{id}", operation_id = "updateCampaign", tag = "campaigns", params(("id" = Uuid, Path)),
    request_body = CampaignChange, responses((status = 200, body = Campaign), Errors))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    meta: Meta,
    Id(id): Id,
    AppJson(change): AppJson<CampaignChange>,
) -> Result<Json<Campaign>, Problem> {
    let name = change
        .name
        .as_deref()
        .map(|n| text("name", n, 200))
        .transpose()?;
    let mut tx = platform::db::begin_for_tenant(&state.pool, caller.tenant())
        .await
        .map_err(db_problem)?;
    let c: Option<Campaign> = sqlx::query_as(&format!(
        "UPDATE app.campaigns SET name = coalesce($2, name), archived = coalesce($3, archived),
             updated_at = now()
         WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(&name)
    .bind(change.archived)
    .fetch_optional(&mut *tx)
    .await
    .map_err(conflict)?;
    let c = c.ok_or_else(Problem::not_found)?;
    audit::record_in(
        &mut tx,
        Some(caller.tenant()),
        &meta,
        Event {
            actor: caller.actor(),
            action: action::CAMPAIGN_UPDATED,
            outcome: "success",
            details: json!({ "campaign": c.id, "name": name.is_some(), "archived": change.archived }),
        },
    )
    .await
    .map_err(db_problem)?;
    tx.commit().await.map_err(db_problem)?;
    Ok(Json(c))
}
