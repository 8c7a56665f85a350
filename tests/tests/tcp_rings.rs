//! The kernel's forwarding tables of a TCP group, as the daemon keeps them
//! in step with target health: in-process against real BPF maps in a
//! namespace of the test's own (no daemon, no XDP attached).

use std::net::SocketAddr;
use std::sync::Arc;

use xalb::daemon::forwarding::Forwarding;
use xalb::kernel::forwarding::ring_key;
use xalb::kernel::Datapath;
use xalb::targets::health::{self, Outcome};
use xalb::targets::Groups;
use xalb::targets::TargetGroupRuntime;
use xalb_tests::netns::Netns;

const CONFIG: &str = r#"
[[security_group]]
name = "tcp"
ingress = [{ protocol = "tcp", ports = "80", source = "10.231.40.2/32" }]

[[target_group]]
name = "echo"
protocol = "TCP"
port = 7000
targets = [
  { address = "10.231.41.11" },
  { address = "10.231.41.12", weight = 3 },
  { address = "fd00:231::41:13" },
]

[[load_balancer]]
name = "edge"
interfaces = ["eth0"]
addresses = ["10.231.40.1"]
security_groups = ["tcp"]

[[listener]]
load_balancer = "edge"
protocol = "TCP"
port = 80
default_action = { type = "forward", target_group = "echo" }
"#;

const RING: u64 = lb_common::RING_SIZE as u64;

fn mark(g: &TargetGroupRuntime, i: usize, outcome: Outcome) {
    for _ in 0..2 {
        health::record(&mut g.targets()[i].health.lock().unwrap(), outcome, 2, 2);
    }
    health::refresh_usable(g);
}

#[test]
fn rings_and_target_rows_follow_target_health() {
    xalb_tests::require_root();
    let ns = Netns::new("rings").unwrap();
    ns.run(|| {
        let cfg = xalb::config::parse_str(CONFIG, "rings.toml").unwrap_or_else(|e| panic!("{e}"));
        let groups: Groups = cfg
            .target_groups
            .iter()
            .map(|g| (g.name.clone(), Arc::new(TargetGroupRuntime::new(g))))
            .collect();
        let echo = groups["echo"].clone();
        health::refresh_usable(&echo);
        let mut dp = Datapath::load().expect("the programs load");
        let mut fw = Forwarding::default();
        for (k, ring) in fw.prepare(&cfg, &groups, &[], &mut dp.maps).unwrap() {
            dp.maps.set_ring(k, Some(&ring)).unwrap();
        }
        let row = |a: &str| -> u32 {
            let a: SocketAddr = a.parse().unwrap();
            fw.rows()
                .iter()
                .find(|(_, g, t)| g == "echo" && *t == a)
                .map(|(r, _, _)| *r)
                .unwrap_or_else(|| panic!("no row for {a}: {:?}", fw.rows()))
        };
        let (r11, r12, r13) = (
            row("10.231.41.11:7000"),
            row("10.231.41.12:7000"),
            row("[fd00:231::41:13]:7000"),
        );
        let slots = |dp: &Datapath, r: u32| dp.maps.ring_slots().get(&r).copied().unwrap_or(0);
        let epoch = |dp: &Datapath, r: u32| dp.maps.target(r).unwrap().epoch;
        let family = |dp: &Datapath, r: u32| dp.maps.target(r).unwrap().family;

        // Weights 1 and 3 share the IPv4 table; the IPv6 target has its own.
        let (s11, s12) = (slots(&dp, r11), slots(&dp, r12));
        assert_eq!(s11 + s12, RING);
        assert!(
            (s12 as f64 / RING as f64 - 0.75).abs() < 0.02,
            "{s11} {s12}"
        );
        assert_eq!(slots(&dp, r13), RING);
        assert_eq!((family(&dp, r11), family(&dp, r13)), (4, 6));
        let e12 = epoch(&dp, r12);
        let e11 = epoch(&dp, r11);

        // Slow start: .11 ramping at a quarter of its weight takes a
        // quarter of its share; fully ramped, all of it again.
        echo.targets()[0].set_ramp(250);
        fw.sync(&cfg, &groups, &[], &mut dp.maps).unwrap();
        let share = |dp: &Datapath, r: u32| slots(dp, r) as f64 / RING as f64;
        let ramping = 250.0 / (250.0 + 3000.0);
        assert!(
            (share(&dp, r11) - ramping).abs() < 0.02,
            "{}",
            share(&dp, r11)
        );
        echo.targets()[0].set_ramp(1000);
        fw.sync(&cfg, &groups, &[], &mut dp.maps).unwrap();
        assert!((share(&dp, r11) - 0.25).abs() < 0.02, "{}", share(&dp, r11));

        // An unchanged state writes nothing.
        let v4 = dp.maps.ring(ring_key(0, false)).unwrap();
        fw.sync(&cfg, &groups, &[], &mut dp.maps).unwrap();
        assert_eq!(dp.maps.ring(ring_key(0, false)).unwrap().slots, v4.slots);
        assert_eq!((epoch(&dp, r11), epoch(&dp, r12)), (e11, e12));

        // .12 turns unhealthy: it leaves the table, its flows end (a new
        // epoch, no family), .11's flows stay.
        mark(&echo, 1, Outcome::Failed);
        fw.sync(&cfg, &groups, &[], &mut dp.maps).unwrap();
        assert_eq!(slots(&dp, r12), 0);
        assert_eq!(slots(&dp, r11), RING);
        assert_ne!(epoch(&dp, r12), e12);
        assert_eq!(family(&dp, r12), 0);
        assert_eq!(epoch(&dp, r11), e11);
        // The slots .11 held before are still its own: its flows' choice
        // does not move.
        let after = dp.maps.ring(ring_key(0, false)).unwrap();
        let kept = v4
            .slots
            .iter()
            .zip(after.slots.iter())
            .filter(|(b, _)| u32::from(**b) == r11)
            .all(|(_, a)| u32::from(*a) == r11);
        assert!(kept, "a healthy target's slots stay where they were");

        // Every target unhealthy: the group fails open, all take flows.
        mark(&echo, 0, Outcome::Failed);
        mark(&echo, 2, Outcome::Failed);
        fw.sync(&cfg, &groups, &[], &mut dp.maps).unwrap();
        assert_eq!(slots(&dp, r11) + slots(&dp, r12), RING);
        assert!(slots(&dp, r11) > 0 && slots(&dp, r12) > 0);
        assert_eq!(slots(&dp, r13), RING);
        assert_eq!(family(&dp, r12), 4);

        // .12 recovers alone: it takes every IPv4 flow and .13 none.
        mark(&echo, 1, Outcome::Ok);
        fw.sync(&cfg, &groups, &[], &mut dp.maps).unwrap();
        assert_eq!(slots(&dp, r12), RING);
        assert_eq!(slots(&dp, r11), 0);
        assert_eq!(slots(&dp, r13), 0);
        assert_eq!(family(&dp, r13), 0);
    })
    .unwrap();
}
