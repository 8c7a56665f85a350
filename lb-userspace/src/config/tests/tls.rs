//! HTTPS listeners' TLS settings: `ssl_policy`, certificate validity and
//! chain order, `mutual_authentication`; and target groups'
//! `protocol_version` with its gRPC health-check defaults.

use super::*;

/// `(diagnostics, warnings)` of `text` read as `dir/x.toml`, as
/// `field: message` lines.
fn check(dir: &Path, text: &str) -> (Vec<String>, Vec<String>) {
    let line = |d: &Diagnostic| format!("{}: {}", d.field, d.message);
    match parse_str(text, &dir.join("x.toml").display().to_string()) {
        Ok(cfg) => (Vec::new(), cfg.warnings.iter().map(line).collect()),
        Err(e) => (e.diagnostics().iter().map(line).collect(), Vec::new()),
    }
}

/// Writes a certificate for `web.test` valid from `from` to `until` (Unix
/// seconds) and its key as `name.pem` and `name-key.pem`.
fn write_cert(dir: &Path, name: &str, from: i64, until: i64) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["web.test".to_string()]).unwrap();
    params.not_before = time::OffsetDateTime::from_unix_timestamp(from).unwrap();
    params.not_after = time::OffsetDateTime::from_unix_timestamp(until).unwrap();
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}-key.pem")), key.serialize_pem()).unwrap();
}

const DAY: i64 = 86_400;
const CERT0: &str = "listener \"web-alb:443\".certificates[0].cert";

fn with_cert(name: &str) -> String {
    base_plus(
        &https_listener()
            .set(
                "certificates",
                format!("[{{ cert = \"{name}.pem\", key = \"{name}-key.pem\" }}]"),
            )
            .to_string(),
    )
}

#[test]
fn every_supported_policy_is_accepted_and_others_are_refused_with_the_list() {
    let dir = cert_dir("tls-policies");
    for p in crate::tls::policy::POLICIES {
        let text = base_plus(
            &https_listener()
                .set("ssl_policy", quoted(p.name))
                .to_string(),
        );
        let cfg = parse_str(&text, &dir.join("x.toml").display().to_string()).unwrap();
        assert_eq!(cfg.listeners[1].tls_policy, Some(*p));
    }
    for (name, why) in [
        ("ELBSecurityPolicy-2016-08", "allows TLS 1.0 or 1.1"),
        ("ELBSecurityPolicy-TLS13-1-2-FIPS-2023-04", "FIPS"),
        ("Modern", "unknown ssl_policy"),
    ] {
        let text = base_plus(&https_listener().set("ssl_policy", quoted(name)).to_string());
        let (errors, _) = check(&dir, &text);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("listener \"web-alb:443\".ssl_policy: ")
                && errors[0].contains(why)
                && errors[0].contains("ELBSecurityPolicy-TLS13-1-2-Res-PQ-2025-09"),
            "{errors:?}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_expired_or_not_yet_valid_certificate_is_an_error_one_expiring_soon_a_warning() {
    let dir = cert_dir("tls-validity");
    let now = crate::clock::unix_now();
    write_cert(&dir, "expired", now - 400 * DAY, now - DAY);
    write_cert(&dir, "future", now + DAY, now + 400 * DAY);
    write_cert(&dir, "soon", now - DAY, now + 10 * DAY + 3600);
    // 30 whole days left is the first that needs no warning.
    write_cert(&dir, "fine", now - DAY, now + 30 * DAY + 3600);
    // Valid from this very second (or the one before, if it just ticked).
    write_cert(&dir, "now", now, now + 400 * DAY);

    let (errors, _) = check(&dir, &with_cert("expired"));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with(CERT0) && errors[0].contains("the certificate expired on "));
    let (errors, _) = check(&dir, &with_cert("future"));
    assert!(
        errors[0].contains("the certificate is not valid before "),
        "{errors:?}"
    );

    let (errors, warnings) = check(&dir, &with_cert("soon"));
    assert_eq!(errors, Vec::<String>::new());
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with(CERT0) && warnings[0].ends_with(", in 10 days"),
        "{warnings:?}"
    );
    assert_eq!(check(&dir, &with_cert("fine")), (vec![], vec![]));
    assert_eq!(check(&dir, &with_cert("now")), (vec![], vec![]));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_chain_out_of_order_is_an_error() {
    let dir = cert_dir("tls-chain");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "Test CA");
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["web.test".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    std::fs::write(dir.join("chain-key.pem"), key.serialize_pem()).unwrap();
    std::fs::write(dir.join("chain.pem"), format!("{}{}", leaf.pem(), ca.pem())).unwrap();
    assert_eq!(check(&dir, &with_cert("chain")), (vec![], vec![]));
    // The key matches the first certificate, but the second did not issue it.
    let other = rcgen::generate_simple_self_signed(vec!["x.test".to_string()]).unwrap();
    std::fs::write(
        dir.join("chain.pem"),
        format!("{}{}", leaf.pem(), other.cert.pem()),
    )
    .unwrap();
    let (errors, _) = check(&dir, &with_cert("chain"));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with(CERT0) && errors[0].contains("the chain is out of order"),
        "{errors:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn mutual_authentication_modes() {
    let dir = cert_dir("tls-mtls");
    let mtls = |v: &str| base_plus(&https_listener().set("mutual_authentication", v).to_string());
    let field = "listener \"web-alb:443\".mutual_authentication";

    let cfg = parse_str(
        &mtls("{ mode = \"verify\", trust_store = \"cert.pem\" }"),
        &dir.join("x.toml").display().to_string(),
    )
    .unwrap();
    assert!(matches!(
        &cfg.listeners[1].mutual_authentication,
        crate::tls::MutualAuth::Verify { trust_store } if trust_store.len() == 1
    ));
    assert!(cfg
        .summary()
        .contains("mutual TLS verify (1 CA certificates)"));
    let cfg = parse_str(
        &mtls("{ mode = \"passthrough\" }"),
        &dir.join("x.toml").display().to_string(),
    )
    .unwrap();
    assert_eq!(
        cfg.listeners[1].mutual_authentication,
        crate::tls::MutualAuth::Passthrough
    );
    assert_eq!(check(&dir, &mtls("{ mode = \"off\" }")), (vec![], vec![]));

    for (value, want) in [
        (
            "{ mode = \"verify\" }",
            format!("{field}.trust_store: mode \"verify\" needs trust_store"),
        ),
        (
            "{ mode = \"passthrough\", trust_store = \"cert.pem\" }",
            format!("{field}.trust_store: trust_store applies to mode \"verify\" only"),
        ),
        (
            "{ mode = \"strict\" }",
            format!("{field}.mode: unknown mode \"strict\""),
        ),
        (
            "{ mode = \"verify\", trust_store = \"missing.pem\" }",
            format!("{field}.trust_store: cannot read "),
        ),
    ] {
        let (errors, _) = check(&dir, &mtls(value));
        assert_eq!(errors.len(), 1, "{value}: {errors:?}");
        assert!(errors[0].starts_with(&want), "{value}: {errors:?}");
    }
    // PEM around bytes that are no certificate.
    std::fs::write(
        dir.join("garbage.pem"),
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let (errors, _) = check(
        &dir,
        &mtls("{ mode = \"verify\", trust_store = \"garbage.pem\" }"),
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with(&format!("{field}.trust_store: "))
            && errors[0]
                .ends_with("1 of its 1 certificates cannot be trust anchors (not valid X.509)"),
        "{errors:?}"
    );
    let on_http = base_with(
        "port = 80\ndefault_action",
        "port = 80\nmutual_authentication = { mode = \"passthrough\" }\ndefault_action",
    );
    let (errors, _) = check(&dir, &on_http);
    assert_eq!(
        errors,
        ["listener \"web-alb:80\".mutual_authentication: mutual_authentication applies to HTTPS listeners only; this listener is HTTP"]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn protocol_version_and_grpc_health_checks() {
    let web = "name = \"web\"\nprotocol = \"HTTP\"\nport = 80\n";
    let with = |extra: &str| base_with(web, &format!("{web}{extra}"));
    let cfg = parse(&with("protocol_version = \"GRPC\"\n")).unwrap();
    let g = &cfg.target_groups[0];
    assert_eq!(g.protocol_version, ProtocolVersion::Grpc);
    assert_eq!(g.health_check.path, "/AWS.ALB/healthcheck");
    assert_eq!(g.health_check.matcher, Matcher(vec![(12, 12)]));
    assert!(cfg.summary().contains("web: HTTP (GRPC) port 80"));
    let cfg = parse(&with("protocol_version = \"HTTP2\"\n")).unwrap();
    assert_eq!(
        cfg.target_groups[0].protocol_version,
        ProtocolVersion::Http2
    );
    assert_eq!(cfg.target_groups[0].health_check.path, "/");
    let cfg = parse(&with(
        "protocol_version = \"GRPC\"\nhealth_check = { matcher = \"0-99\", path = \"/grpc.health.v1.Health/Check\" }\n",
    ))
    .unwrap();
    assert_eq!(
        cfg.target_groups[0].health_check.matcher,
        Matcher(vec![(0, 99)])
    );

    assert_error(
        &with("protocol_version = \"GRPC\"\nhealth_check = { matcher = \"200\" }\n"),
        "matcher = \"200\"",
        "target_group[0].health_check.matcher",
        &["code 200 is out of range", "gRPC status codes 0-99"],
    );
    assert_error(
        &with("protocol_version = \"HTTP3\"\n"),
        "HTTP3",
        "target_group[0].protocol_version",
        &["\"HTTP1\"", "\"GRPC\""],
    );
    let db = "name = \"db\"\nprotocol = \"TCP\"\nport = 5432\n";
    assert_error(
        &base_with(db, &format!("{db}protocol_version = \"HTTP2\"\n")),
        "protocol_version = \"HTTP2\"",
        "target_group[1].protocol_version",
        &["protocol_version applies to HTTP/HTTPS target groups"],
    );
}
