//! TCP listeners forwarded by the kernel: XDP picks a target by Maglev,
//! translates both directions and sends packets on itself; no socket of the
//! balancer ever holds these connections.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use xalb_tests::admin::{admin_get_in, targets_in, wait_for};
use xalb_tests::netns::Netns;
use xalb_tests::tcp::{probe, Outcome, Server};
use xalb_tests::tcp_bed::{on_segment, target, tcp_config, TcpBed, LB_V4, LB_V6};

/// How long a session's connect and reads may take: a safety net.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

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

/// Waits until every target of `targets` is in state `state`.
fn wait_state(lb: &Netns, targets: &[SocketAddr], state: &str) {
    wait_for(&format!("targets {state}"), Duration::from_secs(60), || {
        let rows = targets_in(lb, "");
        let all = targets.iter().all(|t| {
            rows.iter()
                .any(|r| r.address == t.ip().to_string() && r.port == t.port() && r.state == state)
        });
        if all {
            Ok(())
        } else {
            Err(format!("{rows:?}"))
        }
    });
}

/// Waits until every target of `targets` is healthy and holds slots of
/// the ring (the daemon rebuilt it after their checks passed).
fn wait_in_ring(lb: &Netns, targets: &[SocketAddr]) {
    wait_state(lb, targets, "healthy");
    wait_ring(lb, targets);
}

/// Waits until every target of `targets` holds slots of the ring.
fn wait_ring(lb: &Netns, targets: &[SocketAddr]) {
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

/// Whether the flows spread and stay: on the routed bed (`XDP_REDIRECT`
/// between interfaces) or, `one_segment`, with everyone on one segment
/// (`XDP_TX` back out of the interface).
fn spread_and_stay(v6: bool, one_segment: bool) {
    let mut targets = [target(11, 7000, v6), target(12, 7000, v6)];
    let mut to = lb(v6);
    let config = tcp_config(&targets, "");
    let bed = if one_segment {
        targets = targets.map(on_segment);
        to = on_segment(to);
        TcpBed::one_segment(&config).unwrap()
    } else {
        TcpBed::new(&config).unwrap()
    };
    let _a = Server::start(&bed.targets, targets[0], "a\n").unwrap();
    let _b = Server::start(&bed.targets, targets[1], "b\n").unwrap();
    let d = bed.start().unwrap();
    wait_in_ring(&bed.lb, &targets);
    // Every flow keeps its target for its life: a packet sent to the other
    // one would meet no socket there and reset the connection.
    let names = sessions(&bed.client, to, 60, 5);
    let a = names.iter().filter(|n| *n == "a").count();
    let b = names.iter().filter(|n| *n == "b").count();
    let socket = listening(&bed.lb, 80);
    let tx = xdp_tx(&bed.lb);
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
    // 60 closed flows, two entries each, still in the table (none reused
    // a port yet).
    assert_eq!(
        counters.field("flow_tables", "established"),
        Some(120),
        "{:?}",
        counters.1
    );
    assert_eq!(
        tx > 0,
        one_segment,
        "XDP_TX only on one segment: {tx} frames sent back out"
    );
}

/// Frames the balancer's eth0 sent back out with `XDP_TX` (veth's count).
fn xdp_tx(lb: &Netns) -> u64 {
    let out = lb.command("ethtool").args(["-S", "eth0"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.trim_start().starts_with("rx_queue_") && l.contains("_xdp_tx:"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn ipv4_flows_spread_over_both_targets_and_stay_on_theirs() {
    spread_and_stay(false, false);
}

#[test]
fn ipv4_flows_spread_and_stay_with_targets_on_the_clients_segment() {
    spread_and_stay(false, true);
}

#[test]
fn ipv6_flows_spread_and_stay_with_targets_on_the_clients_segment() {
    spread_and_stay(true, true);
}

#[test]
fn ipv6_flows_spread_over_both_targets_and_stay_on_theirs() {
    spread_and_stay(true, false);
}

/// An open session through the balancer: the stream and the greeting line.
fn open(client: &Netns, to: SocketAddr) -> (TcpStream, String) {
    client
        .run(move || {
            let mut s = TcpStream::connect_timeout(&to, IO_TIMEOUT).expect("connects");
            s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            let mut line = Vec::new();
            let mut byte = [0u8; 1];
            while byte[0] != b'\n' {
                s.read_exact(&mut byte).expect("a greeting");
                line.push(byte[0]);
            }
            (s, String::from_utf8_lossy(&line).trim().to_string())
        })
        .unwrap()
}

/// One echo round trip on an open session.
fn echo(s: &mut TcpStream) -> std::io::Result<()> {
    s.write_all(b"ping")?;
    let mut back = [0u8; 4];
    s.read_exact(&mut back)?;
    assert_eq!(&back, b"ping");
    Ok(())
}

/// Opens sessions until one reached each name of `names` (a fair ring
/// misses one of two targets 40 times in a row with probability 2e-12).
fn one_on_each(client: &Netns, to: SocketAddr, names: &[&str]) -> Vec<TcpStream> {
    let mut got: Vec<Option<TcpStream>> = names.iter().map(|_| None).collect();
    for _ in 0..40 {
        let (s, name) = open(client, to);
        if let Some(i) = names.iter().position(|n| *n == name) {
            got[i].get_or_insert(s);
        }
        if got.iter().all(Option::is_some) {
            return got.into_iter().map(Option::unwrap).collect();
        }
    }
    panic!("40 sessions did not reach each of {names:?}");
}

/// 5 MiB each way through one session, compared byte for byte; the target
/// sees the balancer's own address (full NAT).
fn large_transfer(v6: bool) {
    let targets = [target(11, 7000, v6)];
    let bed = TcpBed::new(&tcp_config(&targets, "")).unwrap();
    let _a = Server::telling_peer(&bed.targets, targets[0]).unwrap();
    let d = bed.start().unwrap();
    wait_in_ring(&bed.lb, &targets);
    let (mut s, peer) = open(&bed.client, lb(v6));
    let balancer = if v6 { "fd00:231::41:1" } else { "10.231.41.1" };
    assert_eq!(peer, balancer, "the target sees the balancer's address");
    let data: Vec<u8> = (0..5u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut w = s.try_clone().unwrap();
    let sent = data.clone();
    let writer = std::thread::spawn(move || w.write_all(&sent));
    let mut back = vec![0u8; data.len()];
    s.read_exact(&mut back).expect("the echo of 5 MiB");
    writer.join().unwrap().expect("5 MiB written");
    drop(s);
    let (counters, stderr) = d.stop().unwrap();
    assert!(back == data, "the 5 MiB came back intact");
    assert!(
        counters.field("listener_counter lb=edge port=80", "to_bytes") >= Some(5 << 20),
        "{:?}\n{stderr}",
        counters.1
    );
}

#[test]
fn ipv4_five_mebibytes_cross_intact_each_way() {
    large_transfer(false);
}

#[test]
fn ipv6_five_mebibytes_cross_intact_each_way() {
    large_transfer(true);
}

fn preserved_client_ip(v6: bool) {
    let targets = [target(11, 7000, v6)];
    let bed = TcpBed::new(&tcp_config(&targets, "preserve_client_ip = true")).unwrap();
    let _a = Server::telling_peer(&bed.targets, targets[0]).unwrap();
    let _d = bed.start().unwrap();
    wait_in_ring(&bed.lb, &targets);
    let (mut s, peer) = open(&bed.client, lb(v6));
    let client = if v6 { "fd00:231::40:2" } else { "10.231.40.2" };
    assert_eq!(peer, client, "the target sees the client's address");
    echo(&mut s).expect("replies routed back through the balancer");
}

#[test]
fn ipv4_targets_see_the_client_address_when_preserved() {
    preserved_client_ip(false);
}

#[test]
fn ipv6_targets_see_the_client_address_when_preserved() {
    preserved_client_ip(true);
}

#[test]
fn a_source_the_security_groups_deny_creates_no_flow() {
    let targets = [target(11, 7000, false)];
    let bed = TcpBed::new(&tcp_config(&targets, "")).unwrap();
    xalb_tests::netns::addr(&bed.client, "eth0", "10.231.40.66/24").unwrap();
    let _a = Server::start(&bed.targets, targets[0], "a\n").unwrap();
    let d = bed.start().unwrap();
    wait_in_ring(&bed.lb, &targets);
    let denied = probe(
        &bed.client,
        Some("10.231.40.66:0".parse().unwrap()),
        lb(false),
        2,
        Duration::from_secs(2),
    )
    .unwrap();
    let allowed = probe(&bed.client, None, lb(false), 2, IO_TIMEOUT).unwrap();
    let (counters, stderr) = d.stop().unwrap();
    assert_eq!(denied, Outcome::NoAnswer, "a denied SYN is dropped");
    assert_eq!(allowed, Outcome::Answered("a\n".into()));
    assert!(counters.get("edge", "drop_no_rule") >= 1, "{stderr}");
    assert_eq!(
        counters.field("listener_counter lb=edge port=80", "new_flows"),
        Some(1),
        "only the allowed session made a flow\n{stderr}"
    );
}

#[test]
fn a_failed_target_has_its_flows_reset_and_the_others_keep_theirs() {
    let targets = [target(11, 7000, false), target(12, 7000, false)];
    let bed = TcpBed::new(&tcp_config(&targets, "")).unwrap();
    let _a = Server::start(&bed.targets, targets[0], "a\n").unwrap();
    let _b = Server::start(&bed.targets, targets[1], "b\n").unwrap();
    let d = bed.start().unwrap();
    wait_in_ring(&bed.lb, &targets);
    let mut open_flows = one_on_each(&bed.client, lb(false), &["a", "b"]);
    // b's address goes: its checks time out, and its established flow
    // could only hang until TCP gives up.
    bed.targets
        .ip(&["addr", "del", "10.231.41.12/24", "dev", "eth0"])
        .unwrap();
    wait_state(&bed.lb, &targets[1..], "unhealthy");
    let b = echo(&mut open_flows[1]);
    let a = echo(&mut open_flows[0]);
    let after = sessions(&bed.client, lb(false), 10, 1);
    let (counters, stderr) = d.stop().unwrap();
    assert_eq!(
        b.as_ref().map_err(std::io::Error::kind).err(),
        Some(std::io::ErrorKind::ConnectionReset),
        "b's flow is reset: {b:?}\n{:?}\n{stderr}",
        counters.1
    );
    assert!(a.is_ok(), "a's flow goes on: {a:?}");
    assert!(
        after.iter().all(|n| n == "a"),
        "new flows go to a: {after:?}"
    );
    assert!(
        counters.field("listener_counter lb=edge port=80", "flows_reset") >= Some(1),
        "{:?}\n{stderr}",
        counters.1
    );
}

/// `xalb reload` in the balancer's namespace, which rereads the file.
fn reload(bed: &TcpBed) {
    let out = xalb_tests::daemon::cli(&bed.lb)
        .args(["reload", "--admin", xalb_tests::bed::ADMIN])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("reloaded:"),
        "{out:?}"
    );
}

#[test]
fn a_deregistered_target_keeps_its_flows_until_its_delay_ends() {
    let targets = [target(11, 7000, false), target(12, 7000, false)];
    // Long enough for the checks below, which take well under a second.
    let extra = "deregistration_delay = \"8s\"";
    let bed = TcpBed::new(&tcp_config(&targets, extra)).unwrap();
    let _a = Server::start(&bed.targets, targets[0], "a\n").unwrap();
    let _b = Server::start(&bed.targets, targets[1], "b\n").unwrap();
    let _d = bed.start().unwrap();
    wait_in_ring(&bed.lb, &targets);
    let mut open_flows = one_on_each(&bed.client, lb(false), &["a", "b"]);
    bed.write_config(&tcp_config(&targets[..1], extra)).unwrap();
    reload(&bed);
    wait_state(&bed.lb, &targets[1..], "draining");
    echo(&mut open_flows[1]).expect("b's flow goes on while it drains");
    let after = sessions(&bed.client, lb(false), 10, 1);
    assert!(
        after.iter().all(|n| n == "a"),
        "new flows go to a: {after:?}"
    );
    // Once the delay is over the target is gone, and so is its flow.
    wait_for("b gone", Duration::from_secs(60), || {
        let rows = targets_in(&bed.lb, "");
        match rows.iter().any(|r| r.address == "10.231.41.12") {
            true => Err(format!("{rows:?}")),
            false => Ok(()),
        }
    });
    let b = echo(&mut open_flows[1]);
    assert_eq!(
        b.as_ref().map_err(std::io::Error::kind).err(),
        Some(std::io::ErrorKind::ConnectionReset),
        "b's flow is reset once its delay is over: {b:?}"
    );
    echo(&mut open_flows[0]).expect("a's flow goes on");
}

#[test]
fn next_hops_without_a_neighbour_entry_are_resolved_again() {
    let targets = [target(11, 7000, false)];
    let config = tcp_config(&targets, "").replace(
        "[target_group.health_check]\n",
        "[target_group.health_check]\nenabled = false\n",
    );
    let bed = TcpBed::new(&config).unwrap();
    let _a = Server::start(&bed.targets, targets[0], "a\n").unwrap();
    let d = bed.start().unwrap();
    wait_ring(&bed.lb, &targets);
    assert_eq!(sessions(&bed.client, lb(false), 1, 1), ["a"]);
    // Nothing of the balancer's own talks to the target (no checks): only
    // the daemon, told by XDP, can bring the entries back.
    bed.lb.ip(&["-4", "neigh", "flush", "all"]).unwrap();
    assert_eq!(sessions(&bed.client, lb(false), 1, 1), ["a"]);
    let (counters, stderr) = d.stop().unwrap();
    assert!(
        counters.get("edge", "drop_no_neighbour") >= 1,
        "the first SYN after the flush met no entry\n{stderr}"
    );
}

#[test]
fn flows_outlive_a_takeover_by_a_new_xalb() {
    let targets = [target(11, 7000, false), target(12, 7000, false)];
    let bed = TcpBed::new(&tcp_config(&targets, "")).unwrap();
    let _a = Server::start(&bed.targets, targets[0], "a\n").unwrap();
    let _b = Server::start(&bed.targets, targets[1], "b\n").unwrap();
    let state = std::env::temp_dir().join(format!("{}-state", bed.lb.name()));
    let state = state.to_str().unwrap().to_string();
    let old = bed.start_with(&["--state-dir", &state]).unwrap();
    wait_in_ring(&bed.lb, &targets);
    let mut open_flows = one_on_each(&bed.client, lb(false), &["a", "b"]);
    let new = bed
        .start_with(&["--state-dir", &state, "--takeover"])
        .unwrap();
    new.wait_stderr(Duration::from_secs(30), |l| l.contains("takeover: done"))
        .unwrap();
    let (exited_ok, old_log) = old.wait_exit().unwrap();
    assert!(exited_ok, "{old_log}");
    for (i, s) in open_flows.iter_mut().enumerate() {
        echo(s).unwrap_or_else(|e| panic!("flow {i} goes on after the takeover: {e}"));
    }
    let names = sessions(&bed.client, lb(false), 20, 1);
    let (counters, stderr) = new.stop().unwrap();
    let _ = std::fs::remove_dir_all(&state);
    assert!(
        names.iter().any(|n| n == "a") && names.iter().any(|n| n == "b"),
        "new flows spread after it: {names:?}"
    );
    assert_eq!(
        counters.field("listener_counter lb=edge port=80", "flows_reset"),
        Some(0),
        "no flow was reset\n{stderr}"
    );
}
