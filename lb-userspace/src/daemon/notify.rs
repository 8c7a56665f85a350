//! systemd's notify protocol (`sd_notify(3)`), for `Type=notify` and
//! `Type=notify-reload` units: `READY=1` once every listener is bound and
//! XDP attached, `RELOADING=1` and `READY=1` around each reload,
//! `STOPPING=1` when a shutdown begins, and `WATCHDOG=1` at half of
//! `WATCHDOG_USEC` when the unit sets `WatchdogSec`. Each message is one
//! datagram to `$NOTIFY_SOCKET` (a path, or an abstract name written
//! `@name`); without it, nothing is sent.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use tracing::debug;

/// Where the messages go, and how often the watchdog wants a ping.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, std::os::unix::net::SocketAddr)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// From the environment systemd gives a service's main process.
    pub fn from_env() -> Self {
        let socket = std::env::var_os("NOTIFY_SOCKET");
        let watchdog = watchdog_interval(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        );
        let target = socket.and_then(|s| {
            let addr = address(s.to_str()?)?;
            let sock = UnixDatagram::unbound().ok()?;
            Some((sock, addr))
        });
        Self { target, watchdog }
    }

    /// How often to ping the watchdog: half of what the unit allows.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }

    fn send(&self, msg: &str) {
        if let Some((sock, addr)) = &self.target {
            if let Err(e) = sock.send_to_addr(msg.as_bytes(), addr) {
                debug!(error = %e, "cannot notify systemd");
            }
        }
    }

    /// Serving: with this process's id, so that a successor started by
    /// `--takeover` becomes the unit's main process (`NotifyAccess=all`).
    pub fn ready(&self, status: &str) {
        self.send(&format!(
            "READY=1\nMAINPID={}\nSTATUS={status}",
            std::process::id()
        ));
    }

    /// A reload begins; `ready` says when it has ended, applied or not.
    pub fn reloading(&self) {
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }

    pub fn ping(&self) {
        self.send("WATCHDOG=1");
    }
}

/// `/run/systemd/notify`, or `@name` for an abstract socket.
fn address(s: &str) -> Option<std::os::unix::net::SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    match s.strip_prefix('@') {
        Some(name) => std::os::unix::net::SocketAddr::from_abstract_name(name).ok(),
        None if s.starts_with('/') => std::os::unix::net::SocketAddr::from_pathname(s).ok(),
        None => None,
    }
}

/// Half of `WATCHDOG_USEC`, if the watchdog is meant for this process
/// (`WATCHDOG_PID` unset or ours).
fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    if pid.is_some_and(|p| p.parse::<u32>().ok() != Some(me)) {
        return None;
    }
    let usec: u64 = usec?.parse().ok().filter(|&u| u > 0)?;
    Some(Duration::from_micros(usec / 2))
}

/// CLOCK_MONOTONIC in microseconds, as `RELOADING=1` wants it.
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_is_pinged_at_half_its_period_and_only_for_us() {
        assert_eq!(
            watchdog_interval(Some("30000000"), None, 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            watchdog_interval(Some("30000000"), Some("7"), 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(watchdog_interval(Some("30000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval(None, None, 7), None);
        assert_eq!(watchdog_interval(Some("soon"), None, 7), None);
    }

    #[test]
    fn messages_reach_a_path_or_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let dir = std::env::temp_dir().join(format!("xalb-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let by_path = UnixDatagram::bind(&path).unwrap();
        let name = format!("xalb-notify-test-{}", std::process::id());
        let abstract_addr = std::os::unix::net::SocketAddr::from_abstract_name(&name).unwrap();
        let by_name = UnixDatagram::bind_addr(&abstract_addr).unwrap();
        for (spec, sock) in [
            (path.display().to_string(), &by_path),
            (format!("@{name}"), &by_name),
        ] {
            let n = Notifier {
                target: Some((UnixDatagram::unbound().unwrap(), address(&spec).unwrap())),
                watchdog: None,
            };
            n.ready("serving");
            n.reloading();
            n.stopping();
            let mut buf = [0u8; 256];
            let mut next = || {
                let len = sock.recv(&mut buf).unwrap();
                String::from_utf8_lossy(&buf[..len]).into_owned()
            };
            assert_eq!(
                next(),
                format!("READY=1\nMAINPID={}\nSTATUS=serving", std::process::id())
            );
            let reloading = next();
            let usec: u64 = reloading
                .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
                .unwrap()
                .parse()
                .unwrap();
            assert!(usec > 0);
            assert_eq!(next(), "STOPPING=1");
        }
        assert!(address("relative/path").is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
