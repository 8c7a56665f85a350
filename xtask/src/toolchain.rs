//! Idempotent installation of what the build and the tests need: nightly's
//! rust-src, bpf-linker built on the nightly toolchain's own LLVM, cargo-fuzz,
//! and Debian packages.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::{output, run_status};

const BPF_LINKER_VERSION: &str = "0.13.0";
const CARGO_FUZZ_VERSION: &str = "0.13.2";
const CARGO_NEXTEST_VERSION: &str = "0.9.143";
const CARGO_MUTANTS_VERSION: &str = "27.1.0";

fn nightly_sysroot() -> Result<PathBuf> {
    let s = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))
        .context("the nightly toolchain is required (rustup toolchain install nightly)")?;
    Ok(PathBuf::from(s.trim()))
}

pub fn ensure_nightly_rust_src() -> Result<()> {
    let sysroot = nightly_sysroot()?;
    if sysroot.join("lib/rustlib/src/rust/library/core").is_dir() {
        return Ok(());
    }
    eprintln!("xtask: installing rust-src for nightly");
    run_status(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        "nightly",
    ]))
}

/// rustfmt and clippy on the toolchain that builds the workspace, for the
/// checks `cargo xtask test` runs first.
pub fn ensure_fmt_and_clippy() -> Result<()> {
    let has = |tool: &str| {
        Command::new(env!("CARGO"))
            .args([tool, "--version"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if has("fmt") && has("clippy") {
        return Ok(());
    }
    eprintln!("xtask: installing rustfmt and clippy");
    run_status(Command::new("rustup").args(["component", "add", "rustfmt", "clippy"]))
}

/// The LLVM major version the nightly compiler was built with; bpf-linker must match it.
fn nightly_llvm_major() -> Result<String> {
    let vv = output(Command::new("rustc").args(["+nightly", "-vV"]))?;
    let ver = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .context("rustc +nightly -vV printed no LLVM version")?;
    Ok(ver.split('.').next().unwrap_or(ver).to_string())
}

fn cargo_bin_dir() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
        .join("bin")
}

pub fn ensure_bpf_linker() -> Result<()> {
    let sysroot = nightly_sysroot()?;
    let llvm = nightly_llvm_major()?;
    let bin = cargo_bin_dir().join("bpf-linker");
    if bin.exists() {
        // A linker built against another nightly's LLVM fails at load time.
        if Command::new(&bin)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Ok(());
        }
        eprintln!("xtask: existing bpf-linker does not run; rebuilding it");
    }
    // The linker links against `libLLVM.so`; the toolchain ships only the versioned name.
    let lib_dir = sysroot.join("lib");
    let versioned = std::fs::read_dir(&lib_dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so."))
        .with_context(|| format!("no libLLVM.so.* in {}", lib_dir.display()))?;
    let link = lib_dir.join("libLLVM.so");
    if !link.exists() {
        std::os::unix::fs::symlink(&versioned, &link)
            .with_context(|| format!("creating {}", link.display()))?;
    }
    eprintln!("xtask: building bpf-linker {BPF_LINKER_VERSION} against nightly's LLVM {llvm} (takes a minute or two)");
    run_status(
        Command::new("cargo")
            .env("LLVM_PREFIX", &sysroot)
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--locked",
            ])
            .args([
                "--no-default-features",
                "--features",
                &format!("llvm-{llvm}"),
            ]),
    )
}

/// Whether Debian package `pkg` is installed.
pub fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// cargo-fuzz, which builds the fuzz targets with libFuzzer and runs them;
/// any version already installed that runs will do.
pub fn ensure_cargo_fuzz() -> Result<()> {
    nightly_sysroot()?;
    let bin = cargo_bin_dir().join("cargo-fuzz");
    if Command::new(&bin)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-fuzz {CARGO_FUZZ_VERSION}");
    run_status(Command::new("cargo").args([
        "install",
        "cargo-fuzz",
        "--version",
        CARGO_FUZZ_VERSION,
        "--locked",
    ]))
}

/// Whether `cargo SUBCOMMAND --version` runs: the cargo plugin is there
/// and works, wherever it was installed (the machine's image puts
/// cargo-nextest in /usr/local/bin, `cargo install` in ~/.cargo/bin).
fn cargo_plugin_runs(subcommand: &str) -> bool {
    Command::new(env!("CARGO"))
        .args([subcommand, "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `cargo install NAME --version VERSION --locked`, unless `cargo SUBCOMMAND`
/// already runs (any version that runs will do).
fn ensure_cargo_plugin(subcommand: &str, name: &str, version: &str, why: &str) -> Result<()> {
    if cargo_plugin_runs(subcommand) {
        return Ok(());
    }
    // crates.io has sources only, so it is built here: a few minutes.
    eprintln!("xtask: installing {name} {version} ({why}; a few minutes)");
    run_status(Command::new(env!("CARGO")).args([
        "install",
        name,
        "--version",
        version,
        "--locked",
    ]))
}

/// cargo-nextest, which `cargo xtask test` runs the suite with.
pub fn ensure_cargo_nextest() -> Result<()> {
    ensure_cargo_plugin(
        "nextest",
        "cargo-nextest",
        CARGO_NEXTEST_VERSION,
        "the test runner",
    )
}

/// cargo-mutants, for `cargo xtask mutants`.
pub fn ensure_cargo_mutants() -> Result<()> {
    ensure_cargo_plugin(
        "mutants",
        "cargo-mutants",
        CARGO_MUTANTS_VERSION,
        "mutation testing",
    )
}

/// This process's turn at apt: an exclusive `flock` on a file of xtask's
/// own, released when the file is closed (dropped, or the process ends).
struct AptTurn {
    _locked: std::fs::File,
}

impl AptTurn {
    fn take() -> Result<Self> {
        use std::os::fd::AsRawFd;
        let path = std::env::temp_dir().join("xalb-xtask-apt.lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: a valid open descriptor; flock has no other precondition.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("locking {}", path.display()));
        }
        Ok(Self { _locked: f })
    }
}

/// Install Debian packages that provide the given commands' packages, when missing.
pub fn ensure_apt(packages: &[&str]) -> Result<()> {
    let missing = |packages: &[&str]| -> Vec<String> {
        packages
            .iter()
            .filter(|p| !installed(p))
            .map(|p| p.to_string())
            .collect()
    };
    if missing(packages).is_empty() {
        return Ok(());
    }
    // Two xtask runs at once (tests run in parallel) take turns: `apt-get
    // update` fails at once on the lists lock another one holds (dpkg's
    // lock timeout does not cover it). The second one then finds what the
    // first installed.
    let _turn = AptTurn::take()?;
    let missing = missing(packages);
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing Debian packages: {}", missing.join(" "));
    // And wait for an apt run that is not ours.
    let wait = ["-o", "DPkg::Lock::Timeout=600"];
    run_status(Command::new("apt-get").args(wait).args(["update", "-q"]))?;
    run_status(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(wait)
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing),
    )
}
