//! `cargo xtask analyst add NAME`: a person's PostgreSQL login in the analysts' group
//! role (the access model's `analyst` persona's `db_role`), on the local database;
//! `cargo xtask analyst remove NAME` takes it away again.
//!
//! With `--kube`, the same inside a cluster: the command prints (or, with `--apply`,
//! applies) the one-shot Job that does it in beacon-data with the bootstrap's
//! credentials ([`kube`]); the password comes from the Secret `analyst-<name>` that the
//! person who runs the database made from the secret manager, and is never printed.
//!
//! The login is `analyst_NAME`. Its password is generated into
//! `.dev/analysts/NAME.password`, created atomically with mode 0600 (never another
//! mode, not even for a moment) and kept: running the command again for the same name
//! re-asserts the login with the same password. The password is printed only with
//! `--show-password`. Statement and idle-in-transaction timeouts and the connection
//! limit come from the model's group role (roles.sql gives them to every member).

pub mod kube;

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use platform::access::AccessModel;
use secrecy::{ExposeSecret, SecretString};

/// `cargo xtask analyst ...`
#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Create (or re-assert) the login `analyst_NAME` in the analysts' group role.
    Add {
        /// Lower-case letters, digits and `_`, starting with a letter.
        name: String,
        /// Print the password (it is in the file either way).
        #[arg(long)]
        show_password: bool,
        #[command(flatten)]
        kube: KubeOptions,
        #[command(flatten)]
        pg: crate::up::LocalPg,
    },
    /// Remove the login `analyst_NAME`: no new session, open ones ended, role dropped
    /// (and, locally, its password file deleted).
    Remove {
        name: String,
        #[command(flatten)]
        kube: KubeOptions,
        #[command(flatten)]
        pg: crate::up::LocalPg,
    },
}

/// Inside a cluster instead of on the local database.
#[derive(Debug, clap::Args)]
pub struct KubeOptions {
    /// Print the Job that does it in the cluster (beacon-data), made from the overlay's
    /// db-bootstrap Job; for `add`, the Secret `analyst-<name>` (key `password`) must
    /// exist there first. Deliver it, or pipe it to `kubectl apply -f -`.
    #[arg(long)]
    pub kube: bool,
    /// The overlay whose db-bootstrap Job it is made from.
    #[arg(long, default_value = "dev", requires = "kube")]
    pub overlay: String,
    /// The image instead of the overlay's (e.g. the one Tilt built: the live
    /// db-bootstrap Job's).
    #[arg(long, requires = "kube")]
    pub image: Option<String>,
    /// Apply it with `kubectl apply -f -` (the current context) instead of printing it.
    #[arg(long, requires = "kube")]
    pub apply: bool,
}

/// The login role of the analyst `name`.
pub fn login_name(name: &str) -> String {
    db::analyst_login(name)
}

/// The analysts' group role: the `analyst` persona's database role in the model.
pub fn group_role(model: &AccessModel) -> anyhow::Result<String> {
    model
        .personas
        .get("analyst")
        .and_then(|p| p.db_role.clone())
        .context("the access model's analyst persona has no db_role")
}

/// Where the password of analyst `name` is kept.
pub fn password_file(name: &str) -> PathBuf {
    crate::up::dev_dir()
        .join("analysts")
        .join(format!("{name}.password"))
}

/// The password in `path`, or a new one written there, private from its first byte and
/// never overwritten ([`crate::private_file::create`]); two runs at once share one.
pub fn password_in(path: &Path) -> anyhow::Result<SecretString> {
    crate::private_file::create(path, crate::up::random_secret().as_bytes())?;
    platform::config::read_secret_file("password file", &path.to_string_lossy())
        .with_context(|| format!("reading {}", path.display()))
}

pub async fn run(action: Action) -> anyhow::Result<()> {
    match action {
        Action::Add {
            name,
            show_password,
            kube,
            pg,
        } => {
            // A bad name fails before anything is started or written.
            db::check_login_name(&name)?;
            if kube.kube {
                return in_cluster(&kube, kube::Op::Add, &name);
            }
            let pg = crate::up::Postgres::find_or_start_on(pg).await?;
            let result = add(&pg, &name, show_password).await;
            pg.stop();
            result
        }
        Action::Remove { name, kube, pg } => {
            db::check_login_name(&name)?;
            if kube.kube {
                return in_cluster(&kube, kube::Op::Remove, &name);
            }
            let pg = crate::up::Postgres::find_or_start_on(pg).await?;
            let result = remove(&pg, &name).await;
            pg.stop();
            result
        }
    }
}

/// The Job for `op`, printed on stdout, or applied.
fn in_cluster(options: &KubeOptions, op: kube::Op, name: &str) -> anyhow::Result<()> {
    let docs = kube::render_overlay(&options.overlay)?;
    let job = kube::job(&docs, op, name, options.image.as_deref())?;
    let text = serde_json::to_string_pretty(&job)?;
    if !options.apply {
        println!("{text}");
        return Ok(());
    }
    let mut child = std::process::Command::new("kubectl")
        .args(["apply", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .context("running kubectl apply")?;
    child
        .stdin
        .take()
        .context("kubectl's stdin")?
        .write_all(text.as_bytes())?;
    let status = child.wait()?;
    anyhow::ensure!(status.success(), "kubectl apply failed ({status})");
    eprintln!(
        "next: kubectl -n beacon-data wait --for=condition=complete job/{} --timeout=5m",
        kube::job_name(op, name)
    );
    Ok(())
}

async fn remove(pg: &crate::up::Postgres, name: &str) -> anyhow::Result<()> {
    let group = group_role(&AccessModel::load())?;
    let login = login_name(name);
    let admin = crate::up::migrate(pg, "beacon").await?;
    let removed = db::remove_member(&admin, &group, &login).await;
    admin.close().await;
    let file = password_file(name);
    if removed? {
        println!("· {login} removed: no session left, it cannot log in");
    } else {
        println!("· {login} does not exist: nothing to remove");
    }
    match std::fs::remove_file(&file) {
        Ok(()) => println!("  deleted {}", file.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("deleting {}", file.display())),
    }
    Ok(())
}

async fn add(pg: &crate::up::Postgres, name: &str, show_password: bool) -> anyhow::Result<()> {
    let group = group_role(&AccessModel::load())?;
    let login = login_name(name);
    let admin = crate::up::migrate(pg, "beacon").await?;
    let file = password_file(name);
    let password = password_in(&file)?;
    db::add_member(&admin, &group, &login, password.expose_secret()).await?;
    admin.close().await;
    println!(
        "· {login} can log in to `beacon` on {}:{} as a member of {group}; its password is in {}",
        pg.admin.get_host(),
        pg.admin.get_port(),
        file.display()
    );
    if show_password {
        println!("  password: {}", password.expose_secret());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_file_is_created_once_owner_only_and_never_overwritten() {
        let dir = std::env::temp_dir().join(format!("xtask-analyst-{}", uuid::Uuid::new_v4()));
        let path = dir.join("analysts").join("alice.password");
        let first = password_in(&path).unwrap();
        assert_eq!(first.expose_secret().len(), 32);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        }
        let again = password_in(&path).unwrap();
        assert_eq!(again.expose_secret(), first.expose_secret());
        // No temporary file is left behind.
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
        // A file someone put there is used, not replaced.
        let bob = dir.join("analysts").join("bob.password");
        std::fs::write(&bob, "chosen-by-bob\n").unwrap();
        assert_eq!(password_in(&bob).unwrap().expose_secret(), "chosen-by-bob");
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(db::check_login_name("Bad-Name").is_err());
        assert_eq!(login_name("alice"), "analyst_alice");
    }
}
