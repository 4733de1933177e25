//! Typed configuration from environment variables.
//!
//! Every error names the variable, so a bad deployment fails at start with a message
//! an operator can act on. Secrets are never read from plain variables: a secret
//! `NAME` is read from the file named by `NAME_FILE` (a mounted Kubernetes Secret, or a
//! file `cargo xtask up` generated).

use std::{fmt::Display, net::SocketAddr, path::PathBuf, str::FromStr, time::Duration};

use secrecy::SecretString;

/// A configuration problem, always naming the variable it is about.
#[derive(Debug, thiserror::Error)]
#[error("configuration error in {var}: {reason}")]
pub struct ConfigError {
    pub var: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(var: &str, reason: impl Display) -> Self {
        Self {
            var: var.to_owned(),
            reason: reason.to_string(),
        }
    }
}

pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

fn raw(var: &str) -> Result<Option<String>> {
    match std::env::var(var) {
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(ConfigError::new(var, "is not valid UTF-8")),
    }
}

/// An optional setting; `None` when unset or empty.
pub fn optional<T>(var: &str) -> Result<Option<T>>
where
    T: FromStr,
    T::Err: Display,
{
    raw(var)?.map(|v| parse(var, &v)).transpose()
}

/// Parses the value `v` of `var`; an error names the variable and the value.
fn parse<T>(var: &str, v: &str) -> Result<T>
where
    T: FromStr,
    T::Err: Display,
{
    v.trim()
        .parse::<T>()
        .map_err(|e| ConfigError::new(var, format!("cannot parse {v:?}: {e}")))
}

/// A setting with a default.
pub fn or<T>(var: &str, default: T) -> Result<T>
where
    T: FromStr,
    T::Err: Display,
{
    Ok(optional(var)?.unwrap_or(default))
}

/// A setting that must be present.
pub fn required<T>(var: &str) -> Result<T>
where
    T: FromStr,
    T::Err: Display,
{
    optional(var)?.ok_or_else(|| ConfigError::new(var, "is required but not set"))
}

/// A socket address with a default.
pub fn addr(var: &str, default: &str) -> Result<SocketAddr> {
    let default: SocketAddr = default
        .parse()
        .map_err(|e| ConfigError::new(var, format!("bad built-in default: {e}")))?;
    or(var, default)
}

/// A duration given in milliseconds (`*_MS`).
pub fn millis(var: &str, default_ms: u64) -> Result<Duration> {
    Ok(Duration::from_millis(or(var, default_ms)?))
}

/// A path that must be set.
pub fn path(var: &str) -> Result<PathBuf> {
    required::<String>(var).map(PathBuf::from)
}

/// A secret read from the file named by `{name}_FILE`. Setting the secret itself in
/// the environment is refused: environment variables leak into process listings,
/// crash dumps and child processes.
pub fn secret(name: &str) -> Result<SecretString> {
    optional_secret(name)?.ok_or_else(|| {
        ConfigError::new(
            &format!("{name}_FILE"),
            "is required but not set (secrets are read from files)",
        )
    })
}

/// Like [`secret`], but absent when `{name}_FILE` is unset.
pub fn optional_secret(name: &str) -> Result<Option<SecretString>> {
    if raw(name)?.is_some() {
        return Err(ConfigError::new(
            name,
            format!(
                "secrets are not accepted in environment variables; put it in a file and set {name}_FILE"
            ),
        ));
    }
    let var = format!("{name}_FILE");
    let Some(path) = raw(&var)? else {
        return Ok(None);
    };
    read_secret_file(&var, &path).map(Some)
}

/// Reads a secret file, trimming one trailing newline.
pub fn read_secret_file(var: &str, path: &str) -> Result<SecretString> {
    let mut text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(var, format!("cannot read secret file {path}: {e}")))?;
    while text.ends_with('\n') || text.ends_with('\r') {
        text.pop();
    }
    if text.is_empty() {
        return Err(ConfigError::new(
            var,
            format!("secret file {path} is empty"),
        ));
    }
    Ok(SecretString::from(text))
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    // Environment variables are process-wide; each test uses its own names.
    #[test]
    fn missing_required_names_the_variable() {
        let err = required::<u16>("BEACON_TEST_MISSING_PORT").unwrap_err();
        assert_eq!(err.var, "BEACON_TEST_MISSING_PORT");
        assert!(err.to_string().contains("BEACON_TEST_MISSING_PORT"));
    }

    #[test]
    fn unparsable_value_names_the_variable() {
        // `optional` reads the environment and hands the value to `parse`; edition 2024
        // makes `set_var` unsafe (forbidden here), so the parsing step is called directly.
        let err = parse::<u16>("X_PORT", " abc ").unwrap_err();
        assert_eq!(err.var, "X_PORT");
        assert!(err.to_string().contains("X_PORT") && err.to_string().contains("abc"));
        assert_eq!(parse::<u16>("X_PORT", " 8080\n").unwrap(), 8080);
    }

    #[test]
    fn secret_file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "s3cret\n").unwrap();
        let s = read_secret_file("PW_FILE", p.to_str().unwrap()).unwrap();
        assert_eq!(s.expose_secret(), "s3cret");
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        assert!(read_secret_file("PW_FILE", empty.to_str().unwrap()).is_err());
        let err = read_secret_file("PW_FILE", "/nonexistent/beacon").unwrap_err();
        assert_eq!(err.var, "PW_FILE");
    }
}
