//! The `xalb run` process: configuration in, kernel half attached, signals
//! handled, counters reported.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info};

use crate::config;
use crate::proxy;

/// How long in-flight requests may take to finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
use crate::kernel::{self, counters::CounterRow, Datapath, XdpModeChoice};

pub struct RunOptions {
    pub config: PathBuf,
    pub xdp_mode: XdpModeChoice,
    /// How often non-zero counter changes are logged; zero disables.
    pub stats_interval: Duration,
}

pub fn run(opts: RunOptions) -> Result<()> {
    let cfg = config::load(&opts.config)?;
    let kcfg = kernel::compile(&cfg).context("configuration does not fit the kernel tables")?;
    let host_errors = kernel::host::check(&cfg);
    if !host_errors.is_empty() {
        let lines: Vec<String> = host_errors.iter().map(|e| e.to_string()).collect();
        bail!(
            "the host does not match the configuration:\n  {}",
            lines.join("\n  ")
        );
    }

    let plan = proxy::runtime::plan(&cfg);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // Bind every listener before touching the kernel: a port in use is a
    // clear error at start, with nothing attached.
    let listeners = {
        let _guard = rt.enter();
        plan.bindings
            .iter()
            .map(|b| proxy::server::bind(b.addr))
            .collect::<Result<Vec<_>, _>>()?
    };

    let mut dp = Datapath::load()?;
    dp.apply(&kcfg)?;
    dp.attach_all(
        cfg.load_balancers
            .iter()
            .flat_map(|lb| lb.interfaces.iter().map(String::as_str)),
        opts.xdp_mode,
    )?;
    let lb_names: Vec<String> = cfg
        .load_balancers
        .iter()
        .map(|lb| lb.name.clone())
        .collect();
    info!(balancers = lb_names.len(), "xalb running");
    // A line a supervisor or test can wait for.
    println!("xalb: ready");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut servers = Vec::new();
    for (listener, b) in listeners.into_iter().zip(plan.bindings) {
        info!(addr = %b.addr, lb = %b.ctx.lb, "HTTP listener");
        servers.push(rt.spawn(proxy::server::serve(
            listener,
            b.ctx,
            plan.shared.clone(),
            b.limits,
            stop_rx.clone(),
        )));
    }
    let checkers: Vec<_> = {
        let _guard = rt.enter();
        plan.shared.groups.values().flat_map(|g| crate::targets::health::spawn_checkers(g.clone())).collect()
    };
    rt.block_on(serve(&dp, &lb_names, opts.stats_interval))?;
    for c in checkers {
        c.abort();
    }
    // Stop accepting; connections finish what is in flight, within a bound.
    let _ = stop_tx.send(true);
    rt.block_on(async {
        for s in servers {
            let _ = s.await;
        }
    });
    rt.shutdown_timeout(SHUTDOWN_GRACE);

    match dp.maps.read_counters(&lb_names) {
        Ok(rows) => {
            for row in rows.iter().filter(|r| r.packets > 0) {
                println!("{row}");
            }
        }
        Err(e) => error!(error = %e, "cannot read the XDP counters"),
    }
    drop(dp);
    info!("XDP detached; exiting");
    Ok(())
}

async fn serve(dp: &Datapath, lb_names: &[String], stats_interval: Duration) -> Result<()> {
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let period = if stats_interval.is_zero() {
        Duration::from_secs(3600 * 24 * 365)
    } else {
        stats_interval
    };
    let mut tick = tokio::time::interval(period);
    tick.tick().await;
    let mut last: Vec<CounterRow> = Vec::new();
    loop {
        tokio::select! {
            _ = sigint.recv() => { info!("SIGINT: shutting down"); break }
            _ = sigterm.recv() => { info!("SIGTERM: shutting down"); break }
            _ = sighup.recv() => { info!("SIGHUP: configuration reload is not supported yet; keeping the running state") }
            _ = tick.tick(), if !stats_interval.is_zero() => {
                if let Ok(rows) = dp.maps.read_counters(lb_names) {
                    for row in rows.iter().filter(|r| r.packets > 0) {
                        let before = last.iter().find(|l| l.lb == row.lb && l.reason == row.reason).map_or(0, |l| l.packets);
                        if row.packets != before {
                            info!(lb = row.lb.as_deref().unwrap_or("-"), reason = row.reason.name(), packets = row.packets, bytes = row.bytes, "xdp counter");
                        }
                    }
                    last = rows;
                }
            }
        }
    }
    Ok(())
}
