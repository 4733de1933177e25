//! Admin pages: users, API keys, audit log. The dashboard shows the links only to
//! admins, but the API decides: a viewer who types the URL gets the API's 403 as a
//! "Not allowed" page.

use askama::Template;
use axum::{
    Form, Router,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use domain::admin::{KeyScope, NewKey, NewUser, Role, User, UserChange};
use serde::Deserialize;
use time::OffsetDateTime;
use uuid::Uuid;

/// `YYYY-MM-DD HH:MM[:SS]`, UTC, for tables.
fn when(t: OffsetDateTime, seconds: bool) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let mut s = format!(
        "{} {:02}:{:02}",
        domain::format_date(t.date()),
        t.hour(),
        t.minute()
    );
    if seconds {
        s.push_str(&format!(":{:02}", t.second()));
    }
    s
}

use crate::{
    api_client::ApiError,
    pages::{AppState, api_error, error_page, page},
    session::Session,
};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/users", get(users).post(create_user))
        .route("/admin/users/{id}", post(change_user))
        .route("/admin/api-keys", get(keys).post(create_key))
        .route("/admin/api-keys/{id}/revoke", post(revoke_key))
        .route("/admin/audit", get(audit))
}

fn csrf_refused(headers: &HeaderMap) -> Response {
    error_page(
        headers,
        StatusCode::FORBIDDEN,
        "Session expired",
        "Please reload the page and try again.",
    )
}

// ------------------------------------------------------------------- users

#[derive(Template)]
#[template(path = "users.html")]
struct UsersView {
    active: &'static str,
    is_admin: bool,
    csrf: String,
    users: Vec<User>,
    notice: Option<String>,
    error: Option<String>,
}

async fn users_page(
    state: &AppState,
    session: &Session,
    headers: &HeaderMap,
    error: Option<String>,
) -> Response {
    match state.api.users(&session.token).await {
        Ok(list) => page(
            session,
            &UsersView {
                active: "users",
                is_admin: session.is_admin,
                csrf: session.csrf.clone(),
                users: list.users,
                notice: None,
                error,
            },
        ),
        Err(e) => api_error(headers, e),
    }
}

async fn users(State(state): State<AppState>, session: Session, headers: HeaderMap) -> Response {
    users_page(&state, &session, &headers, None).await
}

#[derive(Deserialize)]
struct NewUserForm {
    csrf: String,
    email: String,
    display_name: String,
    role: String,
}

#[derive(Template)]
#[template(path = "user_created.html")]
struct UserCreatedView {
    active: &'static str,
    is_admin: bool,
    csrf: String,
    email: String,
    password: String,
}

async fn create_user(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Form(form): Form<NewUserForm>,
) -> Response {
    if !session.csrf_ok(&form.csrf) {
        return csrf_refused(&headers);
    }
    let Some(role) = Role::parse(&form.role) else {
        return users_page(&state, &session, &headers, Some("Choose a role.".into())).await;
    };
    let new = NewUser {
        email: form.email,
        display_name: form.display_name,
        role,
    };
    match state.api.create_user(&session.token, &new).await {
        Ok(created) => page(
            &session,
            &UserCreatedView {
                active: "users",
                is_admin: session.is_admin,
                csrf: session.csrf.clone(),
                email: created.user.email,
                password: created.initial_password,
            },
        ),
        Err(ApiError::Invalid(detail)) => {
            users_page(&state, &session, &headers, Some(detail)).await
        }
        Err(e) => api_error(&headers, e),
    }
}

#[derive(Deserialize)]
struct ChangeUserForm {
    csrf: String,
    role: Option<String>,
    disabled: Option<bool>,
}

async fn change_user(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Path(id): Path<Uuid>,
    Form(form): Form<ChangeUserForm>,
) -> Response {
    if !session.csrf_ok(&form.csrf) {
        return csrf_refused(&headers);
    }
    let role = match form.role.as_deref().map(Role::parse) {
        Some(None) => {
            return users_page(&state, &session, &headers, Some("Choose a role.".into())).await;
        }
        Some(role) => role,
        None => None,
    };
    let change = UserChange {
        role,
        disabled: form.disabled,
    };
    match state.api.update_user(&session.token, id, &change).await {
        Ok(_) => Redirect::to("/admin/users").into_response(),
        Err(ApiError::Invalid(detail)) => {
            users_page(&state, &session, &headers, Some(detail)).await
        }
        Err(e) => api_error(&headers, e),
    }
}

// ---------------------------------------------------------------- API keys

struct KeyRow {
    id: Uuid,
    name: String,
    prefix: String,
    scopes: String,
    created: String,
    last_used: String,
    revoked: bool,
}

#[derive(Template)]
#[template(path = "keys.html")]
struct KeysView {
    active: &'static str,
    is_admin: bool,
    csrf: String,
    keys: Vec<KeyRow>,
    new_secret: Option<String>,
    error: Option<String>,
}

async fn keys_page(
    state: &AppState,
    session: &Session,
    headers: &HeaderMap,
    new_secret: Option<String>,
    error: Option<String>,
) -> Response {
    match state.api.api_keys(&session.token).await {
        Ok(list) => page(
            session,
            &KeysView {
                active: "keys",
                is_admin: session.is_admin,
                csrf: session.csrf.clone(),
                keys: list
                    .keys
                    .into_iter()
                    .map(|k| KeyRow {
                        id: k.id,
                        name: k.name,
                        prefix: k.prefix,
                        scopes: k.scopes.join(", "),
                        created: when(k.created_at, false),
                        last_used: k.last_used_at.map_or("never".into(), |t| when(t, false)),
                        revoked: k.revoked_at.is_some(),
                    })
                    .collect(),
                new_secret,
                error,
            },
        ),
        Err(e) => api_error(headers, e),
    }
}

async fn keys(State(state): State<AppState>, session: Session, headers: HeaderMap) -> Response {
    keys_page(&state, &session, &headers, None, None).await
}

#[derive(Deserialize)]
struct NewKeyForm {
    csrf: String,
    name: String,
    events_write: Option<String>,
    kpis_read: Option<String>,
}

async fn create_key(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Form(form): Form<NewKeyForm>,
) -> Response {
    if !session.csrf_ok(&form.csrf) {
        return csrf_refused(&headers);
    }
    let mut scopes = Vec::new();
    if form.events_write.is_some() {
        scopes.push(KeyScope::EventsWrite);
    }
    if form.kpis_read.is_some() {
        scopes.push(KeyScope::KpisRead);
    }
    if scopes.is_empty() {
        return keys_page(
            &state,
            &session,
            &headers,
            None,
            Some("Choose at least one scope.".into()),
        )
        .await;
    }
    let new = NewKey {
        name: form.name,
        scopes,
    };
    match state.api.create_api_key(&session.token, &new).await {
        Ok(created) => keys_page(&state, &session, &headers, Some(created.secret), None).await,
        Err(ApiError::Invalid(detail)) => {
            keys_page(&state, &session, &headers, None, Some(detail)).await
        }
        Err(e) => api_error(&headers, e),
    }
}

async fn revoke_key(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Path(id): Path<Uuid>,
    Form(form): Form<crate::pages::CsrfForm>,
) -> Response {
    if !session.csrf_ok(&form.csrf) {
        return csrf_refused(&headers);
    }
    match state.api.revoke_api_key(&session.token, id).await {
        Ok(_) => Redirect::to("/admin/api-keys").into_response(),
        Err(e) => api_error(&headers, e),
    }
}

// ---------------------------------------------------------------- audit log

struct AuditRow {
    when: String,
    actor: String,
    action: String,
    outcome: String,
    client: String,
    request: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditView {
    active: &'static str,
    is_admin: bool,
    csrf: String,
    entries: Vec<AuditRow>,
    next_query: Option<String>,
}

#[derive(Deserialize)]
struct AuditQuery {
    before: Option<i64>,
}

async fn audit(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Query(q): Query<AuditQuery>,
) -> Response {
    match state.api.audit_log(&session.token, q.before).await {
        Ok(p) => page(
            &session,
            &AuditView {
                active: "audit",
                is_admin: session.is_admin,
                csrf: session.csrf.clone(),
                next_query: p.next_before.map(|b| format!("before={b}")),
                entries: p
                    .entries
                    .into_iter()
                    .map(|e| AuditRow {
                        when: when(e.occurred_at, true),
                        actor: e.actor,
                        action: e.action,
                        outcome: e.outcome,
                        client: e.client_addr.unwrap_or_default(),
                        request: e.request_id.unwrap_or_default(),
                    })
                    .collect(),
            },
        ),
        Err(e) => api_error(&headers, e),
    }
}
