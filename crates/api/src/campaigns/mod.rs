//! Campaign metadata of the caller's tenant: display name and archive flag
//! (`app.campaigns`). Everyone in the tenant reads; admins write.

mod queries;

use axum::{Json, http::StatusCode, response::IntoResponse};
use platform::http::Problem;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    audit::{self, action},
    error::ApiError,
    extract::{AppJson, AppQuery, Id, Meta, PageSize, offset, text},
    openapi::Errors,
    tenant::Tenant,
};

#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct Campaign {
    pub(crate) id: Uuid,
    name: String,
    archived: bool,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    created_at: time::OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    updated_at: time::OffsetDateTime,
}

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

/// Campaign metadata of the caller's tenant.
#[utoipa::path(get, path = "/v1/campaigns", operation_id = "listCampaigns", tag = "campaigns", params(CampaignQuery),
    responses((status = 200, body = CampaignList), Errors))]
pub async fn list(
    tenant: Tenant,
    AppQuery(q): AppQuery<CampaignQuery>,
) -> Result<Json<CampaignList>, ApiError> {
    let limit = PageSize::parse(q.limit, 50)?;
    let offset = offset(q.offset)?;
    let mut tx = tenant.begin().await?;
    let campaigns = queries::list(&mut tx, q.archived, limit, offset).await?;
    tx.commit().await?;
    Ok(Json(CampaignList { campaigns }))
}

/// One campaign of the caller's tenant.
#[utoipa::path(get, path = "/v1/campaigns/{id}", operation_id = "getCampaign", tag = "campaigns", params(("id" = Uuid, Path)),
    responses((status = 200, body = Campaign), Errors))]
pub async fn get(tenant: Tenant, Id(id): Id) -> Result<Json<Campaign>, ApiError> {
    let mut tx = tenant.begin().await?;
    let c = queries::get(&mut tx, id).await?;
    tx.commit().await?;
    Ok(Json(c.ok_or_else(Problem::not_found)?))
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
    tenant: Tenant,
    meta: Meta,
    AppJson(new): AppJson<NewCampaign>,
) -> Result<impl IntoResponse, ApiError> {
    let name = text("name", &new.name, 200)?;
    let mut tx = tenant.begin().await?;
    let c = queries::insert(&mut tx, tenant.id(), &name, new.archived).await?;
    audit::success(
        &mut tx,
        &meta,
        tenant.caller.actor(),
        action::CAMPAIGN_CREATED,
        json!({ "campaign": c.id }),
    )
    .await?;
    tx.commit().await?;
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
    tenant: Tenant,
    meta: Meta,
    Id(id): Id,
    AppJson(change): AppJson<CampaignChange>,
) -> Result<Json<Campaign>, ApiError> {
    let name = change
        .name
        .as_deref()
        .map(|n| text("name", n, 200))
        .transpose()?;
    let mut tx = tenant.begin().await?;
    let c = queries::update(&mut tx, id, name.as_deref(), change.archived)
        .await?
        .ok_or_else(Problem::not_found)?;
    audit::success(
        &mut tx,
        &meta,
        tenant.caller.actor(),
        action::CAMPAIGN_UPDATED,
        json!({ "campaign": c.id, "name": name.is_some(), "archived": change.archived }),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(c))
}
