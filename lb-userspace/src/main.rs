//! `xalb`: the command line. Errors end here (anyhow); the library uses typed errors.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use xalb::daemon::WorkerAffinity;
use xalb::kernel::XdpModeChoice;

/// See `xalb::memory` for why.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `0.1.0 (git 1a2b3c4, release)`: which build answers.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("XALB_GIT_REVISION"),
    ", ",
    env!("XALB_BUILD_PROFILE"),
    ")"
);

/// Where the configuration is when neither `-c` nor `XALB_CONFIG` says.
const DEFAULT_CONFIG: &str = "/etc/xalb/xalb.toml";

#[derive(Parser)]
#[command(
    name = "xalb",
    version = VERSION,
    about = "An ALB-style load balancer with an XDP security-group layer"
)]
struct Cli {
    /// How application logs (standard error) are written: text, or one JSON
    /// object per line.
    #[arg(long, value_enum, global = true, default_value = "text")]
    log_format: LogFormat,
    /// The least severe level logged (error, warn, info, debug, trace), or
    /// a filter as RUST_LOG takes it; overrides RUST_LOG. Default: RUST_LOG,
    /// else info.
    #[arg(long, global = true)]
    log_level: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Parse and validate a configuration file; print a summary.
    Check {
        /// The configuration file [env: XALB_CONFIG, else /etc/xalb/xalb.toml].
        #[arg(short, long, env = "XALB_CONFIG", default_value = DEFAULT_CONFIG, hide_env = true, hide_default_value = true)]
        config: PathBuf,
    },
    /// Run the load balancer: attach XDP, enforce security groups, serve.
    Run {
        /// The configuration file [env: XALB_CONFIG, else /etc/xalb/xalb.toml].
        #[arg(short, long, env = "XALB_CONFIG", default_value = DEFAULT_CONFIG, hide_env = true, hide_default_value = true)]
        config: PathBuf,
        /// XDP attach mode: native (driver), generic (skb), or auto (native, else generic).
        #[arg(long, value_enum, default_value = "auto")]
        xdp_mode: XdpModeChoice,
        /// Where the workers (one per CPU xalb may use) run: pinned (worker i
        /// stays on the i-th of those CPUs) or any (the scheduler places them).
        #[arg(long, value_enum, default_value = "pinned")]
        worker_affinity: WorkerAffinity,
        /// Seconds between counter logs (0 = off).
        #[arg(long, default_value_t = 10)]
        stats_interval: u64,
        /// Where xalb keeps what must survive a restart (the stickiness
        /// cookie key).
        #[arg(long, default_value = "/var/lib/xalb")]
        state_dir: PathBuf,
        /// Log every XDP verdict on a balancer's packets (target `xalb::xdp`,
        /// INFO). Off, the XDP program carries no logging at all.
        #[arg(long)]
        xdp_log: bool,
        /// The bpf filesystem where the security groups stay pinned when xalb
        /// stops or dies (never mounted by xalb; it must outlive it).
        #[arg(long, default_value = "/sys/fs/bpf")]
        bpffs: PathBuf,
        /// Seconds a stop (SIGTERM) lets requests in flight and WebSocket
        /// tunnels finish before closing them, and a predecessor drains
        /// after a takeover.
        #[arg(long, default_value_t = 10)]
        shutdown_grace: u64,
        /// Take over from the xalb running in this network namespace (same
        /// --state-dir): its listening sockets are handed over, so no
        /// connection is refused, and it drains and exits. With none
        /// running, start as usual.
        #[arg(long)]
        takeover: bool,
    },
    /// Remove what `xalb run` left pinned in this network namespace: XDP
    /// leaves the interfaces and the security groups are no longer enforced.
    Detach {
        /// The state directory `xalb run` used.
        #[arg(long, default_value = "/var/lib/xalb")]
        state_dir: PathBuf,
        /// The bpf filesystem `xalb run` pinned in.
        #[arg(long, default_value = "/sys/fs/bpf")]
        bpffs: PathBuf,
    },
    /// Ask a running xalb to re-read its configuration (as SIGHUP does) and
    /// say whether it was applied.
    Reload {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Show the health of a target group's targets, as `aws elbv2
    /// describe-target-health` does.
    DescribeTargetHealth {
        #[arg(long)]
        target_group: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Print the man page (roff) or a shell's completion script, made from
    /// this command line's own definition (the package installs them).
    Generate {
        #[arg(value_enum)]
        what: Generated,
    },
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Generated {
    Man,
    Bash,
    Zsh,
    Fish,
}

/// Where the running daemon's admin endpoint is.
#[derive(clap::Args)]
struct AdminArgs {
    /// The admin address (default: the configuration's `[admin] listen`, else 127.0.0.1:9901).
    #[arg(long)]
    admin: Option<std::net::SocketAddr>,
    /// The configuration file whose `[admin] listen` to use.
    #[arg(short, long)]
    config: Option<PathBuf>,
}

impl AdminArgs {
    fn addr(&self) -> anyhow::Result<std::net::SocketAddr> {
        if let Some(a) = self.admin {
            return Ok(a);
        }
        match &self.config {
            Some(c) => Ok(xalb::config::load(c)?.admin.listen),
            None => Ok(([127, 0, 0, 1], 9901).into()),
        }
    }
}

/// One request to the admin endpoint; (status, body).
fn admin_request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
) -> anyhow::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .map_err(|e| anyhow::anyhow!("cannot reach xalb's admin endpoint at {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_string()))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = match &cli.log_level {
        Some(level) => tracing_subscriber::EnvFilter::try_new(level).ok(),
        None => tracing_subscriber::EnvFilter::try_from_default_env().ok(),
    }
    .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    let result = match cli.cmd {
        Cmd::Check { config } => check(&config),
        Cmd::Generate { what } => generate(what),
        Cmd::Reload { admin } => admin.addr().and_then(reload),
        Cmd::Detach { state_dir, bpffs } => {
            xalb::daemon::detach(&xalb::daemon::DetachOptions { state_dir, bpffs })
                .map(|lines| {
                    for l in lines {
                        println!("{l}");
                    }
                })
                .map_err(Into::into)
        }
        Cmd::DescribeTargetHealth {
            target_group,
            admin,
        } => admin
            .addr()
            .and_then(|a| describe_target_health(a, &target_group)),
        Cmd::Run {
            config,
            xdp_mode,
            worker_affinity,
            stats_interval,
            state_dir,
            xdp_log,
            bpffs,
            takeover,
            shutdown_grace,
        } => xalb::daemon::run(xalb::daemon::RunOptions {
            config,
            xdp_mode,
            worker_affinity,
            stats_interval: Duration::from_secs(stats_interval),
            state_dir,
            xdp_log,
            bpffs,
            takeover,
            shutdown_grace: Duration::from_secs(shutdown_grace),
        })
        .map_err(|e| match e {
            xalb::daemon::RunError::Apply(xalb::daemon::ApplyError::Config(c))
                if !c.diagnostics().is_empty() =>
            {
                print_diagnostics(c.diagnostics())
            }
            e => e.into(),
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<Reported>() => ExitCode::FAILURE,
        Err(e) => {
            // Every error's message already names its cause.
            eprintln!("xalb: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A failure already printed, line by line; only the exit status is left.
#[derive(Debug, thiserror::Error)]
#[error("reported")]
struct Reported;

/// One `xalb: error:` line per located problem, the way compilers print them.
fn print_diagnostics<T: std::fmt::Display>(located: &[T]) -> anyhow::Error {
    for d in located {
        eprintln!("xalb: error: {d}");
    }
    Reported.into()
}

fn check(config: &std::path::Path) -> anyhow::Result<()> {
    let cfg = match xalb::config::load(config) {
        Ok(cfg) => cfg,
        Err(e) if !e.diagnostics().is_empty() => return Err(print_diagnostics(e.diagnostics())),
        Err(e) => return Err(e.into()),
    };
    xalb::kernel::compile(&cfg, &xalb::kernel::LbSlots::for_config(&cfg))
        .map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))?;
    println!("{}: OK", config.display());
    println!("{}", cfg.summary());
    for w in &cfg.warnings {
        println!("warning: {w}");
    }
    // About the host this runs on, which may not be the balancer's.
    for note in xalb::kernel::host::interface_notes(&cfg) {
        println!("note: {note}");
    }
    Ok(())
}

/// `POST /reload`, printing what was applied, or why nothing was with the
/// same lines `xalb check` prints.
fn reload(addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let (status, body) = admin_request(addr, "POST", "/reload")?;
    if status == 200 {
        let applied: xalb::daemon::Applied = serde_json::from_str(&body)
            .map_err(|e| anyhow::anyhow!("unexpected answer from {addr}: {e}: {body}"))?;
        println!("reloaded: {}", applied.summary);
        return Ok(());
    }
    eprintln!("xalb: the configuration was not reloaded; the running one stays");
    match serde_json::from_str::<xalb::daemon::Refusal>(&body) {
        Ok(r) if !r.errors.is_empty() => Err(print_diagnostics(&r.errors)),
        Ok(r) => Err(anyhow::anyhow!("{}", r.message)),
        Err(_) => Err(anyhow::anyhow!(
            "admin endpoint answered {status}: {}",
            body.trim_end()
        )),
    }
}

fn describe_target_health(addr: std::net::SocketAddr, group: &str) -> anyhow::Result<()> {
    let (status, body) = admin_request(addr, "GET", &format!("/targets?target_group={group}"))?;
    anyhow::ensure!(status == 200, "admin endpoint answered {status}: {body}");
    let reply: xalb::admin::TargetsReply = serde_json::from_str(&body)?;
    anyhow::ensure!(
        !reply.targets.is_empty(),
        "target group {group:?} has no targets (or does not exist)"
    );
    println!(
        "{:<40} {:>5}  {:<10} {:<34} DESCRIPTION",
        "TARGET", "PORT", "STATE", "REASON"
    );
    for t in reply.targets {
        println!(
            "{:<40} {:>5}  {:<10} {:<34} {}",
            t.address, t.port, t.state, t.reason, t.description
        );
    }
    Ok(())
}

fn generate(what: Generated) -> anyhow::Result<()> {
    use clap::CommandFactory;
    use std::io::Write;
    let cmd = Cli::command();
    // Made whole first: a closed pipe is then an error, not a panic.
    let mut text = Vec::new();
    let mut complete = |shell| clap_complete::generate(shell, &mut cmd.clone(), "xalb", &mut text);
    match what {
        Generated::Bash => complete(clap_complete::Shell::Bash),
        Generated::Zsh => complete(clap_complete::Shell::Zsh),
        Generated::Fish => complete(clap_complete::Shell::Fish),
        Generated::Man => clap_mangen::Man::new(cmd).render(&mut text)?,
    }
    std::io::stdout().lock().write_all(&text)?;
    Ok(())
}
