//! The running xalb's side: the control socket, served by a thread of its
//! own that asks the main loop (through [`Control`]) to freeze, hand over,
//! thaw or drain.

use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use socket2::{Domain, SockAddr, Socket, Type};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use super::{check_path, family_name, recv, send, socket_path, Control, Message, TakeoverError};
use super::{Handover, PROTO};

/// The bound control socket of a running xalb.
pub struct ControlSocket {
    socket: Socket,
    path: PathBuf,
}

/// Binds the control socket of namespace `cookie` under `state_dir` (made
/// by the lock already), replacing whatever is at the path at once: a
/// successor binds its own before telling its predecessor to drain, so a
/// later takeover finds the newest xalb.
pub fn listen(state_dir: &Path, cookie: u64) -> Result<ControlSocket, TakeoverError> {
    let path = socket_path(state_dir, cookie);
    let tmp = state_dir.join(format!("netns-{cookie}.sock.{}", std::process::id()));
    check_path(&tmp)?;
    let err = |source| TakeoverError::Socket {
        path: tmp.clone(),
        source,
    };
    let _ = std::fs::remove_file(&tmp);
    let socket = Socket::new(Domain::UNIX, Type::SEQPACKET.cloexec(), None).map_err(err)?;
    socket
        .bind(&SockAddr::unix(&tmp).map_err(err)?)
        .map_err(err)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    socket.listen(4).map_err(err)?;
    std::fs::rename(&tmp, &path).map_err(|source| TakeoverError::Socket {
        path: path.clone(),
        source,
    })?;
    Ok(ControlSocket { socket, path })
}

impl ControlSocket {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves successors on a thread of its own until one has taken over.
    pub fn serve(self, daemon: mpsc::Sender<Control>) -> std::io::Result<()> {
        std::thread::Builder::new()
            .name("xalb-takeover".into())
            .spawn(move || {
                loop {
                    let conn = match self.socket.accept() {
                        Ok((conn, _)) => conn,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            warn!(error = %e, "takeover: the control socket failed; no takeover is possible now");
                            return;
                        }
                    };
                    match handle(&conn, &daemon) {
                        Ok(Outcome::Drained) => return,
                        Ok(Outcome::Untouched) => {}
                        Ok(Outcome::Thawed) => {
                            info!("takeover: the successor left before taking over; carrying on")
                        }
                        Err((e, frozen)) => {
                            warn!(error = %e, "takeover: abandoned; carrying on");
                            if frozen {
                                let _ = daemon.blocking_send(Control::Thaw);
                            }
                        }
                    }
                }
            })
            .map(|_| ())
    }
}

enum Outcome {
    /// Refused before freezing, or the peer said nothing.
    Untouched,
    /// Frozen, then the peer left before `drain`: thawed again.
    Thawed,
    /// The daemon was told to drain.
    Drained,
}

/// One successor's conversation. An error says whether the daemon was
/// frozen by then (and so must be thawed).
fn handle(conn: &Socket, daemon: &mpsc::Sender<Control>) -> Result<Outcome, (TakeoverError, bool)> {
    let unfrozen = |e| (e, false);
    let pid = match recv(conn).map_err(unfrozen)? {
        None => return Ok(Outcome::Untouched),
        Some((Message::Hello { proto, layout, pid }, _)) => {
            // Answered after the hello, so that the refusal is read.
            let refusal = if let Err(reason) = peer_allowed(conn) {
                Some(reason)
            } else if proto != PROTO {
                Some(format!(
                    "takeover protocol {proto}; this xalb speaks {PROTO}"
                ))
            } else if layout != lb_common::LAYOUT_VERSION {
                Some(format!(
                    "kernel layout {layout}; this xalb pinned layout {}: stop it and `xalb detach` first",
                    lb_common::LAYOUT_VERSION
                ))
            } else {
                None
            };
            if let Some(reason) = refusal {
                send(conn, &Message::Refused { reason }, &[]).map_err(unfrozen)?;
                return Ok(Outcome::Untouched);
            }
            pid
        }
        Some((other, _)) => {
            return Err(unfrozen(TakeoverError::Protocol(format!(
                "{} before hello",
                other.name()
            ))))
        }
    };
    let (reply, answer) = oneshot::channel();
    if daemon
        .blocking_send(Control::Freeze {
            from_pid: pid,
            reply,
        })
        .is_err()
    {
        return Ok(Outcome::Untouched);
    }
    let handover = match answer.blocking_recv() {
        Ok(Ok(h)) => h,
        Ok(Err(reason)) => {
            send(conn, &Message::Refused { reason }, &[]).map_err(unfrozen)?;
            return Ok(Outcome::Untouched);
        }
        // The daemon is on its way out.
        Err(_) => return Ok(Outcome::Untouched),
    };
    info!(
        successor = pid,
        groups = handover.groups.len(),
        "takeover: frozen"
    );
    let frozen = |e| (e, true);
    hand_over(conn, &handover).map_err(frozen)?;
    drop(handover);
    match recv(conn).map_err(frozen)? {
        None => {
            let _ = daemon.blocking_send(Control::Thaw);
            Ok(Outcome::Thawed)
        }
        Some((Message::Drain { grace_ms }, _)) => {
            let grace = Duration::from_millis(grace_ms);
            // Confirmed first: with nothing to drain, this process may exit
            // before a confirmation sent after the order would leave it.
            // The successor may be gone already; it serves either way.
            let _ = send(
                conn,
                &Message::Draining {
                    pid: std::process::id(),
                },
                &[],
            );
            let _ = daemon.blocking_send(Control::Drain { to_pid: pid, grace });
            Ok(Outcome::Drained)
        }
        Some((other, _)) => Err(frozen(TakeoverError::Protocol(format!(
            "{} instead of drain",
            other.name()
        )))),
    }
}

fn hand_over(conn: &Socket, h: &Handover) -> Result<(), TakeoverError> {
    for g in &h.groups {
        let fds: Vec<_> = g.sockets.iter().map(|s| s.as_fd()).collect();
        let m = Message::Group {
            lb: g.lb.clone(),
            port: g.port,
            family: family_name(g.family),
            sock_slot: g.sock_slot,
        };
        send(conn, &m, &fds)?;
    }
    if let Some((addr, l)) = &h.admin {
        send(conn, &Message::Admin { addr: *addr }, &[l.as_fd()])?;
    }
    send(conn, &Message::Lock, &[h.lock.as_fd()])?;
    send(
        conn,
        &Message::End {
            listener_rows: h.listener_rows.clone(),
        },
        &[],
    )
}

/// Only root or this daemon's own user may take it over.
fn peer_allowed(conn: &Socket) -> Result<(), String> {
    let cred = super::peer_cred(conn).map_err(|e| format!("cannot tell who is asking: {e}"))?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if cred.uid == 0 || cred.uid == me {
        Ok(())
    } else {
        Err(format!("uid {} may not take over this xalb", cred.uid))
    }
}
