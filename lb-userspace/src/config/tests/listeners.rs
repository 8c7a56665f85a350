//! `[[listener]]`: protocols not served yet, certificates and keys, and
//! which actions and target groups a listener can use.

use super::*;

#[test]
fn https_listener_needs_certificates() {
    let text = base_plus(&listener("HTTPS", 443).to_string());
    assert_error(
        &text,
        "[[listener]]",
        "listener \"web-alb:443\".certificates",
        &["an HTTPS listener needs certificates", "at least one"],
    );
    let text = base_plus(&https_listener().set("certificates", "[]").to_string());
    assert_error(
        &text,
        "certificates = []",
        "listener \"web-alb:443\".certificates",
        &["needs at least one certificate"],
    );
}

#[test]
fn certificate_files_must_be_readable() {
    let text = base_plus(&https_listener().to_string());
    // `test.toml` lives in the current directory, which has no cert.pem.
    assert_error(
        &text,
        "certificates",
        "listener \"web-alb:443\".certificates[0].cert",
        &[
            "cannot read cert.pem",
            "relative paths are resolved from the configuration file's directory",
        ],
    );
    let dir = cert_dir("https");
    let file = dir.join("x.toml");
    let key = dir.join("key.pem");
    std::fs::write(&key, "").unwrap();
    let not_a_file = dir.join("dir.pem");
    std::fs::create_dir(&not_a_file).unwrap();
    assert_eq!(
        diagnostics_of(&text, &file),
        [
            format!(
                "{}:{}: listener \"web-alb:443\".certificates[0].key: {} is empty; expected a PEM file (relative paths are resolved from the configuration file's directory)",
                file.display(),
                position(&text, "\"key.pem\""),
                key.display()
            ),
        ]
    );
    let text = text.replace("\"key.pem\"", "\"dir.pem\"");
    assert_eq!(
        diagnostics_of(&text, &file),
        [
            format!(
                "{}:{}: listener \"web-alb:443\".certificates[0].key: {} is not a regular file (relative paths are resolved from the configuration file's directory)",
                file.display(),
                position(&text, "\"dir.pem\""),
                not_a_file.display()
            ),
        ]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `LINE:COLUMN` (1-based) of `needle` on the last line that holds it.
fn position(text: &str, needle: &str) -> String {
    let line = line_of(text, needle);
    let column = text.lines().nth(line - 1).unwrap().find(needle).unwrap() + 1;
    format!("{line}:{column}")
}

#[test]
fn an_https_listener_is_served() {
    let dir = cert_dir("served-https");
    let file = dir.join("x.toml");
    let text = base_plus(&https_listener().to_string());
    assert_eq!(diagnostics_of(&text, &file), Vec::<String>::new());
    let cfg = parse_str(&text, &file.display().to_string()).unwrap();
    let l = cfg.listeners.iter().find(|l| l.port == 443).unwrap();
    assert_eq!(l.ssl_policy, crate::tls::policy::DEFAULT);
    assert_eq!(
        l.tls_policy.map(|p| p.name),
        Some(crate::tls::policy::DEFAULT)
    );
    assert_eq!(l.mutual_authentication, crate::tls::MutualAuth::Off);
    let served = l.certificates[0].served.as_ref().expect("loaded");
    assert_eq!(served.info.names, ["test.example"]);
    assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
    let summary = cfg.summary();
    assert!(
        summary.contains("ssl_policy ELBSecurityPolicy-TLS13-1-2-2021-06 (TLS 1.2-1.3)"),
        "{summary}"
    );
    assert!(
        summary.contains("cert.pem (default): test.example; expires "),
        "{summary}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_tcp_listener_is_served() {
    let text = base_plus(&tcp_listener().to_string());
    assert_eq!(
        diagnostics_of(&text, Path::new("test.toml")),
        Vec::<String>::new()
    );
}

/// Everything else about HTTPS and TCP listeners is still checked and
/// passes: several certificates (relative and absolute paths), an
/// ssl_policy, rules on the HTTPS listener, a TCP listener's forward.
#[test]
fn https_and_tcp_listeners_with_every_option_are_valid() {
    let dir = cert_dir("served-full");
    let file = dir.join("x.toml");
    let text = base_plus(&format!(
        "{}\n{}\n{}",
        https_listener()
            .set(
                "certificates",
                format!(
                    "[{{ cert = \"cert.pem\", key = \"key.pem\" }}, {{ cert = {}, key = {} }}]",
                    quoted(&dir.join("other.pem").display().to_string()),
                    quoted(&dir.join("other-key.pem").display().to_string())
                ),
            )
            .set("ssl_policy", quoted("ELBSecurityPolicy-TLS13-1-3-2021-06")),
        tcp_listener(),
        "[[rule]]\nlistener = \"web-alb:443\"\npriority = 1\nconditions = [{ field = \"path-pattern\", values = [\"/a\"] }]\naction = { type = \"fixed-response\", status_code = 404 }\n",
    ));
    assert_eq!(diagnostics_of(&text, &file), Vec::<String>::new());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The certificate `text`'s first (HTTPS) listener points at, as a field.
const CERT0: &str = "listener \"web-alb:443\".certificates[0]";

#[test]
fn certificate_must_be_a_pem_certificate() {
    let dir = cert_dir("cert-not-pem");
    let file = dir.join("x.toml");
    let text = base_plus(&https_listener().to_string());
    let cert = dir.join("cert.pem");
    let c = cert.display();
    let expect = |message: String| {
        let want = format!(
            "{}:{}: {CERT0}.cert: {message}",
            file.display(),
            position(&text, "\"cert.pem\""),
        );
        // Nothing is said about the key: there is nothing to compare it with.
        assert_eq!(diagnostics_of(&text, &file), [want]);
    };
    let no_block = format!(
        "{c} is not a PEM certificate file: it has no \"-----BEGIN CERTIFICATE-----\" block"
    );

    std::fs::write(&cert, "not a certificate\n").unwrap();
    expect(no_block.clone());
    // A key is not a certificate.
    std::fs::copy(dir.join("key.pem"), &cert).unwrap();
    expect(no_block);
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nMIIB\n").unwrap();
    expect(format!(
        "{c} is not a valid PEM certificate file: a section has no \"-----END CERTIFICATE-----\" line"
    ));
    // PEM, but no X.509 inside.
    std::fs::write(
        &cert,
        "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    expect(format!(
        "{c}: the first certificate is not valid X.509 (BadEncoding)"
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn key_must_be_a_pem_private_key() {
    let dir = cert_dir("key-not-pem");
    let file = dir.join("x.toml");
    let text = base_plus(&https_listener().to_string());
    let key = dir.join("key.pem");
    let k = key.display();
    let expect = |message: String| {
        let want = format!(
            "{}:{}: {CERT0}.key: {message}",
            file.display(),
            position(&text, "\"key.pem\""),
        );
        assert_eq!(diagnostics_of(&text, &file), [want]);
    };

    // A certificate is not a key.
    std::fs::copy(dir.join("cert.pem"), &key).unwrap();
    expect(format!("{k} is not a PEM private key file: it has no \"BEGIN PRIVATE KEY\", \"BEGIN RSA PRIVATE KEY\" or \"BEGIN EC PRIVATE KEY\" block"));
    std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\nMIIB\n").unwrap();
    expect(format!(
        "{k} is not a valid PEM private key file: a section has no \"-----END PRIVATE KEY-----\" line"
    ));
    // PEM, but no key inside.
    std::fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\naGVsbG8=\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    expect(format!("{k} is not a usable private key (failed to parse private key as RSA, ECDSA, or EdDSA); RSA (2048 bits or more), ECDSA P-256/P-384 and Ed25519 keys are supported"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// PKCS#8 is not the only form: SEC1 (`BEGIN EC PRIVATE KEY`) is accepted.
#[test]
fn sec1_keys_are_accepted() {
    let dir = cert_dir("sec1");
    let file = dir.join("x.toml");
    let (pem, key_pair) = self_signed();
    std::fs::write(dir.join("cert.pem"), pem).unwrap();
    let sec1 = sec1_of_pkcs8(&key_pair.serialize_der()).to_vec();
    std::fs::write(
        dir.join("key.pem"),
        crate::tls::certificate::pem_block("EC PRIVATE KEY", &sec1),
    )
    .unwrap();
    let text = base_plus(&https_listener().to_string());
    assert_eq!(diagnostics_of(&text, &file), Vec::<String>::new());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The ECPrivateKey (SEC1) inside a PKCS#8 PrivateKeyInfo:
/// SEQUENCE { INTEGER version, SEQUENCE algorithm, OCTET STRING key }.
fn sec1_of_pkcs8(der: &[u8]) -> &[u8] {
    // One DER element at the start of `d`: (tag, contents, rest).
    fn element(d: &[u8]) -> (u8, &[u8], &[u8]) {
        let (len, header) = match d[1] {
            n if n < 0x80 => (n as usize, 2),
            n => {
                let k = (n & 0x7f) as usize;
                let len = d[2..2 + k].iter().fold(0, |a, &b| a << 8 | b as usize);
                (len, 2 + k)
            }
        };
        (d[0], &d[header..header + len], &d[header + len..])
    }
    let (_, info, _) = element(der);
    let (_, _, rest) = element(info); // version
    let (_, _, rest) = element(rest); // algorithm
    let (tag, key, _) = element(rest);
    assert_eq!(tag, 0x04, "an OCTET STRING");
    key
}

#[test]
fn key_must_match_its_certificate() {
    let dir = cert_dir("mismatch");
    let file = dir.join("x.toml");
    // Certificate A with key B.
    let text = base_plus(
        &https_listener()
            .set(
                "certificates",
                "[{ cert = \"cert.pem\", key = \"other-key.pem\" }]",
            )
            .to_string(),
    );
    assert_eq!(
        diagnostics_of(&text, &file),
        [
            format!(
                "{}:{}: {CERT0}.key: key {} does not match certificate {} (the first certificate in the file)",
                file.display(),
                position(&text, "\"other-key.pem\""),
                dir.join("other-key.pem").display(),
                dir.join("cert.pem").display()
            ),
        ]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// One `xalb check` run names every certificate problem, not the first.
#[test]
fn every_certificate_problem_is_reported_at_once() {
    let dir = cert_dir("all-at-once");
    let file = dir.join("x.toml");
    std::fs::write(dir.join("junk.pem"), "junk\n").unwrap();
    let text = base_plus(&https_listener().set(
        "certificates",
        "[\n  { cert = \"missing.pem\", key = \"key.pem\" },\n  { cert = \"junk.pem\", key = \"key.pem\" },\n  { cert = \"other.pem\", key = \"key.pem\" },\n]",
    ).to_string());
    let diags = diagnostics_of(&text, &file);
    assert_eq!(diags.len(), 3, "{diags:#?}");
    let has = |needle: &str, part: &str| {
        let line = line_of(&text, needle);
        assert!(
            diags
                .iter()
                .any(|d| d.starts_with(&format!("{}:{line}:", file.display())) && d.contains(part)),
            "line {line}: {part}: {diags:#?}"
        );
    };
    has("missing.pem", "certificates[0].cert: cannot read");
    has("junk.pem", "certificates[1].cert: ");
    has("junk.pem", "junk.pem is not a PEM certificate file");
    has("other.pem", "certificates[2].key: key ");
    has("other.pem", "does not match certificate");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn certificates_and_ssl_policy_only_on_https() {
    let text = base_with(
        "port = 80\ndefault_action",
        "port = 80\ncertificates = [{ cert = \"c.pem\", key = \"k.pem\" }]\nssl_policy = \"ELBSecurityPolicy-2016-08\"\ndefault_action",
    );
    assert_error(
        &text,
        "certificates = ",
        "listener \"web-alb:80\".certificates",
        &["certificates apply to HTTPS listeners only; this listener is HTTP"],
    );
    assert_error(
        &text,
        "ssl_policy",
        "listener \"web-alb:80\".ssl_policy",
        &["ssl_policy applies to HTTPS listeners only"],
    );
}

#[test]
fn tcp_target_group_behind_http_listener() {
    let text = base_with("target_group = \"web\"", "target_group = \"db\"");
    assert_error_at(
        &text,
        30,
        "listener \"web-alb:80\".default_action.target_group",
        &[
            "target group \"db\" is TCP",
            "TCP target groups serve TCP listeners only; this listener is HTTP",
        ],
    );
    // Also in a rule's weighted forward.
    let text = base_plus(
        "[[rule]]\nlistener = \"web-alb:80\"\npriority = 1\nconditions = [{ field = \"path-pattern\", values = [\"/\"] }]\naction = { type = \"forward\", target_groups = [{ name = \"web\" }, { name = \"db\" }] }\n",
    );
    assert_error(
        &text,
        "target_groups = [",
        "rule[0].action.target_groups[1].name",
        &["target group \"db\" is TCP"],
    );
}

#[test]
fn http_target_group_behind_tcp_listener() {
    let text = base_plus(
        &tcp_listener()
            .set("default_action", FORWARD_WEB)
            .to_string(),
    );
    assert_error(
        &text,
        "target_group = \"web\"",
        "listener \"web-alb:5432\".default_action.target_group",
        &["target group \"web\" is HTTP", "needs a TCP target group"],
    );
}

#[test]
fn a_tcp_listener_forwards_to_one_group() {
    let text = base_plus(
        &tcp_listener()
            .set(
                "default_action",
                "{ type = \"forward\", target_groups = [{ name = \"db\" }] }",
            )
            .to_string(),
    );
    assert_error(
        &text,
        "target_groups = [",
        "listener \"web-alb:5432\".default_action.target_groups",
        &["a TCP listener forwards to one target group"],
    );
}

#[test]
fn rules_need_an_http_listener() {
    let text = base_plus(&format!(
        "{}\n{}",
        tcp_listener(),
        "[[rule]]\nlistener = \"web-alb:5432\"\npriority = 1\nconditions = [{ field = \"source-ip\", values = [\"10.0.0.0/8\"] }]\naction = { type = \"forward\", target_group = \"db\" }\n",
    ));
    assert_error(
        &text,
        "listener = \"web-alb:5432\"",
        "rule[0].listener",
        &["listener \"web-alb:5432\" is TCP; rules need an HTTP or HTTPS listener"],
    );
}

#[test]
fn redirect_and_fixed_response_need_an_http_listener() {
    let text = base_plus(
        &tcp_listener()
            .set(
                "default_action",
                "{ type = \"fixed-response\", status_code = 503 }",
            )
            .to_string(),
    );
    assert_error(
        &text,
        "fixed-response",
        "listener \"web-alb:5432\".default_action.type",
        &[
            "fixed-response actions need an HTTP or HTTPS listener",
            "TCP target groups",
        ],
    );
    let text = base_plus(
        &tcp_listener()
            .set(
                "default_action",
                "{ type = \"redirect\", status_code = \"HTTP_301\", protocol = \"HTTPS\" }",
            )
            .to_string(),
    );
    assert_error(
        &text,
        "redirect",
        "listener \"web-alb:5432\".default_action.type",
        &["redirect actions need an HTTP or HTTPS listener"],
    );
}

#[test]
fn unknown_action_type_and_misplaced_fields() {
    let text = base_with(
        "type = \"forward\", target_group = \"web\"",
        "type = \"authenticate-oidc\", target_group = \"web\"",
    );
    assert_error(
        &text,
        "authenticate-oidc",
        "listener \"web-alb:80\".default_action.type",
        &[
            "unknown type \"authenticate-oidc\"",
            "\"forward\", \"redirect\", \"fixed-response\"",
        ],
    );
    let text = base_with(
        "type = \"forward\", target_group = \"web\"",
        "type = \"forward\", target_group = \"web\", host = \"x\"",
    );
    assert_error(
        &text,
        "host = \"x\"",
        "listener \"web-alb:80\".default_action.host",
        &[
            "host does not belong in a forward action",
            "target_group, target_groups, stickiness",
        ],
    );
}
