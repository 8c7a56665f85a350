//! TLS towards targets (HTTPS target groups and their health checks). As the
//! ALB does, the balancer does not validate target certificates: targets
//! commonly use self-signed ones, and the path to them is the balancer's own
//! network.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::tls::SignatureCheck;

#[derive(Debug)]
struct AcceptAnyCertificate(SignatureCheck);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    // Signatures are still checked: the handshake must be a real one.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.schemes()
    }
}

fn client_config(alpn: &[&[u8]]) -> TlsConnector {
    let provider = Arc::new(crate::tls::provider());
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("the provider supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(SignatureCheck(provider))))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

fn connector() -> &'static TlsConnector {
    static CONNECTOR: OnceLock<TlsConnector> = OnceLock::new();
    CONNECTOR.get_or_init(|| client_config(&[]))
}

fn connector_h2() -> &'static TlsConnector {
    static CONNECTOR: OnceLock<TlsConnector> = OnceLock::new();
    CONNECTOR.get_or_init(|| client_config(&[b"h2"]))
}

/// A TLS session to a target over `stream`, named by its address.
pub async fn connect(stream: TcpStream, addr: SocketAddr) -> std::io::Result<TlsStream<TcpStream>> {
    let name = ServerName::IpAddress(addr.ip().into());
    connector().connect(name, stream).await
}

/// [`connect`], offering HTTP/2 by ALPN.
pub async fn connect_h2(
    stream: TcpStream,
    addr: SocketAddr,
) -> std::io::Result<TlsStream<TcpStream>> {
    let name = ServerName::IpAddress(addr.ip().into());
    connector_h2().connect(name, stream).await
}
