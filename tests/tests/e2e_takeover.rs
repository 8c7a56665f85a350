//! Zero-downtime upgrade: `xalb run --takeover` started while an xalb
//! serves takes its listening sockets, and the old one drains and exits.
//! Under a bounded load (new connections, kept-alive ones, a WebSocket), no
//! request fails and the kernel drops no connection. If the old one dies
//! half-way, the new one still comes up and serves.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use xalb_tests::admin::{admin_get, spawn_in};
use xalb_tests::bed::{http_config, lb, HttpBed, FORWARD_WEB, WEB_GROUP};
use xalb_tests::daemon::Daemon;
use xalb_tests::netns::Netns;

/// At most this many requests with a new connection each: the load runs
/// until the test has seen the handover through, then `AFTER` more.
const REQUESTS_CAP: u64 = 100_000;
/// Requests after the old xalb has exited.
const AFTER: u64 = 500;
/// How many of them run at once.
const CONCURRENT: u64 = 8;
/// The takeover starts once this many are done.
const TAKEOVER_AT: u64 = 1000;
/// Clients that keep one connection for many requests.
const KEPT_ALIVE: usize = 4;

/// A state directory both daemons share (the control socket is in it).
struct StateDir(PathBuf);

impl StateDir {
    fn new(tag: &str) -> Self {
        let d = std::env::temp_dir().join(format!("xalb-takeover-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        Self(d)
    }

    fn arg(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What the clients saw.
#[derive(Default)]
struct Seen {
    /// Requests answered 2xx.
    ok: AtomicU64,
    /// Connection attempts refused or timed out (not those reset once made:
    /// [`Seen::connect_failed`]).
    connect_errors: AtomicU64,
    /// Everything else that went wrong: when, and what.
    failures: Mutex<Vec<(Instant, String)>>,
    /// Kept-alive requests answered, and connections closed after a
    /// `Connection: close` answer.
    kept_alive_ok: AtomicU64,
    closed_politely: AtomicU64,
    /// WebSocket messages echoed.
    echoed: AtomicU64,
    /// New-connection requests started and done; they stop once `until`
    /// have started.
    started: AtomicU64,
    done: AtomicU64,
    until: AtomicU64,
    /// The kept-alive clients stop.
    stop: AtomicBool,
    /// The WebSocket client closes.
    stop_ws: AtomicBool,
}

impl Seen {
    fn new() -> Arc<Self> {
        let s = Self::default();
        s.until.store(REQUESTS_CAP, SeqCst);
        Arc::new(s)
    }

    /// Lets the load end `AFTER` requests from now: exactly that many
    /// start after this call (counted by start, not end, so that the
    /// requests in flight now are not among them).
    fn finish_soon(&self) {
        self.until.store(self.started.load(SeqCst) + AFTER, SeqCst);
    }
}

impl Seen {
    fn fail(&self, what: String) {
        self.failures.lock().unwrap().push((Instant::now(), what));
    }

    /// A connect that failed. A reset is a connection that was established
    /// (the kernel completed its handshake into a listening socket's
    /// queue) and then lost with the process that held the queue, before
    /// the client saw it complete: a failure like any request that process
    /// held, not a refused attempt. Anything else (refused, timed out) is a
    /// connection error. True for a reset.
    fn connect_failed(&self, e: &std::io::Error, what: &str) -> bool {
        let held = e.kind() == std::io::ErrorKind::ConnectionReset;
        if !held {
            self.connect_errors.fetch_add(1, SeqCst);
        }
        self.fail(format!("{what}: {e}"));
        held
    }

    /// What went wrong, in order.
    fn failures(&self) -> Vec<String> {
        self.failures
            .lock()
            .unwrap()
            .iter()
            .map(|(_, w)| w.clone())
            .collect()
    }
}

/// Reads one response's head and body; returns (status, whether it closes
/// the connection).
async fn response(r: &mut BufReader<TcpStream>) -> std::io::Result<(u16, bool)> {
    let mut line = String::new();
    if r.read_line(&mut line).await? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "closed before a response",
        ));
    }
    let status: u16 = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (mut length, mut close) = (0usize, false);
    loop {
        line.clear();
        r.read_line(&mut line).await?;
        let l = line.trim_end().to_ascii_lowercase();
        if l.is_empty() {
            break;
        }
        if let Some(v) = l.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if l.starts_with("connection:") && l.contains("close") {
            close = true;
        }
    }
    let mut body = vec![0u8; length];
    r.read_exact(&mut body).await?;
    Ok((status, close))
}

/// One GET on a new connection.
async fn one_request(addr: SocketAddr, seen: &Seen) {
    let s = match TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => {
            seen.connect_failed(&e, "connect");
            return;
        }
    };
    let mut r = BufReader::new(s);
    let sent = r
        .get_mut()
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await;
    match sent.and(Ok(())) {
        Ok(()) => match response(&mut r).await {
            Ok((200..=299, _)) => {
                seen.ok.fetch_add(1, SeqCst);
            }
            Ok((status, _)) => seen.fail(format!("new connection: status {status}")),
            Err(e) => seen.fail(format!("new connection: {e}")),
        },
        Err(e) => seen.fail(format!("new connection: write: {e}")),
    }
}

/// Requests on one connection until told to stop; a new connection after
/// each `Connection: close`, which must end in a clean close.
async fn kept_alive(addr: SocketAddr, seen: Arc<Seen>) {
    let mut conn: Option<BufReader<TcpStream>> = None;
    while !seen.stop.load(SeqCst) {
        let r = match conn.as_mut() {
            Some(r) => r,
            None => match TcpStream::connect(addr).await {
                Ok(s) => conn.insert(BufReader::new(s)),
                Err(e) => {
                    if seen.connect_failed(&e, "kept-alive connect") {
                        continue;
                    }
                    return;
                }
            },
        };
        let res = async {
            r.get_mut()
                .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                .await?;
            response(r).await
        }
        .await;
        match res {
            Ok((200..=299, close)) => {
                seen.kept_alive_ok.fetch_add(1, SeqCst);
                if close {
                    // Closed after the answer: EOF, not a reset.
                    let mut rest = Vec::new();
                    match r.read_to_end(&mut rest).await {
                        Ok(_) => {
                            seen.closed_politely.fetch_add(1, SeqCst);
                        }
                        Err(e) => seen.fail(format!("kept-alive close: {e}")),
                    }
                    conn = None;
                }
            }
            Ok((status, _)) => {
                seen.fail(format!("kept-alive: status {status}"));
                return;
            }
            Err(e) => {
                seen.fail(format!("kept-alive: {e}"));
                return;
            }
        }
    }
}

/// A WebSocket through the balancer, echoing a message every 10 ms until
/// told to stop.
async fn websocket(addr: SocketAddr, seen: Arc<Seen>) {
    let run = async {
        let s = TcpStream::connect(addr).await?;
        let mut r = BufReader::new(s);
        r.get_mut().write_all(b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").await?;
        let mut line = String::new();
        r.read_line(&mut line).await?;
        if !line.contains(" 101 ") {
            return Err(std::io::Error::other(format!("upgrade answered {line}")));
        }
        loop {
            line.clear();
            r.read_line(&mut line).await?;
            if line.trim_end().is_empty() {
                break;
            }
        }
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let mut n = 0u32;
        while !seen.stop_ws.load(SeqCst) {
            tick.tick().await;
            let msg = n.to_be_bytes();
            r.get_mut().write_all(&msg).await?;
            let mut back = [0u8; 4];
            r.read_exact(&mut back).await?;
            if back != msg {
                return Err(std::io::Error::other("echoed something else"));
            }
            seen.echoed.fetch_add(1, SeqCst);
            n += 1;
        }
        Ok(())
    };
    if let Err(e) = run.await {
        seen.fail(format!("websocket: {e}"));
    }
}

/// The load: the new-connection requests, `CONCURRENT` at a time, plus the
/// kept-alive clients and the WebSocket, which stop once those are done.
/// Says on `halfway` when `TAKEOVER_AT` requests are done.
fn start_load(
    client: &Netns,
    seen: Arc<Seen>,
    halfway: std::sync::mpsc::Sender<()>,
) -> std::thread::JoinHandle<()> {
    spawn_in(client, async move || {
        let addr = lb();
        let mut side = Vec::new();
        for _ in 0..KEPT_ALIVE {
            side.push(tokio::spawn(kept_alive(addr, seen.clone())));
        }
        side.push(tokio::spawn(websocket(addr, seen.clone())));
        let halfway = Arc::new(Mutex::new(Some(halfway)));
        let mut workers = Vec::new();
        for _ in 0..CONCURRENT {
            let (seen, halfway) = (seen.clone(), halfway.clone());
            workers.push(tokio::spawn(async move {
                while seen.started.fetch_add(1, SeqCst) < seen.until.load(SeqCst) {
                    one_request(addr, &seen).await;
                    if seen.done.fetch_add(1, SeqCst) + 1 == TAKEOVER_AT {
                        if let Some(tx) = halfway.lock().unwrap().take() {
                            let _ = tx.send(());
                        }
                    }
                }
            }));
        }
        for w in workers {
            let _ = w.await;
        }
        seen.stop.store(true, SeqCst);
        seen.stop_ws.store(true, SeqCst);
        for s in side {
            let _ = s.await;
        }
    })
}

/// The namespace's TCP listen drops and accept-queue overflows so far.
fn listen_drops(ns: &Netns) -> (u64, u64) {
    let out = ns.command("cat").arg("/proc/net/netstat").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next().unwrap(), lines.next().unwrap());
    let field = |want: &str| {
        names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == want)
            .and_then(|(_, v)| v.parse().ok())
            .unwrap()
    };
    (field("ListenDrops"), field("ListenOverflows"))
}

fn bed() -> HttpBed {
    HttpBed::new(&http_config("60s", WEB_GROUP, FORWARD_WEB)).unwrap()
}

#[test]
fn a_takeover_under_load_fails_no_request_and_drops_no_connection() {
    let bed = bed();
    let _web1 = bed.backend(11, 80, "web-1").unwrap();
    let _web2 = bed.backend(12, 80, "web-2").unwrap();
    let state = StateDir::new("load");
    let old = bed.start_with(&["--state-dir", state.arg()]).unwrap();
    let old_pid = old.pid();
    let drops_before = listen_drops(&bed.lb);

    let seen = Seen::new();
    let (halfway_tx, halfway) = std::sync::mpsc::channel();
    let load = start_load(&bed.client, seen.clone(), halfway_tx);
    halfway.recv().expect("the load reaches the takeover point");
    let new = bed
        .start_with(&["--state-dir", state.arg(), "--takeover"])
        .unwrap();
    new.wait_stderr(Duration::from_secs(30), |l| l.contains("takeover: done"))
        .unwrap();
    let during = seen.done.load(SeqCst);
    // The old one drains: it waits for its WebSocket to end.
    seen.stop_ws.store(true, SeqCst);
    let (exited_ok, old_log) = old.wait_exit().unwrap();
    let drained = seen.done.load(SeqCst);
    seen.finish_soon();
    load.join().unwrap();

    let failures = seen.failures();
    eprintln!(
        "takeover at {TAKEOVER_AT}, done at {during}, old gone at {drained}: ok {} kept-alive {} closed politely {} echoed {}",
        seen.ok.load(SeqCst),
        seen.kept_alive_ok.load(SeqCst),
        seen.closed_politely.load(SeqCst),
        seen.echoed.load(SeqCst)
    );
    assert!(
        failures.is_empty(),
        "{} failures: {failures:?}",
        failures.len()
    );
    assert_eq!(seen.connect_errors.load(SeqCst), 0);
    assert_eq!(seen.ok.load(SeqCst), seen.done.load(SeqCst));
    // The load ran through the whole handover.
    assert!(
        during > TAKEOVER_AT && drained > during,
        "{during} {drained}"
    );
    assert!(seen.kept_alive_ok.load(SeqCst) > 0);
    // Each kept-alive connection the old xalb held was closed after an
    // answer that said so, and continued on a new one.
    assert_eq!(seen.closed_politely.load(SeqCst), KEPT_ALIVE as u64);
    assert!(seen.echoed.load(SeqCst) > 0);
    assert!(exited_ok, "the old xalb failed:\n{old_log}");
    assert!(old_log.contains("takeover: draining"), "{old_log}");
    assert_eq!(
        listen_drops(&bed.lb),
        drops_before,
        "the kernel dropped connections"
    );
    // The new one serves, on the same admin address, and is not the old one.
    let metrics = admin_get(&bed, "/metrics");
    assert_eq!(metrics.status, 200);
    assert_ne!(new.pid(), old_pid);
    let r = xalb_tests::http::in_ns(&bed.client, async || {
        xalb_tests::http::get(lb(), "/", &[]).await.unwrap()
    })
    .unwrap();
    assert_eq!(r.status, 200);
    let (_, log) = new.stop().unwrap();
    assert!(log.contains("takeover: received"), "{log}");
}

#[test]
fn with_no_xalb_running_a_takeover_starts_as_usual() {
    let bed = bed();
    let _web = bed.backend(11, 80, "web-1").unwrap();
    let state = StateDir::new("alone");
    let d = bed
        .start_with(&["--state-dir", state.arg(), "--takeover"])
        .unwrap();
    let r = xalb_tests::http::in_ns(&bed.client, async || {
        xalb_tests::http::get(lb(), "/", &[]).await.unwrap()
    })
    .unwrap();
    assert_eq!(r.status, 200);
    let (_, log) = d.stop().unwrap();
    assert!(log.contains("starting anew"), "{log}");
}

#[test]
fn without_takeover_a_second_xalb_is_refused_and_told_about_it() {
    let bed = bed();
    let state = StateDir::new("second");
    let _d = bed.start_with(&["--state-dir", state.arg()]).unwrap();
    let err = match bed.start_with(&["--state-dir", state.arg()]) {
        Ok(_) => panic!("a second xalb started"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("--takeover"), "{err}");
}

#[test]
fn a_successor_that_fails_after_applying_its_configuration_leaves_the_old_one_serving() {
    let bed = bed();
    let _web = bed.backend(11, 80, "web-1").unwrap();
    let state = StateDir::new("fails");
    let old = bed.start_with(&["--state-dir", state.arg()]).unwrap();
    // The successor's file allows port 81 instead of 80, and names an admin
    // address the host does not have: it fails once its configuration is
    // in the kernel.
    let text = std::fs::read_to_string(&bed.config).unwrap();
    let other = bed.config.with_extension("next.toml");
    std::fs::write(
        &other,
        text.replace("ports = \"80\"", "ports = \"81\"")
            + "\n[admin]\nlisten = \"10.231.99.1:9901\"\n",
    )
    .unwrap();
    let new = Daemon::spawn(&bed.lb, &other, &["--state-dir", state.arg(), "--takeover"]).unwrap();
    let (ok, log) = new.wait_exit().unwrap();
    let _ = std::fs::remove_file(&other);
    assert!(!ok, "the successor started:\n{log}");
    assert!(log.contains("10.231.99.1:9901"), "{log}");
    old.wait_stderr(Duration::from_secs(30), |l| {
        l.contains("this xalb's configuration is enforced again")
    })
    .unwrap();
    // Port 80 is the old configuration's, and the old xalb still serves it.
    let r = xalb_tests::http::in_ns(&bed.client, async || {
        tokio::time::timeout(
            Duration::from_secs(30),
            xalb_tests::http::get(lb(), "/", &[]),
        )
        .await
        .expect("port 80 answers (the old configuration is back)")
        .unwrap()
    })
    .unwrap();
    assert_eq!(r.status, 200);
    // And it can still be taken over.
    let new = bed
        .start_with(&["--state-dir", state.arg(), "--takeover"])
        .unwrap();
    let (ok, log) = old.wait_exit().unwrap();
    assert!(ok, "{log}");
    new.stop().unwrap();
}

/// When the old xalb is killed.
enum Kill {
    /// Before the new one starts: there is nobody to take over from.
    Before,
    /// When the old one logs that it hands over (it may have sent some,
    /// all or none of its sockets by then).
    WhileHanding,
    /// When the new one logs that it has the sockets.
    AfterHanding,
}

/// Kills the old xalb at `when`, under load. The service recovers by
/// itself: no connection attempt is refused (SYNs that find no socket are
/// dropped in the kernel and retransmitted), and once the new xalb is ready
/// nothing fails. What fails before are the requests and connections the
/// killed process held, and ones that met its sockets while it was being
/// torn down.
fn killed_mid_handover(tag: &str, when: Kill) {
    let bed = bed();
    let _web1 = bed.backend(11, 80, "web-1").unwrap();
    let _web2 = bed.backend(12, 80, "web-2").unwrap();
    let state = StateDir::new(tag);
    let old = bed.start_with(&["--state-dir", state.arg()]).unwrap();
    let old_pid = old.pid();

    let seen = Seen::new();
    let (halfway_tx, halfway) = std::sync::mpsc::channel();
    let load = start_load(&bed.client, seen.clone(), halfway_tx);
    halfway.recv().unwrap();
    let args = ["--state-dir", state.arg(), "--takeover"];
    let killed_at;
    let new = match when {
        Kill::Before => {
            old.kill().unwrap();
            killed_at = Instant::now();
            Daemon::spawn(&bed.lb, &bed.config, &args).unwrap()
        }
        Kill::WhileHanding => {
            let new = Daemon::spawn(&bed.lb, &bed.config, &args).unwrap();
            old.wait_stderr(Duration::from_secs(30), |l| l.contains("takeover: frozen"))
                .unwrap();
            old.kill().unwrap();
            killed_at = Instant::now();
            new
        }
        Kill::AfterHanding => {
            let new = Daemon::spawn(&bed.lb, &bed.config, &args).unwrap();
            new.wait_stderr(Duration::from_secs(30), |l| {
                l.contains("takeover: received")
            })
            .unwrap();
            old.kill().unwrap();
            killed_at = Instant::now();
            new
        }
    };
    let new = new.ready().unwrap();
    let ready_at = Instant::now();
    let before_ready = seen.ok.load(SeqCst);
    seen.finish_soon();
    load.join().unwrap();

    let failures = seen.failures.lock().unwrap().clone();
    eprintln!(
        "ready {:?} after the kill; {} failures before",
        ready_at - killed_at,
        failures.len()
    );
    assert_eq!(seen.connect_errors.load(SeqCst), 0, "{failures:?}");
    let late: Vec<_> = failures.iter().filter(|(t, _)| *t > ready_at).collect();
    assert!(
        late.is_empty(),
        "failed once the new xalb was ready: {late:?}"
    );
    assert!(
        seen.ok.load(SeqCst) >= before_ready + AFTER,
        "served after ready"
    );
    // Steady state, in the new process.
    let r = xalb_tests::http::in_ns(&bed.client, async || {
        xalb_tests::http::get(lb(), "/", &[]).await.unwrap()
    })
    .unwrap();
    assert_eq!(r.status, 200);
    assert_ne!(new.pid(), old_pid);
    new.stop().unwrap();
}

#[test]
fn with_the_old_xalb_dead_a_takeover_serves_on_new_sockets() {
    killed_mid_handover("dead", Kill::Before);
}

#[test]
fn the_old_xalb_killed_while_handing_over_leaves_the_service_up() {
    killed_mid_handover("killed-during", Kill::WhileHanding);
}

#[test]
fn the_old_xalb_killed_once_it_has_handed_over_leaves_the_service_up() {
    killed_mid_handover("killed-after", Kill::AfterHanding);
}
