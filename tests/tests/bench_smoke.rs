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

#[test]
fn bench_smoke_prints_a_table_and_cleans_up() {
    xalb_tests::require_root();
    let json_dir = std::env::temp_dir().join(format!("xbench-smoke-json-{}", std::process::id()));
    let started = Instant::now();
    let child = Command::new(xtask_bin())
        .args(["bench", "--smoke", "--xalb"])
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
    let out = match rx.recv_timeout(Duration::from_secs(180)) {
        Ok(out) => out.expect("waiting for xtask bench"),
        Err(_) => {
            // SAFETY: SIGTERM to the child we started; it cleans up and exits.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            panic!("xtask bench --smoke did not finish within 180 s");
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("xtask bench --smoke took {:?}", started.elapsed());
    assert!(
        out.status.success(),
        "xtask bench --smoke failed ({}):\n{stderr}\n{stdout}",
        out.status
    );

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

    let json: Vec<_> = std::fs::read_dir(&json_dir)
        .expect("the JSON directory")
        .flatten()
        .collect();
    let _ = std::fs::remove_dir_all(&json_dir);
    assert_eq!(json.len(), 1, "one JSON file expected");

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
}
