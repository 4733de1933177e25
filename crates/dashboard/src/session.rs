//! The browser session: the API's access token in a `__Host-` cookie (HttpOnly,
//! SameSite=Strict, Secure, Path=/, no Domain: only this exact origin can set or read
//! it, over a secure context), and CSRF protection bound to the session.
//!
//! CSRF: a random browser nonce lives in a second `__Host-` cookie, and every form
//! carries `HMAC-SHA256(key, nonce, session token)` with a server key read from
//! `BEACON_SESSION_KEY_FILE`. A post is accepted only when its token is that HMAC for
//! the cookies it arrives with, so a token from another browser or another session
//! (a token from before sign-in, another user's form) is refused, and an attacker
//! who can plant a cookie cannot mint a matching token without the key. Cookies
//! without the prefix are not read.

use std::sync::Arc;

use axum::{
    extract::{FromRef, FromRequestParts},
    http::{HeaderMap, HeaderValue, header, request::Parts},
    response::{IntoResponse, Redirect, Response},
};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use cookie::{Cookie, SameSite};
use hmac::{Hmac, Mac};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use subtle::ConstantTimeEq;

pub const SESSION: &str = "__Host-beacon_session";
pub const CSRF: &str = "__Host-beacon_csrf";

/// The value of cookie `name` in the request (`Cookie` headers, parsed by `cookie`).
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned())
        .filter(|v| !v.is_empty())
}

/// `Set-Cookie` for a `__Host-` cookie: Secure, Path=/, no Domain, HttpOnly,
/// SameSite=Strict. `max_age` 0 deletes it.
pub fn set_cookie(name: &str, value: &str, max_age: i64) -> HeaderValue {
    let c = Cookie::build((name, value))
        .path("/")
        .secure(true)
        .http_only(true)
        .same_site(SameSite::Strict)
        .max_age(cookie::time::Duration::seconds(max_age))
        .build();
    HeaderValue::from_str(&c.to_string()).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The key CSRF tokens are derived with.
#[derive(Clone)]
pub struct SessionKey(Arc<[u8]>);

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

impl SessionKey {
    /// The configured key, or a random one for this process (forms then work with
    /// this replica only, and not across a restart: configure the key).
    pub fn new(configured: Option<&SecretString>) -> Self {
        match configured {
            Some(key) => Self(key.expose_secret().as_bytes().into()),
            None => {
                tracing::warn!(
                    "BEACON_SESSION_KEY_FILE is not set: CSRF tokens use a random key of this process"
                );
                let mut bytes = [0u8; 32];
                rand::rng().fill_bytes(&mut bytes);
                Self(bytes.into())
            }
        }
    }

    /// The CSRF token for browser nonce `nonce` and session token `session`.
    fn token(&self, nonce: &str, session: Option<&str>) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        for part in [
            b"beacon-csrf-v1",
            nonce.as_bytes(),
            session.unwrap_or("").as_bytes(),
        ] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// The CSRF token for forms of this request, minting the nonce cookie if absent.
    pub fn csrf_for(&self, headers: &HeaderMap) -> (String, Option<HeaderValue>) {
        let session = cookie(headers, SESSION);
        match cookie(headers, CSRF) {
            Some(nonce) => (self.token(&nonce, session.as_deref()), None),
            None => {
                let nonce = random_token();
                let set = set_cookie(CSRF, &nonce, 8 * 3600);
                (self.token(&nonce, session.as_deref()), Some(set))
            }
        }
    }

    /// The submitted token is this browser's and this session's (constant time).
    pub fn csrf_ok(&self, headers: &HeaderMap, submitted: &str) -> bool {
        cookie(headers, CSRF).is_some_and(|nonce| {
            let expected = self.token(&nonce, cookie(headers, SESSION).as_deref());
            expected.as_bytes().ct_eq(submitted.as_bytes()).into()
        })
    }
}

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

impl Session {
    /// The submitted form token is the one this session's pages carry.
    pub fn csrf_ok(&self, submitted: &str) -> bool {
        self.csrf.as_bytes().ct_eq(submitted.as_bytes()).into()
    }
}

/// The token's `scope` claim, read without verification: the dashboard uses it only to
/// decide which links to show. Every request is authorised by the API.
fn scopes(token: &str) -> Vec<String> {
    let payload = token.split('.').nth(1).unwrap_or("");
    let bytes = URL_SAFE_NO_PAD.decode(payload).unwrap_or_default();
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
    SessionKey: FromRef<S>,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let key = SessionKey::from_ref(state);
        let token = cookie(&parts.headers, SESSION)
            .ok_or_else(|| Redirect::to("/login").into_response())?;
        let (csrf, set_csrf) = key.csrf_for(&parts.headers);
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

    fn headers(cookies: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_str(cookies).unwrap());
        h
    }

    fn key(k: &str) -> SessionKey {
        SessionKey::new(Some(&SecretString::from(k)))
    }

    #[test]
    fn csrf_tokens_are_bound_to_the_nonce_the_session_and_the_key() {
        let k = key("server key");
        let a = headers("__Host-beacon_csrf=n1; __Host-beacon_session=s1");
        let (token, set) = k.csrf_for(&a);
        assert!(set.is_none());
        assert!(k.csrf_ok(&a, &token));
        // Another session, another browser, no nonce, another key: refused.
        assert!(!k.csrf_ok(
            &headers("__Host-beacon_csrf=n1; __Host-beacon_session=s2"),
            &token
        ));
        assert!(!k.csrf_ok(
            &headers("__Host-beacon_csrf=n2; __Host-beacon_session=s1"),
            &token
        ));
        assert!(!k.csrf_ok(&headers("__Host-beacon_session=s1"), &token));
        assert!(!key("other key").csrf_ok(&a, &token));
        // Double submit alone (the nonce itself as the token) is not enough.
        assert!(!k.csrf_ok(&a, "n1"));
        assert!(!k.csrf_ok(&a, ""));
    }

    #[test]
    fn cookies_without_the_host_prefix_are_not_read() {
        let h = headers("beacon_session=s1; beacon_csrf=n1; Host-beacon_session=s2");
        assert_eq!(cookie(&h, SESSION), None);
        assert_eq!(cookie(&h, CSRF), None);
        let h = headers("other=1; __Host-beacon_session=s1");
        assert_eq!(cookie(&h, SESSION).as_deref(), Some("s1"));
    }

    #[test]
    fn cookies_are_host_only_secure_http_only_and_strict() {
        let c = set_cookie(SESSION, "t", 60);
        let c = c.to_str().unwrap();
        for part in [
            "__Host-beacon_session=t",
            "HttpOnly",
            "SameSite=Strict",
            "Secure",
            "Path=/",
            "Max-Age=60",
        ] {
            assert!(c.contains(part), "{c} lacks {part}");
        }
        assert!(!c.contains("Domain"), "{c}");
    }
}
