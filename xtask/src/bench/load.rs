//! Load generation (wrk, h2load) from the client namespace, the parsing of
//! their reports, and the balancer's own CPU time and peak memory.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::cleanup::Proc;
use super::topology::Ns;

/// What one load run measured.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub struct LoadResult {
    pub rps: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub requests: u64,
    /// Non-2xx/3xx responses plus socket errors (wrk), failed requests plus
    /// 4xx/5xx (h2load).
    pub errors: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum Kind {
    /// wrk, HTTP/1.1 keep-alive.
    KeepAlive,
    /// wrk, HTTP/1.1 with `Connection: close`.
    ConnPerRequest,
    /// h2load, HTTP/2 without TLS (prior knowledge).
    H2c,
    /// HTTP/1.1 keep-alive at a fixed offered rate, the same for every
    /// system: latency at equal load, where the other kinds saturate the
    /// machine and so compare latency at each system's own throughput.
    FixedRate,
    /// wrk over TLS (the ECDSA listener), HTTP/1.1 keep-alive.
    TlsKeepAlive,
    /// h2load over TLS, HTTP/2 chosen by ALPN.
    TlsH2,
    /// openssl s_time: each connection a full handshake (ECDSA P-256) and
    /// one request.
    TlsFullEcdsa,
    /// The same with the RSA-2048 certificate.
    TlsFullRsa,
    /// openssl s_time -reuse: each connection a resumed handshake and one
    /// request.
    TlsResumed,
}

impl Kind {
    pub fn scenario(self) -> &'static str {
        match self {
            Kind::KeepAlive => "HTTP/1.1 keep-alive",
            Kind::ConnPerRequest => "HTTP/1.1 connection per request",
            Kind::H2c => "h2c (prior knowledge)",
            Kind::FixedRate => "fixed rate, HTTP/1.1 keep-alive",
            Kind::TlsKeepAlive => "HTTPS, HTTP/1.1 keep-alive",
            Kind::TlsH2 => "HTTPS, h2",
            Kind::TlsFullEcdsa => "HTTPS, full handshake per request (ECDSA P-256)",
            Kind::TlsFullRsa => "HTTPS, full handshake per request (RSA-2048)",
            Kind::TlsResumed => "HTTPS, resumed handshake per request",
        }
    }

    /// Whether it goes to a balancer's TLS listener.
    pub fn tls(self) -> bool {
        matches!(
            self,
            Kind::TlsKeepAlive
                | Kind::TlsH2
                | Kind::TlsFullEcdsa
                | Kind::TlsFullRsa
                | Kind::TlsResumed
        )
    }

    /// Whether it goes to the listener with the RSA certificate.
    pub fn rsa(self) -> bool {
        self == Kind::TlsFullRsa
    }

    /// The TLS kinds, in the order a full run measures them.
    pub const TLS: [Kind; 5] = [
        Kind::TlsKeepAlive,
        Kind::TlsH2,
        Kind::TlsFullEcdsa,
        Kind::TlsFullRsa,
        Kind::TlsResumed,
    ];
}

#[derive(Clone, Copy, Debug)]
pub struct LoadOpts {
    pub threads: u32,
    pub connections: u32,
    pub duration: u64,
    /// h2load streams per connection.
    pub streams: u32,
    /// Requests per second offered in total by the fixed-rate kind.
    pub fixed_rps: u32,
}

pub fn run(
    kind: Kind,
    client: &Ns,
    target: SocketAddr,
    o: &LoadOpts,
    dir: &Path,
) -> Result<LoadResult> {
    match kind {
        Kind::KeepAlive => wrk(client, target, o, false, dir),
        Kind::ConnPerRequest => wrk(client, target, o, true, dir),
        Kind::H2c => h2load(client, target, o, None, dir),
        Kind::FixedRate => h2load(client, target, o, Some(o.fixed_rps), dir),
        Kind::TlsKeepAlive => {
            let p = Proc::spawn(
                "wrk",
                wrk_command(client, &format!("https://{target}/"), o, false),
                &dir.join("wrk.log"),
            )?;
            Ok(finish_wrk(p, o)?.0)
        }
        Kind::TlsH2 => h2load_url(client, &format!("https://{target}/"), o, None, dir),
        Kind::TlsFullEcdsa | Kind::TlsFullRsa => s_time(client, target, o, false, dir),
        Kind::TlsResumed => s_time(client, target, o, true, dir),
    }
}

/// `openssl s_time` processes run at once: each makes one connection after
/// another, so the balancer is saturated only by several; 16 keep the
/// 2-core machine's client side busy without starving the balancer.
pub const S_TIME_PROCS: u32 = 16;

/// [`S_TIME_PROCS`] `openssl s_time -www /` processes for `o.duration`
/// seconds: new connections with a full handshake each, or (`reuse`) each
/// resuming the process's first session; every connection sends one
/// HTTP/1.0 request and reads the response. Errors count processes that
/// failed, and in `reuse` runs the handshakes that were not resumed.
fn s_time(
    client: &Ns,
    target: SocketAddr,
    o: &LoadOpts,
    reuse: bool,
    dir: &Path,
) -> Result<LoadResult> {
    let started = std::time::Instant::now();
    let mut procs = Vec::new();
    for i in 0..S_TIME_PROCS {
        let mut cmd = client.command("openssl");
        cmd.args(["s_time", "-connect", &target.to_string(), "-www", "/"])
            .args(["-time", &o.duration.to_string()])
            .arg(if reuse { "-reuse" } else { "-new" });
        procs.push(Proc::spawn(
            "openssl s_time",
            cmd,
            &dir.join(format!("s_time-{i}.log")),
        )?);
    }
    let mut r = LoadResult::default();
    for p in procs {
        let (status, out) = p.wait(Duration::from_secs(o.duration + 30))?;
        match parse_s_time(&out) {
            Some((n, resumed)) if status.success() => {
                r.requests += n;
                if reuse {
                    // The first connection of each process is a full one.
                    r.errors += n.saturating_sub(resumed + 1);
                }
            }
            _ => r.errors += 1,
        }
    }
    r.rps = r.requests as f64 / started.elapsed().as_secs_f64().max(1e-3);
    Ok(r)
}

/// `N connections in T real seconds` and, for `-reuse` runs, how many
/// handshakes were resumed (one `r` printed for each).
pub fn parse_s_time(out: &str) -> Option<(u64, u64)> {
    let n = out.lines().find_map(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        match w.as_slice() {
            [n, "connections", "in", _, "real", "seconds,", ..] => n.parse().ok(),
            _ => None,
        }
    })?;
    let resumed = out
        .lines()
        .filter(|l| !l.is_empty() && l.bytes().all(|b| b == b'r' || b == b'*'))
        .map(|l| l.bytes().filter(|&b| b == b'r').count() as u64)
        .sum();
    Some((n, resumed))
}

fn wrk(
    client: &Ns,
    target: SocketAddr,
    o: &LoadOpts,
    close: bool,
    dir: &Path,
) -> Result<LoadResult> {
    let p = spawn_wrk(client, target, o, close, dir)?;
    Ok(finish_wrk(p, o)?.0)
}

/// wrk started in the background, for a scenario that acts during the load.
pub fn spawn_wrk(
    client: &Ns,
    target: SocketAddr,
    o: &LoadOpts,
    close: bool,
    dir: &Path,
) -> Result<Proc> {
    let cmd = wrk_command(client, &format!("http://{target}/"), o, close);
    Proc::spawn("wrk", cmd, &dir.join("wrk.log"))
}

fn wrk_command(client: &Ns, url: &str, o: &LoadOpts, close: bool) -> std::process::Command {
    let mut cmd = client.command("wrk");
    cmd.arg(format!("-t{}", o.threads))
        .arg(format!("-c{}", o.connections))
        .arg(format!("-d{}s", o.duration))
        .arg("--latency");
    if close {
        cmd.args(["-H", "Connection: close"]);
    }
    cmd.arg(url);
    cmd
}

/// Waits for a `spawn_wrk` run to end; its summary and its failures by kind.
pub fn finish_wrk(p: Proc, o: &LoadOpts) -> Result<(LoadResult, WrkErrors)> {
    let (status, out) = p.wait(Duration::from_secs(o.duration + 30))?;
    if !status.success() {
        bail!("wrk failed ({status}):\n{out}");
    }
    let r = parse_wrk(&out).with_context(|| format!("wrk printed:\n{out}"))?;
    Ok((r, parse_wrk_errors(&out)?))
}

/// h2load: h2c with `o.streams` streams per connection, or with `h1_rate`
/// HTTP/1.1 keep-alive, one request at a time per connection, at that many
/// requests per second in total.
fn h2load(
    client: &Ns,
    target: SocketAddr,
    o: &LoadOpts,
    h1_rate: Option<u32>,
    dir: &Path,
) -> Result<LoadResult> {
    h2load_url(client, &format!("http://{target}/"), o, h1_rate, dir)
}

/// [`h2load`] on any URL: an https:// one negotiates HTTP/2 by ALPN.
fn h2load_url(
    client: &Ns,
    url: &str,
    o: &LoadOpts,
    h1_rate: Option<u32>,
    dir: &Path,
) -> Result<LoadResult> {
    let log = dir.join("h2load-requests.tsv");
    let _ = std::fs::remove_file(&log);
    let mut cmd = client.command("h2load");
    cmd.args(h2load_args(o, h1_rate))
        .arg(format!("-D{}", o.duration))
        .arg(format!("--log-file={}", log.display()))
        .arg(url);
    let p = Proc::spawn("h2load", cmd, &dir.join("h2load.log"))?;
    let (status, out) = p.wait(Duration::from_secs(o.duration + 30))?;
    if !status.success() {
        bail!("h2load failed ({status}):\n{out}");
    }
    let per_request = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    parse_h2load(&out, &per_request).with_context(|| format!("h2load printed:\n{out}"))
}

/// The command line of a `kind` run, as the report prints it.
pub fn command(kind: Kind, o: &LoadOpts) -> String {
    let wrk = format!(
        "wrk -t{} -c{} -d{}s --latency",
        o.threads, o.connections, o.duration
    );
    let h2load = |rate| {
        format!(
            "h2load {} -D{} --log-file=FILE http://TARGET/",
            h2load_args(o, rate).join(" "),
            o.duration
        )
    };
    match kind {
        Kind::KeepAlive => format!("{wrk} http://TARGET/   (keep-alive; client namespace)"),
        Kind::ConnPerRequest => {
            format!("{wrk} -H \"Connection: close\" http://TARGET/   (connection per request)")
        }
        Kind::H2c => format!(
            "{}   (h2c prior knowledge; percentiles from the log)",
            h2load(None)
        ),
        Kind::FixedRate => format!(
            "{}   (fixed rate: {} req/s in all, HTTP/1.1 keep-alive; percentiles from the log)",
            h2load(Some(o.fixed_rps)),
            o.fixed_rps
        ),
        Kind::TlsKeepAlive => format!("{wrk} https://TARGET:443/   (keep-alive over TLS, ECDSA P-256)"),
        Kind::TlsH2 => format!(
            "h2load {} -D{} --log-file=FILE https://TARGET:443/   (h2 by ALPN; percentiles from the log)",
            h2load_args(o, None).join(" "),
            o.duration
        ),
        Kind::TlsFullEcdsa | Kind::TlsFullRsa | Kind::TlsResumed => format!(
            "{S_TIME_PROCS} x openssl s_time -connect TARGET:{} -www / -time {} {}   (one request per connection)",
            if kind.rsa() { 8443 } else { 443 },
            o.duration,
            if kind == Kind::TlsResumed { "-reuse" } else { "-new" }
        ),
    }
}

/// The load shape of an h2load run. Without `--h1`, http:// URIs mean h2c
/// with prior knowledge to h2load.
fn h2load_args(o: &LoadOpts, h1_rate: Option<u32>) -> Vec<String> {
    let mut v = vec![format!("-t{}", o.threads), format!("-c{}", o.connections)];
    match h1_rate {
        // --rps is per connection; -m1: no pipelining.
        Some(rate) => v.extend([
            "--h1".into(),
            "-m1".into(),
            format!(
                "--rps={}",
                f64::from(rate) / f64::from(o.connections.max(1))
            ),
        ]),
        None => v.push(format!("-m{}", o.streams)),
    }
    v
}

/// wrk prints times as a number and one of us, ms, s, m, h.
fn parse_time_ms(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = s.split_at(split);
    let v: f64 = num.trim().parse().ok()?;
    Some(match unit {
        "us" => v / 1000.0,
        "ms" => v,
        "s" => v * 1000.0,
        "m" => v * 60_000.0,
        "h" => v * 3_600_000.0,
        _ => return None,
    })
}

/// Parses `wrk --latency` output.
pub fn parse_wrk(out: &str) -> Result<LoadResult> {
    let mut r = LoadResult::default();
    let mut got_rps = false;
    for line in out.lines() {
        let t = line.trim();
        let words: Vec<&str> = t.split_whitespace().collect();
        match words.as_slice() {
            ["Latency", _avg, _sd, max, ..] => r.max_ms = parse_time_ms(max),
            ["50%", v] => r.p50_ms = parse_time_ms(v),
            ["99%", v] => r.p99_ms = parse_time_ms(v),
            [n, "requests", "in", ..] => r.requests = n.parse()?,
            ["Requests/sec:", v] => {
                r.rps = v.parse()?;
                got_rps = true;
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => r.errors += n.parse::<u64>()?,
            ["Socket", "errors:", rest @ ..] => {
                // connect 0, read 0, write 0, timeout 0
                for pair in rest.chunks(2) {
                    if let [_, n] = pair {
                        r.errors += n.trim_end_matches(',').parse::<u64>()?;
                    }
                }
            }
            _ => {}
        }
    }
    if !got_rps {
        bail!("no Requests/sec line");
    }
    Ok(r)
}

/// wrk's failed requests by kind. A socket error ends the request it was
/// on, so each counts one request that got no answer.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(default)]
pub struct WrkErrors {
    /// connect() failed: refused (nothing listening) or reset.
    pub connect: u64,
    /// The connection was reset or closed before the whole response.
    pub read: u64,
    pub write: u64,
    /// No response within wrk's 2 s timeout.
    pub timeout: u64,
    pub non_2xx: u64,
}

impl WrkErrors {
    pub fn total(&self) -> u64 {
        self.connect + self.read + self.write + self.timeout + self.non_2xx
    }

    pub fn add(&mut self, o: &WrkErrors) {
        self.connect += o.connect;
        self.read += o.read;
        self.write += o.write;
        self.timeout += o.timeout;
        self.non_2xx += o.non_2xx;
    }
}

/// The failure lines of `wrk` output, which it prints only when there were
/// any: "Socket errors: connect 0, read 3, write 0, timeout 2" and
/// "Non-2xx or 3xx responses: 5".
pub fn parse_wrk_errors(out: &str) -> Result<WrkErrors> {
    let mut e = WrkErrors::default();
    for line in out.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Non-2xx", "or", "3xx", "responses:", n] => e.non_2xx = n.parse()?,
            ["Socket", "errors:", rest @ ..] => {
                for pair in rest.chunks(2) {
                    let [kind, n] = pair else {
                        bail!("socket errors line {line:?}");
                    };
                    let n: u64 = n.trim_end_matches(',').parse()?;
                    match *kind {
                        "connect" => e.connect = n,
                        "read" => e.read = n,
                        "write" => e.write = n,
                        "timeout" => e.timeout = n,
                        other => bail!("unknown wrk socket error kind {other:?}"),
                    }
                }
            }
            _ => {}
        }
    }
    Ok(e)
}

/// Parses h2load's summary, and its `--log-file` (start µs, status, duration
/// µs per request) for percentiles, which the summary lacks.
pub fn parse_h2load(out: &str, per_request: &str) -> Result<LoadResult> {
    let mut r = LoadResult::default();
    let mut got = false;
    for line in out.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("finished in ") {
            // finished in 2.00s, 33420.00 req/s, 4.08MB/s
            let v = rest.split(", ").nth(1).context("finished line")?;
            r.rps = v.trim_end_matches(" req/s").parse()?;
            got = true;
        } else if let Some(rest) = t.strip_prefix("requests: ") {
            // 66840 total, 67480 started, 66840 done, 66840 succeeded, 0 failed, 0 errored, 0 timeout
            for part in rest.split(", ") {
                let mut it = part.split_whitespace();
                if let (Some(n), Some(what)) = (it.next(), it.next()) {
                    match what {
                        "succeeded" => r.requests = n.parse()?,
                        "failed" => r.errors += n.parse::<u64>()?,
                        _ => {}
                    }
                }
            }
        } else if let Some(rest) = t.strip_prefix("status codes: ") {
            // 66840 2xx, 0 3xx, 0 4xx, 0 5xx
            for part in rest.split(", ") {
                let mut it = part.split_whitespace();
                if let (Some(n), Some("4xx" | "5xx")) = (it.next(), it.next()) {
                    r.errors += n.parse::<u64>()?;
                }
            }
        } else if let Some(rest) = t.strip_prefix("time for request:") {
            // min max mean sd +/-sd
            r.max_ms = rest.split_whitespace().nth(1).and_then(parse_time_ms);
        }
    }
    if !got {
        bail!("no 'finished in' line");
    }
    let mut durations: Vec<f64> = per_request
        .lines()
        .filter_map(|l| l.split('\t').nth(2)?.trim().parse::<f64>().ok())
        .collect();
    if !durations.is_empty() {
        durations.sort_by(f64::total_cmp);
        let pct = |p: f64| {
            let i = ((durations.len() as f64 - 1.0) * p).round() as usize;
            durations[i] / 1000.0
        };
        r.p50_ms = Some(pct(0.50));
        r.p99_ms = Some(pct(0.99));
        r.max_ms = Some(durations[durations.len() - 1] / 1000.0);
    }
    Ok(r)
}

/// CPU seconds (user + system), peak and current RSS of a process group: the
/// balancer and, for nginx, its workers.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcSample {
    pub cpu_s: f64,
    /// Sum of VmHWM over the group's processes (shared pages counted per
    /// process, as `ps` would).
    pub hwm_kib: u64,
    /// Sum of VmRSS, counted the same way.
    pub rss_kib: u64,
}

/// The pids of process group `pgid`, with their `/proc/PID/stat` fields
/// from the state on (field 3; the command name may contain spaces).
fn group_members(pgid: i32) -> Vec<(u32, Vec<String>)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut v = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let f: Vec<String> = rest.split_whitespace().map(str::to_string).collect();
        // pgrp is field 5.
        if f.len() >= 13 && f[2].parse::<i32>().ok() == Some(pgid) {
            v.push((pid, f));
        }
    }
    v
}

pub fn sample_group(pgid: i32) -> ProcSample {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut s = ProcSample::default();
    for (pid, f) in group_members(pgid) {
        // utime is field 14, stime 15.
        let ticks: f64 = f[11].parse::<f64>().unwrap_or(0.0) + f[12].parse::<f64>().unwrap_or(0.0);
        s.cpu_s += ticks / hz;
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            let kib = |key: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(key))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                    .unwrap_or(0)
            };
            s.hwm_kib += kib("VmHWM:");
            s.rss_kib += kib("VmRSS:");
        }
    }
    s
}

/// The live processes of process group `pgid` (a balancer's master and its
/// workers), zombies left out: a worker that has exited is gone even before
/// its master reaps it.
pub fn group_pids(pgid: i32) -> Vec<u32> {
    group_members(pgid)
        .into_iter()
        .filter(|(_, f)| f.first().is_some_and(|state| state != "Z"))
        .map(|(pid, _)| pid)
        .collect()
}

/// Distinct sockets open in a process group (nginx's master and workers
/// share their listeners; a thread shares its process's table).
pub fn group_sockets(pgid: i32) -> usize {
    let mut inodes = std::collections::HashSet::new();
    for (pid, _) in group_members(pgid) {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                let t = target.to_string_lossy();
                if t.starts_with("socket:") {
                    inodes.insert(t.into_owned());
                }
            }
        }
    }
    inodes.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    #[test]
    fn s_time_reports_connections_and_resumptions() {
        let reuse = "Now timing with session id reuse.\nstarting\nrrrrr*rrrr\nrrr\n\
            4252 connections in 0.37s; 11491.89 connections/user sec, bytes read 612288\n\
            4252 connections in 3 real seconds, 144 bytes read per connection\n";
        assert_eq!(parse_s_time(reuse), Some((4252, 12)));
        let new = "Collecting connection statistics for 10 seconds\n\
            1347 connections in 0.51s; 2641.18 connections/user sec, bytes read 193968\n\
            1347 connections in 11 real seconds, 144 bytes read per connection\n";
        assert_eq!(parse_s_time(new), Some((1347, 0)));
        assert_eq!(parse_s_time("ERROR\nUnable to get connection\n"), None);
    }

    const WRK: &str = "Running 2s test @ http://10.231.1.1:80/
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.12ms    1.01ms  41.20ms   90.12%
    Req/Sec    10.31k   612.33    11.40k    70.00%
  Latency Distribution
     50%    2.95ms
     75%    3.40ms
     90%    4.01ms
     99%  812.00us
  41020 requests in 2.00s, 9.51MB read
  Socket errors: connect 0, read 3, write 0, timeout 2
  Non-2xx or 3xx responses: 5
Requests/sec:  20510.42
Transfer/sec:      4.75MB
";

    #[test]
    fn wrk_report() {
        let r = parse_wrk(WRK).unwrap();
        assert_eq!(r.requests, 41020);
        assert_eq!(r.errors, 10);
        assert!((r.rps - 20510.42).abs() < 1e-6);
        assert_eq!(r.p50_ms, Some(2.95));
        assert_eq!(r.p99_ms, Some(0.812));
        assert_eq!(r.max_ms, Some(41.2));
        assert_eq!(parse_time_ms("1.50s"), Some(1500.0));
        assert_eq!(parse_time_ms("2.00m"), Some(120_000.0));
        assert!(parse_wrk("unable to connect").is_err());
    }

    #[test]
    fn wrk_errors_by_kind() {
        let e = parse_wrk_errors(WRK).unwrap();
        assert_eq!(
            e,
            WrkErrors {
                connect: 0,
                read: 3,
                write: 0,
                timeout: 2,
                non_2xx: 5
            }
        );
        assert_eq!(e.total(), parse_wrk(WRK).unwrap().errors);
        // No failure lines at all when nothing failed.
        assert_eq!(
            parse_wrk_errors("Requests/sec:  20510.42\n").unwrap(),
            WrkErrors::default()
        );
        assert!(parse_wrk_errors("  Socket errors: connect 1, reset 2\n").is_err());
    }

    #[test]
    fn a_group_lists_its_live_members() {
        // SAFETY: getpgrp has no preconditions.
        let pgid = unsafe { libc::getpgrp() };
        assert!(group_pids(pgid).contains(&std::process::id()));
        let mut child = std::process::Command::new("true")
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id();
        // Exited but not reaped (WNOWAIT): a zombie, which no longer counts.
        // SAFETY: waitid on our own child with a zeroed siginfo.
        let rc = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::waitid(libc::P_PID, pid, &mut info, libc::WEXITED | libc::WNOWAIT)
        };
        assert_eq!(rc, 0);
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
        assert!(!group_pids(pid as i32).contains(&pid));
        child.wait().unwrap();
    }

    #[test]
    fn fixed_rate_spreads_the_rate_over_the_connections_one_request_at_a_time() {
        let o = LoadOpts {
            threads: 2,
            connections: 64,
            duration: 10,
            streams: 10,
            fixed_rps: 30_000,
        };
        assert_eq!(
            h2load_args(&o, Some(30_000)),
            ["-t2", "-c64", "--h1", "-m1", "--rps=468.75"]
        );
        assert_eq!(h2load_args(&o, None), ["-t2", "-c64", "-m10"]);
    }

    #[test]
    fn h2load_report() {
        let out = "finished in 2.00s, 33420.00 req/s, 4.08MB/s
requests: 66850 total, 67480 started, 66850 done, 66840 succeeded, 10 failed, 10 errored, 0 timeout
status codes: 66830 2xx, 0 3xx, 4 4xx, 6 5xx
traffic: 8.16MB (8556000) total, 1.03MB (1080000) headers (space savings 90.00%), 6.38MB (6684000) data
                     min         max         mean         sd        +/- sd
time for request:      123us     12.34ms      1.23ms       456us    78.90%
";
        let log = "1700000000000000\t200\t1000\n1700000000000001\t200\t3000\n1700000000000002\t200\t2000\n";
        let r = parse_h2load(out, log).unwrap();
        assert!((r.rps - 33420.0).abs() < 1e-6);
        assert_eq!(r.requests, 66840);
        assert_eq!(r.errors, 20);
        assert_eq!(r.p50_ms, Some(2.0));
        assert_eq!(r.max_ms, Some(3.0));
        let r = parse_h2load(out, "").unwrap();
        assert_eq!(r.max_ms, Some(12.34));
        assert_eq!(r.p50_ms, None);
    }
}
