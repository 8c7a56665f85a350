//! The Debian package and its systemd unit. The .deb (`cargo xtask
//! package`) installs, removes and purges on a clean Debian 12, in a
//! throwaway root and never on this host; the configuration it ships is
//! refused until its addresses are filled in and passes `xalb check` once
//! they are; systemd-analyze accepts the unit; the unit's capabilities are
//! enough for `xalb run`, none of them spare; and in a Debian 12 booted by
//! systemd-nspawn, systemd runs xalb with the unit, sandbox and all.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use xalb_tests::bed::HttpBed;
use xalb_tests::daemon::Daemon;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is one level below the workspace")
        .to_path_buf()
}

fn packaging(name: &str) -> PathBuf {
    workspace().join("packaging/debian").join(name)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A directory of this test's own under the temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "xalb-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The newest package `cargo xtask package` made.
fn newest_deb() -> PathBuf {
    let dir = workspace().join("target/debian");
    std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with("xalb_") && name.ends_with(".deb")
        })
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .unwrap_or_else(|| {
            panic!(
                "no xalb_*.deb in {}: run `cargo xtask package` (`cargo xtask test` does)",
                dir.display()
            )
        })
}

/// A clean Debian 12 for one test, and nothing of it kept: an overlay on
/// the root `cargo xtask package --test-root` made (which stays as it
/// was), with /proc mounted. Unmounted and removed on drop, also when the
/// test fails.
struct Chroot {
    _scratch: TempDir,
    root: PathBuf,
    mounts: Vec<PathBuf>,
}

fn mount(source: &str, target: &Path, fstype: &str, data: Option<&str>) {
    let c = |s: &[u8]| CString::new(s).unwrap();
    let (source, target_c, fstype) = (
        c(source.as_bytes()),
        c(target.as_os_str().as_bytes()),
        c(fstype.as_bytes()),
    );
    let data = data.map(|d| c(d.as_bytes()));
    // SAFETY: NUL-terminated strings that outlive the call; data is a
    // string for overlay, absent for proc.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target_c.as_ptr(),
            fstype.as_ptr(),
            0,
            data.as_ref()
                .map_or(std::ptr::null(), |d| d.as_ptr().cast()),
        )
    };
    assert_eq!(
        rc,
        0,
        "mount -t {fstype:?} on {}: {}",
        target.display(),
        std::io::Error::last_os_error()
    );
}

impl Chroot {
    /// On `target/debian/<name>`.
    fn new(name: &str) -> Self {
        xalb_tests::require_root();
        let lower = workspace().join("target/debian").join(name);
        assert!(
            lower.join("var/lib/dpkg/status").is_file(),
            "no Debian root at {}: run `cargo xtask package --test-root` (`cargo xtask test` does)",
            lower.display()
        );
        let scratch = TempDir::new("deb-root");
        let (upper, work, root) = (
            scratch.0.join("upper"),
            scratch.0.join("work"),
            scratch.0.join("root"),
        );
        for d in [&upper, &work, &root] {
            std::fs::create_dir(d).unwrap();
        }
        let mut me = Self {
            _scratch: scratch,
            root: root.clone(),
            mounts: Vec::new(),
        };
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        );
        mount("overlay", &root, "overlay", Some(&options));
        me.mounts.push(root.clone());
        // apt and dpkg look at /proc (their own descriptors, mounts).
        mount("proc", &root.join("proc"), "proc", None);
        me.mounts.push(root.join("proc"));
        me
    }

    /// Unmounts /proc, for a container that mounts its own.
    fn unmount_proc(&mut self) {
        let proc = self.root.join("proc");
        let c = CString::new(proc.as_os_str().as_bytes()).unwrap();
        // SAFETY: a NUL-terminated path of a mount made here.
        let rc = unsafe { libc::umount2(c.as_ptr(), 0) };
        assert_eq!(rc, 0, "umount {}", proc.display());
        self.mounts.retain(|m| *m != proc);
    }

    /// A path inside the root, as seen from this host.
    fn path(&self, inside: &str) -> PathBuf {
        self.root.join(inside.trim_start_matches('/'))
    }

    /// A command run in the root.
    fn run(&self, args: &[&str]) -> Output {
        Command::new("chroot")
            .arg(&self.root)
            .args(args)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env("LC_ALL", "C")
            .output()
            .expect("chroot")
    }

    /// Like [`Self::run`], failing the test unless it succeeds; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "{args:?} failed: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn apt(&self, args: &[&str]) -> String {
        // No pseudo-terminal to log to in a chroot without /dev/pts.
        let mut all = vec!["apt-get", "-y", "-o", "Dpkg::Use-Pty=0"];
        all.extend_from_slice(args);
        self.ok(&all)
    }

    /// `apt-get install` of the package.
    fn install(&self, deb: &Path) {
        let name = deb.file_name().unwrap().to_string_lossy().into_owned();
        std::fs::copy(deb, self.path("/tmp").join(&name)).unwrap();
        self.apt(&["install", &format!("/tmp/{name}")]);
    }

    /// dpkg's status of xalb, or None once it has forgotten it.
    fn status(&self) -> Option<String> {
        let out = self.run(&["dpkg-query", "-W", "-f=${Status}", "xalb"]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
            .filter(|s| !s.ends_with("not-installed"))
    }
}

impl Drop for Chroot {
    fn drop(&mut self) {
        for m in self.mounts.iter().rev() {
            let c = CString::new(m.as_os_str().as_bytes()).unwrap();
            // SAFETY: a NUL-terminated path of a mount made here.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        // The scratch directory (a field) is removed after this: nothing
        // is mounted in it any more.
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn the_package_installs_removes_and_purges_on_a_clean_debian_12() {
    let deb = newest_deb();
    let chroot = Chroot::new("bookworm-root");
    let name = deb.file_name().unwrap().to_string_lossy().into_owned();
    // As a user installs a downloaded package: apt resolves its
    // dependencies from what a minimal system has.
    chroot.install(&deb);
    assert_eq!(chroot.status().as_deref(), Some("install ok installed"));

    let version = chroot.ok(&["xalb", "--version"]);
    assert!(
        version.starts_with(&format!("xalb {} (", env!("CARGO_PKG_VERSION")))
            && version.contains("release"),
        "{version}"
    );
    // Every file as dpkg recorded it (md5sums): nothing missing or changed.
    assert_eq!(chroot.ok(&["dpkg", "--verify", "xalb"]), "");

    let conffiles: BTreeSet<String> = chroot
        .ok(&["dpkg-query", "-W", "-f=${Conffiles}", "xalb"])
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect();
    assert_eq!(
        conffiles,
        BTreeSet::from(["/etc/logrotate.d/xalb".into(), "/etc/xalb/xalb.toml".into()])
    );
    for (inside, source) in [
        ("/etc/xalb/xalb.toml", "xalb.toml"),
        ("/etc/logrotate.d/xalb", "logrotate"),
        ("/lib/systemd/system/xalb.service", "xalb.service"),
        ("/usr/share/doc/xalb/copyright", "copyright"),
    ] {
        let (installed, source) = (read(&chroot.path(inside)), read(&packaging(source)));
        let differs = installed
            .lines()
            .zip(source.lines())
            .find(|(a, b)| a != b)
            .map(|(a, b)| format!("installed {a:?}, source {b:?}"))
            .unwrap_or_else(|| "lengths differ".into());
        assert!(
            installed == source,
            "{inside} is not what packaging/debian has ({differs}): is {name} older than \
             the source? (cargo xtask package)"
        );
    }
    assert!(
        read(&chroot.path("/usr/share/doc/xalb/copyright")).starts_with(
            "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
        )
    );

    assert_eq!(mode(&chroot.path("/usr/bin/xalb")), 0o755);
    assert_eq!(mode(&chroot.path("/var/lib/xalb")), 0o700);
    assert_eq!(mode(&chroot.path("/var/log/xalb")), 0o750);
    let man = chroot.ok(&["zcat", "/usr/share/man/man1/xalb.1.gz"]);
    assert!(man.contains(".TH xalb 1"), "{man}");
    for (inside, needle) in [
        (
            "/usr/share/bash-completion/completions/xalb",
            "complete -F _xalb",
        ),
        ("/usr/share/zsh/vendor-completions/_xalb", "#compdef xalb"),
        (
            "/usr/share/fish/vendor_completions.d/xalb.fish",
            "complete -c xalb",
        ),
    ] {
        let script = read(&chroot.path(inside));
        assert!(script.contains(needle), "{inside}: {script}");
    }
    for doc in ["changelog.Debian.gz", "changelog.gz", "configuration.md.gz"] {
        assert!(
            chroot.path("/usr/share/doc/xalb").join(doc).is_file(),
            "{doc}"
        );
    }

    // `xalb check` reads /etc/xalb/xalb.toml by default, and refuses it
    // until its addresses are filled in: the service cannot start by
    // mistake on what was shipped.
    let check = chroot.run(&["xalb", "check"]);
    assert_eq!(check.status.code(), Some(1), "{}", text(&check));
    assert!(
        text(&check).contains("/etc/xalb/xalb.toml:")
            && text(&check).contains("\"BALANCER-ADDRESS\""),
        "{}",
        text(&check)
    );

    // What xalb and its administrator leave: the stickiness key, the
    // access log, an edited configuration.
    std::fs::write(chroot.path("/var/lib/xalb/sticky.key"), [7u8; 32]).unwrap();
    std::fs::write(chroot.path("/var/log/xalb/access.log"), "{}\n").unwrap();
    let edited = format!("{}# edited\n", read(&chroot.path("/etc/xalb/xalb.toml")));
    std::fs::write(chroot.path("/etc/xalb/xalb.toml"), &edited).unwrap();

    // Removed: the program goes, the configuration and data stay.
    chroot.apt(&["remove", "xalb"]);
    assert_eq!(
        chroot.status().as_deref(),
        Some("deinstall ok config-files")
    );
    for gone in ["/usr/bin/xalb", "/lib/systemd/system/xalb.service"] {
        assert!(!chroot.path(gone).exists(), "{gone} is still there");
    }
    assert_eq!(read(&chroot.path("/etc/xalb/xalb.toml")), edited);
    assert!(chroot.path("/var/lib/xalb/sticky.key").is_file());

    // Purged: nothing of it is left.
    chroot.apt(&["purge", "xalb"]);
    assert_eq!(chroot.status(), None);
    for gone in [
        "/etc/xalb",
        "/etc/logrotate.d/xalb",
        "/var/lib/xalb",
        "/var/log/xalb",
        "/usr/share/doc/xalb",
    ] {
        assert!(!chroot.path(gone).exists(), "{gone} is still there");
    }
}

#[test]
fn the_shipped_configuration_passes_check_once_its_addresses_are_filled_in() {
    let shipped = packaging("xalb.toml");
    let check = |path: &Path| {
        Command::new(xalb_tests::xalb_bin())
            .args(["check", "-c"])
            .arg(path)
            .output()
            .unwrap()
    };
    // As shipped: refused, each placeholder named with its line.
    let out = check(&shipped);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let original = read(&shipped);
    for placeholder in ["BALANCER-ADDRESS", "TARGET-1-ADDRESS", "TARGET-2-ADDRESS"] {
        let line = original
            .lines()
            .position(|l| l.contains(placeholder))
            .unwrap_or_else(|| panic!("{placeholder} is not in the file"))
            + 1;
        assert!(
            text(&out).contains(&format!("xalb.toml:{line}:"))
                && text(&out).contains(&format!("\"{placeholder}\"")),
            "{placeholder}: {}",
            text(&out)
        );
    }

    // Edited as an administrator would, the interface and the addresses
    // only: accepted.
    let dir = TempDir::new("shipped-config");
    let edited = dir.0.join("xalb.toml");
    let sed = Command::new("sed")
        .args([
            "-e",
            r#"s/"eth0"/"ens3"/"#,
            "-e",
            "s/BALANCER-ADDRESS/203.0.113.10/",
            "-e",
            "s/TARGET-1-ADDRESS/198.51.100.11/",
            "-e",
            "s/TARGET-2-ADDRESS/198.51.100.12/",
        ])
        .arg(&shipped)
        .output()
        .unwrap();
    assert!(sed.status.success(), "{}", text(&sed));
    std::fs::write(&edited, &sed.stdout).unwrap();
    let out = check(&edited);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("xalb.toml: OK"), "{stdout}");
    assert!(
        stdout.contains(
            "edge: internet-facing, addresses 203.0.113.10, interfaces ens3, security groups web-in"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("edge:80: HTTP, 0 rules, default: forward to web"),
        "{stdout}"
    );
}

/// The unit as systemd reads it, with `/usr/bin/xalb` replaced by this
/// build's binary (systemd-analyze checks that the programs exist).
fn unit_for_this_build(dir: &Path, unit: &str) -> PathBuf {
    let path = dir.join("xalb.service");
    let bin = xalb_tests::xalb_bin();
    std::fs::write(&path, unit.replace("/usr/bin/xalb", bin.to_str().unwrap())).unwrap();
    path
}

/// `systemd-analyze verify` on a unit: (whether it succeeded, what it said
/// about that unit; it may talk about the host's units too).
fn verify(path: &Path) -> (bool, String) {
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(path)
        .output()
        .expect("systemd-analyze (package systemd; cargo xtask test installs it)");
    let about: String = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains("xalb.service"))
        .map(|l| format!("{l}\n"))
        .collect();
    (out.status.success(), about)
}

#[test]
fn systemd_analyze_accepts_the_unit() {
    let unit = read(&packaging("xalb.service"));
    let dir = TempDir::new("unit");
    let (ok, said) = verify(&unit_for_this_build(&dir.0, &unit));
    assert!(ok && said.is_empty(), "{said}");

    // It does complain, where there is something to complain about: a
    // misspelt directive is named.
    let bad = TempDir::new("unit-bad");
    let misspelt = unit.replace("CapabilityBoundingSet=", "CapabilityBondingSet=");
    let (_, said) = verify(&unit_for_this_build(&bad.0, &misspelt));
    assert!(
        said.contains("Unknown key 'CapabilityBondingSet'"),
        "{said}"
    );
}

/// The capabilities a unit's `key=` line lists.
fn unit_capabilities(unit: &str, key: &str) -> BTreeSet<String> {
    let lines: Vec<&str> = unit
        .lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .collect();
    assert_eq!(lines.len(), 1, "one {key}= line in the unit");
    lines[0].split_whitespace().map(String::from).collect()
}

/// The bit of a capability in /proc/PID/status's masks
/// (linux/capability.h).
fn cap_bit(name: &str) -> u32 {
    match name {
        "CAP_CHOWN" => 0,
        "CAP_DAC_OVERRIDE" => 1,
        "CAP_KILL" => 5,
        "CAP_NET_BIND_SERVICE" => 10,
        "CAP_NET_BROADCAST" => 11,
        "CAP_NET_ADMIN" => 12,
        "CAP_NET_RAW" => 13,
        "CAP_IPC_LOCK" => 14,
        "CAP_SYS_PTRACE" => 19,
        "CAP_SYS_ADMIN" => 21,
        "CAP_SYS_NICE" => 23,
        "CAP_SYS_RESOURCE" => 24,
        "CAP_PERFMON" => 38,
        "CAP_BPF" => 39,
        other => panic!("{other}: add its bit (linux/capability.h) to cap_bit"),
    }
}

/// A capability mask of /proc/PID/status (`CapEff`, `CapBnd`).
fn cap_mask(pid: u32, field: &str) -> u64 {
    let status = read(Path::new(&format!("/proc/{pid}/status")));
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    u64::from_str_radix(hex.trim(), 16).unwrap()
}

/// `setpriv` arguments that leave exactly `caps` (bounding, inheritable,
/// ambient), with no_new_privs set: what the unit gives xalb, run as root.
fn setpriv(caps: &BTreeSet<String>) -> Vec<String> {
    let list: String = caps
        .iter()
        .map(|c| format!(",+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    let set = format!("-all{list}");
    [
        "setpriv",
        "--no-new-privs",
        "--bounding-set",
        &set,
        "--inh-caps",
        &set,
        "--ambient-caps",
        &set,
    ]
    .map(String::from)
    .to_vec()
}

/// A balancer with an HTTP listener and a TCP listener (whose forwarding
/// sysctls xalb writes), and an access log.
fn capability_bed(log_dir: &Path) -> HttpBed {
    HttpBed::new(&format!(
        r#"
[[security_group]]
name = "web"
ingress = [
  {{ protocol = "tcp", ports = "80", source = "0.0.0.0/0" }},
  {{ protocol = "tcp", ports = "7000", source = "0.0.0.0/0" }},
]

[[target_group]]
name = "web"
protocol = "HTTP"
port = 80
targets = [{{ address = "10.231.2.11" }}]

[[target_group]]
name = "echo"
protocol = "TCP"
port = 7000
targets = [{{ address = "10.231.2.11" }}]

[[load_balancer]]
name = "edge"
interfaces = ["eth0", "eth1"]
addresses = ["10.231.0.10"]
security_groups = ["web"]

[[listener]]
load_balancer = "edge"
protocol = "HTTP"
port = 80
default_action = {{ type = "forward", target_group = "web" }}

[[listener]]
load_balancer = "edge"
protocol = "TCP"
port = 7000
default_action = {{ type = "forward", target_group = "echo" }}

[access_log]
enabled = true
path = "{}"
"#,
        log_dir.join("access.log").display()
    ))
    .unwrap()
}

/// `xalb run` under exactly the unit's capabilities: it comes up, serves
/// and writes the forwarding sysctls; with any one of them taken away it
/// does not come up.
#[test]
fn the_units_capabilities_are_enough_and_each_is_needed() {
    let unit = read(&packaging("xalb.service"));
    let caps = unit_capabilities(&unit, "CapabilityBoundingSet");
    assert_eq!(
        unit_capabilities(&unit, "AmbientCapabilities"),
        caps,
        "the ambient set is the bounding set"
    );
    let logs = TempDir::new("caps-log");

    let bed = capability_bed(&logs.0);
    let wrapper = setpriv(&caps);
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let d = Daemon::spawn_under(&bed.lb, &wrapper, &bed.config, &[], &[])
        .unwrap()
        .ready()
        .unwrap();
    // It runs with those and no others.
    let want: u64 = caps.iter().map(|c| 1u64 << cap_bit(c)).sum();
    assert_eq!(cap_mask(d.pid(), "CapEff"), want, "effective set");
    assert_eq!(cap_mask(d.pid(), "CapBnd"), want, "bounding set");
    let forwarding = bed
        .lb
        .command("cat")
        .arg("/proc/sys/net/ipv4/conf/eth0/forwarding")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&forwarding.stdout).trim(), "1");
    let (_, stderr) = d.stop().unwrap();
    assert!(
        stderr.contains("source ports reserved for TCP listeners"),
        "{stderr}"
    );
    for refused in ["cannot turn forwarding on", "cannot reserve source ports"] {
        assert!(!stderr.contains(refused), "{stderr}");
    }
    assert!(logs.0.join("access.log").exists(), "the access log is open");
    drop(bed);

    for spare in &caps {
        let fewer: BTreeSet<String> = caps.iter().filter(|c| *c != spare).cloned().collect();
        let bed = capability_bed(&logs.0);
        let wrapper = setpriv(&fewer);
        let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
        let started = Daemon::spawn_under(&bed.lb, &wrapper, &bed.config, &[], &[])
            .unwrap()
            .ready();
        match started {
            Ok(d) => {
                let _ = d.stop();
                panic!("xalb runs without {spare}: take it out of the unit");
            }
            Err(e) => assert!(format!("{e:#}").contains("xalb: error:"), "{e:#}"),
        }
    }
}

/// logrotate reads the snippet: the access log's pattern, and no error.
#[test]
fn logrotate_reads_the_snippet() {
    let state = TempDir::new("logrotate");
    let out = Command::new("logrotate")
        .arg("--debug")
        .arg("--state")
        .arg(state.0.join("status"))
        .arg(packaging("logrotate"))
        .output()
        .expect("logrotate (cargo xtask test installs it)");
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(!said.contains("error"), "{said}");
    assert!(
        said.contains("rotating pattern: /var/log/xalb/*.log"),
        "{said}"
    );
}

/// The package installed in a Debian 12 with systemd, booted by
/// systemd-nspawn in a network namespace of its own (with a veth pair for
/// the balancer) and a bpf filesystem of this test's own at /sys/fs/bpf.
/// On drop the container is stopped (killed if it will not), then its
/// bpffs and its root are unmounted.
struct Booted {
    nspawn: std::process::Child,
    /// The container's systemd, as this host numbers it.
    init: u32,
    bpffs: PathBuf,
    /// Dropped last: the container runs on it.
    chroot: Chroot,
}

/// Sets up the balancer's link before xalb can start.
const TEST_NET_UNIT: &str = "[Unit]
Before=xalb.service
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/sbin/ip link add eth0 type veth peer name eth1
ExecStart=/sbin/ip link set eth0 up
ExecStart=/sbin/ip link set eth1 up
ExecStart=/sbin/ip addr add 10.9.0.10/24 dev eth0
[Install]
WantedBy=multi-user.target
";

/// The host pid of `parent`'s child running `comm`, if any.
fn child_named(parent: u32, comm: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.find_map(|e| {
        let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // pid (comm) state ppid ...
        let (name, rest) = stat.split_once(" (")?.1.rsplit_once(") ")?;
        let ppid: u32 = rest.split(' ').nth(1)?.parse().ok()?;
        (ppid == parent && name == comm).then_some(pid)
    })
}

impl Booted {
    fn new(deb: &Path) -> Self {
        let mut chroot = Chroot::new("bookworm-systemd-root");
        chroot.install(deb);
        chroot.unmount_proc();
        // The shipped file with this container's interface and addresses.
        let config = read(&packaging("xalb.toml"))
            .replace("BALANCER-ADDRESS", "10.9.0.10")
            .replace("TARGET-1-ADDRESS", "10.9.0.11")
            .replace("TARGET-2-ADDRESS", "10.9.0.12");
        std::fs::write(chroot.path("/etc/xalb/xalb.toml"), config).unwrap();
        std::fs::write(
            chroot.path("/etc/systemd/system/xalb-test-net.service"),
            TEST_NET_UNIT,
        )
        .unwrap();
        std::os::unix::fs::symlink(
            "/etc/systemd/system/xalb-test-net.service",
            chroot.path("/etc/systemd/system/multi-user.target.wants/xalb-test-net.service"),
        )
        .unwrap();
        let bpffs = chroot.root.with_file_name("bpffs");
        std::fs::create_dir(&bpffs).unwrap();
        mount("bpf", &bpffs, "bpf", None);
        let name = format!(
            "xalb-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let log = std::fs::File::create(chroot.root.with_file_name("boot.log")).unwrap();
        let nspawn = Command::new("systemd-nspawn")
            .arg("--directory")
            .arg(&chroot.root)
            .args([
                "--boot",
                "--keep-unit",
                "--register=no",
                "--private-network",
            ])
            .args(["--machine", &name])
            // CAP_NET_ADMIN comes with --private-network.
            .arg("--capability=CAP_BPF,CAP_PERFMON")
            .arg(format!("--bind={}:/sys/fs/bpf", bpffs.display()))
            // nspawn's own seccomp filter refuses bpf() whatever the
            // capabilities: off, so that only the unit's sandbox is tested.
            .env("SYSTEMD_SECCOMP", "0")
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                let c = CString::new(bpffs.as_os_str().as_bytes()).unwrap();
                // SAFETY: a NUL-terminated path of the mount made above.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
                panic!(
                    "systemd-nspawn (package systemd-container; cargo xtask test installs it): {e}"
                )
            });
        let mut me = Self {
            nspawn,
            init: 0,
            bpffs,
            chroot,
        };
        // Its systemd appears as nspawn's child once the container is set up.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        me.init = loop {
            if let Some(pid) = child_named(me.nspawn.id(), "systemd") {
                break pid;
            }
            if let Some(status) = me.nspawn.try_wait().unwrap() {
                panic!("systemd-nspawn exited with {status}: {}", me.boot_log());
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the container's systemd did not start: {}",
                me.boot_log()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        // Until its manager listens, then until the boot is over
        // (`--wait`); both bounded.
        let private = PathBuf::from(format!("/proc/{}/root/run/systemd/private", me.init));
        while !private.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "the container's systemd does not listen: {}",
                me.boot_log()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let out = me.sh("timeout 120 systemctl is-system-running --wait");
        let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            state == "running" || state == "degraded",
            "the container did not boot ({state}): {}{}{}",
            text(&out),
            me.boot_log(),
            text(&me.sh("systemctl --failed --no-pager"))
        );
        me
    }

    fn boot_log(&self) -> String {
        std::fs::read_to_string(self.chroot.root.with_file_name("boot.log")).unwrap_or_default()
    }

    /// A shell command run in the container (every namespace of its init).
    fn sh(&self, script: &str) -> Output {
        Command::new("nsenter")
            .args(["-t", &self.init.to_string(), "-a", "/bin/sh", "-c", script])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env("LC_ALL", "C")
            .output()
            .expect("nsenter")
    }

    /// Like [`Self::sh`], failing the test unless it succeeds; its stdout.
    fn ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            out.status.success(),
            "{script:?} failed: {}\n{}",
            text(&out),
            text(&self.sh("journalctl -u xalb --no-pager -n 30 -o cat"))
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Files pinned in the container's bpf filesystem.
    fn pins(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, into: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = e.path();
                if path.is_dir() {
                    walk(&path, into);
                } else {
                    into.push(path);
                }
            }
        }
        let mut all = Vec::new();
        walk(&self.bpffs.join("xalb"), &mut all);
        all
    }
}

impl Drop for Booted {
    fn drop(&mut self) {
        // SIGTERM asks nspawn for a clean shutdown of the container.
        // SAFETY: kill with the pid of our own child, not yet reaped.
        unsafe { libc::kill(self.nspawn.id() as i32, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while matches!(self.nspawn.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
        let c = CString::new(self.bpffs.as_os_str().as_bytes()).unwrap();
        // SAFETY: a NUL-terminated path of a mount made here. Every pin
        // in it goes with it.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

/// The unit under systemd itself: the sandbox and the capabilities let xalb
/// come up (Type=notify), serve, write its access log and reload; a refused
/// file fails `systemctl reload` and xalb carries on; logrotate's signal
/// reaches it; removing the package stops it and takes the security groups
/// off.
#[test]
fn the_unit_runs_xalb_under_systemd() {
    let deb = newest_deb();
    let c = Booted::new(&deb);
    c.ok("systemctl start xalb");
    let show = c.ok("systemctl show -p ActiveState -p StatusText -p MainPID xalb");
    assert!(
        show.contains("ActiveState=active") && show.contains("StatusText=serving"),
        "{show}"
    );
    let caps = unit_capabilities(&read(&packaging("xalb.service")), "CapabilityBoundingSet");
    let want: u64 = caps.iter().map(|c| 1u64 << cap_bit(c)).sum();
    let status = c.ok("cat /proc/$(systemctl show -p MainPID --value xalb)/status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    assert_eq!(u64::from_str_radix(&field("CapEff"), 16).unwrap(), want);
    assert_eq!(field("NoNewPrivs"), "1");
    assert!(!c.pins().is_empty(), "the security groups are pinned");

    // A request through XDP and sk_lookup: no target answers, so the
    // balancer does, and logs it.
    let code = c.ok("curl -s -o /dev/null -w '%{http_code}' --max-time 10 http://10.9.0.10/");
    assert_eq!(code, "502");
    let log = c.ok("cat /var/log/xalb/access.log");
    assert!(log.contains("\"elb_status_code\":502"), "{log}");

    c.ok("systemctl reload xalb");
    c.ok("cp /etc/xalb/xalb.toml /root/good.toml && \
          sed -i 's/interval = \"10s\"/interval = \"1s\"/' /etc/xalb/xalb.toml");
    let refused = c.sh("systemctl reload xalb");
    assert!(!refused.status.success(), "{}", text(&refused));
    assert_eq!(c.ok("systemctl is-active xalb"), "active");
    let journal = c.ok("journalctl -u xalb --no-pager -o cat");
    assert!(
        journal.contains("/etc/xalb/xalb.toml:38:12: target_group[0].health_check.interval"),
        "{journal}"
    );
    c.ok("cp /root/good.toml /etc/xalb/xalb.toml");

    // logrotate's postrotate.
    c.ok("systemctl kill --kill-whom=main --signal=SIGUSR1 xalb.service");
    assert_eq!(c.ok("systemctl is-active xalb"), "active");

    let removed = c.ok("apt-get -y -o Dpkg::Use-Pty=0 remove xalb");
    assert_eq!(
        c.sh("systemctl is-active xalb").stdout,
        b"inactive\n",
        "{removed}"
    );
    assert_eq!(c.pins(), Vec::<PathBuf>::new(), "{removed}");
}
