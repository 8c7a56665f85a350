//! The kernel half pinned in a bpffs (`Datapath::open`), at library level:
//! what a later open adopts, and what it refuses.

use std::sync::atomic::{AtomicU32, Ordering};

use aya::maps::{Array, MapData};
use xalb::kernel::pins::PinDir;
use xalb::kernel::{compile, Datapath, DatapathError, LbSlots, XdpModeChoice};
use xalb_tests::netns::{veth, Netns};

const CONFIG: &str = r#"
[[security_group]]
name = "web"
ingress = [{ protocol = "tcp", ports = "80", source = "0.0.0.0/0" }]

[[load_balancer]]
name = "edge"
interfaces = ["eth0"]
addresses = ["10.231.0.10"]
security_groups = ["web"]
"#;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A bpffs of the test's own, unmounted (pins and all) on drop.
struct Bpffs(String);

impl Bpffs {
    fn new() -> Self {
        xalb_tests::require_root();
        let name = format!(
            "kpins-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        xalb_tests::bpffs::for_netns(&name).unwrap();
        Self(name)
    }

    /// The pins of the (made-up) namespace 7.
    fn pins(&self) -> PinDir {
        PinDir::open(&xalb_tests::bpffs::for_netns(&self.0).unwrap(), 7).unwrap()
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        xalb_tests::bpffs::release(&self.0);
    }
}

fn apply(dp: &mut Datapath, slots: &LbSlots) {
    let cfg = xalb::config::parse_str(CONFIG, "test.toml").unwrap();
    dp.apply(&compile(&cfg, slots).unwrap()).unwrap();
}

#[test]
fn a_second_open_adopts_the_maps_and_the_record_of_the_first() {
    let fs = Bpffs::new();
    let mut dp = Datapath::open(fs.pins(), false).unwrap();
    assert!(!dp.adopted());
    assert_eq!(dp.pinned_state(), None);
    let slots = LbSlots::from_rows([("edge".to_string(), 5)]);
    apply(&mut dp, &slots);
    let bank = dp.maps.active_bank();
    drop(dp);

    let dp = Datapath::open(fs.pins(), false).unwrap();
    assert!(dp.adopted());
    assert_eq!(dp.maps.active_bank(), bank, "the flip was pinned");
    let state = dp.pinned_state().expect("the active bank's record");
    assert_eq!(state.lb_rows, [("edge".to_string(), 5)].into());
    let entries = dp.maps.sg_v4_entries();
    assert!(
        entries.iter().any(|(b, lb, ..)| *b == bank && *lb == 5),
        "{entries:?}"
    );
}

#[test]
fn a_pinned_map_of_another_shape_is_refused() {
    let fs = Bpffs::new();
    let pins = fs.pins();
    let wrong = Array::<MapData, u64>::create(lb_common::NUM_COUNTERS, 0).unwrap();
    wrong.pin(pins.map("COUNTERS")).unwrap();
    let err = match Datapath::open(pins, false) {
        Err(e) => e,
        Ok(_) => panic!("a COUNTERS of the wrong shape was reused"),
    };
    assert!(matches!(err, DatapathError::Pins(_)), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("map COUNTERS has type 2, this xalb needs 6"),
        "{msg}"
    );
    assert!(msg.contains("run `xalb detach`"), "{msg}");
}

fn xdp_on(ns: &Netns, iface: &str) -> bool {
    let out = ns.ip(&["link", "show", iface]).unwrap();
    String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
}

#[test]
fn a_pinned_xdp_link_outlives_its_datapath_and_keeps_its_mode() {
    let fs = Bpffs::new();
    let ns = Netns::new("kpin").unwrap();
    let peer = Netns::new("kpinp").unwrap();
    veth(&ns, "eth0", &peer, "eth0").unwrap();
    let pins = fs.pins();
    let mut dp = ns
        .run(move || {
            let mut dp = Datapath::open(pins, false).unwrap();
            dp.attach_all(["eth0"], XdpModeChoice::Native).unwrap();
            dp
        })
        .unwrap();
    assert_eq!(dp.attached(), [("eth0".to_string(), "native")]);
    apply(&mut dp, &LbSlots::from_rows([("edge".to_string(), 0)]));
    drop(dp);
    assert!(xdp_on(&ns, "eth0"), "the pin holds the link");

    // The link keeps the mode it was made in.
    let pins = fs.pins();
    let err = ns
        .run(move || {
            let mut dp = Datapath::open(pins, false).unwrap();
            dp.attach_all(["eth0"], XdpModeChoice::Generic).unwrap_err()
        })
        .unwrap();
    assert!(
        err.to_string()
            .contains("keeps its pinned XDP link in native mode"),
        "{err}"
    );
    assert!(xdp_on(&ns, "eth0"));

    // Adopted with `auto`; then no longer configured: detached at once.
    let pins = fs.pins();
    ns.run(move || {
        let mut dp = Datapath::open(pins, false).unwrap();
        dp.attach_all(["eth0"], XdpModeChoice::Auto).unwrap();
        assert_eq!(dp.attached(), [("eth0".to_string(), "native")]);
        dp.attach_all([], XdpModeChoice::Auto).unwrap();
        assert!(dp.attached().is_empty());
    })
    .unwrap();
    assert!(!xdp_on(&ns, "eth0"));
    assert!(fs.pins().xdp_links().unwrap().is_empty());
}
