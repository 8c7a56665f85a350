//! Building the XDP object and the daemon that embeds it.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Result;

use crate::{run_status, toolchain, workspace_root};

/// Where `lb-userspace/build.rs` expects the XDP object.
pub fn ebpf_object() -> PathBuf {
    workspace_root().join("target/bpfel-unknown-none/release/lb-ebpf")
}

pub fn ebpf() -> Result<()> {
    toolchain::ensure_nightly_rust_src()?;
    toolchain::ensure_bpf_linker()?;
    let root = workspace_root();
    // The eBPF crate's own .cargo/config.toml selects the target and build-std.
    run_status(
        Command::new("cargo")
            .current_dir(root.join("lb-ebpf"))
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("RUSTC")
            .env_remove("RUSTC_WRAPPER")
            .env("CARGO_TARGET_DIR", root.join("target"))
            .args(["+nightly", "build", "--release"]),
    )?;
    eprintln!("xtask: XDP object at {}", ebpf_object().display());
    Ok(())
}

/// Build the XDP object, then the `xalb` binary alone in release mode (not
/// the test crate's demo, whose fat-LTO link would double the time); returns
/// its path.
pub fn release_daemon() -> Result<PathBuf> {
    ebpf()?;
    run_status(
        Command::new(env!("CARGO"))
            .current_dir(workspace_root())
            .args([
                "build",
                "--release",
                "--package",
                "lb-userspace",
                "--bin",
                "xalb",
            ]),
    )?;
    Ok(workspace_root().join("target/release/xalb"))
}

/// Build the XDP object, then `xalb`; returns the daemon's path.
pub fn all(release: bool) -> Result<PathBuf> {
    ebpf()?;
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(workspace_root()).args([
        "build",
        "--package",
        "lb-userspace",
        "--package",
        "xalb-tests",
    ]);
    if release {
        cmd.arg("--release");
    }
    run_status(&mut cmd)?;
    let profile = if release { "release" } else { "debug" };
    Ok(workspace_root().join("target").join(profile).join("xalb"))
}
