//! Secret files for development: created with mode 0600 from the first byte (never a
//! moment readable by others, as `write` then `chmod` would leave), complete or absent
//! (written to a temporary name in the same directory, then linked or renamed).

use std::{
    io::Write as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;

/// A new, private file next to `path` holding `contents`, synced to disk.
fn temporary(path: &Path, contents: &[u8]) -> anyhow::Result<PathBuf> {
    let dir = path.parent().context("a secret file needs a directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = path.file_name().context("a secret file needs a name")?;
    let tmp = dir.join(format!(
        ".{}.{}.{}",
        name.to_string_lossy(),
        std::process::id(),
        uuid::Uuid::new_v4()
    ));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&tmp).and_then(|mut f| {
        f.write_all(contents)?;
        f.sync_all()
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("writing {}", tmp.display()));
    }
    Ok(tmp)
}

/// Creates `path` with `contents` unless it exists; returns whether it wrote it. Two
/// runs at once: one wins, the other keeps the winner's file.
pub fn create(path: &Path, contents: &[u8]) -> anyhow::Result<bool> {
    if path.exists() {
        return Ok(false);
    }
    let tmp = temporary(path, contents)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

/// Writes `path` with `contents`, replacing it whole if it exists.
pub fn replace(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let tmp = temporary(path, contents)?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_private_complete_and_created_once() {
        let dir = std::env::temp_dir().join(format!("private-file-{}", uuid::Uuid::new_v4()));
        let path = dir.join("a.password");
        assert!(create(&path, b"first").unwrap());
        assert!(!create(&path, b"second").unwrap(), "kept");
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        replace(&path, b"third").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"third");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        }
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
