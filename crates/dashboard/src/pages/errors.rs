//! Rendering, and the one mapping from API failures to pages.

use askama::Template;
use axum::{
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{Html, IntoResponse, Redirect, Response},
};

use crate::{
    api_client::ApiError,
    session::{self, Session},
};

pub(crate) fn render(t: &impl Template, status: StatusCode) -> Response {
    match t.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "template failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

/// Renders a page for a signed-in user, setting the CSRF cookie if it was minted.
pub(crate) fn page(session: &Session, t: &impl Template) -> Response {
    let mut response = render(t, StatusCode::OK);
    if let Some(c) = &session.set_csrf {
        response.headers_mut().append(header::SET_COOKIE, c.clone());
    }
    response
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    title: &'a str,
    message: &'a str,
    request_id: String,
}

pub(crate) fn error_page(
    headers: &HeaderMap,
    status: StatusCode,
    title: &str,
    message: &str,
) -> Response {
    let request_id = headers
        .get(platform::http::REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    render(
        &ErrorPage {
            title,
            message,
            request_id,
        },
        status,
    )
}

/// One mapping from API failures to pages, for every handler.
pub(crate) fn api_error(headers: &HeaderMap, e: ApiError) -> Response {
    match e {
        ApiError::Unauthorized => {
            let mut r = Redirect::to("/login").into_response();
            r.headers_mut().append(
                header::SET_COOKIE,
                session::set_cookie(session::SESSION, "", 0),
            );
            r
        }
        ApiError::Forbidden => error_page(
            headers,
            StatusCode::FORBIDDEN,
            "Not allowed",
            "Your account cannot open this page.",
        ),
        ApiError::NotFound => error_page(
            headers,
            StatusCode::NOT_FOUND,
            "Not found",
            "There is nothing here.",
        ),
        ApiError::Invalid(detail) => error_page(
            headers,
            StatusCode::BAD_REQUEST,
            "Please check your input",
            &detail,
        ),
        ApiError::Throttled { retry_after } => with_retry_after(
            error_page(
                headers,
                StatusCode::TOO_MANY_REQUESTS,
                "Too many requests",
                &format!("Wait {retry_after} seconds and try again."),
            ),
            retry_after,
        ),
        ApiError::Unavailable => error_page(
            headers,
            StatusCode::SERVICE_UNAVAILABLE,
            "Data is unavailable",
            "We could not load your figures. Please try again in a moment.",
        ),
    }
}

pub(crate) fn with_retry_after(mut response: Response, seconds: u64) -> Response {
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}
