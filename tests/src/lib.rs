//! Test bed for xalb: network namespaces joined by veth pairs, code run inside a
//! namespace, crafted packets, and the `xalb` daemon as a child process.
//!
//! Everything made here has a unique name and is removed on drop, also when a
//! test fails. XDP is only ever attached inside namespaces made here.

pub mod acceptor;
pub mod admin;
pub mod bed;
pub mod bpffs;
pub mod browser;
pub mod daemon;
pub mod grpc;
pub mod http;
pub mod interrupt;
pub mod netns;
pub mod packet;
pub mod recording;
pub mod scripted;
pub mod tcp;
pub mod tcp_bed;
pub mod tls;
pub mod xdp_pass;

use std::path::PathBuf;

/// The `xalb` binary of this build (`cargo xtask test` builds it first).
pub fn xalb_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("XALB_BIN") {
        return PathBuf::from(p);
    }
    // Test executables live in target/<profile>/deps; the binary one level up.
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join("xalb");
    assert!(
        bin.exists(),
        "{} not found: run `cargo xtask test` (it builds xalb first)",
        bin.display()
    );
    bin
}

/// Tests that need root (namespaces, BPF) say so clearly instead of failing
/// obscurely.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "this test needs root (network namespaces and BPF)");
}
