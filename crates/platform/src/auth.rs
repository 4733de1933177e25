//! Access tokens: Ed25519-signed JWTs. The API signs; ingest, the loader and the API
//! verify with public keys alone. Verification pins the algorithm (`EdDSA` only: no
//! `none`, no HMAC-with-the-public-key confusion), the issuer, the audience, expiry and
//! not-before, and selects the key by `kid`, accepting the current and the previous
//! key so keys rotate without logging everyone out.

use std::collections::HashMap;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use rustls_pki_types::{SubjectPublicKeyInfoDer, pem::PemObject};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use uuid::Uuid;

pub const ISSUER: &str = "beacon-api";
pub const AUDIENCE: &str = "beacon";

/// Scopes a token can carry.
pub mod scope {
    pub const EVENTS_WRITE: &str = "events:write";
    pub const KPIS_READ: &str = "kpis:read";
    pub const TENANT_ADMIN: &str = "tenant:admin";
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// `user:<uuid>` or `key:<uuid>`.
    pub sub: String,
    /// The tenant: the only source of tenancy anywhere in Beacon.
    pub tenant: Uuid,
    /// Space-separated scopes.
    pub scope: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: Uuid,
}

impl Claims {
    pub fn has_scope(&self, wanted: &str) -> bool {
        self.scope.split(' ').any(|s| s == wanted)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("unknown signing key")]
    UnknownKey,
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// The key id of a public key: base64url of the first 12 bytes of SHA-256 over its
/// SubjectPublicKeyInfo DER.
pub fn key_id(public_pem: &[u8]) -> anyhow::Result<String> {
    let spki = SubjectPublicKeyInfoDer::from_pem_slice(public_pem)
        .map_err(|e| anyhow::anyhow!("not a PEM public key: {e}"))?;
    let digest = sha2::Sha256::digest(spki.as_ref());
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..12]))
}

/// Verifies access tokens against a small set of Ed25519 public keys.
#[derive(Clone)]
pub struct TokenVerifier {
    keys: HashMap<String, DecodingKey>,
    validation: Validation,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl TokenVerifier {
    /// From PEM public keys (current first, then previous ones).
    pub fn from_public_pems(pems: &[Vec<u8>]) -> anyhow::Result<Self> {
        let mut keys = HashMap::new();
        for pem in pems {
            let kid = key_id(pem)?;
            let key = DecodingKey::from_ed_pem(pem)
                .map_err(|e| anyhow::anyhow!("not an Ed25519 public key: {e}"))?;
            keys.insert(kid, key);
        }
        anyhow::ensure!(!keys.is_empty(), "no token verification key configured");
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = 5;
        Ok(Self { keys, validation })
    }

    /// `BEACON_JWT_PUBLIC_KEY_FILE` (current) and optionally
    /// `BEACON_JWT_PREVIOUS_PUBLIC_KEY_FILE` (still accepted during rotation).
    pub fn from_env() -> anyhow::Result<Self> {
        let mut pems = Vec::new();
        for var in [
            "BEACON_JWT_PUBLIC_KEY_FILE",
            "BEACON_JWT_PREVIOUS_PUBLIC_KEY_FILE",
        ] {
            if let Some(path) = crate::config::optional::<String>(var)? {
                pems.push(std::fs::read(&path).map_err(|e| {
                    crate::config::ConfigError::new(var, format!("cannot read {path}: {e}"))
                })?);
            } else if var == "BEACON_JWT_PUBLIC_KEY_FILE" {
                return Err(crate::config::ConfigError::new(var, "is required but not set").into());
            }
        }
        Self::from_public_pems(&pems)
    }

    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let header = decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::Invalid("algorithm not allowed".into()));
        }
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| self.keys.get(kid))
            .ok_or(TokenError::UnknownKey)?;
        decode::<Claims>(token, key, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| TokenError::Invalid(e.to_string()))
    }

    /// Verifies an `Authorization: Bearer …` header value.
    pub fn verify_bearer(&self, header: Option<&http::HeaderValue>) -> Result<Claims, TokenError> {
        let value = header
            .and_then(|v| v.to_str().ok())
            .ok_or(TokenError::Malformed)?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or(TokenError::Malformed)?;
        self.verify(token.trim())
    }
}

/// An axum extractor: the verified claims of the request's bearer token. A handler
/// that takes it cannot forget authentication; scopes are checked with [`Claims::require`].
#[derive(Debug, Clone)]
pub struct Bearer(pub Claims);

impl<S> axum::extract::FromRequestParts<S> for Bearer
where
    S: Send + Sync,
    std::sync::Arc<TokenVerifier>: axum::extract::FromRef<S>,
{
    type Rejection = crate::http::Problem;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        let verifier =
            <std::sync::Arc<TokenVerifier> as axum::extract::FromRef<S>>::from_ref(state);
        match verifier.verify_bearer(parts.headers.get(http::header::AUTHORIZATION)) {
            Ok(claims) => Ok(Self(claims)),
            Err(e) => {
                tracing::info!(reason = %e, "token refused");
                Err(crate::http::Problem::unauthorized())
            }
        }
    }
}

impl Claims {
    /// 403 problem unless the token carries `scope`.
    pub fn require(&self, scope: &str) -> Result<(), crate::http::Problem> {
        if self.has_scope(scope) {
            Ok(())
        } else {
            tracing::info!(sub = %self.sub, needed = scope, "scope missing");
            Err(crate::http::Problem::forbidden()
                .detail(format!("this credential lacks the {scope} scope")))
        }
    }
}
