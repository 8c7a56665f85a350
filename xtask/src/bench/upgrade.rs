//! The upgrade scenario: each balancer serves a fixed-length wrk load and,
//! a third of the way in, is upgraded in place the way its operators do it;
//! what counts is the requests that fail.
//!
//! - xalb: a second `xalb run --takeover` with the same state directory and
//!   bpffs takes the listening sockets over; the old process drains and exits.
//! - HAProxy: in master-worker mode (`-W`, as Debian's unit runs it), SIGUSR2
//!   to the master, which re-executes itself with `-sf <old workers> -x
//!   sockpair@N`: the new worker takes the old one's listeners (an implicit
//!   `expose-fd listeners`), the old one finishes and leaves.
//! - nginx: SIGHUP to the master (what `nginx -s reload` sends): new workers
//!   on the master's listening sockets, the old ones finish and leave.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::cleanup::Proc;
use super::load::{self, Kind, LoadOpts};
use super::peers::{self, Configs, Launch, Running, System};
use super::report::{Report, UpgradeSample};
use super::topology::Topology;

pub const SCENARIO: &str = "upgrade under load";

/// The load kinds the scenario can run: wrk's, whose report counts failures
/// by kind.
pub const KINDS: [Kind; 2] = [Kind::ConnPerRequest, Kind::KeepAlive];

pub struct UpgradePlan {
    pub systems: Vec<System>,
    pub kinds: Vec<Kind>,
    pub repeat: u32,
}

/// The row's scenario name for `kind`.
pub fn scenario(kind: Kind) -> String {
    format!("{SCENARIO}, {}", kind.scenario())
}

/// How each system is upgraded, as the report lists it.
pub fn how(system: System) -> &'static str {
    match system {
        System::Xalb | System::XalbB => {
            "xalb run --takeover (same -c, --state-dir and --bpffs), started in the balancer namespace"
        }
        System::Haproxy => {
            "kill -USR2 MASTER   (haproxy -W -db -f haproxy.cfg; the master re-executes itself with -sf OLD -x sockpair@N)"
        }
        System::Nginx => "kill -HUP MASTER   (what nginx -s reload sends)",
        System::Direct => "none",
    }
}

/// When in a `duration`-second load the upgrade starts: a third of the way
/// in, so that a successor slow to start under load still takes over well
/// inside it (xalb's took up to 3.1 s on a loaded 2-core machine).
pub fn upgrade_at(duration: u64) -> Duration {
    Duration::from_millis(duration * 1000 / 3)
}

/// How long the old generation may take to leave once the load has ended
/// and its clients are gone; xalb's drain waits up to 10 s for connections,
/// none of which is left by then.
const OLD_EXIT_GRACE: Duration = Duration::from_secs(15);

/// How often the upgrade's progress is looked at: a scan of /proc, well
/// under a millisecond, so the load barely notices.
const POLL: Duration = Duration::from_millis(20);

pub fn run(
    topo: &Topology,
    dir: &Path,
    xalb_bin: &Path,
    configs: &Configs,
    plan: &UpgradePlan,
    opts: &LoadOpts,
    report: &mut Report,
) -> Result<()> {
    // Kind-major and rotated each round, as in the L7 scenario: a round's
    // systems run seconds apart.
    for &kind in &plan.kinds {
        let name = scenario(kind);
        for rep in 0..plan.repeat {
            let n = plan.systems.len().max(1);
            let order = (0..n).map(|i| plan.systems[(i + rep as usize) % n]);
            for system in order {
                let round = format!("{name}, {} (round {})", system.name(), rep + 1);
                super::progress(format_args!(
                    "{name}, round {}/{}: {}",
                    rep + 1,
                    plan.repeat,
                    system.name()
                ));
                let mut r = match peers::launch(
                    system,
                    Launch::Upgradable,
                    topo,
                    dir,
                    xalb_bin,
                    configs,
                    &configs.xalb,
                ) {
                    Ok(r) => r,
                    Err(e) => {
                        report.note(format!("{round}: did not start: {e:#}"));
                        continue;
                    }
                };
                match measure(system, &mut r, kind, topo, opts, dir) {
                    Ok((s, notes)) => {
                        super::progress(format_args!(
                            "  {:.0} req/s, {} failed; new serving after {}, old gone after {}",
                            s.rps,
                            s.failed.total(),
                            secs(s.switch_s),
                            secs(s.old_gone_s)
                        ));
                        for n in notes {
                            report.note(format!("{round}: {n}"));
                        }
                        report.add_upgrade(&name, system.name(), s);
                    }
                    Err(e) => report.note(format!("{round}: failed: {e:#}")),
                }
                super::l7::note_slow_stop(system, r.stop(), report);
            }
        }
    }
    Ok(())
}

fn secs(v: Option<f64>) -> String {
    v.map_or("never".into(), |v| format!("{v:.2} s"))
}

/// One run: the load, the upgrade in its middle, and the old generation
/// seen leaving. The notes say what went wrong short of failing the run.
fn measure(
    system: System,
    r: &mut Running,
    kind: Kind,
    topo: &Topology,
    opts: &LoadOpts,
    dir: &Path,
) -> Result<(UpgradeSample, Vec<String>)> {
    let wrk = load::spawn_wrk(
        &topo.client,
        r.http1,
        opts,
        kind == Kind::ConnPerRequest,
        dir,
    )?;
    let load_started = Instant::now();
    let at = upgrade_at(opts.duration);
    // A point in the load's schedule, not a wait for an event.
    std::thread::sleep(at);
    let started = Instant::now();
    let up = Upgrade::begin(system, r, topo)?;
    let since = |t: Instant| t.duration_since(started).as_secs_f64();
    let (mut serving, mut old_gone, mut load_ended) = (None, None, None);
    let give_up = load_started + Duration::from_secs(opts.duration) + Duration::from_secs(30);
    loop {
        let now = Instant::now();
        if serving.is_none() && up.serving(r)? {
            serving = Some(now);
        }
        if old_gone.is_none() && up.old_gone(r) {
            old_gone = Some(now);
        }
        if load_ended.is_none() && wrk.exited() {
            load_ended = Some(now);
        }
        let waited_enough = load_ended.is_some_and(|t| now > t + OLD_EXIT_GRACE);
        if (serving.is_some() && old_gone.is_some() && load_ended.is_some())
            || waited_enough
            || now > give_up
        {
            break;
        }
        std::thread::sleep(POLL);
    }
    let (res, failed) = load::finish_wrk(wrk, opts)?;

    let mut notes = Vec::new();
    let load_end = load_started + Duration::from_secs(opts.duration);
    match serving {
        None => bail!(
            "the new generation never served; {}",
            up.describe(r)
        ),
        Some(t) if t > load_end => notes.push(format!(
            "the new generation served only {:.2} s after the upgrade started, after the load had ended",
            since(t)
        )),
        Some(_) => {}
    }
    if old_gone.is_none() {
        notes.push(format!(
            "the old generation was still there {} s after the load ended; {}",
            OLD_EXIT_GRACE.as_secs(),
            up.describe(r)
        ));
    }
    notes.extend(up.finish(r)?);
    Ok((
        UpgradeSample {
            at_s: at.as_secs_f64(),
            switch_s: serving.map(since),
            old_gone_s: old_gone.map(since),
            requests: res.requests,
            rps: res.rps,
            p99_ms: res.p99_ms,
            max_ms: res.max_ms,
            failed,
        },
        notes,
    ))
}

/// An upgrade in progress: what was there before it.
enum Upgrade {
    /// The xalb that hands its sockets over.
    Xalb { old: Proc },
    /// nginx or HAProxy: the master stays, its workers are replaced.
    Workers {
        master: i32,
        old: Vec<u32>,
        /// HAProxy: its master's "Loading success." lines before the reload
        /// (one per worker generation); None for nginx.
        loaded_before: Option<usize>,
    },
}

/// HAProxy's master prints this once a new worker has loaded its
/// configuration and taken the listeners.
const HAPROXY_LOADED: &str = "Loading success.";

fn count_lines(text: &str, needle: &str) -> usize {
    text.lines().filter(|l| l.contains(needle)).count()
}

impl Upgrade {
    fn begin(system: System, r: &mut Running, topo: &Topology) -> Result<Self> {
        if matches!(system, System::Xalb | System::XalbB) {
            return Ok(Upgrade::Xalb {
                old: r.take_over(topo)?,
            });
        }
        let p = r.proc.as_ref().context("no balancer process")?;
        let master = p.pid();
        let old = workers(master);
        if old.is_empty() {
            bail!("{} has no worker processes", p.name);
        }
        let (signal, loaded_before) = match system {
            System::Haproxy => (
                libc::SIGUSR2,
                Some(count_lines(&p.log_text(), HAPROXY_LOADED)),
            ),
            System::Nginx => (libc::SIGHUP, None),
            _ => bail!("{} has no upgrade", system.name()),
        };
        // SAFETY: a signal to the master we started, which has not been
        // reaped (its Proc is alive), so the pid is still its.
        if unsafe { libc::kill(master, signal) } != 0 {
            bail!("signalling {}: {}", p.name, std::io::Error::last_os_error());
        }
        Ok(Upgrade::Workers {
            master,
            old,
            loaded_before,
        })
    }

    /// Whether the new generation serves; an error if it cannot any more.
    fn serving(&self, r: &Running) -> Result<bool> {
        let p = r.proc.as_ref().context("no balancer process")?;
        let up = match self {
            Upgrade::Xalb { .. } => p.log_text().lines().any(|l| l == "xalb: ready"),
            Upgrade::Workers {
                master,
                old,
                loaded_before: Some(before),
            } => {
                count_lines(&p.log_text(), HAPROXY_LOADED) > *before
                    && workers(*master).iter().any(|w| !old.contains(w))
            }
            Upgrade::Workers {
                master,
                old,
                loaded_before: None,
            } => workers(*master).iter().any(|w| !old.contains(w)),
        };
        if !up && p.exited() {
            bail!("{} exited; its output:\n{}", p.name, p.log_tail());
        }
        Ok(up)
    }

    fn old_gone(&self, r: &Running) -> bool {
        match self {
            Upgrade::Xalb { old } => old.exited(),
            Upgrade::Workers { master, old, .. } => {
                let now = workers(*master);
                // A master gone takes its workers along: not an upgrade.
                r.proc.as_ref().is_some_and(|p| !p.exited()) && !old.iter().any(|w| now.contains(w))
            }
        }
    }

    /// What is running now, for a message.
    fn describe(&self, r: &Running) -> String {
        let tail = |p: &Proc| format!("{}'s output:\n{}", p.name, p.log_tail());
        let new = r.proc.as_ref().map(tail).unwrap_or_default();
        match self {
            Upgrade::Xalb { old } => format!("{}\n{new}", tail(old)),
            Upgrade::Workers { master, old, .. } => {
                format!("workers before {old:?}, now {:?}; {new}", workers(*master))
            }
        }
    }

    /// Reaps the old xalb (nginx's and HAProxy's masters reap their own
    /// workers) and says what its log shows of a failed or forced drain.
    fn finish(self, r: &Running) -> Result<Vec<String>> {
        let mut notes = Vec::new();
        if let Upgrade::Xalb { old } = self {
            // Stopped (SIGTERM, then SIGKILL) if it is still there.
            let stopped = old.stop(libc::SIGTERM, Duration::from_secs(1));
            if !stopped.status.success() {
                notes.push(format!(
                    "the old xalb exited with {}; its output:\n{}",
                    stopped.status,
                    tail(&stopped.log)
                ));
            } else if let Some(l) = stopped
                .log
                .lines()
                .find(|l| l.contains("drain: grace over"))
            {
                notes.push(format!("the old xalb: {}", l.trim()));
            }
        }
        if let Some(p) = &r.proc {
            if p.exited() {
                bail!(
                    "{} exited after the upgrade; its output:\n{}",
                    p.name,
                    p.log_tail()
                );
            }
        }
        Ok(notes)
    }
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// The master's workers: the other live processes of its group.
fn workers(master: i32) -> Vec<u32> {
    load::group_pids(master)
        .into_iter()
        .filter(|&p| p as i32 != master)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upgrade_comes_a_third_of_the_way_in() {
        assert_eq!(upgrade_at(6), Duration::from_secs(2));
        assert_eq!(upgrade_at(1), Duration::from_millis(333));
    }

    #[test]
    fn haproxy_generations_are_counted_from_its_masters_log() {
        // What HAProxy 2.6's master printed at start and after one SIGUSR2.
        let log = "[NOTICE]   (2397) : New worker (2407) forked
[NOTICE]   (2397) : Loading success.
[NOTICE]   (2397) : Reloading HAProxy
[NOTICE]   (2397) : New worker (2473) forked
[NOTICE]   (2397) : Loading success.
[WARNING]  (2407) : Proxy fe stopped (cumulated conns: FE: 0, BE: 0).
[WARNING]  (2397) : Former worker (2407) exited with code 0 (Exit)
";
        assert_eq!(count_lines(log, HAPROXY_LOADED), 2);
        assert_eq!(count_lines("", HAPROXY_LOADED), 0);
    }

    #[test]
    fn scenario_names_share_the_prefix_the_report_strips() {
        for k in KINDS {
            assert!(scenario(k).starts_with(SCENARIO));
        }
        assert_eq!(
            scenario(Kind::ConnPerRequest),
            "upgrade under load, HTTP/1.1 connection per request"
        );
    }
}
