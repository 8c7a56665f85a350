//! What a certificate says: the names it serves, its validity, subject,
//! issuer and serial, read once when the configuration is checked, for
//! `xalb check`'s summary, SNI and the mTLS headers.

use rustls::pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate, X509Name};

/// One certificate's facts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// The DNS names it serves, lowercase: its subjectAltName DNS entries,
    /// or its subject's CN when it has none.
    pub names: Vec<String>,
    /// RFC 2253 distinguished names.
    pub subject: String,
    pub issuer: String,
    /// Upper-case hexadecimal, no separators.
    pub serial: String,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
}

impl CertInfo {
    /// Reads a DER certificate.
    pub fn of(der: &[u8]) -> Result<Self, String> {
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|e| format!("not valid X.509 ({e})"))?;
        let mut names: Vec<String> = match cert.subject_alternative_name() {
            Ok(Some(san)) => san
                .value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        if names.is_empty() {
            names.extend(
                cert.subject()
                    .iter_common_name()
                    .filter_map(|cn| cn.as_str().ok())
                    .map(|cn| cn.to_ascii_lowercase()),
            );
        }
        let serial = cert
            .raw_serial()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        Ok(CertInfo {
            names,
            subject: rfc2253(cert.subject()),
            issuer: rfc2253(cert.issuer()),
            serial,
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
        })
    }

    /// Whole days from `now` (Unix seconds) until it expires; negative once
    /// it has.
    pub fn days_left(&self, now: i64) -> i64 {
        (self.not_after - now).div_euclid(86_400)
    }

    /// `NotBefore=2024-01-01T00:00:00Z;NotAfter=2025-01-01T00:00:00Z`, as
    /// the ALB's `X-Amzn-Mtls-Clientcert-Validity`.
    pub fn validity(&self) -> String {
        format!(
            "NotBefore={};NotAfter={}",
            iso8601(self.not_before),
            iso8601(self.not_after)
        )
    }
}

/// `2025-01-01T00:00:00Z`.
pub fn iso8601(unix: i64) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_default()
}

/// The distinguished name as RFC 2253 writes it: last RDN first, `,`
/// between them, `+` within one, special characters escaped.
pub fn rfc2253(name: &X509Name<'_>) -> String {
    let registry = x509_parser::objects::oid_registry();
    let rdns: Vec<String> = name
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|atv| {
                    let ty = x509_parser::objects::oid2abbrev(atv.attr_type(), registry)
                        .map(str::to_string)
                        .unwrap_or_else(|_| atv.attr_type().to_id_string());
                    let value = match atv.as_str() {
                        Ok(s) => escape(s),
                        // Not a string type: `#` and the DER, hex (RFC 2253 §2.4).
                        Err(_) => format!(
                            "#{}",
                            atv.attr_value()
                                .data
                                .iter()
                                .map(|b| format!("{b:02x}"))
                                .collect::<String>()
                        ),
                    };
                    format!("{ty}={value}")
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let last = s.chars().count().saturating_sub(1);
    for (i, c) in s.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Whether each certificate of a chain is signed by the next one's
/// subject (by name: the order a client walks it). `Err` names the first
/// pair out of order, counting from 1.
pub fn check_chain_order(chain: &[CertificateDer<'_>]) -> Result<(), String> {
    let parsed: Vec<X509Certificate<'_>> = chain
        .iter()
        .enumerate()
        .map(|(i, c)| {
            X509Certificate::from_der(c)
                .map(|(_, c)| c)
                .map_err(|e| format!("certificate {} of the file is not valid X.509 ({e})", i + 1))
        })
        .collect::<Result<_, _>>()?;
    for (i, pair) in parsed.windows(2).enumerate() {
        if pair[0].issuer().as_raw() != pair[1].subject().as_raw() {
            return Err(format!(
                "the chain is out of order: certificate {} was issued by {:?}, but certificate {} is {:?} (the server certificate comes first, then each issuer in turn)",
                i + 1,
                rfc2253(pair[0].issuer()),
                i + 2,
                rfc2253(pair[1].subject())
            ));
        }
    }
    Ok(())
}

/// Percent-encoding of everything but RFC 3986's unreserved characters, as
/// the ALB sends PEM in its mTLS headers.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3 / 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A DER certificate as PEM text.
pub fn pem(der: &[u8]) -> String {
    pem_block("CERTIFICATE", der)
}

/// `der` as a PEM block labelled `label`: base64 in lines of 64.
pub fn pem_block(label: &str, der: &[u8]) -> String {
    let b64 = base64_lite::encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Standard base64 with padding: a dozen lines, not a dependency.
mod base64_lite {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub fn encode(data: &[u8]) -> String {
        let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
        for chunk in data.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(cn: &str, sans: &[&str]) -> rcgen::CertifiedKey {
        let mut params =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Example, Inc.");
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x0a, 0xbc]));
        params.not_before = rcgen::date_time_ymd(2024, 1, 2);
        params.not_after = rcgen::date_time_ymd(2030, 3, 4);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        rcgen::CertifiedKey {
            cert,
            key_pair: key,
        }
    }

    #[test]
    fn names_validity_subject_and_serial_are_read() {
        let c = cert("www.example.com", &["Example.com", "*.example.com"]);
        let info = CertInfo::of(c.cert.der()).unwrap();
        assert_eq!(info.names, ["example.com", "*.example.com"]);
        assert_eq!(info.subject, "O=Example\\, Inc.,CN=www.example.com");
        assert_eq!(info.issuer, info.subject, "self-signed");
        assert_eq!(info.serial, "0ABC");
        assert_eq!(
            info.validity(),
            "NotBefore=2024-01-02T00:00:00Z;NotAfter=2030-03-04T00:00:00Z"
        );
        assert_eq!(info.days_left(info.not_after - 86_400 * 3), 3);
        assert_eq!(info.days_left(info.not_after + 1), -1);
    }

    #[test]
    fn without_alternative_names_the_common_name_serves() {
        let c = cert("Legacy.Example.org", &[]);
        assert_eq!(
            CertInfo::of(c.cert.der()).unwrap().names,
            ["legacy.example.org"]
        );
    }

    #[test]
    fn a_chain_must_run_from_the_server_certificate_up() {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "Test CA");
        let ca = ca.self_signed(&ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let mut leaf = rcgen::CertificateParams::new(vec!["a.test".to_string()]).unwrap();
        leaf.distinguished_name
            .push(rcgen::DnType::CommonName, "a.test");
        let leaf = leaf.signed_by(&leaf_key, &ca, &ca_key).unwrap();
        let good = [leaf.der().clone(), ca.der().clone()];
        assert_eq!(check_chain_order(&good), Ok(()));
        let e = check_chain_order(&[ca.der().clone(), leaf.der().clone()]).unwrap_err();
        assert!(e.contains("out of order: certificate 1"), "{e}");
    }

    #[test]
    fn pem_and_url_encoding_match_the_usual_tools() {
        assert_eq!(base64_lite::encode(b""), "");
        assert_eq!(base64_lite::encode(b"f"), "Zg==");
        assert_eq!(base64_lite::encode(b"fo"), "Zm8=");
        assert_eq!(base64_lite::encode(b"foo"), "Zm9v");
        assert_eq!(base64_lite::encode(&[0xfb, 0xff]), "+/8=");
        let c = cert("x", &["x.test"]);
        assert_eq!(pem(c.cert.der()), c.cert.pem().replace("\r\n", "\n"));
        assert_eq!(
            url_encode("-----BEGIN A+/=\n"),
            "-----BEGIN%20A%2B%2F%3D%0A"
        );
    }
}
