//! HTTPS listeners: TLS terminated by xalb with real clients (rustls, curl,
//! openssl): certificates by SNI, ALPN, policies, resumption, rotation by
//! reload, mutual TLS, the HTTP → HTTPS redirect, and bad handshakes.

use std::net::SocketAddr;
use std::time::Duration;

use xalb_tests::admin::{admin_get, admin_post, wait_for};
use xalb_tests::bed::{HttpBed, WEB_GROUP};
use xalb_tests::http::{in_ns, Backend};
use xalb_tests::tls::{self, certificates, ClientCert, Opts, Pki, TlsClient};

const HTTPS: &str = "10.231.0.10:443";

fn https() -> SocketAddr {
    HTTPS.parse().unwrap()
}

/// A balancer with an HTTP:80 listener redirecting to HTTPS, and an
/// HTTPS:443 listener forwarding to `web` with `certs` and `more` (further
/// listener fields, e.g. an ssl_policy).
fn config(certs: &str, more: &str) -> String {
    format!(
        r#"
[[security_group]]
name = "web"
ingress = [
  {{ protocol = "tcp", ports = "80", source = "0.0.0.0/0" }},
  {{ protocol = "tcp", ports = "443", source = "0.0.0.0/0" }},
]

[[load_balancer]]
name = "edge"
interfaces = ["eth0"]
addresses = ["10.231.0.10", "fd00:231::10"]
security_groups = ["web"]

[[listener]]
load_balancer = "edge"
protocol = "HTTP"
port = 80
default_action = {{ type = "redirect", status_code = "HTTP_301", protocol = "HTTPS", port = "443" }}

[[listener]]
load_balancer = "edge"
protocol = "HTTPS"
port = 443
certificates = {certs}
default_action = {{ type = "forward", target_group = "web" }}
{more}
{WEB_GROUP}
"#
    )
}

/// The usual PKI: `default` (default.test), `api` (api.example.com) and
/// `wild` (*.example.com), all ECDSA P-256.
struct Certs {
    pki: Pki,
    default: rustls::pki_types::CertificateDer<'static>,
    api: rustls::pki_types::CertificateDer<'static>,
    wild: rustls::pki_types::CertificateDer<'static>,
}

fn certs(tag: &str) -> Certs {
    let pki = Pki::new(tag).unwrap();
    let p256 = &rcgen::PKCS_ECDSA_P256_SHA256;
    let default = pki.server("default", &["default.test"], p256).unwrap();
    let api = pki.server("api", &["api.example.com"], p256).unwrap();
    let wild = pki.server("wild", &["*.example.com"], p256).unwrap();
    Certs {
        pki,
        default,
        api,
        wild,
    }
}

/// Starts the bed with its two backends and xalb.
fn bed(cfg: &str) -> (HttpBed, Vec<Backend>, xalb_tests::daemon::Daemon) {
    let bed = HttpBed::new(cfg).unwrap();
    let backends = vec![
        bed.backend(11, 80, "web-1").unwrap(),
        bed.backend(12, 80, "web-2").unwrap(),
    ];
    let d = bed.start().unwrap();
    (bed, backends, d)
}

/// The listener's `xalb_client_tls_negotiation_error_count_total`.
fn negotiation_errors(bed: &HttpBed) -> u64 {
    let body = admin_get(bed, "/metrics").body;
    let text = String::from_utf8_lossy(&body);
    let prefix = "xalb_client_tls_negotiation_error_count_total{load_balancer=\"edge\",listener=\"edge:443\"} ";
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no {prefix} in /metrics"))
        .parse()
        .unwrap()
}

#[test]
fn sni_chooses_the_certificate_and_alpn_the_protocol() {
    let c = certs("sni");
    let log = c.pki.dir.join("access.log");
    let (bed, _b, d) = bed(&config(
        &certificates(&c.pki.dir, &["default", "api", "wild"]),
        &format!(
            "\n[access_log]\nenabled = true\npath = {:?}\n",
            log.display().to_string()
        ),
    ));
    let (api, wild, default) = (c.api.clone(), c.wild.clone(), c.default.clone());
    in_ns(&bed.client, async move || {
        let client = TlsClient::new(Opts::default());
        for (sni, want, what) in [
            ("api.example.com", &api, "exact name"),
            ("API.example.com", &api, "names are case-insensitive"),
            ("www.example.com", &wild, "one-label wildcard"),
            (
                "a.b.example.com",
                &default,
                "a wildcard covers one label only",
            ),
            ("example.com", &default, "nor the bare parent"),
            ("other.test", &default, "no match: the default"),
        ] {
            let s = client.connect(https(), sni).await.unwrap();
            assert_eq!(client.seen().as_ref(), Some(want), "{sni}: {what}");
            let r = tls::get(s, sni, "/sni").await.unwrap();
            assert_eq!(r.status, 200, "{sni}");
        }
        // No SNI at all: the default.
        let no_sni = TlsClient::new(Opts {
            sni: false,
            ..Opts::default()
        });
        no_sni.connect(https(), "api.example.com").await.unwrap();
        assert_eq!(no_sni.seen().as_ref(), Some(&default));

        // ALPN: h2 when offered, HTTP/1.1 when not; the same forwarding
        // headers either way.
        for (offer, agreed) in [
            (vec!["h2", "http/1.1"], Some("h2")),
            (vec!["http/1.1"], Some("http/1.1")),
            (vec![], None),
        ] {
            let client = TlsClient::new(Opts {
                alpn: offer.clone(),
                ..Opts::default()
            });
            let s = client.connect(https(), "api.example.com").await.unwrap();
            assert_eq!(tls::alpn(&s).as_deref(), agreed, "{offer:?}");
            let r = tls::get(s, "api.example.com", "/alpn").await.unwrap();
            assert_eq!(r.status, 200);
            assert_eq!(r.seen("x-forwarded-proto"), ["https"], "{offer:?}");
            assert_eq!(r.seen("x-forwarded-port"), ["443"], "{offer:?}");
            assert_eq!(r.seen("x-forwarded-for"), ["10.231.0.2"], "{offer:?}");
        }
    })
    .unwrap();

    // The access log names each request's TLS as the ALB's does.
    d.stop().unwrap();
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let alpn: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["request"].as_str().unwrap().contains("/alpn"))
        .collect();
    assert_eq!(alpn.len(), 3);
    for (entry, kind) in alpn.iter().zip(["h2", "https", "https"]) {
        assert_eq!(entry["type"], kind, "{entry}");
        assert_eq!(entry["ssl_protocol"], "TLSv1.3", "{entry}");
        assert_eq!(entry["ssl_cipher"], "TLS_AES_128_GCM_SHA256", "{entry}");
        assert!(
            entry["request"]
                .as_str()
                .unwrap()
                .starts_with("GET https://api.example.com"),
            "{entry}"
        );
    }
}

#[test]
fn curl_verifies_what_sni_chooses_over_http2() {
    let c = certs("curl");
    let (bed, _b, _d) = bed(&config(
        &certificates(&c.pki.dir, &["default", "api", "wild"]),
        "",
    ));
    // curl verifies the chain against the CA and the name against SNI's
    // choice, over HTTP/2.
    let ca = c.pki.ca_file();
    for host in ["api.example.com", "www.example.com"] {
        let out = bed
            .client
            .command("curl")
            .args(["-sS", "--http2", "--cacert"])
            .arg(&ca)
            .args(["--resolve", &format!("{host}:443:10.231.0.10")])
            .args(["-w", "\n%{http_version} %{response_code}"])
            .arg(format!("https://{host}/curl"))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{host}: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.ends_with("\n2 200"), "{host}: {stdout}");
        assert!(stdout.contains("GET /curl"), "{stdout}");
    }
}

#[test]
fn each_policy_enforces_its_versions_and_groups() {
    let c = certs("policy");
    let certs = certificates(&c.pki.dir, &["default"]);
    let tls12_only = || Opts {
        versions: vec![&rustls::version::TLS12],
        ..Opts::default()
    };
    let tls13_only = || Opts {
        versions: vec![&rustls::version::TLS13],
        ..Opts::default()
    };
    let mlkem_only = || Opts {
        versions: vec![&rustls::version::TLS13],
        kx_groups: Some(vec![rustls::crypto::aws_lc_rs::kx_group::X25519MLKEM768]),
        ..Opts::default()
    };
    // (policy, TLS 1.2 client, TLS 1.3 client, ML-KEM-only client)
    for (policy, v12, v13, pq) in [
        ("ELBSecurityPolicy-TLS13-1-2-2021-06", true, true, false),
        ("ELBSecurityPolicy-TLS13-1-3-2021-06", false, true, false),
        ("ELBSecurityPolicy-FS-1-2-Res-2020-10", true, false, false),
        (
            "ELBSecurityPolicy-TLS13-1-2-Res-PQ-2025-09",
            true,
            true,
            true,
        ),
    ] {
        let (bed, _b, _d) = bed(&config(&certs, &format!("ssl_policy = {policy:?}")));
        let results = in_ns(&bed.client, async move || {
            let mut out = Vec::new();
            for (opts, want) in [(tls12_only(), v12), (tls13_only(), v13), (mlkem_only(), pq)] {
                let client = TlsClient::new(opts);
                let got = match client.connect(https(), "default.test").await {
                    Ok(s) => {
                        let v = tls::version(&s);
                        let r = tls::get(s, "default.test", "/policy").await.unwrap();
                        assert_eq!(r.status, 200);
                        Some(v)
                    }
                    Err(_) => None,
                };
                out.push((got.is_some(), want, got));
            }
            out
        })
        .unwrap();
        for (i, (ok, want, version)) in results.iter().enumerate() {
            assert_eq!(ok, want, "{policy}: client {i} ({version:?})");
        }
        let refused = results.iter().filter(|r| !r.0).count() as u64;
        assert_eq!(negotiation_errors(&bed), refused, "{policy}: counted");
    }
}

#[test]
fn a_returning_client_resumes_its_session() {
    let c = certs("resume");
    let (bed, _b, _d) = bed(&config(&certificates(&c.pki.dir, &["default"]), ""));
    in_ns(&bed.client, async move || {
        for versions in [vec![&rustls::version::TLS13], vec![&rustls::version::TLS12]] {
            let client = TlsClient::new(Opts {
                versions: versions.clone(),
                ..Opts::default()
            });
            let first = client.connect(https(), "default.test").await.unwrap();
            assert!(!tls::resumed(&first));
            // TLS 1.3 tickets arrive after the handshake: a request makes
            // the client read them.
            assert_eq!(
                tls::get(first, "default.test", "/1").await.unwrap().status,
                200
            );
            let second = client.connect(https(), "default.test").await.unwrap();
            assert!(tls::resumed(&second), "{versions:?}: full handshake again");
            assert_eq!(
                tls::get(second, "default.test", "/2").await.unwrap().status,
                200
            );
        }
    })
    .unwrap();
}

#[test]
fn mutual_tls_verify_admits_the_trust_stores_clients_only() {
    let c = certs("mtls-verify");
    let stranger = Pki::new("mtls-stranger").unwrap();
    let cfg = config(
        &certificates(&c.pki.dir, &["default"]),
        &format!(
            "mutual_authentication = {{ mode = \"verify\", trust_store = {:?} }}",
            c.pki.ca_file().display().to_string()
        ),
    );
    let (bed, _b, _d) = bed(&cfg);
    let good = c.pki.client("client-a").unwrap();
    let bad = stranger.client("intruder").unwrap();
    let with = |cert: Option<ClientCert>| {
        TlsClient::new(Opts {
            client_cert: cert,
            ..Opts::default()
        })
    };
    let (good_client, bad_client, none) = (with(Some(good)), with(Some(bad)), with(None));
    let replies = in_ns(&bed.client, async move || {
        let s = good_client.connect(https(), "default.test").await.unwrap();
        let ok = tls::get(s, "default.test", "/mtls").await.unwrap();
        // TLS 1.3: a refused client certificate shows at the first read.
        let refused = async |client: &TlsClient| match client.connect(https(), "default.test").await
        {
            Err(_) => true,
            Ok(s) => tls::get(s, "default.test", "/mtls").await.is_err(),
        };
        (ok, refused(&bad_client).await, refused(&none).await)
    })
    .unwrap();
    let (ok, bad_refused, none_refused) = replies;
    assert_eq!(ok.status, 200);
    assert!(bad_refused, "a certificate from another CA is refused");
    assert!(none_refused, "no certificate is refused");
    assert_eq!(ok.seen("x-amzn-mtls-clientcert-serial-number"), ["01A2B3"]);
    assert_eq!(
        ok.seen("x-amzn-mtls-clientcert-subject"),
        ["O=Test Clients,CN=client-a"]
    );
    assert_eq!(
        ok.seen("x-amzn-mtls-clientcert-issuer"),
        ["CN=xalb test CA mtls-verify"]
    );
    let validity = ok.seen("x-amzn-mtls-clientcert-validity");
    assert!(validity[0].starts_with("NotBefore=") && validity[0].contains("Z;NotAfter="));
    let leaf = &ok.seen("x-amzn-mtls-clientcert-leaf")[0];
    assert!(
        leaf.starts_with("-----BEGIN%20CERTIFICATE-----%0A"),
        "{leaf}"
    );
    assert_eq!(negotiation_errors(&bed), 2);
}

#[test]
fn mutual_tls_passthrough_hands_the_chain_to_targets_and_drops_forgeries() {
    let c = certs("mtls-pass");
    let cfg = config(
        &certificates(&c.pki.dir, &["default"]),
        "mutual_authentication = { mode = \"passthrough\" }",
    );
    let (bed, _b, _d) = bed(&cfg);
    let anyone = Pki::new("mtls-anyone")
        .unwrap()
        .client("self-made")
        .unwrap();
    let with_cert = TlsClient::new(Opts {
        client_cert: Some(anyone),
        ..Opts::default()
    });
    let without = TlsClient::new(Opts::default());
    let (a, b) = in_ns(&bed.client, async move || {
        let s = with_cert.connect(https(), "default.test").await.unwrap();
        let a = tls::get(s, "default.test", "/pass").await.unwrap();
        // A client without a certificate is served, and what it claims in
        // the header is not passed on.
        let s = without.connect(https(), "default.test").await.unwrap();
        let io = hyper_util::rt::TokioIo::new(s);
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        let req = http::Request::get("/forged")
            .header("host", "default.test")
            .header("x-amzn-mtls-clientcert", "forged")
            .header("x-amzn-mtls-clientcert-subject", "CN=admin")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        use http_body_util::BodyExt;
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (a, String::from_utf8_lossy(&body).into_owned())
    })
    .unwrap();
    assert_eq!(a.status, 200);
    let chain = &a.seen("x-amzn-mtls-clientcert")[0];
    assert!(
        chain.starts_with("-----BEGIN%20CERTIFICATE-----%0A"),
        "{chain}"
    );
    assert!(
        a.seen("x-amzn-mtls-clientcert-subject").is_empty(),
        "verify-mode headers only"
    );
    assert!(b.contains("GET /forged"), "{b}");
    assert!(
        !b.to_ascii_lowercase().contains("x-amzn-mtls"),
        "forged headers reached the target: {b}"
    );
}

#[test]
fn http_redirects_to_https_end_to_end() {
    let c = certs("redirect");
    let (bed, _b, _d) = bed(&config(&certificates(&c.pki.dir, &["default", "api"]), ""));
    let ca = c.pki.ca_file();
    // curl follows the 301 from HTTP to HTTPS and verifies the certificate.
    let out = bed
        .client
        .command("curl")
        .args(["-sS", "-L", "--cacert"])
        .arg(&ca)
        .args(["--resolve", "api.example.com:80:10.231.0.10"])
        .args(["--resolve", "api.example.com:443:10.231.0.10"])
        .args(["-w", "\n%{num_redirects} %{url_effective} %{response_code}"])
        .arg("http://api.example.com/page?x=1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.ends_with("\n1 https://api.example.com/page?x=1 200"),
        "{stdout}"
    );
    assert!(stdout.contains("x-forwarded-proto: https"), "{stdout}");
}

#[test]
fn bad_handshakes_are_counted_and_disturb_no_one() {
    let c = certs("bad");
    let (bed, _b, _d) = bed(&config(&certificates(&c.pki.dir, &["default"]), ""));
    let (plain, junk, big, stalled_closed, during) = in_ns(&bed.client, async move || {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        async fn exchange(bytes: &[u8]) -> Vec<u8> {
            let mut s = tokio::net::TcpStream::connect(https()).await.unwrap();
            let _ = s.write_all(bytes).await;
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out).await;
            out
        }
        // A plaintext request: a TLS alert back, never an HTTP response.
        let plain = exchange(b"GET / HTTP/1.1\r\nhost: default.test\r\n\r\n").await;
        // A handshake record holding junk.
        let junk = exchange(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5]).await;
        // A ClientHello claiming 16 MiB.
        let mut huge = vec![0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0xff, 0xff, 0xff];
        huge.resize(5 + 0x4000, 0);
        let big = exchange(&huge).await;
        // A client that connects and says nothing: closed at the handshake
        // timeout, and meanwhile others are served.
        let mut stalled = tokio::net::TcpStream::connect(https()).await.unwrap();
        let client = TlsClient::new(Opts::default());
        let s = client.connect(https(), "default.test").await.unwrap();
        let during = tls::get(s, "default.test", "/meanwhile")
            .await
            .unwrap()
            .status;
        let mut rest = Vec::new();
        let closed = stalled.read_to_end(&mut rest).await.is_ok() && rest.is_empty();
        (plain, junk, big, closed, during)
    })
    .unwrap();
    for (what, answer) in [("plaintext", &plain), ("junk", &junk), ("oversized", &big)] {
        assert!(
            !String::from_utf8_lossy(answer).contains("HTTP/1.1"),
            "{what}: {answer:?}"
        );
        // Nothing, or a TLS alert record (content type 21).
        assert!(answer.is_empty() || answer[0] == 21, "{what}: {answer:?}");
    }
    assert!(stalled_closed, "a stalled handshake is closed");
    assert_eq!(during, 200);
    assert_eq!(negotiation_errors(&bed), 4);
}

#[test]
fn new_certificates_apply_on_reload_with_no_failed_handshake() {
    let c = certs("rotate");
    let (bed, _b, _d) = bed(&config(&certificates(&c.pki.dir, &["default"]), ""));
    let old = c.default.clone();
    // A client keeps making new connections while the files change and the
    // configuration is reloaded, until it has made 20 with the new
    // certificate (at most 20,000 in all).
    let done = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let done2 = done.clone();
    let load = bed
        .client
        .spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async move {
                    // Full handshakes: a resumed one shows no certificate.
                    let client = TlsClient::new(Opts {
                        resume: false,
                        ..Opts::default()
                    });
                    let (mut ok, mut failed, mut seen, mut with_new) =
                        (0u32, Vec::new(), Vec::new(), 0);
                    while ok + (failed.len() as u32) < 20_000 && with_new < 20 {
                        match client.connect(https(), "default.test").await {
                            Ok(s) => match tls::get(s, "default.test", "/rotate").await {
                                Ok(r) if r.status == 200 => {
                                    ok += 1;
                                    done2.store(ok, std::sync::atomic::Ordering::Relaxed);
                                }
                                other => failed.push(format!("{other:?}")),
                            },
                            Err(e) => failed.push(e.to_string()),
                        }
                        let cert = client.seen();
                        if seen.last() != cert.as_ref() {
                            seen.extend(cert);
                        }
                        if seen.len() > 1 {
                            with_new += 1;
                        }
                    }
                    (ok, failed, seen)
                })
        })
        .unwrap();
    wait_for(
        "handshakes before the rotation",
        Duration::from_secs(60),
        || {
            let n = done.load(std::sync::atomic::Ordering::Relaxed);
            (n >= 20).then_some(()).ok_or_else(|| format!("{n} so far"))
        },
    );
    let new = c
        .pki
        .server("default", &["default.test"], &rcgen::PKCS_ECDSA_P384_SHA384)
        .unwrap();
    assert_eq!(admin_post(&bed, "/reload").status, 200);
    let (ok, failed, seen) = load.join().unwrap();
    assert!(
        failed.is_empty(),
        "{} of {} failed: {:?}",
        failed.len(),
        ok as usize + failed.len(),
        &failed[..failed.len().min(3)]
    );
    assert_eq!(seen, [old, new], "the old certificate, then the new one");
    assert_eq!(negotiation_errors(&bed), 0);
}

/// HTTP/2 frames written and read by hand, for clients no library would be.
mod h2raw {
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const GOAWAY: u8 = 0x7;
    pub const CONTINUATION: u8 = 0x9;
    pub const END_STREAM: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;

    pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// The preface and an empty SETTINGS.
    pub fn preface() -> Vec<u8> {
        let mut b = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        b.extend(frame(SETTINGS, 0, 0, &[]));
        b
    }

    /// HPACK for GET https://default.test/: indexed :method, :scheme,
    /// :path, and :authority as a literal without indexing.
    pub fn get_block() -> Vec<u8> {
        let mut b = vec![0x82, 0x87, 0x84, 0x01, 12];
        b.extend_from_slice(b"default.test");
        b
    }

    /// Reads one frame: (type, flags, stream, payload); `None` at the end.
    pub async fn read<R: AsyncRead + Unpin>(r: &mut R) -> Option<(u8, u8, u32, Vec<u8>)> {
        let mut head = [0u8; 9];
        r.read_exact(&mut head).await.ok()?;
        let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0; len];
        r.read_exact(&mut payload).await.ok()?;
        Some((head[3], head[4], stream, payload))
    }

    /// Frames until a GOAWAY (its error code) or the end of the connection
    /// (`None`).
    pub async fn goaway<R: AsyncRead + Unpin>(r: &mut R) -> Option<u32> {
        while let Some((kind, _, _, p)) = read(r).await {
            if kind == GOAWAY && p.len() >= 8 {
                return Some(u32::from_be_bytes([p[4], p[5], p[6], p[7]]));
            }
        }
        None
    }

    pub async fn send<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> bool {
        w.write_all(bytes).await.is_ok() && w.flush().await.is_ok()
    }
}

#[test]
fn http2_over_tls_has_its_abuse_limits() {
    use h2raw::*;
    let c = certs("h2-limits");
    let (bed, _b, _d) = bed(&config(&certificates(&c.pki.dir, &["default"]), ""));
    let h2 = || {
        TlsClient::new(Opts {
            alpn: vec!["h2"],
            ..Opts::default()
        })
    };
    let (settings, oversized, flood, rapid, after) = in_ns(&bed.client, async move || {
        // The server's SETTINGS: 128 concurrent streams, a 64 KiB header
        // list.
        let mut s = h2().connect(https(), "default.test").await.unwrap();
        send(&mut s, &preface()).await;
        let (kind, _, _, p) = read(&mut s).await.unwrap();
        assert_eq!(kind, SETTINGS);
        let settings: Vec<(u16, u32)> = p
            .chunks(6)
            .map(|c| {
                (
                    u16::from_be_bytes([c[0], c[1]]),
                    u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
                )
            })
            .collect();

        // A header list over the limit is refused with 431 by hyper's
        // client, the connection left usable.
        let s = h2().connect(https(), "default.test").await.unwrap();
        let (mut send_req, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(s),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let big = "x".repeat(70 * 1024);
        let req = http::Request::get("https://default.test/big-header")
            .header("x-big", big)
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let oversized = send_req
            .send_request(req)
            .await
            .map(|r| r.status().as_u16());

        // CONTINUATION flood: one header block that never ends, at most
        // 4 MiB of it; the server gives up long before.
        let mut s = h2().connect(https(), "default.test").await.unwrap();
        send(&mut s, &preface()).await;
        send(&mut s, &frame(HEADERS, 0, 1, &get_block())).await;
        let chunk = frame(CONTINUATION, 0, 1, &[0x82; 16_384]);
        let mut sent = 0;
        while sent < 256 && send(&mut s, &chunk).await {
            sent += 1;
        }
        let (mut r, _w) = tokio::io::split(s);
        let flood = (goaway(&mut r).await, sent);

        // Rapid reset: streams opened and reset at once, up to 1,000.
        let mut s = h2().connect(https(), "default.test").await.unwrap();
        send(&mut s, &preface()).await;
        let mut burst = Vec::new();
        for i in 0..1000u32 {
            let id = 2 * i + 1;
            burst.extend(frame(HEADERS, END_HEADERS | END_STREAM, id, &get_block()));
            burst.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes()));
        }
        send(&mut s, &burst).await;
        let (mut r, _w) = tokio::io::split(s);
        let rapid = goaway(&mut r).await;

        // Others are served meanwhile and after.
        let s = h2().connect(https(), "default.test").await.unwrap();
        let after = tls::get(s, "default.test", "/after").await.unwrap().status;
        (settings, oversized, flood, rapid, after)
    })
    .unwrap();
    assert!(
        settings.contains(&(0x3, 128)),
        "MAX_CONCURRENT_STREAMS: {settings:?}"
    );
    assert!(
        settings.contains(&(0x6, 65_536)),
        "MAX_HEADER_LIST_SIZE: {settings:?}"
    );
    assert_eq!(oversized.ok(), Some(431));
    let (code, sent) = flood;
    assert!(
        code.is_some() || sent < 256,
        "CONTINUATION flood went unanswered"
    );
    assert!(sent < 256, "the server read 4 MiB of one header block");
    // ENHANCE_YOUR_CALM.
    assert_eq!(rapid, Some(0xb), "rapid reset");
    assert_eq!(after, 200);
}
