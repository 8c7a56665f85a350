//! `xalb check` as a user runs it: exit codes and what it prints.

use std::path::{Path, PathBuf};
use std::process::Command;

fn check(path: &Path) -> (i32, String, String) {
    let out = Command::new(xalb_tests::xalb_bin())
        .args(["check", "-c"])
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn examples() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    std::fs::read_dir(root.join("examples"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect()
}

#[test]
fn every_example_passes_with_a_summary() {
    let files = examples();
    assert!(!files.is_empty());
    for f in files {
        let (code, stdout, stderr) = check(&f);
        assert_eq!(code, 0, "{}: {stderr}", f.display());
        assert!(stdout.contains("OK"), "{stdout}");
        assert!(
            stdout.contains("web-alb"),
            "the summary names the balancer: {stdout}"
        );
    }
}

#[test]
fn a_broken_file_exits_1_naming_file_line_column_and_field() {
    let dir = std::env::temp_dir().join(format!("xalb-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("broken.toml");
    let seed = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/seed-alb.toml"),
    )
    .unwrap();
    std::fs::write(&f, seed.replace("interval = \"5s\"", "interval = \"1s\"")).unwrap();
    let (code, stdout, stderr) = check(&f);
    assert_eq!(code, 1, "{stdout}{stderr}");
    let line = seed
        .lines()
        .position(|l| l.contains("interval = \"5s\""))
        .unwrap()
        + 1;
    assert!(stderr.contains(&format!("broken.toml:{line}:")), "{stderr}");
    assert!(stderr.contains("interval"), "{stderr}");
    assert!(stderr.contains("5s"), "says what is allowed: {stderr}");

    std::fs::write(&f, "[[load_balancer]\nname = 'x'").unwrap();
    let (code, _, stderr) = check(&f);
    assert_eq!(code, 1);
    assert!(stderr.contains("broken.toml:1:"), "{stderr}");

    let (code, _, stderr) = check(&dir.join("missing.toml"));
    assert_eq!(code, 1);
    assert!(stderr.contains("missing.toml"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An HTTPS listener's certificates are checked: a mismatched pair fails,
/// a good one passes with its names and expiry in the summary, and one
/// expiring within 30 days passes with a warning.
#[test]
fn an_https_listener_is_checked_with_its_certificates() {
    let dir = std::env::temp_dir().join(format!("xalb-check-https-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Certificate A with the key of B: a mismatched pair.
    let a = rcgen::generate_simple_self_signed(vec!["a.example".to_string()]).unwrap();
    let b = rcgen::generate_simple_self_signed(vec!["b.example".to_string()]).unwrap();
    std::fs::write(dir.join("a.pem"), a.cert.pem()).unwrap();
    std::fs::write(dir.join("b-key.pem"), b.key_pair.serialize_pem()).unwrap();
    let seed = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/seed-alb.toml"),
    )
    .unwrap();
    let text = format!(
        "{seed}\n[[listener]]\nload_balancer = \"web-alb\"\nprotocol = \"HTTPS\"\nport = 443\n\
         certificates = [{{ cert = \"a.pem\", key = \"b-key.pem\" }}]\n\
         default_action = {{ type = \"forward\", target_group = \"web\" }}\n"
    );
    let f = dir.join("https.toml");
    std::fs::write(&f, &text).unwrap();
    let line = |needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;

    let (code, stdout, stderr) = check(&f);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert_eq!(stderr.lines().count(), 1, "the mismatch only: {stderr}");
    let mismatch = format!(
        "https.toml:{}:41: listener \"web-alb:443\".certificates[0].key: key {} does not match certificate {}",
        line("b-key.pem"),
        dir.join("b-key.pem").display(),
        dir.join("a.pem").display()
    );
    assert!(stderr.contains(&mismatch), "{stderr}");
    assert!(!stdout.contains("OK"), "{stdout}");

    // B's own pair passes; the summary shows the policy, names and expiry.
    std::fs::write(dir.join("b.pem"), b.cert.pem()).unwrap();
    std::fs::write(&f, text.replace("a.pem", "b.pem")).unwrap();
    let (code, stdout, stderr) = check(&f);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("web-alb:443: HTTPS, 0 rules, default: forward to web"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ssl_policy ELBSecurityPolicy-TLS13-1-2-2021-06 (TLS 1.2-1.3)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("b.pem (default): b.example; expires "),
        "{stdout}"
    );
    assert!(!stdout.contains("warning:"), "{stdout}");

    // Ten days left: still served, with a warning naming the place.
    let mut params = rcgen::CertificateParams::new(vec!["soon.example".to_string()]).unwrap();
    let now = std::time::SystemTime::now();
    params.not_before = (now - std::time::Duration::from_secs(86_400)).into();
    params.not_after = (now + std::time::Duration::from_secs(10 * 86_400 + 3600)).into();
    let key = rcgen::KeyPair::generate().unwrap();
    std::fs::write(dir.join("a.pem"), params.self_signed(&key).unwrap().pem()).unwrap();
    std::fs::write(dir.join("b-key.pem"), key.serialize_pem()).unwrap();
    std::fs::write(&f, &text).unwrap();
    let (code, stdout, stderr) = check(&f);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let warning = stdout
        .lines()
        .find(|l| l.starts_with("warning: "))
        .unwrap_or_else(|| panic!("no warning: {stdout}"));
    let at = format!("warning: {}:{}:", f.display(), line("b-key.pem"));
    let what = format!(
        ": listener \"web-alb:443\".certificates[0].cert: {}: the certificate expires on ",
        dir.join("a.pem").display()
    );
    assert!(
        warning.starts_with(&at) && warning.contains(&what),
        "{warning}"
    );
    assert!(warning.ends_with(", in 10 days"), "{warning}");

    // A TCP listener is served, by the kernel, from a TCP target group
    // only.
    let tcp = format!(
        "{seed}\n[[listener]]\nload_balancer = \"web-alb\"\nprotocol = \"TCP\"\nport = 5432\n\
         default_action = {{ type = \"forward\", target_group = \"web\" }}\n"
    );
    std::fs::write(&f, &tcp).unwrap();
    let (code, stdout, stderr) = check(&f);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains("listener \"web-alb:5432\".default_action.target_group: target group \"web\" is HTTP; a TCP listener is forwarded by the kernel and needs a TCP target group"),
        "{stderr}"
    );
    let tcp = format!(
        "{tcp}\n[[target_group]]\nname = \"db\"\nprotocol = \"TCP\"\nport = 5432\n\
         targets = [{{ address = \"10.0.1.20\" }}]\n"
    )
    .replace(
        "port = 5432\ndefault_action = { type = \"forward\", target_group = \"web\" }",
        "port = 5432\ndefault_action = { type = \"forward\", target_group = \"db\" }",
    );
    std::fs::write(&f, &tcp).unwrap();
    let (code, stdout, stderr) = check(&f);
    assert_eq!(
        code, 0,
        "a TCP listener to a TCP group is accepted: {stdout}{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn version_names_the_revision_and_profile() {
    let out = Command::new(xalb_tests::xalb_bin())
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let rest = text
        .trim_end()
        .strip_prefix(&format!("xalb {} (git ", env!("CARGO_PKG_VERSION")))
        .unwrap_or_else(|| panic!("{text}"));
    let (rev, profile) = rest.strip_suffix(')').unwrap().split_once(", ").unwrap();
    assert!(
        rev == "unknown" || (rev.len() == 12 && rev.bytes().all(|b| b.is_ascii_hexdigit())),
        "{rev}"
    );
    assert!(["debug", "release"].contains(&profile), "{profile}");
}

/// `-c`, else `XALB_CONFIG`, else /etc/xalb/xalb.toml.
#[test]
fn the_configuration_comes_from_the_flag_the_environment_or_etc() {
    let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/seed-alb.toml");
    let tcp = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/tcp-listener.toml");
    let run = |args: &[&std::ffi::OsStr], env: Option<&Path>| {
        let mut cmd = Command::new(xalb_tests::xalb_bin());
        cmd.arg("check").args(args).env_remove("XALB_CONFIG");
        if let Some(e) = env {
            cmd.env("XALB_CONFIG", e);
        }
        let out = cmd.output().unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let from_env = run(&[], Some(&seed));
    assert!(
        from_env.starts_with(&format!("{}: OK", seed.display())),
        "{from_env}"
    );
    let flag_wins = run(&["-c".as_ref(), tcp.as_os_str()], Some(&seed));
    assert!(
        flag_wins.starts_with(&format!("{}: OK", tcp.display())),
        "{flag_wins}"
    );
    // Neither: the packaged location, read or not.
    let neither = run(&[], None);
    assert!(
        neither.starts_with("/etc/xalb/xalb.toml: OK")
            || neither.starts_with("xalb: error: /etc/xalb/xalb.toml: "),
        "{neither}"
    );
}
