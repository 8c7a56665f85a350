//! Ctrl-C in the middle of `cargo xtask demo` leaves nothing behind: the
//! demo stops its xalb, unmounts the bpf filesystem its security groups are
//! pinned in (which detaches XDP) and deletes its namespaces.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Namespaces whose name carries `pid` (the demo names them
/// `xalb-<role>-<pid>-<n>`).
fn namespaces_of(pid: u32) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("xalb-") && n.contains(&format!("-{pid}-")))
        .map(str::to_string)
        .collect()
}

fn pids_in(ns: &str) -> Vec<u32> {
    let out = Command::new("ip")
        .args(["netns", "pids", ns])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

#[test]
fn an_interrupted_demo_stops_xalb_and_removes_its_namespaces() {
    xalb_tests::require_root();
    let mut demo = Command::new(env!("CARGO_BIN_EXE_xalb-demo"))
        .arg("--xalb")
        .arg(xalb_tests::xalb_bin())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = demo.id();
    // On any failure below, neither the demo nor what it made outlives the
    // test (after a pass there is nothing left to find).
    struct Guard(u32);
    impl Drop for Guard {
        fn drop(&mut self) {
            // SAFETY: kill with the pid of our child.
            unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
            for ns in namespaces_of(self.0) {
                for p in pids_in(&ns) {
                    // SAFETY: a process inside a namespace this demo made.
                    unsafe { libc::kill(p as i32, libc::SIGTERM) };
                }
                std::thread::sleep(Duration::from_millis(500));
                let _ = Command::new("ip").args(["netns", "del", &ns]).output();
            }
            let _ = std::fs::remove_dir_all(
                std::env::temp_dir().join(format!("xalb-state-{}-0", self.0)),
            );
            let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
            for m in mounts.lines().filter_map(|l| l.split(' ').nth(1)) {
                if m.contains("xalb-bpffs-") && m.contains(&format!("-{}-", self.0)) {
                    let _ = Command::new("umount").args(["-l", m]).output();
                    let _ = std::fs::remove_dir(m);
                }
            }
        }
    }
    let _guard = Guard(pid);
    let mut lines = BufReader::new(demo.stdout.take().unwrap()).lines();
    // Until xalb runs with XDP attached.
    loop {
        let line = lines
            .next()
            .expect("the demo ended before starting xalb")
            .unwrap();
        if line.starts_with("-- xalb run") {
            break;
        }
    }
    let namespaces = namespaces_of(pid);
    assert_eq!(namespaces.len(), 4, "{namespaces:?}");
    let balancer = namespaces
        .iter()
        .find(|n| n.starts_with("xalb-balancer-"))
        .unwrap();
    let daemons = pids_in(balancer);
    assert!(!daemons.is_empty(), "no xalb process in {balancer}");

    // Only the demo gets the signal (a terminal would signal xalb too).
    // SAFETY: kill with the pid of our child.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let status = xalb_tests::admin::wait_for(
        "the demo to exit after SIGINT",
        Duration::from_secs(60),
        || {
            demo.try_wait()
                .unwrap()
                .ok_or_else(|| "still running".to_string())
        },
    );
    assert_eq!(
        status.code(),
        Some(130),
        "exit status after SIGINT: {status}"
    );
    assert_eq!(namespaces_of(pid), Vec::<String>::new(), "namespaces left");
    // xalb's state directory, made for the demo's run in the temp directory.
    let states: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("xalb-state-{pid}-")))
        .collect();
    assert!(states.is_empty(), "state directories left: {states:?}");
    // The bpffs of its balancer namespace, mounted for xalb's pins.
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let left: Vec<&str> = mounts
        .lines()
        .filter(|l| l.contains("xalb-bpffs-") && l.contains(&format!("-{pid}-")))
        .collect();
    assert!(left.is_empty(), "bpf filesystems left mounted: {left:?}");
    // Its exit may still have to be reaped by init, the demo being gone.
    let gone = |p: u32| !std::path::Path::new(&format!("/proc/{p}")).exists();
    xalb_tests::admin::wait_for(
        "every xalb of the demo to be gone after the interrupt",
        Duration::from_secs(30),
        || {
            let left: Vec<&u32> = daemons.iter().filter(|&&p| !gone(p)).collect();
            match left.is_empty() {
                true => Ok(()),
                false => Err(format!("xalb still runs: {left:?}")),
            }
        },
    );
}
