//! Passwords (argon2id, a bounded number at a time), e-mail addresses as login names,
//! API keys (random, stored as SHA-256) and token signing.

use argon2::{
    Algorithm, Argon2, Block, Params, PasswordHash, Version,
    password_hash::{Output, ParamsString, SaltString, rand_core::OsRng},
};
use base64::Engine as _;
use jsonwebtoken::{Algorithm as JwtAlgorithm, EncodingKey, Header};
use platform::auth::{AUDIENCE, Claims, ISSUER, key_id};
use rand::RngCore;
use sha2::Digest as _;
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

/// A user's e-mail address in its one canonical form: what `app.users.email` holds
/// (its CHECK is `email = lower(email)`) and what `app.login_lookup` compares with after
/// `lower()`. Only printable ASCII is accepted, where Rust's and PostgreSQL's `lower()`
/// agree in every locale but Turkish; surrounding whitespace is trimmed. Login keys and
/// look-ups are built from this form only, so `Admin@X.example` and `admin@x.example`
/// are one account for the throttle as for the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub const MAX_LEN: usize = 254;

    /// `local@domain.tld`: 3 to 254 printable ASCII characters, one `@`, a dot in the
    /// domain.
    pub fn parse(value: &str) -> Option<Self> {
        let e = value.trim();
        let (local, domain) = e.split_once('@')?;
        let valid = e.len() <= Self::MAX_LEN
            && e.bytes().all(|b| b.is_ascii_graphic())
            && !local.is_empty()
            && domain.contains('.')
            && !domain.contains('@');
        valid.then(|| Self(e.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Email {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Argon2's working memory (1 KiB blocks; 19 MiB with the default parameters),
/// allocated once per permit and reused, so the memory hashing takes is bounded by the
/// number of permits and not left to the allocator.
type Memory = Vec<Block>;

fn memory_for(memory: &mut Memory, params: &Params) -> usize {
    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    blocks
}

/// A new argon2id hash (default parameters, random salt) in PHC string form.
fn hash_with(memory: &mut Memory, password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    let mut raw_salt = [0u8; 64];
    let raw_salt = salt
        .decode_b64(&mut raw_salt)
        .map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    let params = Params::default();
    let blocks = memory_for(memory, &params);
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    Argon2::default()
        .hash_password_into_with_memory(
            password.as_bytes(),
            raw_salt,
            &mut out,
            &mut memory[..blocks],
        )
        .map_err(|e| anyhow::anyhow!("hashing failed: {e}"))?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| anyhow::anyhow!("params: {e}"))?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| anyhow::anyhow!("output: {e}"))?),
    };
    Ok(hash.to_string())
}

/// Whether `password` matches the PHC string `stored` (any Argon2 variant, version and
/// parameters it names), computed in `memory`.
fn verify_with(memory: &mut Memory, password: &str, stored: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(stored) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    let mut raw_salt = [0u8; 64];
    let version = parsed
        .version
        .map_or(Ok(Version::default()), Version::try_from);
    let (Ok(algorithm), Ok(version), Ok(params), Ok(raw_salt)) = (
        Algorithm::try_from(parsed.algorithm),
        version,
        Params::try_from(&parsed),
        salt.decode_b64(&mut raw_salt),
    ) else {
        return false;
    };
    let blocks = memory_for(memory, &params);
    let mut out = [0u8; Output::MAX_LENGTH];
    let out = &mut out[..expected.len()];
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password.as_bytes(), raw_salt, out, &mut memory[..blocks])
        .is_ok()
        && constant_time_eq(out, expected.as_bytes())
}

pub fn hash_password(password: &str) -> anyhow::Result<String> {
    hash_with(&mut Memory::new(), password)
}

/// The hash unknown users are verified against, so both answers take the same time.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password("not a real password").unwrap_or_default())
}

/// Verifies a password. With no stored hash (unknown user) it verifies against a
/// fixed dummy hash, so both answers take the same time.
pub fn verify_password(password: &str, stored: Option<&str>) -> bool {
    verify_in(&mut Memory::new(), password, stored)
}

fn verify_in(memory: &mut Memory, password: &str, stored: Option<&str>) -> bool {
    let dummy = dummy_hash();
    let ok = verify_with(memory, password, stored.unwrap_or(dummy));
    ok && stored.is_some()
}

/// Argon2 runs (tens of milliseconds each) on the blocking pool, at most `concurrency`
/// at a time, each in working memory kept for its permit: memory is bounded by
/// configuration, not by the number of requests. A caller that finds every permit
/// taken is told so at once ([`Busy`]).
#[derive(Debug, Clone)]
pub struct PasswordHashing {
    permits: Arc<Semaphore>,
    memory: Arc<Mutex<Vec<Memory>>>,
}

/// Every password-hashing permit is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

impl From<Busy> for platform::http::Problem {
    /// 503 with `Retry-After: 1`: a hash takes tens of milliseconds.
    fn from(_: Busy) -> Self {
        Self::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "Too many password operations in progress, retry shortly",
        )
        .retry_after(1)
    }
}

/// The right to run one password hash, with the working memory for it.
#[derive(Debug)]
pub struct HashPermit {
    _permit: OwnedSemaphorePermit,
    memory: Memory,
    pool: Arc<Mutex<Vec<Memory>>>,
}

impl PasswordHashing {
    pub fn new(concurrency: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            memory: Arc::default(),
        }
    }

    /// One per core (of the CPU quota, where one is set).
    pub fn default_concurrency() -> usize {
        std::thread::available_parallelism().map_or(1, usize::from)
    }

    /// Takes a permit, or [`Busy`] at once.
    pub fn try_acquire(&self) -> Result<HashPermit, Busy> {
        let permit = self.permits.clone().try_acquire_owned().map_err(|_| Busy)?;
        let memory = lock(&self.memory).pop().unwrap_or_default();
        Ok(HashPermit {
            _permit: permit,
            memory,
            pool: self.memory.clone(),
        })
    }

    pub fn available(&self) -> usize {
        self.permits.available_permits()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Default for PasswordHashing {
    fn default() -> Self {
        Self::new(Self::default_concurrency())
    }
}

impl HashPermit {
    /// Runs `work` on the blocking pool. The permit moves with it, so it is held until
    /// the hash is done even if the request is cancelled meanwhile.
    async fn run<T: Send + 'static>(
        mut self,
        work: impl FnOnce(&mut Memory) -> T + Send + 'static,
    ) -> Option<T> {
        tokio::task::spawn_blocking(move || work(&mut self.memory))
            .await
            .ok()
    }

    /// [`verify_password`] under this permit (false if the task failed).
    pub async fn verify(self, password: String, stored: Option<String>) -> bool {
        self.run(move |memory| verify_in(memory, &password, stored.as_deref()))
            .await
            .unwrap_or(false)
    }

    /// [`hash_password`] under this permit.
    pub async fn hash(self, password: String) -> anyhow::Result<String> {
        self.run(move |memory| hash_with(memory, &password))
            .await
            .unwrap_or_else(|| Err(anyhow::anyhow!("hashing task failed")))
    }
}

impl Drop for HashPermit {
    /// The memory goes back to the pool before the permit is released.
    fn drop(&mut self) {
        lock(&self.pool).push(std::mem::take(&mut self.memory));
    }
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

/// Equal bytes, compared in constant time (different lengths are unequal).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    subtle::ConstantTimeEq::ct_eq(a, b).into()
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
        let mut header = Header::new(JwtAlgorithm::EdDSA);
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
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        // Interchangeable with the argon2 crate's own hashing and verification.
        use argon2::{PasswordHasher as _, PasswordVerifier as _};
        let theirs = Argon2::default()
            .hash_password(b"correct horse", &SaltString::generate(&mut OsRng))
            .unwrap()
            .to_string();
        assert!(verify_password("correct horse", Some(&theirs)));
        let ours = PasswordHash::new(&h).unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"correct horse", &ours)
                .is_ok()
        );
        let mut memory = Memory::new();
        assert!(verify_in(&mut memory, "correct horse", Some(&theirs)));
        assert!(
            verify_in(&mut memory, "correct horse", Some(&h)),
            "memory reused"
        );
        assert!(!verify_in(&mut memory, "wrong", Some(&h)));
        assert!(!verify_password("x", Some("$argon2id$garbage")));
        assert!(verify_password("correct horse", Some(&h)));
        assert!(!verify_password("wrong", Some(&h)));
        assert!(!verify_password("not a real password", None));
    }

    #[test]
    fn emails_have_one_canonical_form() {
        let e = Email::parse("  Admin@ACME.Example ").unwrap();
        assert_eq!(e.as_str(), "admin@acme.example");
        assert_eq!(Email::parse("admin@acme.example"), Some(e));
        assert!(Email::parse(&format!("{}@x.example", "a".repeat(244))).is_some());
        for bad in [
            "",
            "admin",
            "@acme.example",
            "admin@localhost",
            "a@b@c.example",
            "ad min@acme.example",
            "admin@acme.example\u{0}",
            "\u{130}@acme.example",
            "müller@acme.example",
            "admin@acme.example\u{200b}",
            &format!("{}@x.example", "a".repeat(245)),
            &"x".repeat(100_000),
        ] {
            assert_eq!(Email::parse(bad), None, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn hashing_is_bounded_and_a_permit_outlives_its_request() {
        let hashing = PasswordHashing::new(1);
        let permit = hashing.try_acquire().unwrap();
        assert_eq!(hashing.try_acquire().unwrap_err(), Busy);
        // The permit moves into the blocking task: cancelling the request's future does
        // not release it before the hash is done.
        let verify = tokio::spawn(permit.verify("x".into(), None));
        tokio::task::yield_now().await;
        verify.abort();
        let _ = verify.await;
        assert_eq!(hashing.try_acquire().unwrap_err(), Busy, "still hashing");
        let started = std::time::Instant::now();
        let again = loop {
            if let Ok(p) = hashing.try_acquire() {
                break p;
            }
            assert!(started.elapsed() < std::time::Duration::from_secs(30));
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        };
        let h = again.hash("correct horse".into()).await.unwrap();
        assert!(verify_password("correct horse", Some(&h)));
        assert_eq!(hashing.available(), 1);
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
