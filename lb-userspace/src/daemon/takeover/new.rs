//! The successor's side: asks the running xalb for its sockets, and later
//! tells it to drain.

use std::time::Duration;

use socket2::{Domain, SockAddr, Socket, Type};

use super::{check_path, family_of, recv, send, socket_path, Message, TakeoverError};
use super::{HandedGroup, Handover, PROTO};
use std::path::Path;

/// The xalb being taken over, once it has handed over.
pub struct OldProcess {
    conn: Socket,
    pub pid: u32,
}

/// Asks the xalb running in namespace `cookie` for its sockets, lock and
/// admin listener; it freezes until [`OldProcess::drain`] or until this
/// process goes away. `None` when no xalb listens there (none runs, or it
/// died): the caller starts as a plain `xalb run`.
pub fn request(
    state_dir: &Path,
    cookie: u64,
) -> Result<Option<(Handover, OldProcess)>, TakeoverError> {
    let path = socket_path(state_dir, cookie);
    check_path(&path)?;
    let err = |source| TakeoverError::Socket {
        path: path.clone(),
        source,
    };
    let conn = Socket::new(Domain::UNIX, Type::SEQPACKET.cloexec(), None).map_err(err)?;
    match conn.connect(&SockAddr::unix(&path).map_err(err)?) {
        Ok(()) => {}
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(err(e)),
    }
    let pid = super::peer_cred(&conn).map_err(err)?.pid as u32;
    send(
        &conn,
        &Message::Hello {
            proto: PROTO,
            layout: lb_common::LAYOUT_VERSION,
            pid: std::process::id(),
        },
        &[],
    )?;
    let mut groups = Vec::new();
    let mut admin = None;
    let mut lock = None;
    let listener_rows = loop {
        let Some((m, mut fds)) = recv(&conn)? else {
            return Err(TakeoverError::PeerGone);
        };
        let what = m.name();
        let one = |fds: &mut Vec<std::os::fd::OwnedFd>| match (fds.pop(), fds.is_empty()) {
            (Some(fd), true) => Ok(fd),
            _ => Err(TakeoverError::Protocol(format!(
                "{what} with {} descriptors instead of one",
                fds.len() + 1
            ))),
        };
        match m {
            Message::Refused { reason } => return Err(TakeoverError::Refused(reason)),
            Message::Group {
                lb,
                port,
                family,
                sock_slot,
            } => {
                let family = family_of(&family).ok_or_else(|| {
                    TakeoverError::Protocol(format!("a group of family {family:?}"))
                })?;
                let sockets: Vec<std::net::TcpListener> =
                    fds.into_iter().map(std::net::TcpListener::from).collect();
                if sockets.is_empty() {
                    return Err(TakeoverError::Protocol(format!(
                        "the group {lb}:{port} {} without sockets",
                        family.name()
                    )));
                }
                for s in &sockets {
                    let listening = socket2::SockRef::from(s).is_listener().unwrap_or(false);
                    if !listening {
                        return Err(TakeoverError::Protocol(format!(
                            "a socket of {lb}:{port} that is not listening"
                        )));
                    }
                }
                groups.push(HandedGroup {
                    lb,
                    port,
                    family,
                    sock_slot,
                    sockets,
                });
            }
            Message::Admin { addr } => {
                admin = Some((addr, std::net::TcpListener::from(one(&mut fds)?)));
            }
            Message::Lock => lock = Some(one(&mut fds)?),
            Message::End { listener_rows } => break listener_rows,
            other => {
                return Err(TakeoverError::Protocol(format!(
                    "{} during the handover",
                    other.name()
                )))
            }
        }
    };
    let lock = lock.ok_or_else(|| TakeoverError::Protocol("no lock before end".into()))?;
    Ok(Some((
        Handover {
            groups,
            admin,
            lock,
            listener_rows,
        },
        OldProcess { conn, pid },
    )))
}

impl OldProcess {
    /// Tells the old xalb to stop accepting and drain within `grace`;
    /// returns once it has said so.
    pub fn drain(self, grace: Duration) -> Result<(), TakeoverError> {
        let grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
        send(&self.conn, &Message::Drain { grace_ms }, &[])?;
        match recv(&self.conn)? {
            Some((Message::Draining { .. }, _)) => Ok(()),
            Some((other, _)) => Err(TakeoverError::Protocol(format!(
                "{} instead of draining",
                other.name()
            ))),
            None => Err(TakeoverError::PeerGone),
        }
    }
}
