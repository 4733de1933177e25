//! Sign in and out.

use askama::Template;
use axum::{
    Form,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
};
use serde::Deserialize;

use super::{
    AppState,
    errors::{api_error, error_page, render, with_retry_after},
};
use crate::{
    api_client::ApiError,
    session::{self, Session},
};

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    csrf: String,
    error: Option<String>,
}

pub(super) async fn login_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let (csrf, set) = state.key.csrf_for(&headers);
    let mut response = render(&LoginPage { csrf, error: None }, StatusCode::OK);
    if let Some(c) = set {
        response.headers_mut().append(header::SET_COOKIE, c);
    }
    response
}

#[derive(Deserialize)]
pub(super) struct LoginForm {
    csrf: String,
    email: String,
    password: String,
}

pub(super) async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    if !state.key.csrf_ok(&headers, &form.csrf) {
        return error_page(
            &headers,
            StatusCode::FORBIDDEN,
            "Session expired",
            "Please reload the sign-in page and try again.",
        );
    }
    let retry = |message: &str, status| {
        render(
            &LoginPage {
                csrf: form.csrf.clone(),
                error: Some(message.into()),
            },
            status,
        )
    };
    match state.api.sign_in(&form.email, &form.password).await {
        Ok(t) => {
            let mut response = Redirect::to("/overview").into_response();
            response.headers_mut().append(
                header::SET_COOKIE,
                session::set_cookie(session::SESSION, &t.access_token, t.expires_in),
            );
            response
        }
        Err(ApiError::Unauthorized | ApiError::Invalid(_)) => {
            retry("Wrong email or password.", StatusCode::UNAUTHORIZED)
        }
        Err(ApiError::Throttled { retry_after }) => with_retry_after(
            retry(
                &format!("Too many attempts. Wait {retry_after} seconds and try again."),
                StatusCode::TOO_MANY_REQUESTS,
            ),
            retry_after,
        ),
        Err(e) => api_error(&headers, e),
    }
}

#[derive(Deserialize)]
pub(crate) struct CsrfForm {
    pub csrf: String,
}

/// Sign-out: the API revokes the access token (so a copy of the cookie is worthless
/// from now on), then the cookie is deleted.
pub(super) async fn logout(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    if !session.csrf_ok(&form.csrf) {
        return error_page(
            &headers,
            StatusCode::FORBIDDEN,
            "Session expired",
            "Please reload the page and try again.",
        );
    }
    match state.api.revoke_token(&session.token).await {
        // Unauthorized: already revoked or expired.
        Ok(()) | Err(ApiError::Unauthorized) => {}
        Err(e) => return api_error(&headers, e),
    }
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        session::set_cookie(session::SESSION, "", 0),
    );
    response
}
