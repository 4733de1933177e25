//! Routes. Each declares who may call it: `Bearer` + `require(scope)`.

use axum::{
    Json, Router,
    extract::{Query, State},
    http::StatusCode,
    routing::{get, post},
};
use platform::{
    auth::{Bearer, scope},
    http::{HttpLimits, Problem},
};
use proto::analytics::v1::{DateRange, OverviewRequest, Totals};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::{
    AppState,
    credentials::{constant_time_eq, parse_api_key, verify_password},
};

pub fn router(state: AppState, limits: HttpLimits) -> Router {
    let router = Router::new()
        .route("/v1/auth/token", post(token))
        .route("/v1/overview", get(overview))
        .with_state(state);
    platform::http::with_standard_layers(router, limits)
}

fn db_problem(e: sqlx::Error) -> Problem {
    tracing::error!(error = %e, "database error");
    Problem::unavailable()
}

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

#[derive(Debug, Deserialize)]
#[serde(tag = "grant_type", rename_all = "snake_case", deny_unknown_fields)]
enum TokenRequest {
    Password { username: String, password: String },
    ClientCredentials { client_secret: String },
}

#[derive(Debug, Serialize)]
struct TokenResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: i64,
    scope: String,
}

fn invalid_credentials() -> Problem {
    Problem::new(
        StatusCode::UNAUTHORIZED,
        "invalid-credentials",
        "Invalid credentials",
    )
}

/// `POST /v1/auth/token`: password grant (users) or client-credentials grant (an API
/// key traded for a short-lived token). Unknown user and wrong password give the same
/// answer after the same work.
async fn token(
    State(state): State<AppState>,
    body: Result<Json<TokenRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<TokenResponse>, Problem> {
    let Json(request) = body.map_err(|e| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "Invalid token request",
        )
        .detail(e.body_text())
    })?;
    let (sub, tenant, scopes) = match request {
        TokenRequest::Password { username, password } => {
            let row: Option<LoginRow> =
                sqlx::query_as("SELECT user_id, tenant_id, password_hash, role, disabled FROM app.login_lookup($1)")
                    .bind(&username)
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
                    (format!("user:{user_id}"), tenant_id, scopes)
                }
                _ => {
                    tracing::info!("login refused");
                    return Err(invalid_credentials());
                }
            }
        }
        TokenRequest::ClientCredentials { client_secret } => {
            let (prefix, hash) = parse_api_key(&client_secret).ok_or_else(invalid_credentials)?;
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
                }) if constant_time_eq(&secret_hash, &hash) => {
                    (format!("key:{key_id}"), tenant_id, scopes.join(" "))
                }
                _ => return Err(invalid_credentials()),
            }
        }
    };
    let (access_token, claims) = state.signer.sign(sub, tenant, &scopes).map_err(|e| {
        tracing::error!(error = %e, "signing failed");
        Problem::internal()
    })?;
    tracing::info!(sub = %claims.sub, tenant = %claims.tenant, "token issued");
    Ok(Json(TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in: claims.exp - claims.iat,
        scope: claims.scope,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RangeQuery {
    from: Option<String>,
    to: Option<String>,
}

#[derive(Debug, Serialize)]
struct KpiTotals {
    impressions: i64,
    clicks: i64,
    conversions: i64,
    spend_micros: i64,
    revenue_micros: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    ctr: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cvr: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cpc_micros: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cpa_micros: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    roas: Option<f64>,
}

impl From<Totals> for KpiTotals {
    fn from(t: Totals) -> Self {
        Self {
            impressions: t.impressions,
            clicks: t.clicks,
            conversions: t.conversions,
            spend_micros: t.spend_micros,
            revenue_micros: t.revenue_micros,
            ctr: t.ctr,
            cvr: t.cvr,
            cpc_micros: t.cpc_micros,
            cpa_micros: t.cpa_micros,
            roas: t.roas,
        }
    }
}

pub(crate) fn status_problem(status: &tonic::Status) -> Problem {
    use tonic::Code;
    match status.code() {
        Code::InvalidArgument => {
            Problem::new(StatusCode::BAD_REQUEST, "bad-request", "Invalid request")
                .detail(status.message().to_owned())
        }
        Code::DeadlineExceeded => Problem::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            "Analytics took too long",
        ),
        _ => {
            tracing::warn!(code = ?status.code(), "analytics call failed");
            Problem::unavailable()
        }
    }
}

/// `GET /v1/overview?from=YYYY-MM-DD&to=YYYY-MM-DD` (default: the last 30 days).
async fn overview(
    State(state): State<AppState>,
    Bearer(claims): Bearer,
    query: Result<Query<RangeQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, Problem> {
    claims.require(scope::KPIS_READ)?;
    let Query(range) = query.map_err(|e| {
        Problem::new(StatusCode::BAD_REQUEST, "bad-request", "Invalid query").detail(e.body_text())
    })?;
    let today = time::OffsetDateTime::now_utc().date();
    let fmt = |d: time::Date| format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day());
    let to = range.to.unwrap_or_else(|| fmt(today));
    let from = range
        .from
        .unwrap_or_else(|| fmt(today - time::Duration::days(29)));

    let mut tx = platform::db::begin_for_tenant(&state.pool, claims.tenant)
        .await
        .map_err(db_problem)?;
    let currency: Option<String> = sqlx::query_scalar("SELECT currency::text FROM app.tenants")
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_problem)?;
    tx.commit().await.map_err(db_problem)?;
    let currency = currency.ok_or_else(Problem::not_found)?;

    let mut client = state.analytics.clone();
    let response = client
        .get_overview(OverviewRequest {
            tenant_id: claims.tenant.to_string(),
            range: Some(DateRange { from, to }),
            currency,
        })
        .await
        .map_err(|s| status_problem(&s))?
        .into_inner();
    let range = |r: Option<DateRange>| r.map(|r| json!({ "from": r.from, "to": r.to }));
    Ok(Json(json!({
        "range": range(response.range),
        "previous_range": range(response.previous_range),
        "currency": response.currency,
        "current": response.current.map(KpiTotals::from),
        "previous": response.previous.map(KpiTotals::from),
    })))
}
