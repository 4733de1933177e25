//! Passwords (argon2id), API keys (random, stored as SHA-256) and token signing.

use argon2::{
    Argon2, PasswordHash, PasswordHasher, PasswordVerifier,
    password_hash::{SaltString, rand_core::OsRng},
};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use platform::auth::{AUDIENCE, Claims, ISSUER, key_id};
use rand::RngCore;
use sha2::Digest as _;
use uuid::Uuid;

pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing failed: {e}"))
}

/// Verifies a password. With no stored hash (unknown user) it verifies against a
/// fixed dummy hash, so both answers take the same time.
pub fn verify_password(password: &str, stored: Option<&str>) -> bool {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let dummy = DUMMY.get_or_init(|| hash_password("not a real password").unwrap_or_default());
    let hash = stored.unwrap_or(dummy);
    let ok = PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false);
    ok && stored.is_some()
}

/// A new API key: `bk_<prefix>_<secret>`. Only the prefix and SHA-256 of the secret are
/// stored (the secret is 256 random bits, so a fast hash is the right tool).
#[derive(Debug)]
pub struct NewApiKey {
    pub token: String,
    pub prefix: String,
    pub secret_hash: Vec<u8>,
}

pub fn new_api_key() -> NewApiKey {
    let mut prefix = [0u8; 6];
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut prefix);
    rand::rng().fill_bytes(&mut secret);
    let prefix = hex::encode(prefix);
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    NewApiKey {
        token: format!("bk_{prefix}_{secret}"),
        secret_hash: sha2::Sha256::digest(secret.as_bytes()).to_vec(),
        prefix,
    }
}

/// Splits `bk_<prefix>_<secret>` into prefix and the secret's hash.
pub fn parse_api_key(token: &str) -> Option<(String, Vec<u8>)> {
    let rest = token.strip_prefix("bk_")?;
    let (prefix, secret) = rest.split_once('_')?;
    if prefix.len() != 12 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) || secret.len() != 43 {
        return None;
    }
    Some((
        prefix.to_owned(),
        sha2::Sha256::digest(secret.as_bytes()).to_vec(),
    ))
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Signs access tokens with the api's Ed25519 key. The key never leaves the api pod.
#[derive(Clone)]
pub struct TokenSigner {
    key: EncodingKey,
    kid: String,
    pub ttl: time::Duration,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("kid", &self.kid)
            .finish()
    }
}

impl TokenSigner {
    pub fn new(private_pem: &[u8], public_pem: &[u8], ttl: time::Duration) -> anyhow::Result<Self> {
        Ok(Self {
            key: EncodingKey::from_ed_pem(private_pem)
                .map_err(|e| anyhow::anyhow!("not an Ed25519 private key: {e}"))?,
            kid: key_id(public_pem)?,
            ttl,
        })
    }

    pub fn sign(&self, sub: String, tenant: Uuid, scope: &str) -> anyhow::Result<(String, Claims)> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let claims = Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub,
            tenant,
            scope: scope.into(),
            iat: now,
            nbf: now,
            exp: now + self.ttl.whole_seconds(),
            jti: Uuid::new_v4(),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.key)?;
        Ok((token, claims))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_and_unknown_users_fail() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", Some(&h)));
        assert!(!verify_password("wrong", Some(&h)));
        assert!(!verify_password("not a real password", None));
    }

    #[test]
    fn api_keys_round_trip() {
        let key = new_api_key();
        let (prefix, hash) = parse_api_key(&key.token).unwrap();
        assert_eq!(prefix, key.prefix);
        assert!(constant_time_eq(&hash, &key.secret_hash));
        assert!(parse_api_key("bk_short_x").is_none());
        assert!(parse_api_key(&key.token.replace("bk_", "xx_")).is_none());
    }
}
