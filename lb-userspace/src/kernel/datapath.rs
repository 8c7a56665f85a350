//! Loading the embedded XDP object and attaching its programs: the XDP
//! program to interfaces, the sk_lookup program (steering) to the network
//! namespace.
//!
//! Opened on a pin directory ([`Datapath::open`], what `xalb run` does),
//! the maps and the links (XDP per interface, sk_lookup per namespace) are
//! pinned: they outlive the process, however it ends, and the kernel keeps
//! enforcing the last configuration until a new `xalb run` adopts them (the
//! program replaced in place on each XDP link) or `xalb detach` removes them.
//! Loaded without pins ([`Datapath::load`], for tests and tools), the links
//! are this process's own and the kernel detaches them when it ends, even by
//! SIGKILL.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use aya::maps::{Array, Map, MapData, ProgramArray};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::xdp::{XdpLink, XdpLinkId};
use aya::programs::{ProgramError, SkLookup, Xdp, XdpMode};
use aya::{Ebpf, EbpfError, EbpfLoader};
use lb_common::{map_names, StateBlob, NO_LB, NUM_BANKS};
use tracing::{info, warn};

use super::compile::KernelConfig;
use super::host;
use super::maps::{self, ctx, BankOps, Maps, MapsError};
use super::pins::{self, LayoutMismatch, PinDir, PinError, PinnedState, StateTooLarge};
use super::verdict_log::{VerdictLog, VerdictLogError};

/// The XDP object built by `cargo xtask build-ebpf`, embedded at compile time.
static XDP_OBJECT: &[u8] = aya::include_bytes_aligned!(env!("XALB_EBPF_OBJECT"));

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An error and its causes on one line (aya's syscall errors keep the
/// errno in their source).
fn chain(e: &BoxError) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("this xalb was built without its XDP program; build it with `cargo xtask build`")]
    NoObject,
    #[error("cannot load the XDP object: {0}")]
    Load(#[source] EbpfError),
    #[error("the XDP object has no program {0:?}")]
    NoProgram(&'static str),
    #[error("the XDP object does not match lb-common's map table: {0} (rebuild with `cargo xtask build`)")]
    Object(LayoutMismatch),
    #[error(
        "the kernel refused the XDP program: {0} (needs Linux 5.9 or newer with BPF and XDP; run as root)"
    )]
    Verify(#[source] ProgramError),
    #[error(
        "the kernel refused the sk_lookup program: {0} (needs Linux 5.9 or newer with BPF; run as root)"
    )]
    VerifySteering(#[source] ProgramError),
    #[error("the kernel refused the forwarding program (TCP listeners): {0}")]
    VerifyForward(#[source] ProgramError),
    #[error("cannot attach the sk_lookup program to this network namespace: {0}")]
    AttachSteering(#[source] ProgramError),
    #[error("cannot open this process's network namespace: {0}")]
    Netns(#[source] std::io::Error),
    #[error("cannot attach XDP to interface {interface:?} in {mode} mode: {source}")]
    Attach {
        interface: String,
        mode: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error(
        "interface {interface:?} keeps its pinned XDP link in {pinned} mode, which cannot change \
         in place; run `xalb detach` first to attach in {wanted} mode"
    )]
    PinnedMode {
        interface: String,
        pinned: &'static str,
        wanted: &'static str,
    },
    #[error(
        "cannot pin or adopt the XDP link of interface {interface:?} ({}): {} \
         (pinning needs bpf_link XDP, Linux 5.9 or newer)",
        path.display(), chain(source)
    )]
    Link {
        interface: String,
        path: PathBuf,
        #[source]
        source: BoxError,
    },
    #[error("cannot pin the sk_lookup link ({}): {}", path.display(), chain(source))]
    SteeringLink {
        path: PathBuf,
        #[source]
        source: BoxError,
    },
    #[error("cannot make the pinned map {}: {}", path.display(), chain(source))]
    PinMap {
        path: PathBuf,
        #[source]
        source: BoxError,
    },
    #[error(transparent)]
    Pins(#[from] PinError),
    #[error(transparent)]
    State(#[from] StateTooLarge),
    #[error(transparent)]
    Maps(#[from] MapsError),
    #[error(transparent)]
    VerdictLog(#[from] VerdictLogError),
}

/// How to attach: `auto` tries native (driver) mode and falls back to generic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum XdpModeChoice {
    Auto,
    Native,
    Generic,
}

impl XdpModeChoice {
    /// Whether a link attached in `mode` ("native" or "generic") is one
    /// this choice accepts.
    fn accepts(self, mode: &str) -> bool {
        match self {
            XdpModeChoice::Auto => true,
            XdpModeChoice::Native => mode == "native",
            XdpModeChoice::Generic => mode == "generic",
        }
    }

    fn name(self) -> &'static str {
        match self {
            XdpModeChoice::Auto => "auto",
            XdpModeChoice::Native => "native",
            XdpModeChoice::Generic => "generic",
        }
    }
}

/// The XDP program on one interface.
struct Attachment {
    ifindex: u32,
    mode: &'static str,
    held: Held,
}

enum Held {
    /// This process's own link: detached when it ends.
    Process(XdpLinkId),
    /// Pinned at `path`: attached until the pin is removed. The fd is kept
    /// so that removing the pin detaches at once.
    Pinned { path: PathBuf, _link: FdLink },
}

pub struct Datapath {
    ebpf: Ebpf,
    pub maps: Maps,
    /// `FORWARD`, held: a program array's slots empty when the last
    /// descriptor of an unpinned one closes.
    _forward: ProgramArray<MapData>,
    /// What the maps mean, per bank ([`PinnedState`]).
    state: Array<MapData, StateBlob>,
    /// Where maps and links are pinned; `None` when nothing is.
    pins: Option<PinDir>,
    /// Interface → its attachment.
    links: BTreeMap<String, Attachment>,
    /// The verdict log's reader, when the program logs its verdicts.
    verdict_log: Option<VerdictLog>,
    /// Whether the sk_lookup program is attached.
    steering: bool,
    /// The pinned sk_lookup link, held so that it is ours while we run.
    _steering_pin: Option<PinnedLink>,
}

impl Datapath {
    /// Loads the program into the kernel (verifier included) with empty
    /// maps and no verdict log, pinning nothing.
    pub fn load() -> Result<Self, DatapathError> {
        Self::load_with(false)
    }

    /// [`Self::load`], with the verdict log on or off. The switch is a
    /// read-only global set before the verifier runs: off, the logging code
    /// is pruned from the program.
    pub fn load_with(verdict_log: bool) -> Result<Self, DatapathError> {
        Self::load_inner(None, verdict_log)
    }

    /// Loads the program on the maps pinned in `pins` (checked first, and
    /// made and pinned where missing); links attached later are pinned
    /// there too, and pinned links are adopted.
    pub fn open(pins: PinDir, verdict_log: bool) -> Result<Self, DatapathError> {
        Self::load_inner(Some(pins), verdict_log)
    }

    fn load_inner(pins: Option<PinDir>, verdict_log: bool) -> Result<Self, DatapathError> {
        if XDP_OBJECT.is_empty() {
            return Err(DatapathError::NoObject);
        }
        let mut loader = EbpfLoader::new();
        if let Some(pins) = &pins {
            // The loader reuses a pinned map without comparing it.
            pins.validate_maps()?;
            for m in &lb_common::OBJECT_MAPS {
                loader.map_pin_path(m.name, pins.map(m.name));
            }
        }
        if verdict_log {
            loader.override_global(lb_common::XDP_LOG_GLOBAL, &1u8, true);
        }
        let mut ebpf = loader.load(XDP_OBJECT).map_err(DatapathError::Load)?;
        check_object(&ebpf)?;
        let prog: &mut Xdp = ebpf
            .program_mut(lb_common::XDP_PROGRAM)
            .ok_or(DatapathError::NoProgram(lb_common::XDP_PROGRAM))?
            .try_into()
            .map_err(DatapathError::Verify)?;
        prog.load().map_err(DatapathError::Verify)?;
        // The forwarding half, which the first reaches by a tail call.
        let fwd: &mut Xdp = ebpf
            .program_mut(lb_common::FORWARD_PROGRAM)
            .ok_or(DatapathError::NoProgram(lb_common::FORWARD_PROGRAM))?
            .try_into()
            .map_err(DatapathError::VerifyForward)?;
        fwd.load().map_err(DatapathError::VerifyForward)?;
        let fwd_fd = fwd
            .fd()
            .map_err(DatapathError::VerifyForward)?
            .try_clone()
            .map_err(|e| DatapathError::VerifyForward(ProgramError::IOError(e)))?;
        let mut forward: ProgramArray<MapData> = ebpf
            .take_map(map_names::FORWARD)
            .ok_or(MapsError::Missing(map_names::FORWARD))?
            .try_into()
            .map_err(ctx(map_names::FORWARD))?;
        forward
            .set(0, &fwd_fd, 0)
            .map_err(ctx(map_names::FORWARD))?;
        let steer: &mut SkLookup = ebpf
            .program_mut(lb_common::SK_LOOKUP_PROGRAM)
            .ok_or(DatapathError::NoProgram(lb_common::SK_LOOKUP_PROGRAM))?
            .try_into()
            .map_err(DatapathError::VerifySteering)?;
        steer.load().map_err(DatapathError::VerifySteering)?;
        let maps = Maps::take_from(&mut ebpf)?;
        let state = open_state(pins.as_ref())?;
        let verdict_log = if verdict_log {
            Some(VerdictLog::start(&mut ebpf)?)
        } else {
            None
        };
        Ok(Self {
            ebpf,
            maps,
            _forward: forward,
            state,
            pins,
            links: Default::default(),
            verdict_log,
            steering: false,
            _steering_pin: None,
        })
    }

    /// Where the maps and links are pinned, if they are.
    pub fn pin_dir(&self) -> Option<&std::path::Path> {
        self.pins.as_ref().map(PinDir::root)
    }

    /// Whether this datapath took over maps a previous xalb pinned.
    pub fn adopted(&self) -> bool {
        self.pins.as_ref().is_some_and(PinDir::adopted)
    }

    /// What the active bank's configuration recorded about itself, when
    /// one was written (by this process or one before it).
    pub fn pinned_state(&self) -> Option<PinnedState> {
        let bank = self.maps.active_bank();
        let blob = self.state.get(&bank, 0).ok()?;
        PinnedState::decode(&blob)
    }

    /// Zeroes every counter row: a new process starts counting from zero.
    pub fn zero_all_counters(&mut self) -> Result<(), DatapathError> {
        let rows: Vec<u32> = (0..=NO_LB).collect();
        Ok(self.maps.zero_counters(&rows)?)
    }

    pub fn verdict_log_on(&self) -> bool {
        self.verdict_log.is_some()
    }

    /// Reads the verdict log records waiting, for a datapath loaded outside
    /// a tokio runtime (inside one, a task reads them as they arrive);
    /// returns how many records were read since the last call.
    pub fn flush_verdict_log(&mut self) -> usize {
        self.verdict_log.as_mut().map_or(0, VerdictLog::flush)
    }

    pub fn program(&self) -> &Xdp {
        self.ebpf
            .program(lb_common::XDP_PROGRAM)
            .and_then(|p| <&Xdp>::try_from(p).ok())
            .expect("loaded in Datapath::load")
    }

    /// The forwarding half (TCP listeners), reached by a tail call.
    pub fn forward_program(&self) -> &Xdp {
        self.ebpf
            .program(lb_common::FORWARD_PROGRAM)
            .and_then(|p| <&Xdp>::try_from(p).ok())
            .expect("loaded in Datapath::load")
    }

    fn program_mut(&mut self) -> &mut Xdp {
        self.ebpf
            .program_mut(lb_common::XDP_PROGRAM)
            .and_then(|p| <&mut Xdp>::try_from(p).ok())
            .expect("loaded in Datapath::load")
    }

    pub fn apply(&mut self, cfg: &KernelConfig) -> Result<(), DatapathError> {
        // Names first: a verdict under the new configuration must find its
        // balancer's name.
        if let Some(log) = &self.verdict_log {
            log.set_names(&cfg.names);
        }
        let record = PinnedState::for_config(cfg).encode()?;
        let active = self.maps.active_bank();
        let mut ops = WithState {
            maps: &mut self.maps,
            state: &mut self.state,
            record: &record,
        };
        maps::swap(&mut ops, active, cfg)?;
        Ok(())
    }

    /// Attaches to each interface once (whatever number of balancers share
    /// it) and detaches from interfaces no longer wanted. With pins, an
    /// interface whose link is pinned keeps it and gets this program in
    /// place (atomically), a new one's link is pinned, and a pinned link of
    /// an interface no longer wanted is removed. On error the interfaces
    /// already handled stay as they are.
    pub fn attach_all<'a>(
        &mut self,
        interfaces: impl IntoIterator<Item = &'a str>,
        choice: XdpModeChoice,
    ) -> Result<(), DatapathError> {
        let wanted: BTreeSet<&str> = interfaces.into_iter().collect();
        for iface in &wanted {
            if self.links.contains_key(*iface) {
                continue;
            }
            let a = if self.pins.is_some() {
                self.attach_pinned(iface, choice)?
            } else {
                let (link, mode) = self.attach(iface, choice)?;
                info!(interface = iface, mode, "XDP attached");
                Attachment {
                    ifindex: host::if_index(iface).unwrap_or(0),
                    mode,
                    held: Held::Process(link),
                }
            };
            self.links.insert(iface.to_string(), a);
        }
        let gone: Vec<String> = self
            .links
            .keys()
            .filter(|i| !wanted.contains(i.as_str()))
            .cloned()
            .collect();
        for iface in gone {
            if let Some(a) = self.links.remove(&iface) {
                match a.held {
                    Held::Process(link) => {
                        let _ = self.program_mut().detach(link);
                    }
                    Held::Pinned { path, _link } => {
                        std::fs::remove_file(&path).map_err(|e| PinError::Io {
                            path: path.clone(),
                            source: e,
                        })?;
                    }
                }
                info!(interface = %iface, "XDP detached");
            }
        }
        if let Some(pins) = &self.pins {
            // Links a previous xalb pinned for interfaces no longer configured
            // (or since deleted).
            for p in pins.xdp_links()? {
                if !self.links.values().any(|a| a.ifindex == p.ifindex) {
                    pins::unpin_link(&p.path)?;
                    let name = host::if_name(p.ifindex);
                    info!(
                        interface = name.as_deref().unwrap_or("(removed)"),
                        ifindex = p.ifindex,
                        "XDP detached: pinned for an interface no longer configured"
                    );
                }
            }
        }
        Ok(())
    }

    /// Adopts the pinned link of `iface`, or attaches and pins a new one.
    fn attach_pinned(
        &mut self,
        iface: &str,
        choice: XdpModeChoice,
    ) -> Result<Attachment, DatapathError> {
        let pins = self.pins.as_ref().expect("called with pins");
        let ifindex = host::if_index(iface).ok_or_else(|| DatapathError::Attach {
            interface: iface.to_string(),
            mode: choice.name(),
            source: ProgramError::UnknownInterface {
                name: iface.to_string(),
            },
        })?;
        let link_err = |path: &PathBuf| {
            let (interface, path) = (iface.to_string(), path.clone());
            move |e: BoxError| DatapathError::Link {
                interface,
                path,
                source: e,
            }
        };
        if let Some(pin) = pins.xdp_links()?.into_iter().find(|p| p.ifindex == ifindex) {
            if !choice.accepts(pin.mode) {
                return Err(DatapathError::PinnedMode {
                    interface: iface.to_string(),
                    pinned: pin.mode,
                    wanted: choice.name(),
                });
            }
            let prog = self.program_mut();
            let adopted = PinnedLink::from_pin(&pin.path)
                .map_err(BoxError::from)
                .and_then(|l| XdpLink::try_from(FdLink::from(l)).map_err(BoxError::from))
                .and_then(|l| prog.attach_to_link(l).map_err(BoxError::from))
                .and_then(|id| prog.take_link(id).map_err(BoxError::from))
                .and_then(|l| FdLink::try_from(l).map_err(BoxError::from))
                .map_err(link_err(&pin.path))?;
            info!(
                interface = iface,
                mode = pin.mode,
                "XDP adopted: the pinned link now runs this program"
            );
            return Ok(Attachment {
                ifindex,
                mode: pin.mode,
                held: Held::Pinned {
                    path: pin.path,
                    _link: adopted,
                },
            });
        }
        let (id, mode) = self.attach(iface, choice)?;
        let path = self
            .pins
            .as_ref()
            .expect("called with pins")
            .xdp_link_path(ifindex, mode);
        let prog = self.program_mut();
        // Dropped on an error: a link not pinned detaches with its fd.
        let pinned = prog
            .take_link(id)
            .map_err(BoxError::from)
            .and_then(|l| FdLink::try_from(l).map_err(BoxError::from))
            .and_then(|l| l.pin(&path).map_err(BoxError::from))
            .map_err(link_err(&path))?;
        info!(interface = iface, mode, "XDP attached (pinned)");
        Ok(Attachment {
            ifindex,
            mode,
            held: Held::Pinned {
                path,
                _link: FdLink::from(pinned),
            },
        })
    }

    fn attach(
        &mut self,
        iface: &str,
        choice: XdpModeChoice,
    ) -> Result<(XdpLinkId, &'static str), DatapathError> {
        let prog = self.program_mut();
        let err = |mode: &'static str| {
            move |source| DatapathError::Attach {
                interface: iface.to_string(),
                mode,
                source,
            }
        };
        match choice {
            XdpModeChoice::Native => prog
                .attach(iface, XdpMode::Driver)
                .map(|l| (l, "native"))
                .map_err(err("native")),
            XdpModeChoice::Generic => prog
                .attach(iface, XdpMode::Skb)
                .map(|l| (l, "generic"))
                .map_err(err("generic")),
            XdpModeChoice::Auto => match prog.attach(iface, XdpMode::Driver) {
                Ok(l) => Ok((l, "native")),
                Err(e) => {
                    warn!(interface = iface, error = %e, "native XDP unavailable; falling back to generic (slower)");
                    prog.attach(iface, XdpMode::Skb)
                        .map(|l| (l, "generic"))
                        .map_err(err("generic"))
                }
            },
        }
    }

    /// The loaded sk_lookup program.
    pub fn steering_program(&self) -> &SkLookup {
        self.ebpf
            .program(lb_common::SK_LOOKUP_PROGRAM)
            .and_then(|p| <&SkLookup>::try_from(p).ok())
            .expect("loaded in Datapath::load")
    }

    /// Attaches the sk_lookup program to this process's network namespace
    /// (once; later calls do nothing): from then on the listeners in
    /// `LISTENERS` are served by their sockets in `SOCKS`, whatever address
    /// those are bound to.
    pub fn attach_steering(&mut self) -> Result<(), DatapathError> {
        if self.steering {
            return Ok(());
        }
        let netns =
            std::fs::File::open("/proc/thread-self/ns/net").map_err(DatapathError::Netns)?;
        let prog: &mut SkLookup = self
            .ebpf
            .program_mut(lb_common::SK_LOOKUP_PROGRAM)
            .and_then(|p| <&mut SkLookup>::try_from(p).ok())
            .expect("loaded in Datapath::load");
        let id = prog.attach(&netns).map_err(DatapathError::AttachSteering)?;
        let Some(pins) = &self.pins else {
            // The link stays with the program (inside `ebpf`), so with this
            // process.
            self.steering = true;
            info!("sk_lookup steering attached");
            return Ok(());
        };
        // Pinned: the new link first, then the older ones (a dead daemon's)
        // go. Meanwhile both run, in attach order, and the first socket
        // chosen stands; both read the same pinned maps.
        let older = pins.sk_lookup_links()?;
        let next = older.iter().map(|(n, _)| n + 1).max().unwrap_or(0);
        let path = pins.sk_lookup_link_path(next);
        let pinned = prog
            .take_link(id)
            .map_err(BoxError::from)
            .map(FdLink::from)
            .and_then(|l| l.pin(&path).map_err(BoxError::from))
            .map_err(|source| DatapathError::SteeringLink {
                path: path.clone(),
                source,
            })?;
        for (_, old) in older {
            pins::unpin_link(&old)?;
        }
        self._steering_pin = Some(pinned);
        self.steering = true;
        info!(pin = %path.display(), "sk_lookup steering attached (pinned)");
        Ok(())
    }

    /// (interface, mode) of every attachment.
    pub fn attached(&self) -> Vec<(String, &'static str)> {
        self.links
            .iter()
            .map(|(i, a)| (i.clone(), a.mode))
            .collect()
    }
}

/// Checks the object's maps, as loaded, against lb-common's table (which
/// the pinned maps are checked against).
fn check_object(ebpf: &Ebpf) -> Result<(), DatapathError> {
    for want in &lb_common::OBJECT_MAPS {
        let data = match ebpf.map(want.name) {
            Some(
                Map::Array(d)
                | Map::HashMap(d)
                | Map::LpmTrie(d)
                | Map::PerCpuArray(d)
                | Map::PerCpuHashMap(d)
                | Map::LruHashMap(d)
                | Map::SockMap(d)
                | Map::SockHash(d)
                | Map::ArrayOfMaps(d)
                | Map::HashOfMaps(d)
                | Map::RingBuf(d)
                | Map::PerfEventArray(d)
                | Map::ProgramArray(d),
            ) => d,
            _ => return Err(MapsError::Missing(want.name).into()),
        };
        let info = data.info().map_err(ctx(want.name))?;
        pins::check_layout(&info, want).map_err(DatapathError::Object)?;
    }
    Ok(())
}

/// The `STATE` map: pinned with the others, or this process's own.
fn open_state(pins: Option<&PinDir>) -> Result<Array<MapData, StateBlob>, DatapathError> {
    let name = map_names::STATE;
    let Some(pins) = pins else {
        return Ok(Array::create(NUM_BANKS, 0).map_err(ctx(name))?);
    };
    let path = pins.map(name);
    let fail = |e: BoxError| DatapathError::PinMap {
        path: path.clone(),
        source: e,
    };
    if !path.exists() {
        Array::<MapData, StateBlob>::create(NUM_BANKS, 0)
            .map_err(BoxError::from)
            .and_then(|a| a.pin(&path).map_err(BoxError::from))
            .map_err(fail)?;
    }
    let data = MapData::from_pin(&path).map_err(|e| fail(e.into()))?;
    Ok(Array::try_from(Map::Array(data)).map_err(ctx(name))?)
}

/// A configuration swap that writes the bank's [`PinnedState`] with it.
struct WithState<'a> {
    maps: &'a mut Maps,
    state: &'a mut Array<MapData, StateBlob>,
    record: &'a StateBlob,
}

impl BankOps for WithState<'_> {
    fn clear(&mut self, bank: u32) -> Result<(), MapsError> {
        self.maps.clear(bank)
    }

    fn write(&mut self, bank: u32, cfg: &KernelConfig) -> Result<(), MapsError> {
        self.maps.write(bank, cfg)?;
        self.state
            .set(bank, self.record, 0)
            .map_err(ctx(map_names::STATE))
    }

    fn flip(&mut self, bank: u32) -> Result<(), MapsError> {
        self.maps.flip(bank)
    }

    fn wait_for_readers(&mut self) -> Result<(), MapsError> {
        self.maps.wait_for_readers()
    }
}
