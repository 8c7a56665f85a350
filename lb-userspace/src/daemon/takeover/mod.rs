//! `xalb run --takeover`: a new xalb takes the running one's listening
//! sockets, lock and admin socket over a Unix socket in the state directory,
//! and the old one drains and exits. The sockets are handed over, not bound
//! again: the same accept queues serve throughout, so no connection is
//! refused (HAProxy's `expose-fd listeners` and Envoy's hot restart do the
//! same).
//!
//! The control socket, `<state_dir>/netns-<cookie>.sock`, is
//! `SOCK_SEQPACKET` (one JSON message per packet, descriptors attached):
//!
//! | # | from | message (+ descriptors) | meaning |
//! |---|------|-------------------------|---------|
//! | 1 | new | `hello` | the old one freezes: no reloads, no kernel writes |
//! | 2 | old | `group` + the group's listening sockets | one per socket group |
//! | 3 | old | `admin` + its listener, `lock` + the lock file | |
//! | 4 | old | `end` + the listener rows | the new one applies its configuration |
//! | 5 | new | `drain` | sent once the new one serves |
//! | 6 | old | `draining` | the old one stops accepting, drains, exits |
//!
//! If the new process goes away before `drain`, the old one thaws and
//! carries on as before ([`Control::Thaw`]).

pub mod fdpass;
mod new;
mod old;

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::proxy::conn::listener::Family;
pub use fdpass::FdPassError;
pub use new::{request, OldProcess};
pub use old::{listen, ControlSocket};

/// The protocol's version: both ends must speak the same.
const PROTO: u32 = 1;

/// The control socket of the namespace `cookie`.
pub fn socket_path(state_dir: &Path, cookie: u64) -> PathBuf {
    state_dir.join(format!("netns-{cookie}.sock"))
}

#[derive(Debug, thiserror::Error)]
pub enum TakeoverError {
    #[error("{path}: {source}")]
    Socket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: the path is {len} bytes; a Unix socket path has at most 107")]
    PathTooLong { path: PathBuf, len: usize },
    #[error("the running xalb refused the takeover: {0}")]
    Refused(String),
    #[error("the running xalb sent {0}")]
    Protocol(String),
    #[error("talking to the running xalb: {0}")]
    Pass(#[from] FdPassError),
    #[error("the running xalb went away during the handover; its sockets were not all received")]
    PeerGone,
}

/// A listener's socket group (one address family), as handed over.
#[derive(Debug)]
pub struct HandedGroup {
    pub lb: String,
    pub port: u16,
    pub family: Family,
    /// Its `SOCKS` slot, where its first socket is.
    pub sock_slot: u32,
    /// The SO_REUSEPORT group, one socket per old worker.
    pub sockets: Vec<std::net::TcpListener>,
}

/// What a running xalb hands to its successor.
#[derive(Debug)]
pub struct Handover {
    pub groups: Vec<HandedGroup>,
    /// The admin endpoint's listener and its address.
    pub admin: Option<(SocketAddr, std::net::TcpListener)>,
    /// The namespace lock's open file: the flock goes with it, with no gap.
    pub lock: OwnedFd,
    /// (row, balancer, port) of every steered listener.
    pub listener_rows: Vec<(u32, String, u16)>,
}

/// What the control socket's thread asks of the running daemon's main loop.
pub enum Control {
    /// A successor said hello: stop changing anything it will adopt
    /// (configuration, kernel maps) and hand over, or say why not.
    Freeze {
        from_pid: u32,
        reply: tokio::sync::oneshot::Sender<Result<Handover, String>>,
    },
    /// The successor left before taking over: carry on.
    Thaw,
    /// The successor serves: stop accepting, drain within `grace`, exit.
    Drain { to_pid: u32, grace: Duration },
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Message {
    Hello {
        proto: u32,
        layout: u32,
        pid: u32,
    },
    Refused {
        reason: String,
    },
    Group {
        lb: String,
        port: u16,
        family: String,
        sock_slot: u32,
    },
    Admin {
        addr: SocketAddr,
    },
    Lock,
    End {
        listener_rows: Vec<(u32, String, u16)>,
    },
    Drain {
        grace_ms: u64,
    },
    Draining {
        pid: u32,
    },
}

impl Message {
    fn name(&self) -> &'static str {
        match self {
            Message::Hello { .. } => "hello",
            Message::Refused { .. } => "refused",
            Message::Group { .. } => "group",
            Message::Admin { .. } => "admin",
            Message::Lock => "lock",
            Message::End { .. } => "end",
            Message::Drain { .. } => "drain",
            Message::Draining { .. } => "draining",
        }
    }
}

fn family_name(f: Family) -> String {
    f.name().to_string()
}

fn family_of(name: &str) -> Option<Family> {
    Family::ALL.into_iter().find(|f| f.name() == name)
}

fn send(
    sock: &socket2::Socket,
    m: &Message,
    fds: &[std::os::fd::BorrowedFd<'_>],
) -> Result<(), TakeoverError> {
    let body = serde_json::to_vec(m).expect("messages serialise");
    Ok(fdpass::send(sock, &body, fds)?)
}

/// The next message and its descriptors; `None` when the peer closed.
fn recv(sock: &socket2::Socket) -> Result<Option<(Message, Vec<OwnedFd>)>, TakeoverError> {
    let Some((body, fds)) = fdpass::recv(sock)? else {
        return Ok(None);
    };
    let m = serde_json::from_slice(&body).map_err(|e| {
        TakeoverError::Protocol(format!(
            "a message that is not one ({e}): {}",
            String::from_utf8_lossy(&body)
        ))
    })?;
    Ok(Some((m, fds)))
}

/// Who is at the other end of a Unix socket (as it was when it connected).
fn peer_cred(sock: &socket2::Socket) -> std::io::Result<libc::ucred> {
    use std::os::fd::AsRawFd;
    // SAFETY: an all-zero ucred is valid; getsockopt writes at most `len`
    // bytes into it.
    unsafe {
        let mut cred: libc::ucred = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        if libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        Ok(cred)
    }
}

/// Checks the Unix socket path limit (`sun_path`: 108 bytes with the NUL).
fn check_path(path: &Path) -> Result<(), TakeoverError> {
    let len = path.as_os_str().len();
    if len > 107 {
        return Err(TakeoverError::PathTooLong {
            path: path.to_path_buf(),
            len,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
