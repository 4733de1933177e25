//! Mutual TLS between services, from PEM files, with certificate reload.
//!
//! Identity is the SPIFFE-style URI SAN of the peer's certificate
//! (`spiffe://beacon.local/ns/<namespace>/sa/<service-account>`): it names the workload
//! (namespace + service account), not a host name, so it survives renames of Services
//! and matches what cert-manager's CSI driver or SPIRE issue in production.
//!
//! Files are re-read when their modification time changes, checked at most once a
//! second on each new connection: a rotated certificate is used by the next handshake,
//! with no restart and no dropped connection.

use std::{
    io,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context;
use rustls::{
    ClientConfig, RootCertStore, ServerConfig, crypto::CryptoProvider, server::WebPkiClientVerifier,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector, server::TlsStream};

/// The trust domain of every Beacon workload identity.
pub const TRUST_DOMAIN: &str = "beacon.local";

/// The identity URI for a workload.
pub fn spiffe_id(namespace: &str, service_account: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/ns/{namespace}/sa/{service_account}")
}

/// Where a workload's certificate, key and the CA bundle it trusts live.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl TlsFiles {
    /// `{prefix}_CERT_FILE`, `{prefix}_KEY_FILE`, `{prefix}_CA_FILE`.
    pub fn from_env(prefix: &str) -> crate::config::Result<Self> {
        Ok(Self {
            cert: crate::config::path(&format!("{prefix}_CERT_FILE"))?,
            key: crate::config::path(&format!("{prefix}_KEY_FILE"))?,
            ca: crate::config::path(&format!("{prefix}_CA_FILE"))?,
        })
    }

    fn mtimes(&self) -> [Option<SystemTime>; 3] {
        [&self.cert, &self.key, &self.ca]
            .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub fn load_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read certificates from {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("bad PEM in {}", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "no certificate in {}", path.display());
    Ok(certs)
}

pub fn load_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path)
        .with_context(|| format!("cannot read private key from {}", path.display()))
}

fn roots(path: &Path) -> anyhow::Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).context("bad CA certificate")?;
    }
    Ok(Arc::new(roots))
}

/// TLS 1.3 server config that requires a client certificate issued by the CA.
pub fn server_config(files: &TlsFiles) -> anyhow::Result<Arc<ServerConfig>> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(&files.ca)?, provider())
        .build()
        .context("cannot build client verifier")?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(&files.cert)?, load_key(&files.key)?)
        .context("certificate and key do not match")?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// TLS 1.3 client config presenting our certificate and trusting only the CA; the
/// server is checked by DNS name only. A service calling a workload uses
/// [`client_config_for`], which also checks the server's SPIFFE id.
pub fn client_config(files: &TlsFiles) -> anyhow::Result<Arc<ClientConfig>> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(&files.ca)?)
        .with_client_auth_cert(load_certs(&files.cert)?, load_key(&files.key)?)
        .context("certificate and key do not match")?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Like [`client_config`], and the server must also prove it is the workload
/// `server_id`: its certificate's one SPIFFE id (see [`spiffe_identity`]) must equal it.
/// A certificate from the right CA for the right DNS name but another workload's
/// identity fails the handshake, before any request is sent.
pub fn client_config_for(
    server_id: &str,
) -> impl Fn(&TlsFiles) -> anyhow::Result<Arc<ClientConfig>> + Send + Sync + 'static {
    let server_id = server_id.to_owned();
    move |files| {
        let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
            roots(&files.ca)?,
            provider(),
        )
        .build()
        .context("cannot build server verifier")?;
        let verifier = Arc::new(ServerIdentity {
            webpki,
            expected: server_id.clone(),
        });
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(load_certs(&files.cert)?, load_key(&files.key)?)
            .context("certificate and key do not match")?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}

/// The WebPKI checks (chain to the CA, validity, DNS name), then the SPIFFE id.
#[derive(Debug)]
struct ServerIdentity {
    webpki: Arc<rustls::client::WebPkiServerVerifier>,
    expected: String,
}

impl rustls::client::danger::ServerCertVerifier for ServerIdentity {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let verified = self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        match spiffe_identity(end_entity.as_ref()) {
            Ok(id) if id == self.expected => Ok(verified),
            presented => {
                tracing::warn!(expected = %self.expected, ?presented, "server is not the expected workload");
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::ApplicationVerificationFailure,
                ))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// How a [`Reloading`] config is built from its files.
type Build<T> = Box<dyn Fn(&TlsFiles) -> anyhow::Result<Arc<T>> + Send + Sync>;

/// A TLS config rebuilt from its files when they change. A broken rotation (say the
/// key written before the certificate) keeps the last good config and logs a warning.
pub struct Reloading<T> {
    files: TlsFiles,
    build: Build<T>,
    state: Mutex<ReloadState<T>>,
}

struct ReloadState<T> {
    mtimes: [Option<SystemTime>; 3],
    checked: Instant,
    config: Arc<T>,
}

impl<T> std::fmt::Debug for Reloading<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloading")
            .field("files", &self.files)
            .finish()
    }
}

impl<T> Reloading<T> {
    pub fn new(
        files: TlsFiles,
        build: impl Fn(&TlsFiles) -> anyhow::Result<Arc<T>> + Send + Sync + 'static,
    ) -> anyhow::Result<Arc<Self>> {
        let mtimes = files.mtimes();
        let config = build(&files)?;
        Ok(Arc::new(Self {
            files,
            build: Box::new(build),
            state: Mutex::new(ReloadState {
                mtimes,
                checked: Instant::now(),
                config,
            }),
        }))
    }

    pub fn current(&self) -> Arc<T> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if state.checked.elapsed() >= Duration::from_secs(1) {
            state.checked = Instant::now();
            let mtimes = self.files.mtimes();
            if mtimes != state.mtimes {
                match (self.build)(&self.files) {
                    Ok(config) => {
                        tracing::info!(cert = %self.files.cert.display(), "TLS certificates reloaded");
                        state.config = config;
                        state.mtimes = mtimes;
                    }
                    Err(e) => tracing::warn!(
                        error = format!("{e:#}"),
                        "TLS reload failed, keeping the previous certificates"
                    ),
                }
            }
        }
        state.config.clone()
    }
}

pub type ReloadingServer = Reloading<ServerConfig>;
pub type ReloadingClient = Reloading<ClientConfig>;

/// Accepts TCP connections and completes TLS handshakes off the accept loop (a slow
/// handshake cannot stall others), yielding streams tonic's `serve_with_incoming` takes;
/// tonic then exposes the peer certificates through `Request::peer_certs`.
pub fn incoming(
    listener: TcpListener,
    tls: Arc<ReloadingServer>,
    handshake_timeout: Duration,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if tx.is_closed() {
                break;
            }
            // Small gRPC responses must not wait for a delayed ACK (Nagle).
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(%peer, error = %e, "TCP_NODELAY not set");
            }
            let acceptor = TlsAcceptor::from(tls.current());
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => tracing::info!(%peer, error = %e, "TLS handshake refused"),
                    Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Connects to `addr` with mTLS, verifying the server as `server_name`.
pub async fn connect(
    tls: &ReloadingClient,
    addr: &str,
    server_name: &str,
) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let name = ServerName::try_from(server_name.to_owned())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    TlsConnector::from(tls.current()).connect(name, tcp).await
}

/// The workload identity a DER certificate carries: its one URI SAN, which must be a
/// SPIFFE id. A certificate with no URI SAN, with two (it would name two workloads, and
/// whoever checks "is any of them allowed?" could be fooled), or with a URI that is not
/// `spiffe://` names nobody (as the X.509-SVID specification requires).
pub fn spiffe_identity(cert: &[u8]) -> Result<String, String> {
    use x509_parser::prelude::*;
    let (_, cert) =
        X509Certificate::from_der(cert).map_err(|e| format!("unreadable certificate: {e}"))?;
    let uris: Vec<&str> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::URI(uri) => Some(*uri),
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(e) => return Err(format!("unreadable subject alternative names: {e}")),
    };
    match uris.as_slice() {
        [uri] if uri.starts_with("spiffe://") => Ok((*uri).to_owned()),
        [uri] => Err(format!("its URI SAN {uri:?} is not a SPIFFE id")),
        [] => Err("no SPIFFE id (URI SAN)".to_owned()),
        more => Err(format!(
            "{} URI SANs ({more:?}); a workload certificate carries exactly one",
            more.len()
        )),
    }
}

/// A gRPC server-side authorizer: the caller's leaf certificate must carry exactly one
/// SPIFFE id (see [`spiffe_identity`]), and that id must be allowed. (The chain itself
/// was already verified in the handshake.) Used as a layer on the whole server, so
/// health and reflection are behind it too.
///
/// The identity is a function of the certificate's bytes alone, so the identities of
/// the last [`RECENT_CALLERS`] distinct leaf certificates are remembered by their exact
/// DER bytes: every call on a connection used to parse its X.509 certificate again.
#[derive(Debug, Clone)]
pub struct AllowedCallers {
    ids: Arc<Vec<String>>,
    recent: Arc<Mutex<std::collections::VecDeque<Remembered>>>,
}

/// A leaf certificate's DER bytes and its [`spiffe_identity`].
type Remembered = (Vec<u8>, Result<String, String>);

/// How many leaf certificates' identities an [`AllowedCallers`] remembers (the oldest
/// goes first): a few callers' replicas, a bounded few KiB.
pub const RECENT_CALLERS: usize = 16;

impl AllowedCallers {
    pub fn new(ids: Vec<String>) -> Self {
        Self {
            ids: Arc::new(ids),
            recent: Arc::default(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// [`spiffe_identity`] of `leaf`, remembered.
    fn identity(&self, leaf: &[u8]) -> Result<String, String> {
        let lock = || self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, id)) = lock().iter().find(|(der, _)| der.as_slice() == leaf) {
            return id.clone();
        }
        let id = spiffe_identity(leaf);
        let mut recent = lock();
        if recent.len() >= RECENT_CALLERS {
            recent.pop_front();
        }
        recent.push_back((leaf.to_vec(), id.clone()));
        id
    }

    pub fn authorize<T>(&self, request: &tonic::Request<T>) -> Result<String, tonic::Status> {
        let certs = request
            .peer_certs()
            .ok_or_else(|| tonic::Status::unauthenticated("client certificate required"))?;
        let leaf = certs
            .first()
            .ok_or_else(|| tonic::Status::unauthenticated("client certificate required"))?;
        match self.identity(leaf.as_ref()) {
            Ok(id) if self.ids.contains(&id) => Ok(id),
            Ok(id) => {
                tracing::warn!(caller = %id, "caller identity not allowed");
                Err(tonic::Status::permission_denied("caller not allowed"))
            }
            Err(reason) => {
                tracing::warn!(%reason, "caller certificate names no single workload");
                Err(tonic::Status::permission_denied("caller not allowed"))
            }
        }
    }
}

impl tonic::service::Interceptor for AllowedCallers {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        self.authorize(&request)?;
        Ok(request)
    }
}

/// A lazily connecting gRPC channel to `addr` (host:port) over mutual TLS, verifying
/// the server as `server_name`. Certificates are re-read when they change.
pub fn grpc_channel(
    addr: &str,
    server_name: &str,
    tls: Arc<ReloadingClient>,
    request_timeout: Duration,
) -> anyhow::Result<tonic::transport::Channel> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(request_timeout);
    let (addr, server_name) = (addr.to_owned(), server_name.to_owned());
    Ok(
        endpoint.connect_with_connector_lazy(tower::service_fn(move |_uri: http::Uri| {
            let (tls, addr, server_name) = (tls.clone(), addr.clone(), server_name.clone());
            async move {
                let stream = connect(&tls, &addr, &server_name).await?;
                Ok::<_, io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        })),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(uri: &str) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = vec![rcgen::SanType::URI(uri.try_into().unwrap())];
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn remembered_identities_belong_to_the_exact_certificate_and_stay_bounded() {
        let api = spiffe_id("beacon-api", "api");
        let callers = AllowedCallers::new(vec![api.clone()]);
        let (allowed, other) = (leaf(&api), leaf(&spiffe_id("beacon-api", "other")));
        let mut two = rcgen::CertificateParams::default();
        two.subject_alt_names = vec![
            rcgen::SanType::URI(api.as_str().try_into().unwrap()),
            rcgen::SanType::URI("spiffe://beacon.local/ns/x/sa/y".try_into().unwrap()),
        ];
        let two = two
            .self_signed(&rcgen::KeyPair::generate().unwrap())
            .unwrap()
            .der()
            .to_vec();
        // Asked again and again, in turns: each certificate keeps its own answer.
        for _ in 0..3 {
            assert_eq!(callers.identity(&allowed), Ok(api.clone()));
            assert_eq!(
                callers.identity(&other),
                Ok(spiffe_id("beacon-api", "other"))
            );
            assert!(callers.identity(&two).is_err());
        }
        // Many distinct callers: the memory holds the last RECENT_CALLERS, no more.
        for i in 0..2 * RECENT_CALLERS {
            let id = spiffe_id("many", &i.to_string());
            assert_eq!(callers.identity(&leaf(&id)), Ok(id));
        }
        assert_eq!(callers.recent.lock().unwrap().len(), RECENT_CALLERS);
        assert_eq!(callers.identity(&allowed), Ok(api));
    }
}
