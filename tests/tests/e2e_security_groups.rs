//! End to end: a client namespace and a balancer namespace joined by veth,
//! `xalb run` attaching the real XDP program on the balancer side, real TCP.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use xalb_tests::daemon::{detach, Daemon};
use xalb_tests::netns::{addr, veth, Netns};
use xalb_tests::tcp::{probe, Outcome, Server};

/// A probe's connect window: no SYN-ACK within it is [`Outcome::NoAnswer`],
/// what a dropped SYN gets. An allowed probe connects in well under it and
/// then has a generous limit for its greeting ([`xalb_tests::tcp::probe`]).
const WAIT: Duration = Duration::from_millis(3000);

/// How long to wait for something that must come (a log line, an ICMP
/// error): a safety net, not a measure of speed.
const LIMIT: Duration = Duration::from_secs(30);

struct Bed {
    client: Netns,
    lb: Netns,
    config: PathBuf,
}

impl Bed {
    /// client eth0 10.231.0.2 (+ extra addresses) and fd00:231::2, balancer
    /// eth0 10.231.0.10 and fd00:231::10.
    fn new(config: &str, client_extra: &[&str]) -> Self {
        xalb_tests::require_root();
        let client = Netns::new("cl").unwrap();
        let lb = Netns::new("lb").unwrap();
        veth(&client, "eth0", &lb, "eth0").unwrap();
        addr(&client, "eth0", "10.231.0.2/24").unwrap();
        addr(&client, "eth0", "fd00:231::2/64").unwrap();
        for a in client_extra {
            addr(&client, "eth0", a).unwrap();
        }
        addr(&lb, "eth0", "10.231.0.10/24").unwrap();
        addr(&lb, "eth0", "10.231.1.10/24").unwrap();
        addr(&lb, "eth0", "fd00:231::10/64").unwrap();
        let config_path = std::env::temp_dir().join(format!("{}.toml", lb.name()));
        std::fs::write(&config_path, config).unwrap();
        Self {
            client,
            lb,
            config: config_path,
        }
    }

    fn probe(&self, from: Option<&str>, to: &str) -> Outcome {
        let to: SocketAddr = to.parse().unwrap();
        let from = from.map(|f| f.parse().unwrap());
        probe(&self.client, from, to, 5, WAIT).unwrap()
    }

    fn xdp_attached(&self) -> bool {
        let out = self.lb.ip(&["link", "show", "eth0"]).unwrap();
        String::from_utf8_lossy(&out.stdout).contains("xdp")
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.config);
    }
}

const PUBLIC: &str = r#"
[[security_group]]
name = "web"
ingress = [
  { protocol = "tcp", ports = "80", source = "0.0.0.0/0" },
  { protocol = "tcp", ports = "80", source = "::/0" },
]

[[target_group]]
name = "web"
protocol = "HTTP"
port = 80

[[load_balancer]]
name = "edge"
interfaces = ["eth0"]
addresses = ["10.231.0.10", "fd00:231::10"]
security_groups = ["web"]
"#;

#[test]
fn allowed_ports_connect_denied_ports_get_no_answer_and_are_counted() {
    let bed = Bed::new(PUBLIC, &[]);
    let mut servers: Vec<(&str, Server)> = [
        "10.231.0.10:80",
        "10.231.0.10:8080",
        "[fd00:231::10]:80",
        "[fd00:231::10]:8080",
    ]
    .into_iter()
    .map(|a| {
        (
            a,
            Server::start(&bed.lb, a.parse().unwrap(), "hello").unwrap(),
        )
    })
    .collect();
    // Without xalb both ports answer: the drops below are xalb's doing.
    assert_eq!(
        bed.probe(None, "10.231.0.10:8080"),
        Outcome::Answered("hello".into())
    );
    assert_eq!(
        bed.probe(None, "[fd00:231::10]:8080"),
        Outcome::Answered("hello".into())
    );

    let daemon = Daemon::start(&bed.lb, &bed.config, &[]).unwrap();
    assert!(bed.xdp_attached());
    assert_eq!(
        bed.probe(None, "10.231.0.10:80"),
        Outcome::Answered("hello".into())
    );
    assert_eq!(
        bed.probe(None, "10.231.0.10:8080"),
        Outcome::NoAnswer,
        "dropped, not reset"
    );
    assert_eq!(
        bed.probe(None, "[fd00:231::10]:80"),
        Outcome::Answered("hello".into())
    );
    assert_eq!(
        bed.probe(None, "[fd00:231::10]:8080"),
        Outcome::NoAnswer,
        "dropped, not reset"
    );
    // An allowed port with no listener behind it: the stack refuses the
    // connection, so the packet got through XDP (a drop gets no answer).
    servers.retain(|(a, _)| !a.ends_with(":80"));
    assert_eq!(
        bed.probe(None, "10.231.0.10:80"),
        Outcome::Refused,
        "allowed, so it reaches the stack, which has no listener there"
    );
    assert_eq!(
        bed.probe(None, "[fd00:231::10]:80"),
        Outcome::Refused,
        "allowed, so it reaches the stack, which has no listener there"
    );
    let (counters, _) = daemon.stop().unwrap();

    assert!(counters.get("edge", "drop_no_rule") >= 2, "{counters:?}");
    assert!(counters.get("edge", "pass_allowed") >= 4, "{counters:?}");
    drop(servers);
}

#[test]
fn connections_the_balancer_host_opens_get_their_replies() {
    let bed = Bed::new(PUBLIC, &[]);
    let _v4 = Server::start(&bed.client, "10.231.0.2:9000".parse().unwrap(), "reply").unwrap();
    let _v6 = Server::start(&bed.client, "[fd00:231::2]:9000".parse().unwrap(), "reply").unwrap();
    let daemon = Daemon::start(&bed.lb, &bed.config, &[]).unwrap();
    // From the balancer address to a port no rule allows in: replies still pass.
    let out = probe(
        &bed.lb,
        Some("10.231.0.10:0".parse().unwrap()),
        "10.231.0.2:9000".parse().unwrap(),
        5,
        WAIT,
    )
    .unwrap();
    assert_eq!(out, Outcome::Answered("reply".into()));
    let out = probe(
        &bed.lb,
        Some("[fd00:231::10]:0".parse().unwrap()),
        "[fd00:231::2]:9000".parse().unwrap(),
        5,
        WAIT,
    )
    .unwrap();
    assert_eq!(out, Outcome::Answered("reply".into()));
    // The reply path never opens a listener: a client connecting from port
    // 9000 to a denied port is still dropped.
    let _srv = Server::start(&bed.lb, "10.231.0.10:8080".parse().unwrap(), "hello").unwrap();
    let out = probe(
        &bed.client,
        Some("10.231.0.2:9001".parse().unwrap()),
        "10.231.0.10:8080".parse().unwrap(),
        5,
        WAIT,
    )
    .unwrap();
    assert_eq!(out, Outcome::NoAnswer);
    let (counters, _) = daemon.stop().unwrap();
    assert!(counters.get("edge", "pass_reply") >= 4, "{counters:?}");
    assert!(counters.get("edge", "drop_no_rule") >= 1, "{counters:?}");
}

#[test]
fn an_internal_balancer_ignores_outside_sources() {
    let config = PUBLIC.replace(
        "name = \"edge\"",
        "name = \"edge\"\nscheme = \"internal\"\ninternal_networks = [\"10.231.1.0/24\", \"fd00:231::/120\"]",
    );
    let bed = Bed::new(&config, &["10.231.1.2/24"]);
    let _s = Server::start(&bed.lb, "10.231.0.10:80".parse().unwrap(), "hello").unwrap();
    let _s6 = Server::start(&bed.lb, "[fd00:231::10]:80".parse().unwrap(), "hello").unwrap();
    let daemon = Daemon::start(&bed.lb, &bed.config, &[]).unwrap();
    assert_eq!(
        bed.probe(Some("10.231.1.2:0"), "10.231.0.10:80"),
        Outcome::Answered("hello".into())
    );
    assert_eq!(
        bed.probe(Some("10.231.0.2:0"), "10.231.0.10:80"),
        Outcome::NoAnswer
    );
    // fd00:231::2 is inside fd00:231::/120.
    assert_eq!(
        bed.probe(None, "[fd00:231::10]:80"),
        Outcome::Answered("hello".into())
    );
    let (counters, _) = daemon.stop().unwrap();
    assert!(
        counters.get("edge", "drop_internal_scheme") >= 1,
        "{counters:?}"
    );
}

/// A state directory of the test's own, removed on drop.
struct StateDir(PathBuf);

impl StateDir {
    fn new(tag: &str) -> Self {
        Self(std::env::temp_dir().join(format!("xalb-state-{tag}-{}", std::process::id())))
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

/// `xalb run` in the balancer namespace without waiting for it to be ready:
/// (exit code, stderr) of a run that ends by itself.
fn run_refused(bed: &Bed, state: &StateDir) -> (Option<i32>, String) {
    let out = bed
        .lb
        .command(xalb_tests::xalb_bin())
        .args(["run", "-c"])
        .arg(&bed.config)
        .args(["--state-dir", state.arg(), "--bpffs"])
        .arg(xalb_tests::bpffs::for_netns(bed.lb.name()).unwrap())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The balancer namespace's pin directory, `<bpffs>/xalb/netns-<cookie>`.
fn netns_pins(bed: &Bed) -> PathBuf {
    let cookie = bed
        .lb
        .run(|| xalb::kernel::pins::netns_cookie().unwrap())
        .unwrap();
    xalb_tests::bpffs::for_netns(bed.lb.name())
        .unwrap()
        .join("xalb")
        .join(format!("netns-{cookie}"))
}

#[test]
fn security_groups_stay_enforced_when_xalb_dies_until_xalb_detach() {
    let bed = Bed::new(PUBLIC, &[]);
    let _servers: Vec<Server> = ["10.231.0.10:80", "10.231.0.10:8080"]
        .iter()
        .map(|a| Server::start(&bed.lb, a.parse().unwrap(), "hello").unwrap())
        .collect();
    let state = StateDir::new("fail-closed");
    let args = ["--state-dir", state.arg()];

    let daemon = Daemon::start(&bed.lb, &bed.config, &args).unwrap();
    // SAFETY: kill our own child.
    unsafe { libc::kill(daemon.pid() as i32, libc::SIGKILL) };
    drop(daemon); // waits for its exit
    assert!(bed.xdp_attached(), "the pinned link outlives the process");
    assert_eq!(
        bed.probe(None, "10.231.0.10:8080"),
        Outcome::NoAnswer,
        "after SIGKILL a denied probe still gets no answer"
    );
    assert_eq!(
        bed.probe(None, "10.231.0.10:80"),
        Outcome::Answered("hello".into()),
        "and an allowed one still passes"
    );

    // A new run adopts the pinned link; a second one is refused meanwhile,
    // and so is detaching under it.
    let daemon = Daemon::start(&bed.lb, &bed.config, &args).unwrap();
    daemon
        .wait_stderr(LIMIT, |l| l.contains("XDP adopted"))
        .unwrap();
    let (code, stderr) = run_refused(&bed, &state);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "xalb (pid {}) already runs in this network namespace",
            daemon.pid()
        )),
        "{stderr}"
    );
    let (ok, _, stderr) = detach(&bed.lb, Some(&state.0)).unwrap();
    assert!(!ok && stderr.contains("stop it first"), "{stderr}");
    assert_eq!(bed.probe(None, "10.231.0.10:8080"), Outcome::NoAnswer);

    // SIGTERM leaves the security groups enforced too, and says so.
    let (counters, stderr) = daemon.stop().unwrap();
    assert!(counters.get("edge", "drop_no_rule") >= 1, "{counters:?}");
    assert!(stderr.contains("security groups stay enforced"), "{stderr}");
    assert!(bed.xdp_attached());
    assert_eq!(bed.probe(None, "10.231.0.10:8080"), Outcome::NoAnswer);

    // `xalb detach` removes everything: the host answers as before xalb.
    let pins = netns_pins(&bed);
    assert!(pins.exists());
    let ifindex = bed
        .lb
        .run(|| xalb::kernel::host::if_index("eth0").unwrap())
        .unwrap();
    let (ok, stdout, stderr) = detach(&bed.lb, Some(&state.0)).unwrap();
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(&format!("detached XDP from eth0 (ifindex {ifindex})")),
        "{stdout}"
    );
    let maps = lb_common::PINNED_MAPS.len();
    assert!(stdout.contains(&format!("removed {maps} maps")), "{stdout}");
    assert!(!bed.xdp_attached());
    assert_eq!(
        bed.probe(None, "10.231.0.10:8080"),
        Outcome::Answered("hello".into())
    );
    assert!(!pins.exists(), "{} left", pins.display());
    assert!(
        std::fs::read_dir(&state.0).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".lock")),
        "the lock file goes with the pins"
    );
    let (ok, stdout, _) = detach(&bed.lb, Some(&state.0)).unwrap();
    assert!(ok);
    assert!(
        stdout.starts_with("nothing pinned for this network namespace"),
        "{stdout}"
    );
}

#[test]
fn pins_of_another_layout_version_are_refused_until_detached() {
    let bed = Bed::new(PUBLIC, &[]);
    let state = StateDir::new("layout");
    let other = netns_pins(&bed).join("layout-999");
    std::fs::create_dir_all(&other).unwrap();
    let (code, stderr) = run_refused(&bed, &state);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "pinned xalb state of layout 999 in {} (another xalb version",
            other.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("run `xalb detach` to remove it"),
        "{stderr}"
    );
    assert!(!bed.xdp_attached(), "nothing attached");

    let (ok, stdout, stderr) = detach(&bed.lb, Some(&state.0)).unwrap();
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("removed the pins of layout 999 (another xalb version)"),
        "{stdout}"
    );
    let daemon = Daemon::start(&bed.lb, &bed.config, &["--state-dir", state.arg()]).unwrap();
    assert!(bed.xdp_attached());
    daemon.stop().unwrap();
}

#[test]
fn run_refuses_a_directory_that_is_not_a_bpffs() {
    let bed = Bed::new(PUBLIC, &[]);
    let state = StateDir::new("not-bpffs");
    let out = bed
        .lb
        .command(xalb_tests::xalb_bin())
        .args(["run", "-c"])
        .arg(&bed.config)
        .args(["--state-dir", state.arg()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    // Under `ip netns exec` /sys/fs/bpf, the default, is sysfs.
    assert!(
        stderr.contains("/sys/fs/bpf is not a bpf filesystem"),
        "{stderr}"
    );
    assert!(
        stderr.contains("use a bpffs mounted outside /sys"),
        "{stderr}"
    );
    assert!(!bed.xdp_attached());
}

#[test]
fn run_refuses_a_host_that_does_not_match() {
    let bed = Bed::new(
        &PUBLIC
            .replace("\"eth0\"", "\"nosuch0\"")
            .replace("10.231.0.10", "10.231.0.77"),
        &[],
    );
    let state = std::env::temp_dir().join(format!("xalb-state-refused-{}", std::process::id()));
    let out = bed
        .lb
        .command(xalb_tests::xalb_bin())
        .args(["run", "-c"])
        .arg(&bed.config)
        .arg("--state-dir")
        .arg(&state)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&state);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("interface \"nosuch0\" does not exist"),
        "{stderr}"
    );
    assert!(
        stderr.contains("address 10.231.0.77 is not configured"),
        "{stderr}"
    );
    assert!(!bed.xdp_attached());
}

/// How long a verdict line may take to reach xalb's stderr.
const LOG_WAIT: Duration = LIMIT;

/// Whether `line` is a verdict line (tracing target `xalb::xdp`) saying `what`.
fn verdict_line(line: &str, what: &str) -> bool {
    line.contains("xalb::xdp") && line.ends_with(what)
}

#[test]
fn with_xdp_log_each_verdict_is_a_line() {
    let bed = Bed::new(PUBLIC, &[]);
    let _srv = Server::start(&bed.lb, "10.231.0.10:80".parse().unwrap(), "hello").unwrap();
    let daemon = Daemon::start(&bed.lb, &bed.config, &["--xdp-log"]).unwrap();
    assert_eq!(
        bed.probe(Some("10.231.0.2:40312"), "10.231.0.10:8080"),
        Outcome::NoAnswer
    );
    daemon
        .wait_stderr(LOG_WAIT, |l| {
            verdict_line(
                l,
                "XDP drop_no_rule edge tcp 10.231.0.2:40312 -> 10.231.0.10:8080",
            )
        })
        .unwrap();
    assert_eq!(
        bed.probe(Some("10.231.0.2:40313"), "10.231.0.10:80"),
        Outcome::Answered("hello".into())
    );
    daemon
        .wait_stderr(LOG_WAIT, |l| {
            verdict_line(
                l,
                "XDP pass_allowed edge tcp 10.231.0.2:40313 -> 10.231.0.10:80",
            )
        })
        .unwrap();
    assert_eq!(
        bed.probe(Some("[fd00:231::2]:40314"), "[fd00:231::10]:8080"),
        Outcome::NoAnswer
    );
    daemon
        .wait_stderr(LOG_WAIT, |l| {
            verdict_line(
                l,
                "XDP drop_no_rule edge tcp [fd00:231::2]:40314 -> [fd00:231::10]:8080",
            )
        })
        .unwrap();
    daemon.stop().unwrap();
}

/// `xalb_xdp_packets_total` for (balancer, reason), from the admin endpoint.
fn xdp_packets(bed: &Bed, lb: &str, reason: &str) -> u64 {
    let reply = xalb_tests::http::in_ns(&bed.lb, async move || {
        xalb_tests::http::get(xalb_tests::bed::ADMIN.parse().unwrap(), "/metrics", &[]).await
    })
    .unwrap()
    .unwrap();
    let series = format!("xalb_xdp_packets_total{{load_balancer=\"{lb}\",reason=\"{reason}\"}} ");
    String::from_utf8_lossy(&reply.body)
        .lines()
        .find_map(|l| l.strip_prefix(&series)?.parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

#[test]
fn without_xdp_log_no_verdict_is_logged() {
    let bed = Bed::new(PUBLIC, &[]);
    let daemon = Daemon::start(&bed.lb, &bed.config, &[]).unwrap();
    assert_eq!(
        bed.probe(Some("10.231.0.2:40315"), "10.231.0.10:8080"),
        Outcome::NoAnswer
    );
    // The counter proves the XDP program decided on the packet.
    assert!(xdp_packets(&bed, "edge", "drop_no_rule") >= 1);
    let (_, stderr) = daemon.stop().unwrap();
    assert!(!stderr.lines().any(|l| l.contains("xalb::xdp")), "{stderr}");
}

const WEAK_HOST: &str = r#"
[[security_group]]
name = "web"
ingress = [
  { protocol = "tcp", ports = "8080", source = "0.0.0.0/0" },
  { protocol = "tcp", ports = "8080", source = "::/0" },
]

[[load_balancer]]
name = "edge"
interfaces = ["eth0"]
addresses = ["10.231.0.10", "fd00:231::10"]
security_groups = ["web"]

[[listener]]
load_balancer = "edge"
protocol = "HTTP"
port = 8080
default_action = { type = "fixed-response", status_code = 200, message_body = "ok" }
"#;

/// How a bare TCP connect ended.
#[derive(Debug, PartialEq, Eq)]
enum Connect {
    Connected,
    Refused,
    NoAnswer,
    Other(String),
}

fn connect(ns: &Netns, to: &str) -> Connect {
    let to: SocketAddr = to.parse().unwrap();
    ns.run(
        move || match std::net::TcpStream::connect_timeout(&to, WAIT) {
            Ok(_) => Connect::Connected,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Connect::Refused,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Connect::NoAnswer,
            Err(e) => Connect::Other(e.to_string()),
        },
    )
    .unwrap()
}

/// Linux accepts any local address on any interface: a second interface
/// without XDP ("eth1", to a second client) carries traffic to the balancer
/// address. The sk_lookup program refuses it, on the listener's port and on
/// any other, TCP and UDP, and counts it; a refusal there is a reset (sk_lookup cannot
/// drop silently), where XDP on the listed interface drops without an
/// answer.
#[test]
fn connections_through_an_interface_the_balancer_does_not_list_are_refused_and_counted() {
    let bed = Bed::new(WEAK_HOST, &[]);
    let client2 = Netns::new("cl2").unwrap();
    veth(&client2, "eth0", &bed.lb, "eth1").unwrap();
    addr(&bed.lb, "eth1", "10.231.2.10/24").unwrap();
    addr(&bed.lb, "eth1", "fd00:231::2:10/112").unwrap();
    addr(&client2, "eth0", "10.231.2.2/24").unwrap();
    addr(&client2, "eth0", "fd00:231::2:2/112").unwrap();
    client2
        .ip(&["route", "add", "10.231.0.10/32", "via", "10.231.2.10"])
        .unwrap();
    client2
        .ip(&[
            "-6",
            "route",
            "add",
            "fd00:231::10/128",
            "via",
            "fd00:231::2:10",
        ])
        .unwrap();
    // A host service on the denied port: without xalb it answers through
    // both interfaces.
    let _host = ["10.231.0.10:9090", "[fd00:231::10]:9090"]
        .map(|a| Server::start(&bed.lb, a.parse().unwrap(), "hello").unwrap());
    for to in ["10.231.0.10:9090", "[fd00:231::10]:9090"] {
        assert_eq!(
            connect(&client2, to),
            Connect::Connected,
            "{to} without xalb"
        );
    }

    // `xalb check` in that namespace names the second interface.
    let check = bed
        .lb
        .command(xalb_tests::xalb_bin())
        .args(["check", "-c"])
        .arg(&bed.config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{stdout}");
    assert!(
        stdout.contains("not in any `interfaces`: eth1 (ethernet)"),
        "{stdout}"
    );

    let daemon = Daemon::start(&bed.lb, &bed.config, &[]).unwrap();
    daemon
        .wait_stderr(LIMIT, |l| {
            l.contains("WARN") && l.contains("eth1 (ethernet)")
        })
        .unwrap();
    // Through eth1: the listener's port and a denied one are both refused.
    for to in [
        "10.231.0.10:8080",
        "10.231.0.10:9090",
        "[fd00:231::10]:8080",
        "[fd00:231::10]:9090",
    ] {
        assert_eq!(connect(&client2, to), Connect::Refused, "{to} through eth1");
    }
    assert!(xdp_packets(&bed, "edge", "drop_wrong_interface") >= 4);
    // UDP as well: the datagram is refused with ICMP port unreachable and
    // never reaches the host's socket.
    let udp = bed
        .lb
        .run(|| std::net::UdpSocket::bind("10.231.0.10:5353").unwrap())
        .unwrap();
    let before = xdp_packets(&bed, "edge", "drop_wrong_interface");
    let refused = client2
        .run(|| {
            let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            s.connect("10.231.0.10:5353").unwrap();
            s.set_read_timeout(Some(LIMIT)).unwrap();
            s.send(b"x").unwrap();
            s.recv(&mut [0u8; 8]).unwrap_err().kind()
        })
        .unwrap();
    assert_eq!(refused, std::io::ErrorKind::ConnectionRefused);
    udp.set_nonblocking(true).unwrap();
    assert_eq!(
        udp.recv(&mut [0u8; 8]).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "nothing delivered"
    );
    assert_eq!(
        xdp_packets(&bed, "edge", "drop_wrong_interface"),
        before + 1
    );
    // Through eth0, the listed interface: the rules decide, silently.
    assert_eq!(connect(&bed.client, "10.231.0.10:8080"), Connect::Connected);
    assert_eq!(
        connect(&bed.client, "[fd00:231::10]:8080"),
        Connect::Connected
    );
    assert_eq!(connect(&bed.client, "10.231.0.10:9090"), Connect::NoAnswer);
    // A client on the balancer's host comes in on the device holding the
    // address (eth0 here), which counts as the balancer's.
    assert_eq!(connect(&bed.lb, "10.231.0.10:8080"), Connect::Connected);
    assert_eq!(connect(&bed.lb, "10.231.0.10:9090"), Connect::Connected);
    let wrong = xdp_packets(&bed, "edge", "drop_wrong_interface");
    let (counters, _) = daemon.stop().unwrap();
    assert_eq!(counters.get("edge", "drop_wrong_interface"), wrong);
    assert!(counters.get("edge", "drop_no_rule") >= 1, "{counters:?}");
}
