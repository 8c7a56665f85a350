//! Embeds the XDP object built by `cargo xtask build-ebpf`, so `xalb` is one
//! self-contained binary. Without the object (a plain `cargo build` before the
//! eBPF toolchain exists) an empty placeholder is embedded and `xalb run` says
//! how to build it; `xalb check` works either way.

use std::path::PathBuf;

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
}
