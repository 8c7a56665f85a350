//! The L7 scenario, one load kind at a time: for each kind, every balancer
//! in turn, each round starting one further on (A B C D, B C D A, ...), each
//! started fresh for its run and warmed up before it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use super::cleanup::Stopped;
use super::load::{self, Kind, LoadOpts};
use super::peers::{self, Configs, Running, System};
use super::report::{L7Sample, Report};
use super::topology::Topology;

pub struct L7Plan {
    pub systems: Vec<System>,
    pub kinds: Vec<Kind>,
    pub repeat: u32,
    /// Seconds of unrecorded keep-alive load before measuring (0: none).
    pub warmup: u64,
    /// The binary `System::XalbB` runs.
    pub xalb_b: Option<PathBuf>,
}

pub fn run(
    topo: &Topology,
    dir: &Path,
    xalb_bin: &Path,
    configs: &Configs,
    plan: &L7Plan,
    opts: &LoadOpts,
    report: &mut Report,
) -> Result<()> {
    // Kind-major: every system's runs of one kind are taken back to back, a
    // few seconds apart, rather than a whole slot of all kinds apart. The
    // host's fast and slow spells last from seconds to minutes and move every
    // system's figures by up to a fifth, so runs compared with each other must
    // be close together in time.
    for &kind in &plan.kinds {
        for rep in 0..plan.repeat {
            // Each round starts one system further on, so no system always
            // runs first (right after the previous round's direct run) or last.
            let n = plan.systems.len().max(1);
            let order = (0..n).map(|i| plan.systems[(i + rep as usize) % n]);
            for system in order {
                // The direct baseline has no TLS listener.
                if kind.tls() && system == System::Direct {
                    continue;
                }
                super::progress(format_args!(
                    "{}, round {}/{}: {}",
                    kind.scenario(),
                    rep + 1,
                    plan.repeat,
                    system.name()
                ));
                let bin = match (system, &plan.xalb_b) {
                    (System::XalbB, Some(b)) => b.as_path(),
                    _ => xalb_bin,
                };
                let r = match peers::start(system, topo, dir, bin, configs, &configs.xalb) {
                    Ok(r) => r,
                    Err(e) => {
                        report.note(format!(
                            "{}, {} (round {}): did not start: {e:#}",
                            kind.scenario(),
                            system.name(),
                            rep + 1
                        ));
                        continue;
                    }
                };
                if let Err(e) = warm_up(&r, topo, opts, plan.warmup, dir) {
                    report.note(format!(
                        "{}, {} (round {}): warm-up failed: {e:#}",
                        kind.scenario(),
                        system.name(),
                        rep + 1
                    ));
                }
                match measure(&r, kind, topo, opts, dir) {
                    Ok(s) => {
                        super::progress(format_args!(
                            "  {:.0} req/s, {} errors",
                            s.load.rps, s.load.errors
                        ));
                        report.add_l7(kind.scenario(), system.name(), system.is_peer(), s)
                    }
                    Err(e) => report.note(format!(
                        "{}, {} (round {}): failed: {e:#}",
                        kind.scenario(),
                        system.name(),
                        rep + 1
                    )),
                }
                note_slow_stop(system, r.stop(), report);
            }
        }
    }
    Ok(())
}

/// A balancer that needs SIGKILL after SIGTERM (with no client connection
/// open) is worth knowing about; said once per system.
pub fn note_slow_stop(system: System, stopped: Option<Stopped>, report: &mut Report) {
    if let Some(s) = stopped {
        if !s.in_time {
            report.note_once(format!(
                "{} did not exit within {:?} of SIGTERM after the load had ended (no client \
                 connection open); the bench SIGKILLed it",
                system.name(),
                peers::STOP_GRACE
            ));
        }
    }
}

/// Unrecorded keep-alive load: fills connection pools and caches so the
/// first measured run is not the cold one.
pub fn warm_up(r: &Running, topo: &Topology, opts: &LoadOpts, secs: u64, dir: &Path) -> Result<()> {
    if secs == 0 {
        return Ok(());
    }
    let o = LoadOpts {
        duration: secs,
        ..*opts
    };
    load::run(Kind::KeepAlive, &topo.client, r.http1, &o, dir)?;
    Ok(())
}

/// One load run against `r`, with the balancer's CPU time per request and
/// its peak RSS.
pub fn measure(
    r: &Running,
    kind: Kind,
    topo: &Topology,
    opts: &LoadOpts,
    dir: &Path,
) -> Result<L7Sample> {
    let Some(target) = r.target(kind) else {
        bail!("{} is not served here", kind.scenario());
    };
    let pid = r.proc.as_ref().map(|p| p.pid());
    let before = pid.map(load::sample_group);
    let res = load::run(kind, &topo.client, target, opts, dir)?;
    let after = pid.map(load::sample_group);
    if let Some(p) = &r.proc {
        if p.exited() {
            bail!(
                "{} exited during the run; its output:\n{}",
                p.name,
                p.log_tail()
            );
        }
    }
    let cpu = match (before, after) {
        (Some(b), Some(a)) if res.requests > 0 => Some((a.cpu_s - b.cpu_s) / res.requests as f64),
        _ => None,
    };
    Ok(L7Sample {
        load: res,
        cpu_s_per_req: cpu,
        peak_rss_kib: after.map(|a| a.hwm_kib),
    })
}
