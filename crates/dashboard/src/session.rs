//! The browser session: the API's access token in an HttpOnly, SameSite=Strict cookie
//! (Secure over TLS), and CSRF protection by double submit (an HttpOnly cookie and a
//! hidden form field must match).

use axum::{
    extract::{FromRef, FromRequestParts},
    http::{HeaderMap, HeaderValue, header, request::Parts},
    response::{IntoResponse, Redirect, Response},
};
use base64::Engine as _;
use rand::RngCore;

pub const SESSION: &str = "beacon_session";
pub const CSRF: &str = "beacon_csrf";

pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

pub fn set_cookie(name: &str, value: &str, max_age: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// This browser's CSRF token, minting one (and the cookie to set) if absent.
pub fn csrf_for(headers: &HeaderMap, secure: bool) -> (String, Option<HeaderValue>) {
    match cookie(headers, CSRF) {
        Some(t) => (t.to_owned(), None),
        None => {
            let t = new_token();
            let c = set_cookie(CSRF, &t, 8 * 3600, secure);
            (t, Some(c))
        }
    }
}

/// The submitted token equals the cookie (compared in constant time).
pub fn csrf_ok(headers: &HeaderMap, submitted: &str) -> bool {
    cookie(headers, CSRF).is_some_and(|c| {
        c.len() == submitted.len()
            && c.bytes()
                .zip(submitted.bytes())
                .fold(0u8, |a, (x, y)| a | (x ^ y))
                == 0
    })
}

/// Whether the app marks cookies Secure (extracted from state).
#[derive(Debug, Clone, Copy)]
pub struct SecureCookies(pub bool);

/// A signed-in user: their token, what the navigation may offer, and the CSRF token
/// for the page's forms. Without a session the request is sent to the login page.
#[derive(Debug, Clone)]
pub struct Session {
    pub token: String,
    /// For navigation only: the API decides what the user may really do.
    pub is_admin: bool,
    pub csrf: String,
    pub set_csrf: Option<HeaderValue>,
}

/// The token's `scope` claim, read without verification: the dashboard uses it only to
/// decide which links to show. Every request is authorised by the API.
fn scopes(token: &str) -> Vec<String> {
    let payload = token.split('.').nth(1).unwrap_or("");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap_or_default();
    let claims: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    claims["scope"]
        .as_str()
        .unwrap_or("")
        .split(' ')
        .map(str::to_owned)
        .collect()
}

impl<S> FromRequestParts<S> for Session
where
    S: Send + Sync,
    SecureCookies: FromRef<S>,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let secure = SecureCookies::from_ref(state).0;
        let token = cookie(&parts.headers, SESSION)
            .map(str::to_owned)
            .ok_or_else(|| Redirect::to("/login").into_response())?;
        let (csrf, set_csrf) = csrf_for(&parts.headers, secure);
        Ok(Self {
            is_admin: scopes(&token).iter().any(|s| s == "tenant:admin"),
            token,
            csrf,
            set_csrf,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrf_requires_the_matching_cookie() {
        let mut headers = HeaderMap::new();
        assert!(!csrf_ok(&headers, "abc"));
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("beacon_csrf=abc; other=1"),
        );
        assert!(csrf_ok(&headers, "abc"));
        assert!(!csrf_ok(&headers, "abd"));
        assert!(!csrf_ok(&headers, ""));
    }

    #[test]
    fn cookies_are_http_only_and_strict() {
        let c = set_cookie(SESSION, "t", 60, true);
        let c = c.to_str().unwrap();
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Secure"));
    }
}
