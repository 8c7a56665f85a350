//! TCP listeners forwarded by the kernel: XDP picks a target by Maglev,
//! translates both directions and sends packets on itself; no socket of the
//! balancer ever holds these connections.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use xalb_tests::admin::{admin_get_in, targets_in, wait_for};
use xalb_tests::netns::Netns;
use xalb_tests::tcp::Server;
use xalb_tests::tcp_bed::{target, tcp_config, TcpBed, LB_V4, LB_V6};

const IO_TIMEOUT: Duration = Duration::from_secs(10);

fn lb(v6: bool) -> SocketAddr {
    if v6 {
        format!("[{LB_V6}]:80").parse().unwrap()
    } else {
        format!("{LB_V4}:80").parse().unwrap()
    }
}

/// Opens a connection through the balancer, reads the target's one-line
/// greeting (its name) and checks `rounds` echoes: the name, or the error.
fn session(to: SocketAddr, rounds: usize) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&to, IO_TIMEOUT)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    let mut name = Vec::new();
    let mut byte = [0u8; 1];
    while byte[0] != b'\n' {
        s.read_exact(&mut byte)?;
        name.push(byte[0]);
    }
    for i in 0..rounds {
        let msg = format!("message {i}");
        s.write_all(msg.as_bytes())?;
        let mut echo = vec![0u8; msg.len()];
        s.read_exact(&mut echo)?;
        assert_eq!(echo, msg.as_bytes(), "the echo of {msg:?}");
    }
    Ok(String::from_utf8_lossy(&name).trim().to_string())
}

/// `n` sessions from the client: the name of the target each reached.
fn sessions(client: &Netns, to: SocketAddr, n: usize, rounds: usize) -> Vec<String> {
    client
        .run(move || {
            (0..n)
                .map(|_| session(to, rounds).expect("a session through the balancer"))
                .collect()
        })
        .unwrap()
}

/// Each target's slots in the kernel's rings now, by `addr:port`.
fn ring_slots(lb: &Netns) -> Vec<(String, u64)> {
    let r = admin_get_in(lb, "/metrics");
    String::from_utf8_lossy(&r.body)
        .lines()
        .filter_map(|l| l.strip_prefix("xalb_target_ring_slots{"))
        .filter_map(|l| {
            let target = l.split("target=\"").nth(1)?.split('"').next()?.to_string();
            let n = l.rsplit(' ').next()?.parse().ok()?;
            Some((target, n))
        })
        .collect()
}

/// Waits until every target of `targets` is healthy and holds slots of
/// the ring (the daemon rebuilt it after their checks passed).
fn wait_in_ring(lb: &Netns, targets: &[SocketAddr]) {
    wait_for("every target healthy", Duration::from_secs(30), || {
        let rows = targets_in(lb, "");
        let healthy = targets.iter().all(|t| {
            rows.iter().any(|r| {
                r.address == t.ip().to_string() && r.port == t.port() && r.state == "healthy"
            })
        });
        if healthy {
            Ok(())
        } else {
            Err(format!("{rows:?}"))
        }
    });
    wait_for("every target in the ring", Duration::from_secs(30), || {
        let slots = ring_slots(lb);
        let all = targets
            .iter()
            .all(|t| slots.iter().any(|(a, n)| *a == t.to_string() && *n > 0));
        if all {
            Ok(())
        } else {
            Err(format!("{slots:?}"))
        }
    });
}

/// Whether anything in `ns` listens on TCP port `port`.
fn listening(ns: &Netns, port: u16) -> bool {
    let out = ns.command("ss").args(["-Hltn"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().any(|l| {
        l.split_whitespace()
            .nth(3)
            .is_some_and(|a| a.ends_with(&format!(":{port}")))
    })
}

fn spread_and_stay(v6: bool) {
    let targets = [target(11, 7000, v6), target(12, 7000, v6)];
    let bed = TcpBed::new(&tcp_config(&targets, "")).unwrap();
    let _a = Server::start(&bed.targets, targets[0], "a\n").unwrap();
    let _b = Server::start(&bed.targets, targets[1], "b\n").unwrap();
    let d = bed.start().unwrap();
    wait_in_ring(&bed.lb, &targets);
    // Every flow keeps its target for its life: a packet sent to the other
    // one would meet no socket there and reset the connection.
    let names = sessions(&bed.client, lb(v6), 60, 5);
    let a = names.iter().filter(|n| *n == "a").count();
    let b = names.iter().filter(|n| *n == "b").count();
    let socket = listening(&bed.lb, 80);
    let (counters, stderr) = d.stop().unwrap();
    assert_eq!(a + b, 60, "every session reached a target: {names:?}");
    // A fair split of 60 has fewer than 12 on one side with probability
    // under 1e-5.
    assert!(
        a >= 12 && b >= 12,
        "the flows spread: a {a}, b {b}\n{stderr}"
    );
    assert!(
        !socket,
        "the balancer holds no socket on the listener's port"
    );
    assert_eq!(
        counters.field("listener_counter lb=edge port=80", "new_flows"),
        Some(60),
        "{:?}\n{stderr}",
        counters.1
    );
    assert!(counters.get("edge", "forward_to_target") > 0);
    assert!(counters.get("edge", "forward_from_target") > 0);
}

#[test]
fn ipv4_flows_spread_over_both_targets_and_stay_on_theirs() {
    spread_and_stay(false);
}

#[test]
fn ipv6_flows_spread_over_both_targets_and_stay_on_theirs() {
    spread_and_stay(true);
}
