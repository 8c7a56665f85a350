//! Mutual TLS as the ALB offers it: `verify` (client certificates checked
//! against a trust store, the handshake refused otherwise) and
//! `passthrough` (any client certificate taken as sent), and the
//! `X-Amzn-Mtls-Clientcert-*` headers that tell targets about it.

use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

use super::certificate::{pem, url_encode, CertInfo};
use super::SignatureCheck;

/// `mutual_authentication.mode`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MutualAuth {
    Off,
    /// The CA certificates client certificates must chain to.
    Verify {
        trust_store: Vec<CertificateDer<'static>>,
    },
    Passthrough,
}

/// Names of the headers, lowercase as HTTP/2 needs them.
pub const CLIENTCERT: &str = "x-amzn-mtls-clientcert";
pub const SERIAL: &str = "x-amzn-mtls-clientcert-serial-number";
pub const ISSUER: &str = "x-amzn-mtls-clientcert-issuer";
pub const SUBJECT: &str = "x-amzn-mtls-clientcert-subject";
pub const VALIDITY: &str = "x-amzn-mtls-clientcert-validity";
pub const LEAF: &str = "x-amzn-mtls-clientcert-leaf";

/// Whether a request header is one of ours: a client's own is dropped on
/// listeners with mutual TLS, so a target can trust what it gets.
pub fn is_mtls_header(name: &HeaderName) -> bool {
    name.as_str().starts_with(CLIENTCERT)
}

/// The verifier for `mode`; `None` when off.
pub fn verifier(
    mode: &MutualAuth,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Option<Arc<dyn ClientCertVerifier>>, rustls::server::VerifierBuilderError> {
    Ok(match mode {
        MutualAuth::Off => None,
        MutualAuth::Verify { trust_store } => {
            let mut roots = RootCertStore::empty();
            let (_, _) = roots.add_parsable_certificates(trust_store.iter().cloned());
            Some(WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build()?)
        }
        MutualAuth::Passthrough => Some(Arc::new(Passthrough(SignatureCheck(provider)))),
    })
}

/// Passthrough: a client certificate is asked for, not required, and
/// taken as it comes; only the handshake's signature must be genuine.
#[derive(Debug)]
struct Passthrough(SignatureCheck);

impl ClientCertVerifier for Passthrough {
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

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

/// The headers a connection's requests carry to targets, made once per
/// connection from the certificates its client presented.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientCertHeaders(pub Vec<(HeaderName, HeaderValue)>);

impl ClientCertHeaders {
    /// For a client that presented `chain` (leaf first) on a listener in
    /// `mode`; empty when it presented none.
    pub fn new(mode: &MutualAuth, chain: &[CertificateDer<'_>]) -> Self {
        let Some(leaf) = chain.first() else {
            return Self::default();
        };
        let mut h = Vec::new();
        let mut add = |name: &'static str, value: String| {
            if let Ok(v) = HeaderValue::from_bytes(value.as_bytes()) {
                h.push((HeaderName::from_static(name), v));
            }
        };
        match mode {
            MutualAuth::Off => {}
            MutualAuth::Passthrough => {
                let all: String = chain.iter().map(|c| pem(c)).collect();
                add(CLIENTCERT, url_encode(&all));
            }
            MutualAuth::Verify { .. } => {
                if let Ok(info) = CertInfo::of(leaf) {
                    add(SERIAL, info.serial.clone());
                    add(ISSUER, info.issuer.clone());
                    add(SUBJECT, info.subject.clone());
                    add(VALIDITY, info.validity());
                }
                add(LEAF, url_encode(&pem(leaf)));
            }
        }
        Self(h)
    }
}
