//! Which certificate a handshake gets: by the client's SNI, exact names
//! first, then a wildcard one label deep (as browsers match `*.example.com`:
//! `a.example.com`, not `a.b.example.com` nor `example.com`); the listener's
//! first certificate when there is no SNI or nothing matches.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::SignatureAlgorithm;

use super::ServedCert;

#[derive(Debug)]
pub struct SniResolver {
    default: Arc<CertifiedKey>,
    /// By lowercase name (`*.example.com` for wildcards); several when
    /// certificates share a name, ECDSA before Ed25519 before RSA (the
    /// ALB's preference), in configuration order otherwise.
    by_name: HashMap<String, Vec<Arc<CertifiedKey>>>,
}

fn preference(c: &CertifiedKey) -> u8 {
    match c.key.algorithm() {
        SignatureAlgorithm::ECDSA => 0,
        SignatureAlgorithm::ED25519 => 1,
        _ => 2,
    }
}

impl SniResolver {
    /// `None` without a certificate.
    pub fn new(certs: &[ServedCert]) -> Option<Self> {
        let default = Arc::clone(&certs.first()?.key);
        let mut by_name: HashMap<String, Vec<Arc<CertifiedKey>>> = HashMap::new();
        for c in certs {
            for name in &c.info.names {
                let list = by_name.entry(name.clone()).or_default();
                if !list.iter().any(|k| Arc::ptr_eq(k, &c.key)) {
                    list.push(Arc::clone(&c.key));
                }
            }
        }
        for list in by_name.values_mut() {
            list.sort_by_key(|k| preference(k));
        }
        Some(Self { default, by_name })
    }

    /// The certificates serving `sni`, best first.
    fn candidates(&self, sni: &str) -> &[Arc<CertifiedKey>] {
        let sni = sni.trim_end_matches('.').to_ascii_lowercase();
        if let Some(list) = self.by_name.get(&sni) {
            return list;
        }
        match sni.split_once('.') {
            Some((label, parent)) if !label.is_empty() && !parent.is_empty() => self
                .by_name
                .get(&format!("*.{parent}"))
                .map(Vec::as_slice)
                .unwrap_or(&[]),
            _ => &[],
        }
    }

    /// The certificate for a client that sent `sni` and accepts
    /// `schemes`.
    pub fn choose(
        &self,
        sni: Option<&str>,
        schemes: &[rustls::SignatureScheme],
    ) -> Arc<CertifiedKey> {
        let candidates = sni.map(|s| self.candidates(s)).unwrap_or(&[]);
        match candidates {
            [] => Arc::clone(&self.default),
            [only] => Arc::clone(only),
            several => several
                .iter()
                .find(|c| c.key.choose_scheme(schemes).is_some())
                .unwrap_or(&several[0])
                .clone(),
        }
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.choose(hello.server_name(), hello.signature_schemes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::tests::served;
    use rustls::SignatureScheme as S;

    const ANY: &[S] = &[S::ECDSA_NISTP256_SHA256, S::RSA_PSS_SHA256, S::ED25519];

    #[test]
    fn exact_names_then_one_label_wildcards_then_the_default() {
        let default = served(&["default.test"], &rcgen::PKCS_ECDSA_P256_SHA256);
        let api = served(&["api.example.com"], &rcgen::PKCS_ECDSA_P256_SHA256);
        let wild = served(&["*.example.com"], &rcgen::PKCS_ECDSA_P256_SHA256);
        let r = SniResolver::new(&[default.clone(), api.clone(), wild.clone()]).unwrap();
        let is = |sni: Option<&str>, want: &ServedCert| {
            assert!(Arc::ptr_eq(&r.choose(sni, ANY), &want.key), "{sni:?}");
        };
        is(None, &default);
        is(Some("api.example.com"), &api);
        is(Some("API.Example.COM."), &api);
        is(Some("www.example.com"), &wild);
        // One label deep only, and never the bare parent.
        is(Some("a.b.example.com"), &default);
        is(Some("example.com"), &default);
        is(Some("default.test"), &default);
        is(Some("unknown.test"), &default);
    }

    #[test]
    fn ecdsa_is_preferred_where_the_client_accepts_it() {
        let rsa = served(&["shop.test"], &rcgen::PKCS_RSA_SHA256);
        let ed = served(&["shop.test"], &rcgen::PKCS_ED25519);
        let ec = served(&["shop.test"], &rcgen::PKCS_ECDSA_P384_SHA384);
        let r = SniResolver::new(&[rsa.clone(), ed.clone(), ec.clone()]).unwrap();
        let is = |schemes: &[S], want: &ServedCert| {
            assert!(
                Arc::ptr_eq(&r.choose(Some("shop.test"), schemes), &want.key),
                "{schemes:?}"
            );
        };
        is(
            &[S::ECDSA_NISTP384_SHA384, S::RSA_PSS_SHA256, S::ED25519],
            &ec,
        );
        is(&[S::RSA_PSS_SHA256, S::ED25519], &ed);
        is(&[S::RSA_PSS_SHA256, S::RSA_PKCS1_SHA256], &rsa);
        // Nothing the client accepts: the best anyway (its handshake fails).
        is(&[], &ec);
    }
}
