//! The XDP verdict log (`xalb run --xdp-log`): when its load-time switch is
//! on, the XDP program writes a [`VerdictRecord`] through aya-log for every
//! verdict on a packet addressed to a balancer; this reads them and logs one
//! line each at INFO under the tracing target `xalb::xdp`:
//!
//! ```text
//! XDP drop_no_rule edge tcp 10.0.0.2:40312 -> 10.0.0.10:8080
//! ```
//!
//! (verdict, balancer, protocol, source -> destination). Packets not
//! addressed to a balancer are not logged: they are the host's traffic.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use aya::Ebpf;
use aya_log::EbpfLogger;
use lb_common::{proto, Reason, VerdictRecord};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::task::JoinHandle;

/// The tracing target of the verdict lines.
pub const TARGET: &str = "xalb::xdp";

#[derive(Debug, thiserror::Error)]
pub enum VerdictLogError {
    #[error("cannot open the XDP verdict log: {0}")]
    Open(#[source] aya_log::Error),
    #[error("cannot watch the XDP verdict log: {0}")]
    Watch(#[source] std::io::Error),
}

/// Balancer names by counter row, shared with the reader.
type Names = Arc<RwLock<BTreeMap<u32, String>>>;

/// Turns aya-log records into verdict lines.
struct Lines {
    names: Names,
    /// Records read so far.
    read: Arc<AtomicUsize>,
}

impl log::Log for Lines {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }

    fn log(&self, record: &log::Record) {
        self.read.fetch_add(1, Ordering::Relaxed);
        let text = record.args().to_string();
        match decode_hex(&text).and_then(|b| VerdictRecord::from_bytes(&b)) {
            Some(v) => {
                let names = self.names.read().unwrap_or_else(|e| e.into_inner());
                tracing::info!(target: TARGET, "{}", Line(&v, names.get(&v.lb_id)));
            }
            None => tracing::warn!(target: TARGET, "unreadable XDP log record: {text}"),
        }
    }

    fn flush(&self) {}
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// One verdict line (without the `xalb::xdp` prefix tracing adds).
struct Line<'a>(&'a VerdictRecord, Option<&'a String>);

impl fmt::Display for Line<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Line(v, name) = self;
        write!(f, "XDP ")?;
        match Reason::from_index(v.reason.into()) {
            Some(r) => write!(f, "{} ", r.name())?,
            None => write!(f, "reason-{} ", v.reason)?,
        }
        match name {
            Some(n) => write!(f, "{n} ")?,
            // A record read after a reload that removed its balancer.
            None => write!(f, "#{} ", v.lb_id)?,
        }
        match v.proto {
            proto::TCP => write!(f, "tcp ")?,
            proto::UDP => write!(f, "udp ")?,
            proto::ICMP => write!(f, "icmp ")?,
            proto::ICMPV6 => write!(f, "icmpv6 ")?,
            p => write!(f, "ip-proto-{p} ")?,
        }
        let addr = |a: [u8; 16]| -> IpAddr {
            if v.family == 4 {
                Ipv4Addr::new(a[0], a[1], a[2], a[3]).into()
            } else {
                Ipv6Addr::from(a).into()
            }
        };
        let (src, dst) = (addr(v.src), addr(v.dst));
        if matches!(v.proto, proto::TCP | proto::UDP) {
            write!(
                f,
                "{} -> {}",
                SocketAddr::new(src, v.sport),
                SocketAddr::new(dst, v.dport)
            )
        } else {
            write!(f, "{src} -> {dst}")
        }
    }
}

/// Who reads the records.
enum Reader {
    /// A task of the runtime the datapath was loaded in, as records arrive.
    Task(JoinHandle<()>),
    /// Nobody until [`VerdictLog::flush`] (loaded outside a runtime).
    Held(Box<EbpfLogger<Lines>>),
}

/// The reading side of the verdict log of one loaded XDP program.
pub struct VerdictLog {
    names: Names,
    read: Arc<AtomicUsize>,
    reader: Reader,
}

impl VerdictLog {
    /// Starts reading the log of the program loaded in `ebpf` (after the
    /// program is loaded: the reader takes the log map). Inside a tokio
    /// runtime a task reads records as they arrive; outside, [`Self::flush`]
    /// reads them.
    pub fn start(ebpf: &mut Ebpf) -> Result<Self, VerdictLogError> {
        let names = Names::default();
        let read = Arc::new(AtomicUsize::new(0));
        let lines = Lines {
            names: names.clone(),
            read: read.clone(),
        };
        let logger = EbpfLogger::init_with_logger(ebpf, lines).map_err(VerdictLogError::Open)?;
        let reader = match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                let _guard = rt.enter();
                // SAFETY: the logger owns the ring buffer's descriptor, and
                // the AsyncFd owns the logger.
                let mut fd = unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) }
                    .map_err(|e| VerdictLogError::Watch(e.into_parts().1))?;
                Reader::Task(rt.spawn(async move {
                    while let Ok(mut ready) = fd.readable_mut().await {
                        ready.get_inner_mut().flush();
                        ready.clear_ready();
                    }
                }))
            }
            Err(_) => Reader::Held(Box::new(logger)),
        };
        Ok(Self {
            names,
            read,
            reader,
        })
    }

    /// The balancer names by counter row, for the lines from now on.
    pub fn set_names(&self, names: &[(u32, String)]) {
        *self.names.write().unwrap_or_else(|e| e.into_inner()) = names.iter().cloned().collect();
    }

    /// Reads the records waiting (when no task does); returns how many
    /// records were read since the last call, by whichever reader.
    pub fn flush(&mut self) -> usize {
        if let Reader::Held(logger) = &mut self.reader {
            logger.flush();
        }
        self.read.swap(0, Ordering::Relaxed)
    }
}

impl Drop for VerdictLog {
    fn drop(&mut self) {
        if let Reader::Task(task) = &self.reader {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(family: u8, proto: u8, src: &str, dst: &str) -> VerdictRecord {
        let wide = |a: &str| match a.parse::<IpAddr>().unwrap() {
            IpAddr::V4(a) => {
                let mut w = [0u8; 16];
                w[..4].copy_from_slice(&a.octets());
                w
            }
            IpAddr::V6(a) => a.octets(),
        };
        VerdictRecord {
            lb_id: 1,
            reason: Reason::DropDenied as u8,
            proto,
            family,
            _pad: 0,
            sport: 40312,
            dport: 8080,
            src: wide(src),
            dst: wide(dst),
        }
    }

    #[test]
    fn lines_name_the_verdict_balancer_protocol_and_endpoints() {
        let edge = "edge".to_string();
        let v4 = record(4, proto::TCP, "10.0.0.2", "10.0.0.10");
        assert_eq!(
            Line(&v4, Some(&edge)).to_string(),
            "XDP drop_no_rule edge tcp 10.0.0.2:40312 -> 10.0.0.10:8080"
        );
        let v6 = record(6, proto::UDP, "fd00::2", "fd00::10");
        assert_eq!(
            Line(&v6, Some(&edge)).to_string(),
            "XDP drop_no_rule edge udp [fd00::2]:40312 -> [fd00::10]:8080"
        );
        // No ports for other protocols; a row with no name shows its number.
        let icmp = VerdictRecord {
            reason: Reason::PassAllowed as u8,
            ..record(4, proto::ICMP, "10.0.0.2", "10.0.0.10")
        };
        assert_eq!(
            Line(&icmp, None).to_string(),
            "XDP pass_allowed #1 icmp 10.0.0.2 -> 10.0.0.10"
        );
        let gre = record(6, 47, "fd00::2", "fd00::10");
        assert_eq!(
            Line(&gre, Some(&edge)).to_string(),
            "XDP drop_no_rule edge ip-proto-47 fd00::2 -> fd00::10"
        );
    }

    #[test]
    fn records_decode_from_the_hex_aya_log_prints() {
        let r = record(4, proto::TCP, "10.0.0.2", "10.0.0.10");
        let hex: String = r.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
        let bytes = decode_hex(&hex).unwrap();
        assert_eq!(VerdictRecord::from_bytes(&bytes), Some(r));
        assert_eq!(decode_hex("abc"), None);
        assert_eq!(decode_hex("zz"), None);
    }
}
