//! Embeds the XDP object built by `cargo xtask build-ebpf`, so `xalb` is one
//! self-contained binary. Without the object (a plain `cargo build` before the
//! eBPF toolchain exists) an empty placeholder is embedded and `xalb run` says
//! how to build it; `xalb check` works either way. Also records the build's
//! git revision and profile for `xalb --version`.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let object = manifest.join("../target/bpfel-unknown-none/release/lb-ebpf");
    println!("cargo:rerun-if-changed={}", object.display());
    println!("cargo:rerun-if-env-changed=XALB_EBPF_OBJECT");
    let object = std::env::var_os("XALB_EBPF_OBJECT")
        .map(PathBuf::from)
        .unwrap_or(object);
    let embedded = if object.exists() {
        object
    } else {
        let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("lb-ebpf.missing");
        std::fs::write(&out, b"").unwrap();
        out
    };
    println!("cargo:rustc-env=XALB_EBPF_OBJECT={}", embedded.display());
    version(&manifest);
}

/// `XALB_GIT_REVISION` (12 hex digits, or `unknown` outside a git checkout)
/// and `XALB_BUILD_PROFILE` (`debug`, `release`).
fn version(manifest: &std::path::Path) {
    let revision = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(manifest)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=XALB_GIT_REVISION={revision}");
    let profile = std::env::var("PROFILE").unwrap_or_else(|_| "unknown".to_string());
    println!("cargo:rustc-env=XALB_BUILD_PROFILE={profile}");
    // A new commit is a new revision; the files that say so live in .git.
    let git = manifest.join("../.git");
    for f in ["HEAD", "refs/heads", "packed-refs"] {
        let f = git.join(f);
        if f.exists() {
            println!("cargo:rerun-if-changed={}", f.display());
        }
    }
}
