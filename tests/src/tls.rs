//! TLS for the HTTPS tests: a small PKI (a CA that issues server and client
//! certificates, written as PEM files for the configuration) and a rustls
//! client whose version, groups, SNI, ALPN, client certificate and session
//! cache each test chooses, recording the certificate it was shown.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{aws_lc_rs, SupportedKxGroup};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, HandshakeKind, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::http::Reply;

/// A certificate authority in a directory of its own, removed on drop.
pub struct Pki {
    pub dir: PathBuf,
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
}

/// A client certificate and its key.
pub struct ClientCert {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Pki {
    pub fn new(tag: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("xalb-pki-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let ca_key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("xalb test CA {tag}"));
        let ca = params.self_signed(&ca_key)?;
        std::fs::write(dir.join("ca.pem"), ca.pem())?;
        Ok(Self { dir, ca, ca_key })
    }

    /// The CA certificate's PEM file.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.ca.der().clone()
    }

    /// A server certificate for `names`, with a key of `alg`, written as
    /// `<file>.pem` (leaf, then the CA) and `<file>-key.pem`. Returns the
    /// leaf.
    pub fn server(
        &self,
        file: &str,
        names: &[&str],
        alg: &'static rcgen::SignatureAlgorithm,
    ) -> Result<CertificateDer<'static>> {
        let key = rcgen::KeyPair::generate_for(alg)?;
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0]);
        let leaf = params.signed_by(&key, &self.ca, &self.ca_key)?;
        std::fs::write(
            self.dir.join(format!("{file}.pem")),
            format!("{}{}", leaf.pem(), self.ca.pem()),
        )?;
        std::fs::write(
            self.dir.join(format!("{file}-key.pem")),
            key.serialize_pem(),
        )?;
        Ok(leaf.der().clone())
    }

    /// A client certificate with common name `cn`, signed by this CA.
    pub fn client(&self, cn: &str) -> Result<ClientCert> {
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Test Clients");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x01, 0xA2, 0xB3]));
        let cert = params.signed_by(&key, &self.ca, &self.ca_key)?;
        Ok(ClientCert {
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        })
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The configuration line for certificate files `files` in `dir`.
pub fn certificates(dir: &Path, files: &[&str]) -> String {
    let items: Vec<String> = files
        .iter()
        .map(|f| {
            format!(
                "{{ cert = {:?}, key = {:?} }}",
                dir.join(format!("{f}.pem")).display().to_string(),
                dir.join(format!("{f}-key.pem")).display().to_string()
            )
        })
        .collect();
    format!("[{}]", items.join(", "))
}

/// Accepts any server certificate (signatures still checked, by xalb's own
/// check) and keeps the last one shown, so a test can see which certificate
/// the server chose.
#[derive(Debug)]
struct Recording {
    signatures: xalb::tls::SignatureCheck,
    seen: Arc<Mutex<Option<CertificateDer<'static>>>>,
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.seen.lock().unwrap() = Some(end_entity.clone().into_owned());
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.tls12(m, c, d)
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.tls13(m, c, d)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.signatures.schemes()
    }
}

/// How a test's client speaks TLS.
#[derive(Clone)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
    seen: Arc<Mutex<Option<CertificateDer<'static>>>>,
}

/// The choices a [`TlsClient`] is made from.
pub struct Opts {
    pub alpn: Vec<&'static str>,
    pub versions: Vec<&'static rustls::SupportedProtocolVersion>,
    /// `None`: the provider's defaults.
    pub kx_groups: Option<Vec<&'static dyn SupportedKxGroup>>,
    pub client_cert: Option<ClientCert>,
    pub sni: bool,
    /// Resume sessions (tickets, TLS 1.2 ids) on later connections.
    pub resume: bool,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            alpn: vec!["http/1.1"],
            versions: vec![&rustls::version::TLS13, &rustls::version::TLS12],
            kx_groups: None,
            client_cert: None,
            sni: true,
            resume: true,
        }
    }
}

impl TlsClient {
    pub fn new(opts: Opts) -> Self {
        let mut provider = aws_lc_rs::default_provider();
        if let Some(kx) = opts.kx_groups {
            provider.kx_groups = kx;
        }
        let provider = Arc::new(provider);
        let seen = Arc::new(Mutex::new(None));
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&opts.versions)
            .expect("versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Recording {
                signatures: xalb::tls::SignatureCheck(provider),
                seen: Arc::clone(&seen),
            }));
        let mut config = match opts.client_cert {
            Some(c) => builder
                .with_client_auth_cert(c.chain, c.key)
                .expect("a usable client certificate"),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = opts.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        config.enable_sni = opts.sni;
        if !opts.resume {
            config.resumption = rustls::client::Resumption::disabled();
        }
        Self {
            config: Arc::new(config),
            seen,
        }
    }

    /// A handshake with `addr`, naming `sni`.
    pub async fn connect(&self, addr: SocketAddr, sni: &str) -> Result<TlsStream<TcpStream>> {
        let name = ServerName::try_from(sni.to_string())?;
        let tcp = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
            .await
            .context("connect timeout")??;
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(&self.config));
        Ok(
            tokio::time::timeout(Duration::from_secs(60), connector.connect(name, tcp))
                .await
                .context("handshake timeout")??,
        )
    }

    /// The certificate the last handshake was shown.
    pub fn seen(&self) -> Option<CertificateDer<'static>> {
        self.seen.lock().unwrap().clone()
    }
}

/// What a finished handshake agreed.
pub fn alpn(s: &TlsStream<TcpStream>) -> Option<String> {
    s.get_ref()
        .1
        .alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned())
}

pub fn resumed(s: &TlsStream<TcpStream>) -> bool {
    s.get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed)
}

pub fn version(s: &TlsStream<TcpStream>) -> Option<rustls::ProtocolVersion> {
    s.get_ref().1.protocol_version()
}

/// GET `path` with Host `host` over an established TLS connection, in
/// HTTP/2 when ALPN agreed on it.
pub async fn get(s: TlsStream<TcpStream>, host: &str, path: &str) -> Result<Reply> {
    let h2 = alpn(&s).as_deref() == Some("h2");
    let io = TokioIo::new(s);
    let fut = async {
        let resp = if h2 {
            let (mut send, conn) =
                hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                    .await?;
            tokio::spawn(conn);
            let req =
                Request::get(format!("https://{host}{path}")).body(Full::new(Bytes::new()))?;
            send.send_request(req).await?
        } else {
            let (mut send, conn) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(conn);
            let req = Request::get(path)
                .header("host", host)
                .body(Full::new(Bytes::new()))?;
            send.send_request(req).await?
        };
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok::<_, anyhow::Error>(Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    };
    tokio::time::timeout(Duration::from_secs(60), fut)
        .await
        .context("response timeout")?
}
