//! Steering end to end: the daemon holds no socket bound to a balancer
//! address, yet every address of the balancer is served, an address a
//! reload adds is served without a restart (and without a new socket), and
//! one it removes is not served any more.

use std::net::SocketAddr;
use std::process::Output;
use std::time::Duration;

use xalb_tests::admin::{admin_get, spawn_in, wait_for};
use xalb_tests::bed::{lb, HttpBed, ADMIN, WEB_GROUP};
use xalb_tests::http::{get, in_ns, raw};
use xalb_tests::netns::addr;

/// Balancer "edge" on `addresses` with one HTTP:80 listener forwarding to
/// the bed's group "web".
fn config(addresses: &[&str]) -> String {
    let addresses: Vec<String> = addresses.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        r#"
[[security_group]]
name = "web"
ingress = [
  {{ protocol = "tcp", ports = "80", source = "0.0.0.0/0" }},
  {{ protocol = "tcp", ports = "80", source = "::/0" }},
]

[[load_balancer]]
name = "edge"
interfaces = ["eth0"]
addresses = [{}]
security_groups = ["web"]

[[listener]]
load_balancer = "edge"
protocol = "HTTP"
port = 80
default_action = {{ type = "forward", target_group = "web" }}
{WEB_GROUP}
"#,
        addresses.join(", ")
    )
}

/// Every listening TCP socket of the namespace (`ss -Htln`), sorted.
fn listening(bed: &HttpBed) -> Vec<SocketAddr> {
    let out = bed.lb.command("ss").args(["-Htln"]).output().unwrap();
    assert!(out.status.success());
    let mut addrs: Vec<SocketAddr> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let local = l.split_whitespace().nth(3).unwrap_or_default();
            local
                .parse()
                .unwrap_or_else(|_| panic!("a socket bound to no single address: {l}"))
        })
        .collect();
    addrs.sort();
    addrs
}

fn reload(bed: &HttpBed, addresses: &[&str]) -> Output {
    std::fs::write(&bed.config, config(addresses)).unwrap();
    let out = xalb_tests::daemon::cli(&bed.lb)
        .args(["reload", "--admin", ADMIN])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The value of the `/metrics` sample that starts with `prefix`.
fn metric(bed: &HttpBed, prefix: &str) -> u64 {
    let text = String::from_utf8_lossy(&admin_get(bed, "/metrics").body).into_owned();
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in:\n{text}"))
}

#[test]
fn every_balancer_address_is_served_by_sockets_bound_to_none_of_them() {
    let bed = HttpBed::new(&config(&["10.231.0.10", "10.231.0.11", "fd00:231::10"])).unwrap();
    addr(&bed.lb, "eth0", "10.231.0.11/24").unwrap();
    addr(&bed.lb, "eth0", "10.231.0.12/24").unwrap();
    let _web = bed.backend(11, 80, "web").unwrap();
    let d = bed.start().unwrap();

    // Only loopback sockets: the listener's groups and the admin endpoint.
    let before = listening(&bed);
    assert!(
        before.iter().all(|a| a.ip().is_loopback()),
        "bound beyond loopback: {before:?}"
    );
    assert!(
        before.iter().any(|a| a.is_ipv6()),
        "an IPv6 group: {before:?}"
    );

    let replies = in_ns(&bed.client, async || {
        let mut out = Vec::new();
        for vip in ["10.231.0.10:80", "10.231.0.11:80", "[fd00:231::10]:80"] {
            let vip: SocketAddr = vip.parse().unwrap();
            out.push((vip, get(vip, "/", &[]).await.unwrap()));
        }
        // HTTP/1.0 without Host: forwarded with the address reached.
        let old = raw(
            "10.231.0.11:80".parse().unwrap(),
            b"GET /old HTTP/1.0\r\n\r\n",
        )
        .await
        .unwrap();
        // Not a balancer address: no listener there.
        let other = tokio::net::TcpStream::connect("10.231.0.12:80").await;
        (out, old, other.map(|_| ()))
    })
    .unwrap();
    let (replies, old, other) = replies;
    for (vip, r) in &replies {
        assert_eq!(r.status, 200, "{vip}");
        assert_eq!(r.seen("x-forwarded-port"), ["80"], "{vip}");
        // The client's own address, of its own family (never ::ffff:).
        let client = if vip.is_ipv4() {
            "10.231.0.2"
        } else {
            "fd00:231::2"
        };
        assert_eq!(r.seen("x-forwarded-for"), [client], "{vip}");
    }
    assert!(old.contains("200"), "{old}");
    assert!(old.contains("host: 10.231.0.11\n"), "{old}");
    assert_eq!(
        other.unwrap_err().kind(),
        std::io::ErrorKind::ConnectionRefused
    );

    // A reload adds 10.231.0.12: served at once, by the same sockets.
    reload(
        &bed,
        &["10.231.0.10", "10.231.0.11", "10.231.0.12", "fd00:231::10"],
    );
    let added = in_ns(&bed.client, async || {
        get("10.231.0.12:80".parse().unwrap(), "/", &[])
            .await
            .unwrap()
    })
    .unwrap();
    assert_eq!(added.status, 200);
    assert_eq!(added.seen("x-forwarded-port"), ["80"]);
    assert_eq!(listening(&bed), before, "nothing bound, nothing closed");

    // And removes 10.231.0.11: no longer steered, refused by the host.
    reload(&bed, &["10.231.0.10", "10.231.0.12", "fd00:231::10"]);
    let removed = in_ns(&bed.client, async || {
        tokio::net::TcpStream::connect("10.231.0.11:80")
            .await
            .map(|_| ())
    })
    .unwrap();
    assert_eq!(
        removed.unwrap_err().kind(),
        std::io::ErrorKind::ConnectionRefused
    );
    assert_eq!(listening(&bed), before);

    // Five connections reached the listener; none found it without a socket.
    let labels = r#"{load_balancer="edge",listener="edge:80""#;
    assert_eq!(
        metric(
            &bed,
            &format!("xalb_listener_steered_connection_count_total{labels}}}")
        ),
        5
    );
    assert_eq!(
        metric(
            &bed,
            &format!("xalb_listener_dropped_connection_count_total{labels},reason=\"no_socket\"}}")
        ),
        0
    );
    let (counters, _) = d.stop().unwrap();
    assert_eq!(counters.get("edge", "drop_no_socket"), 0);
}

/// How long a client's SYN may take to be seen waiting.
const WAIT: Duration = Duration::from_secs(5);

/// The client's TCP sockets still waiting for an answer to their SYN.
fn syn_sent(bed: &HttpBed) -> usize {
    let out = bed
        .client
        .command("ss")
        .args(["-Htn", "state", "syn-sent"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[test]
fn a_connection_begun_while_no_daemon_runs_is_served_by_the_next_one() {
    let bed = HttpBed::new(&config(&["10.231.0.10"])).unwrap();
    let _web = bed.backend(11, 80, "web").unwrap();
    let first = bed.start().unwrap();
    let status = in_ns(&bed.client, async || {
        get(lb(), "/", &[]).await.unwrap().status
    })
    .unwrap();
    assert_eq!(status, 200);
    // SAFETY: kill our own child.
    unsafe { libc::kill(first.pid() as i32, libc::SIGKILL) };
    drop(first); // waits for its exit

    // Nothing serves the listener now, and its security groups stay
    // enforced: the SYN is dropped, not reset, and the client waits.
    let client = spawn_in(&bed.client, async || {
        get(lb(), "/", &[])
            .await
            .map(|r| r.status)
            .map_err(|e| format!("{e:#}"))
    });
    wait_for(
        "the client's SYN to go unanswered",
        WAIT,
        || match syn_sent(&bed) {
            0 => Err("no connection waiting".to_string()),
            _ => Ok(()),
        },
    );
    // The next daemon adopts the pins and serves the listener; the client's
    // retransmitted SYN reaches it, with no error on the client's side.
    let second = bed.start().unwrap();
    assert_eq!(client.join().unwrap(), Ok(200));
    drop(second);
}
