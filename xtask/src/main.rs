//! Project automation: `cargo xtask <command>`.
//!
//! Every command installs or builds what it needs itself, idempotently, so the
//! README's two commands work on a fresh machine.

mod bench;
mod build;
mod fuzz;
mod mutants;
mod package;
mod testrun;
mod toolchain;

use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "Build, test and demo xalb")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install the eBPF toolchain if missing and build the XDP object (release).
    BuildEbpf,
    /// Build the XDP object and the `xalb` daemon that embeds it.
    Build {
        /// Build the daemon in release mode.
        #[arg(long)]
        release: bool,
    },
    /// Build, then run `xalb` with the given arguments.
    Run {
        #[arg(long)]
        release: bool,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build everything, check formatting and clippy, run the whole test
    /// suite with cargo-nextest (needs root: namespaces, XDP), then the doc
    /// tests, then each fuzz target for a few seconds.
    Test {
        /// Test filters for `cargo nextest run` (and `list`): test names,
        /// `-E 'EXPRESSION'`, `-p PACKAGE`, `--test BINARY`. Options of the
        /// run itself go in NEXTEST_* variables (NEXTEST_NO_CAPTURE=1).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Mutation testing of the core modules with cargo-mutants (installed
    /// if missing): caught, missed, timeout and unviable mutants per file,
    /// the missed ones listed in target/mutants/missed.txt; fails when a
    /// must-be-complete file has a missed mutant. Takes hours whole; narrow
    /// it with --file or --in-diff.
    Mutants(mutants::Args),
    /// Build everything and run the seed scenario in network namespaces.
    Demo,
    /// Build the Debian package, target/debian/xalb_<version>_<arch>.deb,
    /// from packaging/debian and the release binary.
    Package(package::Args),
    /// Run the fuzz targets in fuzz/ (cargo-fuzz on nightly; installs
    /// cargo-fuzz if missing); a crash's input is saved in fuzz/artifacts.
    Fuzz(fuzz::Args),
    /// Benchmark xalb against nginx, HAProxy, no balancer, nftables and
    /// xdp-filter in network namespaces (needs root; installs its tools).
    Bench(bench::Args),
    /// The keep-alive targets over many bench runs: each run's verdicts and
    /// margins, and how often each target was met (reads target/bench).
    BenchTally(bench::tally::Args),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::BuildEbpf => build::ebpf(),
        Cmd::Build { release } => build::all(release).map(|_| ()),
        Cmd::Run { release, args } => {
            let bin = build::all(release)?;
            run_status(Command::new(bin).args(args))
        }
        Cmd::Test { args } => test(args),
        Cmd::Bench(args) => bench::run(args),
        Cmd::BenchTally(args) => bench::tally::run(args),
        Cmd::Fuzz(args) => fuzz::run(args),
        Cmd::Mutants(args) => mutants::run(args),
        Cmd::Package(args) => package::run(args),
        Cmd::Demo => {
            let bin = build::all(true)?;
            toolchain::ensure_apt(&["iproute2", "ethtool", "curl", "openssl"])?;
            run_status(
                Command::new(env!("CARGO"))
                    .args([
                        "run",
                        "--quiet",
                        "--release",
                        "--package",
                        "xalb-tests",
                        "--bin",
                        "xalb-demo",
                        "--",
                        "--xalb",
                    ])
                    .arg(bin),
            )
        }
    }
}

fn test(args: Vec<String>) -> Result<()> {
    build::all(false)?;
    // The habits the project keeps: formatted, and clippy-clean with the
    // workspace lints (documented unsafe blocks among them).
    toolchain::ensure_fmt_and_clippy()?;
    let cargo = || {
        let mut c = Command::new(env!("CARGO"));
        c.current_dir(workspace_root());
        c
    };
    run_status(cargo().args(["fmt", "--all", "--check"]))?;
    run_status(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    let filtered = !args.is_empty();
    // curl and openssl: real TLS clients for the HTTPS tests; chromium and
    // its driver: the dashboard's headless browser test; systemd (for
    // systemd-analyze) and logrotate: the package's unit and snippet are
    // checked by the tools that read them; so are the bench's nginx and
    // HAProxy configurations, by nginx (with its stream module) and HAProxy.
    toolchain::ensure_apt(&[
        "iproute2",
        "ethtool",
        "curl",
        "openssl",
        "chromium",
        "chromium-driver",
        "systemd",
        "logrotate",
        "nginx",
        "libnginx-mod-stream",
        "haproxy",
    ])?;
    // The package's tests install the .deb in throwaway Debian roots (one
    // of them booted by systemd-nspawn): all are made first, unless the
    // run is narrowed to other tests (the release build takes minutes).
    if !filtered || args.iter().any(|a| a.contains("package")) {
        package::build()?;
        package::test_root()?;
    }
    // Every test in a process of its own, under the per-test timeouts and
    // the rules on what may run beside what in .config/nextest.toml. The
    // workspace includes xtask itself: its unit tests cover the bench's
    // parsing, plans and report, and this closing line.
    toolchain::ensure_cargo_nextest()?;
    let run = testrun::nextest_run(&args)?;
    // nextest runs no doc tests; cargo does, after.
    let doc = testrun::cargo_test_doc(&args)?;
    let (passed, failed, skipped) = (
        run.passed + doc.passed,
        run.failed + doc.failed,
        run.skipped + doc.skipped,
    );
    println!("tests: {passed} passed, {failed} failed, {skipped} skipped");
    if !run.ok || !doc.ok {
        bail!("the tests failed");
    }
    if passed == 0 {
        bail!("no test ran");
    }
    // A run narrowed to some tests is about those tests only.
    if filtered {
        return Ok(());
    }
    fuzz::fuzz(&fuzz::TARGETS, fuzz::SMOKE_SECONDS)
}

/// Runs `cmd` to completion and returns its stdout; a failure carries the
/// command and its stderr.
pub(crate) fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("failed to start {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `cmd` with its output going where ours goes; fails unless it
/// succeeds.
pub(crate) fn run_status(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("failed to start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

pub(crate) fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}
