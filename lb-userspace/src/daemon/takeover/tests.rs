use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::time::Duration;

use socket2::{Domain, SockAddr, Socket, Type};
use tokio::sync::mpsc;

use super::*;

fn state_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("xalb-takeover-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// What the stand-in daemon was told, in order.
#[derive(Debug, PartialEq)]
enum Told {
    Freeze,
    Thaw,
    Drain(Duration),
}

/// A daemon main loop stand-in: answers a freeze with `handover` (once) and
/// reports what it was told.
fn daemon(
    mut handover: Option<Handover>,
) -> (mpsc::Sender<Control>, std::sync::mpsc::Receiver<Told>) {
    let (tx, mut rx) = mpsc::channel(4);
    let (told_tx, told) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        while let Some(c) = rx.blocking_recv() {
            match c {
                Control::Freeze { reply, .. } => {
                    let _ = told_tx.send(Told::Freeze);
                    let _ = reply.send(handover.take().ok_or_else(|| "already handed".to_string()));
                }
                Control::Thaw => {
                    let _ = told_tx.send(Told::Thaw);
                }
                Control::Drain { grace, .. } => {
                    let _ = told_tx.send(Told::Drain(grace));
                }
            }
        }
    });
    (tx, told)
}

fn lock_file(dir: &std::path::Path) -> OwnedFd {
    std::fs::File::create(dir.join("lock")).unwrap().into()
}

fn group(n: usize) -> (HandedGroup, std::net::SocketAddr) {
    let first = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = first.local_addr().unwrap();
    let mut sockets = vec![first];
    // Not a reuseport group (std cannot make one); the count is what matters.
    for _ in 1..n {
        sockets.push(TcpListener::bind("127.0.0.1:0").unwrap());
    }
    let g = HandedGroup {
        lb: "web".into(),
        port: 80,
        family: Family::V4,
        sock_slot: 6,
        sockets,
    };
    (g, addr)
}

#[test]
fn a_successor_gets_every_socket_the_lock_and_the_rows_then_drains_the_old_one() {
    let dir = state_dir("full");
    let (g, addr) = group(2);
    let admin = TcpListener::bind("127.0.0.1:0").unwrap();
    let admin_addr = admin.local_addr().unwrap();
    let handover = Handover {
        groups: vec![g],
        admin: Some((admin_addr, admin)),
        lock: lock_file(&dir),
        listener_rows: vec![(3, "web".into(), 80)],
    };
    // Queued on the old process's socket before the handover.
    let mut early = TcpStream::connect(addr).unwrap();
    let (tx, told) = daemon(Some(handover));
    let ctl = listen(&dir, 42).unwrap();
    assert_eq!(ctl.path(), dir.join("netns-42.sock"));
    ctl.serve(tx).unwrap();

    let (got, old) = request(&dir, 42).unwrap().expect("an old process answers");
    assert_eq!(told.recv().unwrap(), Told::Freeze);
    assert_eq!(old.pid, std::process::id());
    assert_eq!(got.groups.len(), 1);
    let g = &got.groups[0];
    assert_eq!(
        (g.lb.as_str(), g.port, g.family, g.sock_slot),
        ("web", 80, Family::V4, 6)
    );
    assert_eq!(g.sockets.len(), 2);
    assert_eq!(g.sockets[0].local_addr().unwrap(), addr);
    // The same accept queue: the connection made before is accepted here.
    let (mut served, _) = g.sockets[0].accept().unwrap();
    early.write_all(b"x").unwrap();
    let mut b = [0u8; 1];
    served.read_exact(&mut b).unwrap();
    let (a, l) = got.admin.as_ref().unwrap();
    assert_eq!((*a, l.local_addr().unwrap()), (admin_addr, admin_addr));
    assert_eq!(got.listener_rows, vec![(3, "web".to_string(), 80)]);

    old.drain(Duration::from_millis(1500)).unwrap();
    assert_eq!(
        told.recv().unwrap(),
        Told::Drain(Duration::from_millis(1500))
    );
}

#[test]
fn a_successor_that_leaves_before_drain_thaws_the_old_one_which_serves_the_next() {
    let dir = state_dir("thaw");
    let (g, _) = group(1);
    let (g2, _) = group(1);
    let mk = |g| Handover {
        groups: vec![g],
        admin: None,
        lock: lock_file(&dir),
        listener_rows: vec![],
    };
    let (tx, mut rx) = mpsc::channel(4);
    let (told_tx, told) = std::sync::mpsc::channel();
    let mut handovers = vec![mk(g2), mk(g)];
    std::thread::spawn(move || {
        while let Some(c) = rx.blocking_recv() {
            match c {
                Control::Freeze { reply, .. } => {
                    let _ = told_tx.send(Told::Freeze);
                    let _ = reply.send(handovers.pop().ok_or_else(String::new));
                }
                Control::Thaw => drop(told_tx.send(Told::Thaw)),
                Control::Drain { grace, .. } => drop(told_tx.send(Told::Drain(grace))),
            }
        }
    });
    listen(&dir, 7).unwrap().serve(tx).unwrap();
    let (_got, old) = request(&dir, 7).unwrap().unwrap();
    drop(old);
    assert_eq!(told.recv().unwrap(), Told::Freeze);
    assert_eq!(told.recv().unwrap(), Told::Thaw);
    // The control socket still serves: a second successor takes over.
    let (got, old) = request(&dir, 7).unwrap().unwrap();
    assert_eq!(got.groups.len(), 1);
    old.drain(Duration::from_secs(1)).unwrap();
    assert_eq!(told.recv().unwrap(), Told::Freeze);
    assert_eq!(told.recv().unwrap(), Told::Drain(Duration::from_secs(1)));
}

#[test]
fn no_control_socket_or_a_dead_ones_file_means_no_old_process() {
    let dir = state_dir("none");
    assert!(request(&dir, 9).unwrap().is_none());
    // A socket file left by a killed xalb: nobody accepts on it.
    let stale = Socket::new(Domain::UNIX, Type::SEQPACKET, None).unwrap();
    stale
        .bind(&SockAddr::unix(socket_path(&dir, 9)).unwrap())
        .unwrap();
    drop(stale);
    assert!(request(&dir, 9).unwrap().is_none());
}

#[test]
fn a_successor_of_another_layout_is_refused_and_nothing_is_frozen() {
    let dir = state_dir("layout");
    let (g, _) = group(1);
    let (tx, told) = daemon(Some(Handover {
        groups: vec![g],
        admin: None,
        lock: lock_file(&dir),
        listener_rows: vec![],
    }));
    listen(&dir, 5).unwrap().serve(tx).unwrap();
    let conn = Socket::new(Domain::UNIX, Type::SEQPACKET, None).unwrap();
    conn.connect(&SockAddr::unix(socket_path(&dir, 5)).unwrap())
        .unwrap();
    let hello = Message::Hello {
        proto: PROTO,
        layout: lb_common::LAYOUT_VERSION + 1,
        pid: 1,
    };
    send(&conn, &hello, &[]).unwrap();
    match recv(&conn).unwrap() {
        Some((Message::Refused { reason }, _)) => assert!(reason.contains("layout"), "{reason}"),
        other => panic!("{other:?}"),
    }
    // Then a proper one is served: the first froze nothing.
    let (got, _old) = request(&dir, 5).unwrap().unwrap();
    assert_eq!(got.groups.len(), 1);
    assert_eq!(told.recv().unwrap(), Told::Freeze);
    assert!(told.try_recv().is_err());
}

#[test]
fn a_daemon_that_cannot_hand_over_says_why() {
    let dir = state_dir("cannot");
    let (tx, _told) = daemon(None);
    listen(&dir, 3).unwrap().serve(tx).unwrap();
    match request(&dir, 3) {
        Err(TakeoverError::Refused(reason)) => assert_eq!(reason, "already handed"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("taken over"),
    }
}

#[test]
fn a_state_directory_too_deep_for_a_unix_socket_is_a_clear_error() {
    let dir = PathBuf::from(format!("/tmp/{}", "d".repeat(120)));
    assert!(matches!(
        request(&dir, 1),
        Err(TakeoverError::PathTooLong { .. })
    ));
    // sun_path holds 107 bytes and the NUL.
    assert!(check_path(&PathBuf::from("/".repeat(107))).is_ok());
    assert!(matches!(
        check_path(&PathBuf::from("/".repeat(108))),
        Err(TakeoverError::PathTooLong { len: 108, .. })
    ));
}

#[test]
fn another_user_may_not_take_over() {
    let dir = state_dir("uid");
    let (tx, told) = daemon(None);
    let ctl = listen(&dir, 13).unwrap();
    let path = ctl.path().to_path_buf();
    ctl.serve(tx).unwrap();
    // Past the file's own mode (0600): the daemon asks who connected.
    for p in [&dir, &path] {
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    }
    // This test binary, as user 65534, runs `hello_as_client` (a copy where
    // that user may execute it).
    let exe = dir.join("client");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    let out = std::process::Command::new(&exe)
        .args([
            "--exact",
            "daemon::takeover::tests::hello_as_client",
            "--ignored",
            "--nocapture",
        ])
        .env("XALB_TAKEOVER_SOCKET", &path)
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let answer = String::from_utf8_lossy(&out.stdout);
    assert!(
        answer.contains("uid 65534 may not take over"),
        "{answer} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(told.try_recv().is_err(), "nothing was frozen");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn messages_read_back_as_written() {
    let m = Message::Group {
        lb: "web".into(),
        port: 8080,
        family: "ipv6".into(),
        sock_slot: 9,
    };
    let text = serde_json::to_string(&m).unwrap();
    assert_eq!(
        text,
        r#"{"type":"group","lb":"web","port":8080,"family":"ipv6","sock_slot":9}"#
    );
    assert_eq!(serde_json::from_str::<Message>(&text).unwrap(), m);
    assert_eq!(family_of("ipv6"), Some(Family::V6));
    assert_eq!(family_of("ipx"), None);
}

#[test]
fn a_message_out_of_place_is_named_in_the_error() {
    let dir = state_dir("misplaced");
    let listener = Socket::new(Domain::UNIX, Type::SEQPACKET, None).unwrap();
    listener
        .bind(&SockAddr::unix(socket_path(&dir, 11)).unwrap())
        .unwrap();
    listener.listen(1).unwrap();
    let fake_old = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        assert!(matches!(
            recv(&conn).unwrap(),
            Some((Message::Hello { .. }, _))
        ));
        send(&conn, &Message::Drain { grace_ms: 1 }, &[]).unwrap();
        // Held open until the successor has read it.
        let _ = recv(&conn);
    });
    match request(&dir, 11) {
        Err(TakeoverError::Protocol(what)) => assert_eq!(what, "drain during the handover"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("taken over"),
    }
    fake_old.join().unwrap();
}

/// The client side of `another_user_may_not_take_over`, run by it in a
/// process of another user: says hello and prints the refusal.
#[test]
#[ignore = "run by another_user_may_not_take_over"]
fn hello_as_client() {
    let Some(path) = std::env::var_os("XALB_TAKEOVER_SOCKET") else {
        return;
    };
    let conn = Socket::new(Domain::UNIX, Type::SEQPACKET, None).unwrap();
    conn.connect(&SockAddr::unix(path).unwrap()).unwrap();
    let hello = Message::Hello {
        proto: PROTO,
        layout: lb_common::LAYOUT_VERSION,
        pid: std::process::id(),
    };
    send(&conn, &hello, &[]).unwrap();
    match recv(&conn).unwrap() {
        Some((Message::Refused { reason }, _)) => println!("refused: {reason}"),
        other => println!("answered: {other:?}"),
    }
}
