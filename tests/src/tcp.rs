//! Small real TCP peers for the tests and the demo.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::Result;

use crate::acceptor::Acceptor;
use crate::netns::Netns;

/// A TCP server in a namespace that answers each connection by writing
/// `greeting` and then echoing what it reads. Stopped on drop.
pub struct Server {
    _acceptor: Acceptor,
}

impl Server {
    pub fn start(ns: &Netns, addr: SocketAddr, greeting: &str) -> Result<Self> {
        let greeting = greeting.as_bytes().to_vec();
        Self::greeting_with(ns, addr, move |_| greeting.clone())
    }

    /// A server whose greeting is the address its peer connected from
    /// (`IP\n`): what the target sees of the client.
    pub fn telling_peer(ns: &Netns, addr: SocketAddr) -> Result<Self> {
        Self::greeting_with(ns, addr, |peer| format!("{}\n", peer.ip()).into_bytes())
    }

    fn greeting_with(
        ns: &Netns,
        addr: SocketAddr,
        greeting: impl Fn(SocketAddr) -> Vec<u8> + Send + Sync + 'static,
    ) -> Result<Self> {
        let acceptor = Acceptor::start(ns, addr, move |mut s: TcpStream| {
            let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
            let Ok(peer) = s.peer_addr() else {
                return;
            };
            let _ = s.write_all(&greeting(peer));
            let mut buf = [0u8; 16384];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 || s.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        })?;
        Ok(Self {
            _acceptor: acceptor,
        })
    }
}

/// What a connection attempt came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Connected, and the server's greeting and an echo came back.
    Answered(String),
    /// Actively refused (a reset): the packet reached the host.
    Refused,
    /// No answer at all within the timeout: dropped on the way.
    NoAnswer,
    Other(String),
}

/// How long a connected probe waits for the greeting and the echo: a safety
/// net only. What the probe judges (answered or dropped) is decided by the
/// connect, within its own window; once connected, a slow host only delays
/// the greeting.
const READ_LIMIT: Duration = Duration::from_secs(30);

/// Connects from inside `ns` (optionally from a given source address), reads
/// `greeting_len` bytes of greeting, and checks an echo round trip. `timeout`
/// is the connect's window: no SYN-ACK within it means [`Outcome::NoAnswer`].
/// The greeting and the echo may take up to [`READ_LIMIT`].
pub fn probe(
    ns: &Netns,
    source: Option<SocketAddr>,
    to: SocketAddr,
    greeting_len: usize,
    timeout: Duration,
) -> Result<Outcome> {
    ns.run(move || {
        let res = (|| -> std::io::Result<String> {
            let s = match source {
                None => TcpStream::connect_timeout(&to, timeout)?,
                Some(src) => connect_from(src, to, timeout)?,
            };
            s.set_read_timeout(Some(timeout.max(READ_LIMIT)))?;
            let mut s = s;
            let mut greet = vec![0u8; greeting_len];
            s.read_exact(&mut greet)?;
            s.write_all(b"ping")?;
            let mut echo = [0u8; 4];
            s.read_exact(&mut echo)?;
            assert_eq!(&echo, b"ping", "echo");
            Ok(String::from_utf8_lossy(&greet).into_owned())
        })();
        match res {
            Ok(g) => Outcome::Answered(g),
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => Outcome::Refused,
            Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => {
                Outcome::NoAnswer
            }
            Err(e) => Outcome::Other(e.to_string()),
        }
    })
}

/// `connect` with a bound source address and a timeout, through libc since std
/// has no bind-before-connect.
fn connect_from(src: SocketAddr, to: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    let family = if to.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket syscalls on an fd we own; the fd is handed to TcpStream.
    unsafe {
        let fd = libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let (sa, len) = sockaddr(src);
        if libc::bind(fd, &sa as *const _ as *const libc::sockaddr, len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        stream.set_nonblocking(true)?;
        let (da, dlen) = sockaddr(to);
        if libc::connect(fd, &da as *const _ as *const libc::sockaddr, dlen) != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINPROGRESS) {
                return Err(e);
            }
        }
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLOUT,
            revents: 0,
        };
        let n = libc::poll(&mut pfd, 1, timeout.as_millis() as i32);
        if n == 0 {
            return Err(ErrorKind::TimedOut.into());
        }
        if let Some(e) = stream.take_error()? {
            return Err(e);
        }
        stream.set_nonblocking(false)?;
        Ok(stream)
    }
}

fn sockaddr(a: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; zeroed is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match a {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*v4.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is large enough for sockaddr_in.
            unsafe { std::ptr::write(&mut ss as *mut _ as *mut libc::sockaddr_in, sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: sockaddr_storage is large enough for sockaddr_in6.
            unsafe { std::ptr::write(&mut ss as *mut _ as *mut libc::sockaddr_in6, sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}
