//! TLS for HTTPS listeners, on rustls with the aws-lc-rs provider (it has
//! the hybrid post-quantum key exchange the `-PQ-` policies name):
//!
//! - [`policy`]: `ssl_policy` names → versions, cipher suites, groups;
//! - [`certificate`]: what a certificate says (names, validity, subject);
//! - [`sni`]: which certificate a handshake gets;
//! - [`client_cert`]: mutual TLS and its headers to targets;
//! - [`server`]: one listener's server configuration and resumption.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, SignatureScheme};

pub mod certificate;
pub mod client_cert;
pub mod policy;
pub mod server;
pub mod sni;

pub use certificate::CertInfo;
pub use client_cert::MutualAuth;

/// The crypto provider every TLS session of the process uses.
pub fn provider() -> CryptoProvider {
    rustls::crypto::aws_lc_rs::default_provider()
}

/// The handshake-signature half of a certificate verifier, for the ones
/// that take any certificate (targets' certificates, as the ALB; client
/// certificates in passthrough mode): the peer must still prove it holds
/// the key of the certificate it sent.
#[derive(Debug)]
pub struct SignatureCheck(pub Arc<CryptoProvider>);

impl SignatureCheck {
    pub fn tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algs)
    }

    pub fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
    }

    pub fn schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A listener certificate, loaded and checked.
#[derive(Clone, Debug)]
pub struct ServedCert {
    pub key: Arc<CertifiedKey>,
    pub info: CertInfo,
}

/// The same certificates (the key is the certificate's own: checked).
impl PartialEq for ServedCert {
    fn eq(&self, other: &Self) -> bool {
        self.key.cert == other.key.cert
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    /// A self-signed certificate for `names`, with a key of `alg`.
    pub(crate) fn served(names: &[&str], alg: &'static rcgen::SignatureAlgorithm) -> ServedCert {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.self_signed(&key).unwrap();
        let der = PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        let signing = provider().key_provider.load_private_key(der).unwrap();
        let chain = vec![CertificateDer::from(cert.der().to_vec())];
        ServedCert {
            key: Arc::new(CertifiedKey::new(chain, signing)),
            info: CertInfo::of(cert.der()).unwrap(),
        }
    }
}
