//! `[[listener]]`: balancer, port, protocol, default action and the
//! certificate files of HTTPS listeners (read and checked against their keys).

use super::*;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::InconsistentKeys;

impl Checker<'_> {
    pub(super) fn listener(
        &mut self,
        i: usize,
        l: &S<RawListener>,
        names: &Names,
        seen_ports: &mut HashMap<(String, u16), usize>,
    ) -> Listener {
        let span = l.span();
        let l = l.get_ref();
        let lb = l.load_balancer.get_ref();
        let port = valid_port(*l.port.get_ref());
        let p = match port {
            Some(port) if !lb.is_empty() => format!("listener {:?}", format!("{lb}:{port}")),
            _ => format!("listener[{i}]"),
        };

        if !names.load_balancers.contains(lb) {
            let msg = unknown("load_balancer", lb, &names.load_balancers);
            self.err(l.load_balancer.span(), format!("{p}.load_balancer"), msg);
        }
        let protocol = self.choice(&l.protocol, &format!("{p}.protocol"), LISTENER_PROTOCOLS);
        let port = self.port(&l.port, &format!("{p}.port"));
        if let Some(port) = port {
            let line = self.line(&l.port.span());
            match seen_ports.get(&(lb.clone(), port)) {
                Some(first) => self.err(
                    l.port.span(),
                    format!("{p}.port"),
                    format!(
                        "load_balancer {lb:?} already has a listener on port {port} (line {first}); ports must be unique per load balancer"
                    ),
                ),
                None => {
                    seen_ports.insert((lb.clone(), port), line);
                }
            }
        }

        let is_https = protocol == Some(ListenerProtocol::Https);
        let field = format!("{p}.certificates");
        let mut certificates = Vec::new();
        match (&l.certificates, protocol) {
            (Some(certs), Some(ListenerProtocol::Https)) => {
                if certs.get_ref().is_empty() {
                    self.err(
                        certs.span(),
                        field.clone(),
                        "an HTTPS listener needs at least one certificate: [{ cert = \"cert.pem\", key = \"key.pem\" }]",
                    );
                }
                for (j, c) in certs.get_ref().iter().enumerate() {
                    let c = self.certificate(c.get_ref(), &format!("{field}[{j}]"));
                    certificates.push(c);
                }
            }
            (None, Some(ListenerProtocol::Https)) => self.err(
                span.clone(),
                field,
                "an HTTPS listener needs certificates = [{ cert = \"cert.pem\", key = \"key.pem\" }] (at least one; the first is the default)",
            ),
            (Some(certs), Some(proto)) => self.err(
                certs.span(),
                field,
                format!(
                    "certificates apply to HTTPS listeners only; this listener is {}",
                    protocol_name(LISTENER_PROTOCOLS, proto)
                ),
            ),
            _ => {}
        }
        let ssl_policy = match &l.ssl_policy {
            None => DEFAULT_SSL_POLICY.to_string(),
            Some(v) => {
                let field = format!("{p}.ssl_policy");
                if let (Some(proto), false) = (protocol, is_https) {
                    self.err(
                        v.span(),
                        field,
                        format!(
                            "ssl_policy applies to HTTPS listeners only; this listener is {}",
                            protocol_name(LISTENER_PROTOCOLS, proto)
                        ),
                    );
                } else if let Err(e) = crate::tls::policy::lookup(v.get_ref()) {
                    self.err(v.span(), field, e.to_string());
                }
                v.get_ref().clone()
            }
        };
        let tls_policy = is_https
            .then(|| crate::tls::policy::lookup(&ssl_policy).ok())
            .flatten();
        let mutual_authentication = self.mutual_authentication(l, &p, protocol);

        let default_action = self.action(
            &format!("{p}.default_action"),
            &l.default_action,
            protocol,
            names,
        );
        Listener {
            load_balancer: lb.clone(),
            protocol: protocol.unwrap_or(ListenerProtocol::Http),
            port: port.unwrap_or(0),
            default_action: default_action.unwrap_or(Action::FixedResponse {
                status_code: 503,
                content_type: None,
                message_body: String::new(),
            }),
            certificates,
            ssl_policy,
            tls_policy,
            mutual_authentication,
            rules: Vec::new(),
        }
    }

    /// A listener certificate: both files readable and parsed, and the key
    /// the certificate's own, so that `xalb check` reports every certificate
    /// problem before a TLS handshake would.
    pub(super) fn certificate(&mut self, c: &RawCertificate, field: &str) -> Certificate {
        let cert_field = format!("{field}.cert");
        let key_field = format!("{field}.key");
        let cert = self.pem_path(&c.cert, &cert_field);
        let key = self.pem_path(&c.key, &key_field);
        let chain = cert.as_deref().and_then(|path| {
            read_cert_chain(path)
                .map_err(|msg| self.err(c.cert.span(), cert_field.clone(), msg))
                .ok()
        });
        let private_key = key.as_deref().and_then(|path| {
            read_private_key(path)
                .map_err(|msg| self.err(c.key.span(), key_field.clone(), msg))
                .ok()
        });
        let mut served = None;
        if let (Some(chain), Some(private_key), Some(cert), Some(key)) =
            (chain, private_key, &cert, &key)
        {
            match check_key_matches(chain, private_key, cert, key) {
                Err((culprit, msg)) => {
                    let (span, field) = match culprit {
                        PemFile::Key => (c.key.span(), key_field),
                        PemFile::Cert => (c.cert.span(), cert_field),
                    };
                    self.err(span, field, msg);
                }
                Ok(key) => served = self.served(key, &c.cert, &cert_field, cert),
            }
        }
        Certificate {
            cert: cert.unwrap_or_default(),
            key: key.unwrap_or_default(),
            served,
        }
    }

    /// A certificate whose key matched: its chain in order, and not
    /// expired (a warning within 30 days of it).
    fn served(
        &mut self,
        key: CertifiedKey,
        at: &S<String>,
        field: &str,
        path: &Path,
    ) -> Option<crate::tls::ServedCert> {
        let fail = |this: &mut Self, msg: String| {
            this.err(at.span(), field, format!("{}: {msg}", path.display()));
        };
        if let Err(msg) = crate::tls::certificate::check_chain_order(&key.cert) {
            fail(self, msg);
            return None;
        }
        let info = match crate::tls::CertInfo::of(&key.cert[0]) {
            Ok(info) => info,
            Err(msg) => {
                fail(self, msg);
                return None;
            }
        };
        let now = crate::clock::unix_now();
        let days = info.days_left(now);
        let until = crate::tls::certificate::iso8601(info.not_after);
        if info.not_after <= now {
            fail(self, format!("the certificate expired on {until}"));
            return None;
        }
        if info.not_before > now {
            let from = crate::tls::certificate::iso8601(info.not_before);
            fail(self, format!("the certificate is not valid before {from}"));
            return None;
        }
        if days < CERT_EXPIRY_WARNING_DAYS {
            self.warn(
                at.span(),
                field,
                format!(
                    "{}: the certificate expires on {until}, in {days} days",
                    path.display()
                ),
            );
        }
        Some(crate::tls::ServedCert {
            key: std::sync::Arc::new(key),
            info,
        })
    }

    /// `mutual_authentication`: HTTPS only; `verify` needs a trust store.
    fn mutual_authentication(
        &mut self,
        l: &RawListener,
        p: &str,
        protocol: Option<ListenerProtocol>,
    ) -> crate::tls::MutualAuth {
        use crate::tls::MutualAuth;
        let Some(m) = &l.mutual_authentication else {
            return MutualAuth::Off;
        };
        let field = format!("{p}.mutual_authentication");
        if let Some(proto) = protocol.filter(|p| *p != ListenerProtocol::Https) {
            self.err(
                m.span(),
                field,
                format!(
                    "mutual_authentication applies to HTTPS listeners only; this listener is {}",
                    protocol_name(LISTENER_PROTOCOLS, proto)
                ),
            );
            return MutualAuth::Off;
        }
        let raw = m.get_ref();
        let mode = raw.mode.get_ref().as_str();
        let store = raw.trust_store.as_ref();
        match (mode, store) {
            ("off", None) => MutualAuth::Off,
            ("passthrough", None) => MutualAuth::Passthrough,
            ("off" | "passthrough", Some(t)) => {
                self.err(
                    t.span(),
                    format!("{field}.trust_store"),
                    format!("trust_store applies to mode \"verify\" only; this mode is {mode:?}"),
                );
                MutualAuth::Off
            }
            ("verify", None) => {
                self.err(
                    m.span(),
                    format!("{field}.trust_store"),
                    "mode \"verify\" needs trust_store = \"ca.pem\" (a PEM bundle of the CA certificates client certificates must chain to)",
                );
                MutualAuth::Off
            }
            ("verify", Some(t)) => {
                let field = format!("{field}.trust_store");
                let Some(path) = self.pem_path(t, &field) else {
                    return MutualAuth::Off;
                };
                match read_trust_store(&path) {
                    Ok(trust_store) => MutualAuth::Verify { trust_store },
                    Err(msg) => {
                        self.err(t.span(), field, msg);
                        MutualAuth::Off
                    }
                }
            }
            (other, _) => {
                self.err(
                    raw.mode.span(),
                    format!("{field}.mode"),
                    format!(
                        "unknown mode {other:?}; expected \"off\", \"verify\" or \"passthrough\""
                    ),
                );
                MutualAuth::Off
            }
        }
    }

    /// A certificate or key path: resolved against the config file's
    /// directory and required to be a readable, non-empty file now, so that
    /// `xalb check` catches a missing certificate before `xalb run` does.
    /// `None` when a problem was reported.
    pub(super) fn pem_path(&mut self, v: &S<String>, field: &str) -> Option<PathBuf> {
        let raw = v.get_ref();
        if raw.trim().is_empty() {
            self.err(
                v.span(),
                field,
                "must be a path to a PEM file, got an empty string",
            );
            return None;
        }
        let path = self.base_dir.join(raw);
        let problem = match std::fs::metadata(&path) {
            Err(e) => Some(format!("cannot read {}: {e}", path.display())),
            Ok(m) if !m.is_file() => Some(format!("{} is not a regular file", path.display())),
            Ok(m) if m.len() == 0 => {
                Some(format!("{} is empty; expected a PEM file", path.display()))
            }
            Ok(_) => std::fs::File::open(&path)
                .err()
                .map(|e| format!("cannot read {}: {e}", path.display())),
        };
        if let Some(msg) = problem {
            let note = if Path::new(raw).is_relative() {
                " (relative paths are resolved from the configuration file's directory)"
            } else {
                ""
            };
            self.err(v.span(), field, format!("{msg}{note}"));
            return None;
        }
        Some(path)
    }
}

/// The certificates of a PEM file, at least one.
pub(super) fn read_cert_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| pem_problem(path, "certificate", &e))?;
    if chain.is_empty() {
        return Err(format!(
            "{} is not a PEM certificate file: it has no \"-----BEGIN CERTIFICATE-----\" block",
            path.display()
        ));
    }
    Ok(chain)
}

/// The first private key of a PEM file: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
pub(super) fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        pem::Error::NoItemsFound => format!(
            "{} is not a PEM private key file: it has no \"BEGIN PRIVATE KEY\", \"BEGIN RSA PRIVATE KEY\" or \"BEGIN EC PRIVATE KEY\" block",
            path.display()
        ),
        e => pem_problem(path, "private key", &e),
    })
}

/// The message for a PEM file that could not be read or parsed.
pub(super) fn pem_problem(path: &Path, what: &str, e: &pem::Error) -> String {
    let path = path.display();
    let why = match e {
        pem::Error::Io(e) => return format!("cannot read {path}: {e}"),
        // These carry raw bytes, which Display would print as numbers; the
        // end marker is the section's label only.
        pem::Error::MissingSectionEnd { end_marker } => format!(
            "a section has no \"-----END {}-----\" line",
            String::from_utf8_lossy(end_marker)
        ),
        pem::Error::IllegalSectionStart { line } => {
            format!(
                "malformed section start {:?}",
                String::from_utf8_lossy(line)
            )
        }
        e => e.to_string(),
    };
    format!("{path} is not a valid PEM {what} file: {why}")
}

/// The CA certificates of a trust store: at least one, each a CA.
pub(super) fn read_trust_store(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = read_cert_chain(path)?;
    let mut roots = rustls::RootCertStore::empty();
    let (_, bad) = roots.add_parsable_certificates(certs.iter().cloned());
    if bad > 0 {
        return Err(format!(
            "{}: {bad} of its {} certificates cannot be trust anchors (not valid X.509)",
            path.display(),
            certs.len()
        ));
    }
    Ok(certs)
}

/// Which file of a certificate pair a problem is reported on.
pub(super) enum PemFile {
    Cert,
    Key,
}

/// Whether the key is usable and belongs to the chain's first certificate.
pub(super) fn check_key_matches(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    cert_path: &Path,
    key_path: &Path,
) -> Result<CertifiedKey, (PemFile, String)> {
    // The provider the proxy's TLS uses, so "usable" means usable there.
    let signing_key = crate::tls::provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| {
            let why = match e {
                rustls::Error::General(why) => why,
                e => e.to_string(),
            };
            (
                PemFile::Key,
                format!(
                    "{} is not a usable private key ({why}); RSA (2048 bits or more), ECDSA P-256/P-384 and Ed25519 keys are supported",
                    key_path.display()
                ),
            )
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        // Unknown: the key cannot name its public half; nothing to compare.
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(_)) => Err((
            PemFile::Key,
            format!(
                "key {} does not match certificate {} (the first certificate in the file)",
                key_path.display(),
                cert_path.display()
            ),
        )),
        // The chain's first certificate could not be parsed (rustls words
        // this for a peer's certificate, hence our own message).
        Err(rustls::Error::InvalidCertificate(e)) => Err((
            PemFile::Cert,
            format!(
                "{}: the first certificate is not valid X.509 ({e:?})",
                cert_path.display()
            ),
        )),
        Err(e) => Err((PemFile::Cert, format!("{}: {e}", cert_path.display()))),
    }
}
