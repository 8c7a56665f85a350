//! The idle scenario: each balancer, started as for the L7 scenario, holds
//! N client connections that send nothing; its resident memory is read
//! before and with them open.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::cleanup::Proc;
use super::load;
use super::peers::{self, Configs, Running, System};
use super::report::{IdleSample, Report};
use super::topology::Topology;

pub const SCENARIO: &str = "idle client connections";

pub struct IdlePlan {
    pub systems: Vec<System>,
    pub connections: u32,
    /// How long the connections stay open, all of them established, before
    /// the balancer's memory is read.
    pub hold: Duration,
    pub repeat: u32,
}

/// Started after the balancer is serving, before its idle RSS is read:
/// nginx forks its workers after binding, so "serving" can come first.
const SETTLE: Duration = Duration::from_secs(1);

/// The client exits by itself after this long even if the bench never stops
/// it; shorter than every balancer's idle timeout (HAProxy's 30 s is the
/// shortest), so no balancer ever closes a connection during a measurement.
pub const CLIENT_CAP_S: u64 = 25;

/// The client: opens the connections one after another (a few thousand a
/// second is plenty), says how it went, then holds them. SO_LINGER 0 makes
/// their close (at exit, by SIGTERM) a reset: no TIME_WAIT is left to use up
/// ports for the next balancer. One source address suffices: connect()
/// picks ports per destination, 1024-65000 here (see the topology), more
/// than the 20,000 descriptors a process may have.
const CLIENT: &str = r#"
import resource, socket, struct, sys, time
n, host, port, cap = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
linger = struct.pack("ii", 1, 0)
socks, failed, streak, first_error = [], 0, 0, ""
t0 = time.monotonic()
# Twenty failures in a row: the balancer takes no more, stop asking.
while len(socks) + failed < n and streak < 20:
    s = None
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        s.settimeout(3)
        s.connect((host, port))
        socks.append(s)
        streak = 0
    except OSError as e:
        if s is not None:
            s.close()
        failed += 1
        streak += 1
        first_error = first_error or repr(e)
print(f"established {len(socks)} {time.monotonic() - t0:.3f} {failed} {first_error}", flush=True)
time.sleep(cap)
"#;

pub fn run(
    topo: &Topology,
    dir: &Path,
    xalb_bin: &Path,
    configs: &Configs,
    plan: &IdlePlan,
    report: &mut Report,
) -> Result<()> {
    for rep in 0..plan.repeat {
        for &system in &plan.systems {
            let round = format!("{}, {} (round {})", SCENARIO, system.name(), rep + 1);
            super::progress(format_args!(
                "round {}/{}: {}",
                rep + 1,
                plan.repeat,
                system.name()
            ));
            let r = match peers::start(system, topo, dir, xalb_bin, configs, &configs.xalb) {
                Ok(r) => r,
                Err(e) => {
                    report.note(format!("{round}: did not start: {e:#}"));
                    continue;
                }
            };
            let res = measure(&r, topo, dir, plan);
            // The client is gone by now (on an error too), its connections
            // reset: the balancer stops as after the L7 scenario.
            super::l7::note_slow_stop(system, r.stop(), report);
            match res {
                Ok((s, failure)) => {
                    super::progress(format_args!(
                        "  {} of {} established in {:.1} s, {} accepted; RSS {:.1} → {:.1} MiB",
                        s.established,
                        s.requested,
                        s.connect_s,
                        s.accepted,
                        s.rss_idle_kib as f64 / 1024.0,
                        s.rss_kib as f64 / 1024.0
                    ));
                    if let Some(f) = failure {
                        report.note(format!("{round}: {f}"));
                    }
                    report.add_idle(SCENARIO, system.name(), system.is_peer(), s);
                }
                Err(e) => report.note(format!("{round}: failed: {e:#}")),
            }
        }
    }
    Ok(())
}

/// The sample, and what went wrong opening connections, if anything did.
fn measure(
    r: &Running,
    topo: &Topology,
    dir: &Path,
    plan: &IdlePlan,
) -> Result<(IdleSample, Option<String>)> {
    let proc = r.proc.as_ref().context("no balancer process")?;
    let pgid = proc.pid();
    std::thread::sleep(SETTLE);
    let before = load::sample_group(pgid);
    let sockets_before = load::group_sockets(pgid);

    let mut cmd = topo.client.command("python3");
    cmd.args(["-c", CLIENT])
        .arg(plan.connections.to_string())
        .arg(r.http1.ip().to_string())
        .arg(r.http1.port().to_string())
        .arg(CLIENT_CAP_S.to_string());
    let client = Proc::spawn("idle client", cmd, &dir.join("idle-client.log"))?;
    // At worst every connect times out (3 s) twenty times in a row.
    let line = wait_for_report(&client, Duration::from_secs(90))?;
    let (established, connect_s, failed, error) =
        parse_report(&line).with_context(|| format!("the idle client printed {line:?}"))?;

    std::thread::sleep(plan.hold);
    let with = load::sample_group(pgid);
    let sockets_with = load::group_sockets(pgid);
    if client.exited() {
        bail!(
            "the idle client exited while holding its connections:\n{}",
            client.log_tail()
        );
    }
    if proc.exited() {
        bail!(
            "{} exited holding idle connections; its output:\n{}",
            proc.name,
            proc.log_tail()
        );
    }
    client.stop(libc::SIGTERM, Duration::from_secs(5));

    let failure = (failed > 0).then(|| {
        format!("{failed} connection(s) could not be opened (first error: {error}); gave up after 20 failures in a row")
    });
    Ok((
        IdleSample {
            requested: plan.connections,
            established,
            accepted: sockets_with.saturating_sub(sockets_before) as u32,
            rss_idle_kib: before.rss_kib,
            rss_kib: with.rss_kib,
            connect_s,
        },
        failure,
    ))
}

/// The client's "established ..." line, once it has printed it.
fn wait_for_report(client: &Proc, timeout: Duration) -> Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        // Only a whole line: the file may be read mid-write.
        if let Some(l) = client
            .log_text()
            .split_inclusive('\n')
            .find(|l| l.starts_with("established ") && l.ends_with('\n'))
        {
            return Ok(l.trim_end().to_string());
        }
        if client.exited() || Instant::now() > deadline {
            bail!(
                "the idle client did not report within {timeout:?}; its output:\n{}",
                client.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// "established N SECONDS FAILED [FIRST ERROR]"
fn parse_report(line: &str) -> Result<(u32, f64, u32, String)> {
    let mut w = line.splitn(5, ' ').skip(1);
    let mut next = || w.next().context("short line");
    let established = next()?.parse()?;
    let secs = next()?.parse()?;
    let failed = next()?.parse()?;
    let error = w.next().unwrap_or("").trim().to_string();
    Ok((established, secs, failed, error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_report() {
        assert_eq!(
            parse_report("established 10000 1.234 0 ").unwrap(),
            (10000, 1.234, 0, String::new())
        );
        let (n, _, f, e) = parse_report("established 9 0.5 20 TimeoutError('timed out')").unwrap();
        assert_eq!((n, f, e.as_str()), (9, 20, "TimeoutError('timed out')"));
        assert!(parse_report("established x").is_err());
    }

    /// The client's hold, capped, stays within every balancer's idle timeout.
    #[test]
    fn timeouts_outlast_the_hold() {
        let c = Configs::new(Path::new("/tmp/x"), 10_000);
        const { assert!(CLIENT_CAP_S < 30) };
        assert!(c.haproxy.contains("timeout client 30s"));
        assert!(c.haproxy.contains("timeout http-request 30s"));
        assert!(c.nginx.contains("client_header_timeout 60s;"));
        assert!(c.xalb.contains("idle_timeout = \"60s\""));
        assert!(c.nginx.contains("worker_connections 11024;"));
        assert!(c.haproxy.contains("maxconn 11000"));
    }
}
