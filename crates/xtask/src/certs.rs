//! Development credentials: an internal CA with one mTLS certificate per workload
//! (SPIFFE URI SAN + DNS names), and the API's Ed25519 token-signing key pair.
//! Production issues these with cert-manager and a secret manager instead.

use std::path::Path;

use anyhow::Context;
use platform::access::AccessModel;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ED25519, SanType,
};
use time::{Duration, OffsetDateTime};

const DEV_CA: &str = "Beacon development CA";

/// A valid workload of the same CA that speaks no mTLS in production: its certificate
/// lets tests prove that a gRPC server refuses identities the model does not allow.
pub const REFUSED_IDENTITY: &str = "dashboard";

/// Certificates are generated for these components: those of the model that speak mTLS
/// (gRPC servers and their allowed callers), and [`REFUSED_IDENTITY`].
pub fn tls_components(model: &AccessModel) -> Vec<&str> {
    let mut out = model.mtls_components();
    if !out.contains(&REFUSED_IDENTITY) {
        out.push(REFUSED_IDENTITY);
    }
    out
}

fn write(dir: &Path, name: &str, contents: &str) -> anyhow::Result<()> {
    let path = dir.join(name);
    if name.ends_with(".key") || name.ends_with("-key.pem") {
        return crate::private_file::replace(&path, contents.as_bytes());
    }
    std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))
}

/// A CA. Its key signs the workload certificates.
pub struct Ca {
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

impl Ca {
    fn params(name: &str) -> CertificateParams {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Beacon development");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = OffsetDateTime::now_utc() - Duration::hours(1);
        params.not_after = OffsetDateTime::now_utc() + Duration::days(365);
        params
    }

    pub fn new(name: &str) -> anyhow::Result<Self> {
        let params = Self::params(name);
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The development CA written by [`generate`], to issue more certificates.
    pub fn from_files(cert: &Path, key: &Path) -> anyhow::Result<Self> {
        let key = KeyPair::from_pem(&std::fs::read_to_string(key)?)?;
        Ok(Self {
            cert_pem: std::fs::read_to_string(cert)?,
            issuer: Issuer::new(Self::params(DEV_CA), key),
        })
    }

    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// A workload certificate for `spiffe_id`, valid for `dns` names and 127.0.0.1,
    /// from `not_before` to `not_after`. Returns (cert PEM, key PEM).
    pub fn issue(
        &self,
        spiffe_id: &str,
        dns: &[String],
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> anyhow::Result<(String, String)> {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(
            DnType::CommonName,
            dns.first().map(String::as_str).unwrap_or("workload"),
        );
        params.subject_alt_names = vec![SanType::URI(spiffe_id.try_into()?)];
        for name in dns {
            params
                .subject_alt_names
                .push(SanType::DnsName(name.as_str().try_into()?));
        }
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = not_before;
        params.not_after = not_after;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// The DNS names of a component's Service.
pub fn dns_names(model: &AccessModel, component: &str) -> Vec<String> {
    let ns = &model.components[component].namespace;
    vec![
        component.to_owned(),
        format!("{component}.{ns}.svc"),
        format!("{component}.{ns}.svc.cluster.local"),
        "localhost".to_owned(),
    ]
}

/// The TLS servers that are no mTLS workload: PostgreSQL (clients verify its certificate
/// with `sslmode=verify-full`; it authenticates them by password).
pub const TLS_SERVERS: [&str; 1] = ["postgres"];

/// Writes `<server>.crt`/`.key` for each of [`TLS_SERVERS`] that `dir` lacks, issued by
/// the CA in `dir` (`ca.crt`, `ca.key`). Returns whether it wrote any.
pub fn server_certificates(dir: &Path) -> anyhow::Result<bool> {
    let missing: Vec<&str> = TLS_SERVERS
        .into_iter()
        .filter(|s| !dir.join(format!("{s}.crt")).exists())
        .collect();
    if missing.is_empty() {
        return Ok(false);
    }
    let model = AccessModel::load();
    let ca = Ca::from_files(&dir.join("ca.crt"), &dir.join("ca.key"))?;
    for server in missing {
        issue_into(dir, &ca, &model, server)?;
    }
    Ok(true)
}

/// `<component>.crt`/`.key` in `dir`: its identity and Service names, for 90 days.
fn issue_into(dir: &Path, ca: &Ca, model: &AccessModel, component: &str) -> anyhow::Result<()> {
    let id = model
        .spiffe_id(component)
        .with_context(|| format!("{component} missing from the access model"))?;
    let now = OffsetDateTime::now_utc();
    let (cert, key) = ca.issue(
        &id,
        &dns_names(model, component),
        now - Duration::hours(1),
        now + Duration::days(90),
    )?;
    write(dir, &format!("{component}.crt"), &cert)?;
    write(dir, &format!("{component}.key"), &key)
}

/// Writes `ca.crt` (and its key `ca.key`), `<component>.crt`/`.key` for each TLS component
/// and each of [`TLS_SERVERS`], and `jwt-signing.key` / `jwt-public.pem` into `dir`.
pub fn generate(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let model = AccessModel::load();
    let ca = Ca::new(DEV_CA)?;
    write(dir, "ca.crt", &ca.cert_pem)?;
    // The CA key stays on the developer's machine; nothing deploys it.
    write(dir, "ca.key", &ca.key_pem())?;
    for component in tls_components(&model).into_iter().chain(TLS_SERVERS) {
        issue_into(dir, &ca, &model, component)?;
    }
    let jwt = KeyPair::generate_for(&PKCS_ED25519)?;
    write(dir, "jwt-signing.key", &jwt.serialize_pem())?;
    write(dir, "jwt-public.pem", &jwt.public_key_pem())?;
    Ok(())
}
