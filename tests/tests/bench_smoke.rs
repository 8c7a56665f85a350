//! `cargo xtask bench --smoke`: the benchmark harness runs end to end in a few
//! seconds, prints a table with xalb and the direct baseline serving, writes
//! its JSON, and leaves no namespace or mount behind. The full benchmark is
//! not a test.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The xtask binary built by `cargo xtask` (it runs this suite). Running it
/// directly, not through cargo, because cargo would wait for the build lock
/// that the running `cargo test` holds.
fn xtask_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join("xtask");
    assert!(
        bin.exists(),
        "{} not found: run the suite with `cargo xtask test`",
        bin.display()
    );
    bin
}

/// req/s of the table row for `system` in `scenario`.
fn rps(table: &str, scenario: &str, system: &str) -> Option<f64> {
    table.lines().find_map(|l| {
        let cells: Vec<&str> = l.split('|').map(str::trim).collect();
        // ["", scenario, system, req/s, ...]
        if cells.len() > 4 && cells[1] == scenario && cells[2] == system {
            cells[3].replace(',', "").parse().ok()
        } else {
            None
        }
    })
}

/// What a `xtask bench` run left: its stdout, and the JSON of the one run
/// it wrote. Asserts that it succeeded within `limit` and left no namespace
/// or mount behind.
struct Run {
    stdout: String,
    stderr: String,
    json: serde_json::Value,
}

fn bench(args: &[&str], limit: Duration) -> Run {
    xalb_tests::require_root();
    let json_dir = std::env::temp_dir().join(format!(
        "xbench-smoke-json-{}-{}",
        std::process::id(),
        args.join("-")
    ));
    let started = Instant::now();
    let child = Command::new(xtask_bin())
        .arg("bench")
        .args(args)
        .arg("--xalb")
        .arg(xalb_tests::xalb_bin())
        .arg("--json-dir")
        .arg(&json_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting xtask bench");
    let pid = child.id();
    // The harness bounds every step itself; this only guards against a hang.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(limit) {
        Ok(out) => out.expect("waiting for xtask bench"),
        Err(_) => {
            // SAFETY: SIGTERM to the child we started; it cleans up and exits.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            panic!("xtask bench {args:?} did not finish within {limit:?}");
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("xtask bench {args:?} took {:?}", started.elapsed());
    assert!(
        out.status.success(),
        "xtask bench {args:?} failed ({}):\n{stderr}\n{stdout}",
        out.status
    );

    let json: Vec<_> = std::fs::read_dir(&json_dir)
        .expect("the JSON directory")
        .flatten()
        .collect();
    assert_eq!(json.len(), 1, "one JSON file expected");
    let text = std::fs::read_to_string(json[0].path()).expect("reading the JSON");
    let _ = std::fs::remove_dir_all(&json_dir);
    let json = serde_json::from_str(&text).expect("the JSON parses");

    let list = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let prefix = format!("xbench-{pid}-");
    let left: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .map(str::to_string)
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    // Nor the bpffs xalb pinned its security groups in.
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let mounted: Vec<&str> = mounts
        .lines()
        .filter(|l| l.contains(&format!("xbench-{pid}")))
        .collect();
    assert!(mounted.is_empty(), "mounts left behind: {mounted:?}");
    Run {
        stdout,
        stderr,
        json,
    }
}

#[test]
fn bench_smoke_prints_a_table_and_cleans_up() {
    let Run { stdout, stderr, .. } = bench(&["--smoke"], Duration::from_secs(180));
    for system in ["xalb", "direct (no balancer)"] {
        let keep_alive = rps(&stdout, "HTTP/1.1 keep-alive", system)
            .unwrap_or_else(|| panic!("no keep-alive row for {system} in:\n{stdout}\n{stderr}"));
        assert!(keep_alive > 0.0, "{system}: {keep_alive} req/s:\n{stdout}");
        // The fixed-rate run is paced: served, and never above what was
        // offered (30,000 req/s by default), unlike the saturating runs.
        let fixed = rps(&stdout, "fixed rate, HTTP/1.1 keep-alive", system)
            .unwrap_or_else(|| panic!("no fixed-rate row for {system} in:\n{stdout}\n{stderr}"));
        assert!(
            fixed > 0.0 && fixed <= 30_000.0 * 1.05,
            "{system}: {fixed} req/s at a fixed 30,000:\n{stdout}"
        );
    }
}

/// The TCP scenario's smoke: new connections and long streams through
/// every system. Each peer and direct row has connections or bytes and a
/// CPU figure; xalb's rows, native and generic XDP, have figures and
/// their mode; IPVS's says why it is missing.
#[test]
fn bench_smoke_of_the_tcp_listeners_measures_every_row_or_says_why_not() {
    let Run { stdout, json, .. } =
        bench(&["--smoke", "--scenarios", "tcp"], Duration::from_secs(180));
    let rows = json["tcp"].as_array().expect("tcp rows in the JSON");
    for scenario in ["TCP, new connection per request", "TCP, 4 long streams"] {
        let row = |system: &str| {
            rows.iter()
                .find(|r| r["scenario"] == scenario && r["system"] == system)
                .unwrap_or_else(|| panic!("no {scenario:?} row for {system}:\n{stdout}"))
        };
        for system in [
            "direct (no balancer)",
            "nftables NAT (dnat numgen)",
            "haproxy (mode tcp)",
            "nginx (stream)",
        ] {
            let m = &row(system)["median"];
            assert!(
                m["units"].as_u64().is_some_and(|n| n > 0),
                "{scenario}, {system}: nothing moved:\n{m}\n{stdout}"
            );
            assert!(
                m["host_cpu_per_unit"].as_f64().is_some_and(|c| c > 0.0),
                "{scenario}, {system}: no CPU figure:\n{m}"
            );
            assert!(m["rate"].as_f64().is_some_and(|r| r > 0.0), "{m}");
        }
        // xalb's kernel path, in each XDP mode, moves connections and
        // bytes, and says which mode it ran in.
        for (system, mode) in [
            ("xalb (kernel path)", "native"),
            ("xalb (kernel path, generic XDP)", "generic"),
        ] {
            let m = &row(system)["median"];
            assert!(
                m["units"].as_u64().is_some_and(|n| n > 0),
                "{scenario}, {system}: nothing moved:\n{}\n{stdout}",
                row(system)
            );
            assert!(
                m["xdp"].as_str().is_some_and(|x| x.starts_with(mode)),
                "{scenario}, {system}: XDP mode {}",
                m["xdp"]
            );
        }
        let ipvs = row("IPVS")["unavailable"]
            .as_str()
            .unwrap_or("")
            .to_string();
        assert!(ipvs.contains("ip_vs"), "{scenario}, IPVS: {ipvs:?}");
    }
}
