//! The TLS server side of one HTTPS listener: its policy, its certificates
//! by SNI, ALPN (`h2`, `http/1.1`), client certificates, and resumption.
//!
//! Resumption state (the ticket keys and the TLS 1.2 session cache) is kept
//! per listener for the life of the process, not per configuration: a
//! reload that rotates certificates must not cost every returning client a
//! full handshake. It is keyed by the listener and its mutual-TLS settings
//! too, so that a session begun without a client certificate never resumes
//! on a listener that requires one.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock};

use rustls::server::{ProducesTickets, ServerSessionMemoryCache, StoresServerSessions};
use rustls::ServerConfig;

use super::client_cert::{self, MutualAuth};
use super::policy::Policy;
use super::sni::SniResolver;
use super::ServedCert;

/// TLS 1.2 sessions remembered per listener (about 200 bytes each); TLS 1.3
/// and TLS 1.2 tickets need no server memory.
const SESSION_CACHE: usize = 16_384;

/// Why a listener's TLS could not be set up (each is checked by
/// `xalb check` first; these are for a file that changed in between).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("listener {listener}: no certificate")]
    NoCertificate { listener: String },
    #[error("listener {listener}: {source}")]
    Versions {
        listener: String,
        #[source]
        source: rustls::Error,
    },
    #[error("listener {listener}: trust store: {source}")]
    TrustStore {
        listener: String,
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    #[error("listener {listener}: session tickets: {source}")]
    Tickets {
        listener: String,
        #[source]
        source: rustls::Error,
    },
}

/// What one HTTPS listener's TLS is made of.
pub struct ListenerTls<'a> {
    /// `"web:443"`.
    pub listener: &'a str,
    pub policy: Policy,
    pub certificates: &'a [ServedCert],
    pub mutual: &'a MutualAuth,
}

#[derive(Clone)]
struct Resumption {
    tickets: Arc<dyn ProducesTickets>,
    sessions: Arc<dyn StoresServerSessions>,
}

fn resumption(key: String) -> Result<Resumption, rustls::Error> {
    static ALL: OnceLock<Mutex<HashMap<String, Resumption>>> = OnceLock::new();
    let mut all = ALL
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(r) = all.get(&key) {
        return Ok(r.clone());
    }
    let r = Resumption {
        // Keys rotate every 6 hours; a ticket stays valid across one rotation.
        tickets: rustls::crypto::aws_lc_rs::Ticketer::new()?,
        sessions: ServerSessionMemoryCache::new(SESSION_CACHE),
    };
    all.insert(key, r.clone());
    Ok(r)
}

/// The listener's server configuration.
pub fn server_config(l: &ListenerTls<'_>) -> Result<Arc<ServerConfig>, TlsError> {
    let listener = l.listener.to_string();
    let resolver = SniResolver::new(l.certificates).ok_or_else(|| TlsError::NoCertificate {
        listener: listener.clone(),
    })?;
    let provider = l.policy.provider();
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&l.policy.versions())
        .map_err(|source| TlsError::Versions {
            listener: listener.clone(),
            source,
        })?;
    let verifier =
        client_cert::verifier(l.mutual, provider).map_err(|source| TlsError::TrustStore {
            listener: listener.clone(),
            source,
        })?;
    let builder = match verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // The policy's order decides, as the ALB's does.
    config.ignore_client_order = true;
    let r = resumption(resumption_key(l)).map_err(|source| TlsError::Tickets {
        listener: listener.clone(),
        source,
    })?;
    config.ticketer = r.tickets;
    config.session_storage = r.sessions;
    Ok(Arc::new(config))
}

fn resumption_key(l: &ListenerTls<'_>) -> String {
    let mut h = std::hash::DefaultHasher::new();
    l.mutual.hash(&mut h);
    format!("{} {:016x}", l.listener, h.finish())
}

impl Hash for MutualAuth {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self {
            MutualAuth::Off => 0u8.hash(state),
            MutualAuth::Passthrough => 1u8.hash(state),
            MutualAuth::Verify { trust_store } => {
                2u8.hash(state);
                for c in trust_store {
                    c.as_ref().hash(state);
                }
            }
        }
    }
}
