//! ELB security policies (`ssl_policy`) as rustls can serve them: protocol
//! versions, cipher suites and key-exchange groups per policy name.
//!
//! rustls speaks TLS 1.2 and 1.3 with forward-secret AEAD suites only, so
//! the policies that admit TLS 1.0/1.1 (`ELBSecurityPolicy-2016-08`, the
//! `TLS13-1-0`/`TLS13-1-1` families) and the FIPS ones (this build's
//! provider is not a FIPS module) are refused by name. For the others,
//! xalb serves the policy's versions and the ECDHE-GCM subset of its
//! TLS 1.2 list; a client that offers only the CBC or RSA-key-exchange
//! suites some of them also list is refused. The configuration reference
//! lists each policy's served suites.

use std::sync::Arc;

use rustls::crypto::aws_lc_rs::{cipher_suite as cs, kx_group as kx};
use rustls::crypto::{CryptoProvider, SupportedKxGroup};
use rustls::{SupportedCipherSuite, SupportedProtocolVersion};

/// The default `ssl_policy`, as the configuration contract names it.
pub const DEFAULT: &str = "ELBSecurityPolicy-TLS13-1-2-2021-06";

/// One security policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub name: &'static str,
    pub tls13: bool,
    pub tls12: bool,
    /// Hybrid post-quantum key exchange (X25519MLKEM768, SecP256r1MLKEM768)
    /// offered first, classical groups after it.
    pub post_quantum: bool,
}

const fn p(name: &'static str, tls13: bool, tls12: bool, post_quantum: bool) -> Policy {
    Policy {
        name,
        tls13,
        tls12,
        post_quantum,
    }
}

/// Every policy name xalb serves, in the order the reference lists them.
pub const POLICIES: &[Policy] = &[
    p("ELBSecurityPolicy-TLS13-1-2-2021-06", true, true, false),
    p("ELBSecurityPolicy-TLS13-1-2-Res-2021-06", true, true, false),
    p(
        "ELBSecurityPolicy-TLS13-1-2-Ext1-2021-06",
        true,
        true,
        false,
    ),
    p(
        "ELBSecurityPolicy-TLS13-1-2-Ext2-2021-06",
        true,
        true,
        false,
    ),
    p("ELBSecurityPolicy-TLS13-1-3-2021-06", true, false, false),
    p("ELBSecurityPolicy-TLS13-1-2-PQ-2025-09", true, true, true),
    p(
        "ELBSecurityPolicy-TLS13-1-2-Res-PQ-2025-09",
        true,
        true,
        true,
    ),
    p(
        "ELBSecurityPolicy-TLS13-1-2-Ext1-PQ-2025-09",
        true,
        true,
        true,
    ),
    p(
        "ELBSecurityPolicy-TLS13-1-2-Ext2-PQ-2025-09",
        true,
        true,
        true,
    ),
    p("ELBSecurityPolicy-TLS13-1-3-PQ-2025-09", true, false, true),
    p("ELBSecurityPolicy-FS-1-2-Res-2020-10", false, true, false),
    p("ELBSecurityPolicy-FS-1-2-Res-2019-08", false, true, false),
    p("ELBSecurityPolicy-FS-1-2-2019-08", false, true, false),
    p("ELBSecurityPolicy-TLS-1-2-2017-01", false, true, false),
    p("ELBSecurityPolicy-TLS-1-2-Ext-2018-06", false, true, false),
];

/// Why a policy name is not served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("ssl_policy {name:?} allows TLS 1.0 or 1.1, which xalb does not speak; supported policies: {}", supported())]
    OldVersions { name: String },
    #[error("ssl_policy {name:?} is a FIPS policy, and this build's crypto provider is not a FIPS module; supported policies: {}", supported())]
    Fips { name: String },
    #[error("unknown ssl_policy {name:?}; supported policies: {}", supported())]
    Unknown { name: String },
}

fn supported() -> String {
    POLICIES
        .iter()
        .map(|p| p.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The policy called `name`.
pub fn lookup(name: &str) -> Result<Policy, PolicyError> {
    if let Some(p) = POLICIES.iter().find(|p| p.name == name) {
        return Ok(*p);
    }
    let name = name.to_string();
    if !name.starts_with("ELBSecurityPolicy-") {
        return Err(PolicyError::Unknown { name });
    }
    if name.contains("FIPS") {
        return Err(PolicyError::Fips { name });
    }
    let old = name.contains("TLS13-1-0")
        || name.contains("TLS13-1-1")
        || name.contains("TLS-1-1")
        || name.starts_with("ELBSecurityPolicy-20")
        || name.starts_with("ELBSecurityPolicy-TLS-1-0");
    Err(if old {
        PolicyError::OldVersions { name }
    } else {
        PolicyError::Unknown { name }
    })
}

impl Policy {
    /// The protocol versions, newest first.
    pub fn versions(&self) -> Vec<&'static SupportedProtocolVersion> {
        let mut v = Vec::new();
        if self.tls13 {
            v.push(&rustls::version::TLS13);
        }
        if self.tls12 {
            v.push(&rustls::version::TLS12);
        }
        v
    }

    /// The cipher suites served, in the server's order of preference.
    pub fn cipher_suites(&self) -> Vec<SupportedCipherSuite> {
        let mut v = Vec::new();
        if self.tls13 {
            v.extend([
                cs::TLS13_AES_128_GCM_SHA256,
                cs::TLS13_AES_256_GCM_SHA384,
                cs::TLS13_CHACHA20_POLY1305_SHA256,
            ]);
        }
        if self.tls12 {
            v.extend([
                cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            ]);
        }
        v
    }

    /// The key-exchange groups, in the server's order of preference.
    pub fn kx_groups(&self) -> Vec<&'static dyn SupportedKxGroup> {
        let mut v: Vec<&'static dyn SupportedKxGroup> = Vec::new();
        if self.post_quantum {
            v.extend([kx::X25519MLKEM768, kx::SECP256R1MLKEM768]);
        }
        v.extend([kx::X25519, kx::SECP256R1, kx::SECP384R1]);
        v
    }

    /// The crypto provider that serves this policy.
    pub fn provider(&self) -> Arc<CryptoProvider> {
        Arc::new(CryptoProvider {
            cipher_suites: self.cipher_suites(),
            kx_groups: self.kx_groups(),
            ..super::provider()
        })
    }

    /// "TLS 1.3, TLS 1.2", for summaries.
    pub fn versions_text(&self) -> &'static str {
        match (self.tls13, self.tls12) {
            (true, true) => "TLS 1.2-1.3",
            (true, false) => "TLS 1.3",
            _ => "TLS 1.2",
        }
    }
}

/// A suite's name as OpenSSL (and the ALB's access log) writes it.
pub fn openssl_name(suite: rustls::CipherSuite) -> &'static str {
    use rustls::CipherSuite as C;
    match suite {
        C::TLS13_AES_128_GCM_SHA256 => "TLS_AES_128_GCM_SHA256",
        C::TLS13_AES_256_GCM_SHA384 => "TLS_AES_256_GCM_SHA384",
        C::TLS13_CHACHA20_POLY1305_SHA256 => "TLS_CHACHA20_POLY1305_SHA256",
        C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => "ECDHE-ECDSA-AES128-GCM-SHA256",
        C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => "ECDHE-RSA-AES128-GCM-SHA256",
        C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 => "ECDHE-ECDSA-AES256-GCM-SHA384",
        C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => "ECDHE-RSA-AES256-GCM-SHA384",
        C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-ECDSA-CHACHA20-POLY1305",
        C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-RSA-CHACHA20-POLY1305",
        _ => "-",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_served_and_every_listed_name_is_found() {
        assert_eq!(lookup(DEFAULT).unwrap().name, DEFAULT);
        for p in POLICIES {
            assert_eq!(lookup(p.name), Ok(*p));
            assert!(!p.versions().is_empty(), "{}", p.name);
            // The suites and groups exist in the provider and agree with the versions.
            let suites = p.cipher_suites();
            assert_eq!(
                suites.iter().any(|s| s.tls13().is_some()),
                p.tls13,
                "{}",
                p.name
            );
            assert_eq!(
                suites.iter().any(|s| s.tls13().is_none()),
                p.tls12,
                "{}",
                p.name
            );
            let pq = p
                .kx_groups()
                .iter()
                .any(|g| g.name() == rustls::NamedGroup::X25519MLKEM768);
            assert_eq!(pq, p.name.contains("-PQ-"), "{}", p.name);
        }
    }

    #[test]
    fn every_suite_served_has_its_openssl_name() {
        let mut names = std::collections::HashSet::new();
        for p in POLICIES {
            for s in p.cipher_suites() {
                let name = openssl_name(s.suite());
                assert_ne!(name, "-", "{:?}", s.suite());
                assert_eq!(name.starts_with("TLS_"), s.tls13().is_some(), "{name}");
                names.insert(name);
            }
        }
        assert_eq!(names.len(), 7);
        assert_eq!(
            openssl_name(rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384),
            "ECDHE-RSA-AES256-GCM-SHA384"
        );
    }

    #[test]
    fn unsupported_names_say_why_and_list_the_supported_ones() {
        let e = lookup("ELBSecurityPolicy-2016-08").unwrap_err();
        assert!(matches!(e, PolicyError::OldVersions { .. }), "{e}");
        let e = lookup("ELBSecurityPolicy-TLS13-1-1-2021-06").unwrap_err();
        assert!(matches!(e, PolicyError::OldVersions { .. }), "{e}");
        let e = lookup("ELBSecurityPolicy-TLS13-1-2-FIPS-2023-04").unwrap_err();
        assert!(matches!(e, PolicyError::Fips { .. }), "{e}");
        let e = lookup("Modern").unwrap_err();
        assert!(matches!(e, PolicyError::Unknown { .. }), "{e}");
        assert!(e.to_string().contains(DEFAULT), "{e}");
        assert!(e
            .to_string()
            .contains("ELBSecurityPolicy-TLS13-1-3-PQ-2025-09"));
    }
}
