//! Fuzzing: the cargo-fuzz targets in `fuzz/` (their assertions are in
//! `xalb::fuzzing`), built and run by nightly's cargo.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use crate::{build, run_status, toolchain, workspace_root};

/// Every target in `fuzz/Cargo.toml`.
pub const TARGETS: [&str; 6] = [
    "h1_head",
    "h1_framing",
    "h1_chunked",
    "h1_guard",
    "config",
    "router",
];

/// Seconds per target in `cargo xtask test`: enough to replay the corpus
/// and try some new inputs, short enough for every test run.
pub const SMOKE_SECONDS: u64 = 8;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// How long to fuzz each target.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// One target [default: all of them, one after the other].
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(TARGETS))]
    target: Option<String>,
}

pub fn run(args: Args) -> Result<()> {
    match args.target {
        Some(t) => fuzz(&[t.as_str()], args.seconds),
        None => fuzz(&TARGETS, args.seconds),
    }
}

/// Fuzzes each of `targets` for `seconds`; an error names the first one
/// that crashed (libFuzzer stops at the first crash and saves its input).
pub fn fuzz(targets: &[&str], seconds: u64) -> Result<()> {
    toolchain::ensure_cargo_fuzz()?;
    // The daemon's build script embeds the XDP object; while it is missing
    // the script reruns on every build, and lb-userspace with it.
    build::ebpf()?;
    let dir = workspace_root().join("fuzz");
    run_status(cargo_fuzz(&dir).arg("build"))?;
    for target in targets {
        // libFuzzer adds what it finds to the first corpus directory: a
        // scratch one under fuzz/target, kept between runs, so the
        // committed seeds in fuzz/corpus only change by hand.
        let scratch = dir.join("target/corpus").join(target);
        std::fs::create_dir_all(&scratch)
            .with_context(|| format!("creating {}", scratch.display()))?;
        eprintln!("xtask: fuzzing {target} for {seconds} s");
        run_status(
            cargo_fuzz(&dir)
                .args(["run", target])
                .arg(&scratch)
                .arg(dir.join("corpus").join(target))
                .arg("--")
                .arg(format!("-max_total_time={seconds}"))
                .arg("-print_final_stats=1"),
        )
        .with_context(|| {
            format!("fuzz target {target} failed; its input is saved in fuzz/artifacts/{target}/")
        })?;
    }
    Ok(())
}

/// `cargo +nightly fuzz` in `dir`, building into `dir/target` so that the
/// instrumented builds never touch the workspace's own target directory.
fn cargo_fuzz(dir: &Path) -> Command {
    let mut cmd = Command::new("cargo");
    // What `cargo run` set for xtask itself: some build scripts (ring's)
    // track CARGO_MANIFEST_DIR, so a build from here would not be fresh
    // for one run by hand, and each would rebuild everything.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_MANIFEST_")
            || [
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
            ]
            .contains(&&*key)
        {
            cmd.env_remove(&*key);
        }
    }
    cmd.current_dir(dir)
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC")
        .env_remove("RUSTC_WRAPPER")
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .args(["+nightly", "fuzz"]);
    cmd
}
