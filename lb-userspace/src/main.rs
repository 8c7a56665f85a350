//! `xalb`: the command line. Errors end here (anyhow); the library uses typed errors.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use xalb::kernel::XdpModeChoice;

#[derive(Parser)]
#[command(
    name = "xalb",
    version,
    about = "An ALB-style load balancer with an XDP security-group layer"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Parse and validate a configuration file; print a summary.
    Check {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Run the load balancer: attach XDP, enforce security groups, serve.
    Run {
        #[arg(short, long)]
        config: PathBuf,
        /// XDP attach mode: native (driver), generic (skb), or auto (native, else generic).
        #[arg(long, value_enum, default_value = "auto")]
        xdp_mode: XdpModeChoice,
        /// Seconds between counter logs (0 = off).
        #[arg(long, default_value_t = 10)]
        stats_interval: u64,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Check { config } => match xalb::config::load(&config) {
            Ok(cfg) => match xalb::kernel::compile(&cfg) {
                Ok(_) => {
                    println!("{}: OK", config.display());
                    println!("{}", cfg.summary());
                    Ok(())
                }
                Err(e) => Err(anyhow::anyhow!("{}: {e}", config.display())),
            },
            Err(e) => Err(e.into()),
        },
        Cmd::Run {
            config,
            xdp_mode,
            stats_interval,
        } => xalb::daemon::run(xalb::daemon::RunOptions {
            config,
            xdp_mode,
            stats_interval: Duration::from_secs(stats_interval),
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xalb: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
