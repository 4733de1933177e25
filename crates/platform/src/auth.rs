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
    /// Erase one end user's data (`DELETE /v1/subjects/{user_key}`): admins, and API
    /// keys created with it.
    pub const SUBJECTS_ERASE: &str = "subjects:erase";
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

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::{EncodingKey, Header, encode};

    use super::*;

    struct Keys {
        private: Vec<u8>,
        public: Vec<u8>,
    }

    fn keys() -> Keys {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        Keys {
            private: pair.serialize_pem().into_bytes(),
            public: pair.public_key_pem().into_bytes(),
        }
    }

    fn claims(offset_exp: i64, offset_nbf: i64) -> Claims {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: "user:1".into(),
            tenant: Uuid::from_u128(1),
            scope: scope::KPIS_READ.into(),
            iat: now,
            nbf: now + offset_nbf,
            exp: now + offset_exp,
            jti: Uuid::from_u128(2),
        }
    }

    fn sign(keys: &Keys, claims: &Claims) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(key_id(&keys.public).unwrap());
        encode(
            &header,
            claims,
            &EncodingKey::from_ed_pem(&keys.private).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn valid_tokens_verify_with_current_and_previous_key() {
        let (current, previous) = (keys(), keys());
        let verifier =
            TokenVerifier::from_public_pems(&[current.public.clone(), previous.public.clone()])
                .unwrap();
        let c = claims(600, 0);
        assert_eq!(verifier.verify(&sign(&current, &c)).unwrap(), c);
        assert_eq!(verifier.verify(&sign(&previous, &c)).unwrap(), c);
    }

    #[test]
    fn forged_and_broken_tokens_are_refused() {
        let good = keys();
        let verifier = TokenVerifier::from_public_pems(std::slice::from_ref(&good.public)).unwrap();
        let kid = key_id(&good.public).unwrap();
        let c = claims(600, 0);
        let b64 = |v: &serde_json::Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
        let body = b64(&serde_json::to_value(&c).unwrap());

        // alg: none, no signature.
        let none = format!(
            "{}.{body}.",
            b64(&serde_json::json!({ "alg": "none", "typ": "JWT", "kid": kid }))
        );
        assert!(verifier.verify(&none).is_err());
        // HS256 keyed with the public key (algorithm confusion).
        let mut hs = Header::new(Algorithm::HS256);
        hs.kid = Some(kid.clone());
        let confused = encode(&hs, &c, &EncodingKey::from_secret(&good.public)).unwrap();
        assert!(verifier.verify(&confused).is_err());
        // Signed by another key that claims our kid.
        let other = keys();
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = Some(kid.clone());
        let wrong_key = encode(&h, &c, &EncodingKey::from_ed_pem(&other.private).unwrap()).unwrap();
        assert!(verifier.verify(&wrong_key).is_err());
        // Unknown kid.
        assert_eq!(
            verifier.verify(&sign(&other, &c)),
            Err(TokenError::UnknownKey)
        );
        // Expired, not yet valid.
        assert!(verifier.verify(&sign(&good, &claims(-60, -120))).is_err());
        assert!(verifier.verify(&sign(&good, &claims(600, 120))).is_err());
        // Wrong audience, wrong issuer.
        assert!(
            verifier
                .verify(&sign(
                    &good,
                    &Claims {
                        aud: "other".into(),
                        ..c.clone()
                    }
                ))
                .is_err()
        );
        assert!(
            verifier
                .verify(&sign(
                    &good,
                    &Claims {
                        iss: "evil".into(),
                        ..c.clone()
                    }
                ))
                .is_err()
        );
        // Tampered claims: another tenant, same signature.
        let token = sign(&good, &c);
        let mut parts: Vec<&str> = token.split('.').collect();
        let tampered_body = b64(&serde_json::to_value(Claims {
            tenant: Uuid::from_u128(99),
            ..c.clone()
        })
        .unwrap());
        parts[1] = &tampered_body;
        assert!(verifier.verify(&parts.join(".")).is_err());
        // Garbage and missing bearer prefix.
        assert_eq!(verifier.verify("not-a-jwt"), Err(TokenError::Malformed));
        let header = http::HeaderValue::from_str(&token).unwrap();
        assert_eq!(
            verifier.verify_bearer(Some(&header)),
            Err(TokenError::Malformed)
        );
    }
}
