//! Where the kernel half lives while no xalb runs: maps and links pinned in
//! a bpf filesystem, so that a crash, an OOM kill or a restart leaves the
//! last security groups enforced (fail closed) until a new `xalb run` adopts
//! them or `xalb detach` removes them.
//!
//! ```text
//! <bpffs>/xalb/netns-<cookie>/layout-<LAYOUT_VERSION>/
//!     maps/<NAME>              every map of lb_common::PINNED_MAPS
//!     links/xdp-if<N>-<mode>   the XDP link on interface index N (native or generic)
//! ```
//!
//! No name has a dot: bpffs refuses them (EPERM), keeping them for itself.
//!
//! The network namespace's cookie names the directory: unlike its inode
//! number it is never reused while the machine runs, so a new namespace never
//! adopts a deleted one's pins. The layout directory keeps another version's
//! pins apart: they are refused, never reused (the loader would reuse a
//! pinned map of any shape), and each pinned map is checked against
//! [`lb_common::PINNED_MAPS`] before it is used.
//!
//! bpffs is never mounted here: under `ip netns exec` (a private mount
//! namespace) a bpffs mounted by xalb would vanish with it, pins included.

use std::collections::BTreeMap;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use aya::maps::{MapError, MapInfo};
use aya::programs::links::PinnedLink;
use lb_common::{MapLayout, StateBlob, LAYOUT_VERSION, PINNED_MAPS, STATE_CAPACITY};

/// `f_type` of a bpf filesystem (`BPF_FS_MAGIC`).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error(
        "{0} is not a bpf filesystem; mount one where it outlives xalb \
         (mount -t bpf bpf /sys/fs/bpf) or pass --bpffs. Under `ip netns exec`, \
         /sys/fs/bpf is hidden: use a bpffs mounted outside /sys"
    )]
    NotBpffs(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read this network namespace's cookie (needs Linux 5.14 or newer): {0}")]
    Cookie(#[source] std::io::Error),
    #[error(
        "pinned xalb state of layout {found} in {path} (another xalb version; this one \
         uses layout {LAYOUT_VERSION}); run `xalb detach` to remove it"
    )]
    OtherLayout { found: String, path: PathBuf },
    #[error("pinned map {path}: {mismatch}; run `xalb detach` to remove the pinned state")]
    Mismatch {
        path: PathBuf,
        mismatch: LayoutMismatch,
    },
    #[error("cannot open the pinned map {path}: {source}")]
    Map {
        path: PathBuf,
        #[source]
        source: MapError,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PinError + '_ {
    move |source| PinError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A map that is not what this version needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutMismatch {
    pub map: &'static str,
    pub field: &'static str,
    pub found: u32,
    pub expected: u32,
}

impl fmt::Display for LayoutMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "map {} has {} {}, this xalb needs {}",
            self.map, self.field, self.found, self.expected
        )
    }
}

/// Whether the map `info` describes is `want`.
pub fn check_layout(info: &MapInfo, want: &MapLayout) -> Result<(), LayoutMismatch> {
    let map_type = info.map_type().map_or(u32::MAX, |t| t as u32);
    let fields = [
        ("type", map_type, want.map_type),
        ("key size", info.key_size(), want.key_size),
        ("value size", info.value_size(), want.value_size),
        ("max entries", info.max_entries(), want.max_entries),
        ("flags", info.map_flags(), want.flags),
    ];
    for (field, found, expected) in fields {
        if found != expected {
            return Err(LayoutMismatch {
                map: want.name,
                field,
                found,
                expected,
            });
        }
    }
    Ok(())
}

/// The cookie of the calling thread's network namespace.
pub fn netns_cookie() -> Result<u64, PinError> {
    let sock = std::net::UdpSocket::bind(("127.0.0.1", 0))
        .or_else(|_| std::net::UdpSocket::bind(("::1", 0)))
        .map_err(PinError::Cookie)?;
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: cookie and len are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(PinError::Cookie(std::io::Error::last_os_error()));
    }
    Ok(cookie)
}

/// Refuses a directory that is not on a bpf filesystem.
pub fn require_bpffs(dir: &Path) -> Result<(), PinError> {
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| PinError::NotBpffs(dir.to_path_buf()))?;
    // SAFETY: an all-zero statfs is valid; statfs fills it.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is NUL-terminated and st is valid for writes.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::NotFound {
            return Err(PinError::NotBpffs(dir.to_path_buf()));
        }
        return Err(io(dir)(e));
    }
    #[allow(clippy::unnecessary_cast)] // f_type's type differs between architectures
    if st.f_type as i64 != BPF_FS_MAGIC {
        return Err(PinError::NotBpffs(dir.to_path_buf()));
    }
    Ok(())
}

/// `<bpffs>/xalb/netns-<cookie>`: every layout's pins for one namespace.
fn netns_dir(bpffs: &Path, cookie: u64) -> PathBuf {
    bpffs.join("xalb").join(format!("netns-{cookie}"))
}

/// The `layout-*` directories under `ns` (none when `ns` does not exist).
fn layouts(ns: &Path) -> Result<Vec<(String, PathBuf)>, PinError> {
    let entries = match std::fs::read_dir(ns) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(ns)(e)),
    };
    let mut out = Vec::new();
    for e in entries {
        let e = e.map_err(io(ns))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(version) = name.strip_prefix("layout-") {
            out.push((version.to_string(), e.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// One pinned XDP link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdpPin {
    pub ifindex: u32,
    /// "native" or "generic".
    pub mode: &'static str,
    pub path: PathBuf,
}

fn parse_xdp_pin(name: &str) -> Option<(u32, &'static str)> {
    let (index, mode) = name.strip_prefix("xdp-if")?.split_once('-')?;
    let mode = match mode {
        "native" => "native",
        "generic" => "generic",
        _ => return None,
    };
    Some((index.parse().ok()?, mode))
}

/// This version's pin directory for one network namespace.
#[derive(Debug)]
pub struct PinDir {
    root: PathBuf,
    adopted: bool,
}

impl PinDir {
    /// Opens (making it if needed) the pin directory of the namespace
    /// `cookie` under `bpffs`. Refuses a directory that is not a bpffs and
    /// pins of another layout version.
    pub fn open(bpffs: &Path, cookie: u64) -> Result<Self, PinError> {
        require_bpffs(bpffs)?;
        let ns = netns_dir(bpffs, cookie);
        let ours = LAYOUT_VERSION.to_string();
        if let Some((found, path)) = layouts(&ns)?.into_iter().find(|(v, _)| *v != ours) {
            return Err(PinError::OtherLayout { found, path });
        }
        let root = ns.join(format!("layout-{LAYOUT_VERSION}"));
        let maps = root.join("maps");
        let adopted = std::fs::read_dir(&maps).is_ok_and(|mut d| d.next().is_some());
        for dir in [&maps, &root.join("links")] {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        Ok(Self { root, adopted })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether maps were pinned here before this process opened it: a
    /// previous xalb's configuration is still enforced.
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.root.join("maps").join(name)
    }

    /// Checks every map pinned here against what this version needs.
    pub fn validate_maps(&self) -> Result<(), PinError> {
        for want in &PINNED_MAPS {
            let path = self.map(want.name);
            if !path.exists() {
                continue;
            }
            let info = MapInfo::from_pin(&path).map_err(|source| PinError::Map {
                path: path.clone(),
                source,
            })?;
            check_layout(&info, want).map_err(|mismatch| PinError::Mismatch { path, mismatch })?;
        }
        Ok(())
    }

    pub fn xdp_link_path(&self, ifindex: u32, mode: &str) -> PathBuf {
        self.root
            .join("links")
            .join(format!("xdp-if{ifindex}-{mode}"))
    }

    pub fn sk_lookup_link_path(&self, n: u64) -> PathBuf {
        self.root.join("links").join(format!("sk_lookup-{n}"))
    }

    /// Every sk_lookup link pinned here, by its number.
    pub fn sk_lookup_links(&self) -> Result<Vec<(u64, PathBuf)>, PinError> {
        let dir = self.root.join("links");
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let e = e.map_err(io(&dir))?;
            let name = e.file_name();
            let number = name
                .to_string_lossy()
                .strip_prefix("sk_lookup-")
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(n) = number {
                out.push((n, e.path()));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Every XDP link pinned here.
    pub fn xdp_links(&self) -> Result<Vec<XdpPin>, PinError> {
        let dir = self.root.join("links");
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let e = e.map_err(io(&dir))?;
            let name = e.file_name();
            if let Some((ifindex, mode)) = parse_xdp_pin(&name.to_string_lossy()) {
                out.push(XdpPin {
                    ifindex,
                    mode,
                    path: e.path(),
                });
            }
        }
        out.sort_by_key(|p| p.ifindex);
        Ok(out)
    }
}

/// Removes a pinned link and, when this was its last reference, detaches
/// it before returning (the pin's own reference is dropped asynchronously,
/// an fd's is not: hold one across the unlink).
pub fn unpin_link(path: &Path) -> Result<(), PinError> {
    match PinnedLink::from_pin(path) {
        Ok(link) => drop(link.unpin().map_err(io(path))?),
        Err(_) => std::fs::remove_file(path).map_err(io(path))?,
    }
    Ok(())
}

/// What [`remove_all`] removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Removed {
    /// Interface indexes whose XDP link was pinned.
    pub xdp: Vec<u32>,
    /// sk_lookup links (attached to the namespace).
    pub sk_lookup: usize,
    /// Other pinned links, by file name.
    pub other_links: Vec<String>,
    pub maps: usize,
    /// The layout directories removed (their version).
    pub layouts: Vec<String>,
}

impl Removed {
    pub fn is_empty(&self) -> bool {
        self.layouts.is_empty()
    }
}

/// Removes the pins of the namespace `cookie` under `bpffs`, of every
/// layout version: links first (each detached before this returns), then
/// maps, then the directories.
pub fn remove_all(bpffs: &Path, cookie: u64) -> Result<Removed, PinError> {
    require_bpffs(bpffs)?;
    let ns = netns_dir(bpffs, cookie);
    let mut removed = Removed::default();
    for (version, layout) in layouts(&ns)? {
        let links = layout.join("links");
        for path in entries(&links)? {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            unpin_link(&path)?;
            if let Some((ifindex, _)) = parse_xdp_pin(&name) {
                removed.xdp.push(ifindex);
            } else if name.starts_with("sk_lookup") {
                removed.sk_lookup += 1;
            } else {
                removed.other_links.push(name);
            }
        }
        let maps = layout.join("maps");
        for path in entries(&maps)? {
            std::fs::remove_file(&path).map_err(io(&path))?;
            removed.maps += 1;
        }
        for dir in [&links, &maps, &layout] {
            match std::fs::remove_dir(dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(dir)(e)),
                _ => {}
            }
        }
        removed.layouts.push(version);
    }
    if ns.exists() {
        std::fs::remove_dir(&ns).map_err(io(&ns))?;
    }
    // Other namespaces may still have pins under it.
    let _ = std::fs::remove_dir(bpffs.join("xalb"));
    removed.xdp.sort_unstable();
    Ok(removed)
}

/// The files in `dir`, none when it does not exist.
fn entries(dir: &Path) -> Result<Vec<PathBuf>, PinError> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.map(|e| e.path()).map_err(io(dir)))
            .collect::<Result<Vec<_>, _>>()
            .map(|mut v| {
                v.sort();
                v
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io(dir)(e)),
    }
}

/// What the pinned maps mean, kept with them (`STATE`, one per bank,
/// written with the bank's configuration): a daemon adopting them reads the
/// active bank's. New fields get `#[serde(default)]`, so an older record of
/// the same layout still reads.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PinnedState {
    /// Each balancer's counter row, by name.
    #[serde(default)]
    pub lb_rows: BTreeMap<String, u32>,
}

#[derive(Debug, thiserror::Error)]
#[error("the pinned state record takes {len} bytes, more than the {STATE_CAPACITY} it has")]
pub struct StateTooLarge {
    pub len: usize,
}

impl PinnedState {
    /// The record of a compiled configuration.
    pub fn for_config(cfg: &super::KernelConfig) -> Self {
        Self {
            lb_rows: cfg.names.iter().map(|(row, n)| (n.clone(), *row)).collect(),
        }
    }

    pub fn encode(&self) -> Result<Box<StateBlob>, StateTooLarge> {
        let json = serde_json::to_vec(self).expect("plain data serialises");
        if json.len() > STATE_CAPACITY {
            return Err(StateTooLarge { len: json.len() });
        }
        let mut blob = empty_blob();
        blob.len = json.len() as u32;
        blob.data[..json.len()].copy_from_slice(&json);
        Ok(blob)
    }

    /// `None` for a record never written (a fresh map) or unreadable.
    pub fn decode(blob: &StateBlob) -> Option<Self> {
        let data = blob.data.get(..blob.len as usize)?;
        if data.is_empty() {
            return None;
        }
        serde_json::from_slice(data).ok()
    }
}

/// A zeroed blob on the heap (64 KiB: not on a worker's stack).
pub fn empty_blob() -> Box<StateBlob> {
    // SAFETY: StateBlob is integers and bytes only; all zeros is a valid value.
    unsafe { Box::<StateBlob>::new_zeroed().assume_init() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_xdp_pin_names_its_interface_and_mode() {
        assert_eq!(parse_xdp_pin("xdp-if2-native"), Some((2, "native")));
        assert_eq!(parse_xdp_pin("xdp-if17-generic"), Some((17, "generic")));
        assert_eq!(parse_xdp_pin("xdp-if2-offload"), None);
        assert_eq!(parse_xdp_pin("xdp-ifx-native"), None);
        assert_eq!(parse_xdp_pin("sk_lookup-1"), None);
    }

    #[test]
    fn the_state_record_round_trips_and_reads_an_empty_one_as_none() {
        let s = PinnedState {
            lb_rows: [("edge".to_string(), 3), ("api".to_string(), 0)].into(),
        };
        let blob = s.encode().unwrap();
        assert_eq!(PinnedState::decode(&blob), Some(s));
        assert_eq!(PinnedState::decode(&empty_blob()), None);
        // A record from a version that knew more fields still reads.
        let mut blob = empty_blob();
        let json = br#"{"lb_rows":{"a":1},"listeners":{}}"#;
        blob.len = json.len() as u32;
        blob.data[..json.len()].copy_from_slice(json);
        assert_eq!(
            PinnedState::decode(&blob).unwrap().lb_rows,
            [("a".to_string(), 1)].into()
        );
    }

    #[test]
    fn a_directory_that_is_not_a_bpffs_is_refused_with_the_way_out() {
        let e = require_bpffs(Path::new("/tmp")).unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("/tmp is not a bpf filesystem"), "{msg}");
        assert!(msg.contains("--bpffs"), "{msg}");
        assert!(matches!(
            require_bpffs(Path::new("/no/such/dir")),
            Err(PinError::NotBpffs(_))
        ));
    }
}
