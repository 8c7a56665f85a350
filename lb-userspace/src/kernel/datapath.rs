//! Loading the embedded XDP object and attaching its programs: the XDP
//! program to interfaces, the sk_lookup program (steering) to the network
//! namespace.
//!
//! Attachments are bpf_links owned by this process: when it ends, however it
//! ends (even SIGKILL), the kernel closes the links and detaches the programs.

use std::collections::BTreeSet;

use aya::programs::xdp::XdpLinkId;
use aya::programs::{ProgramError, SkLookup, Xdp, XdpMode};
use aya::{Ebpf, EbpfError, EbpfLoader};
use tracing::{info, warn};

use super::compile::KernelConfig;
use super::maps::{Maps, MapsError};
use super::verdict_log::{VerdictLog, VerdictLogError};

/// The XDP object built by `cargo xtask build-ebpf`, embedded at compile time.
static XDP_OBJECT: &[u8] = aya::include_bytes_aligned!(env!("XALB_EBPF_OBJECT"));

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("this xalb was built without its XDP program; build it with `cargo xtask build`")]
    NoObject,
    #[error("cannot load the XDP object: {0}")]
    Load(#[source] EbpfError),
    #[error("the XDP object has no program {0:?}")]
    NoProgram(&'static str),
    #[error(
        "the kernel refused the XDP program: {0} (needs Linux 5.9 or newer with BPF and XDP; run as root)"
    )]
    Verify(#[source] ProgramError),
    #[error(
        "the kernel refused the sk_lookup program: {0} (needs Linux 5.9 or newer with BPF; run as root)"
    )]
    VerifySteering(#[source] ProgramError),
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

pub struct Datapath {
    // Field order matters for drop: links (inside `ebpf`) go before the maps.
    ebpf: Ebpf,
    pub maps: Maps,
    /// Interface → (link, mode).
    links: std::collections::BTreeMap<String, (XdpLinkId, &'static str)>,
    /// The verdict log's reader, when the program logs its verdicts.
    verdict_log: Option<VerdictLog>,
    /// Whether the sk_lookup program is attached.
    steering: bool,
}

impl Datapath {
    /// Loads the program into the kernel (verifier included) with empty
    /// maps and no verdict log.
    pub fn load() -> Result<Self, DatapathError> {
        Self::load_with(false)
    }

    /// [`Self::load`], with the verdict log on or off. The switch is a
    /// read-only global set before the verifier runs: off, the logging code
    /// is pruned from the program.
    pub fn load_with(verdict_log: bool) -> Result<Self, DatapathError> {
        if XDP_OBJECT.is_empty() {
            return Err(DatapathError::NoObject);
        }
        let mut loader = EbpfLoader::new();
        if verdict_log {
            loader.override_global(lb_common::XDP_LOG_GLOBAL, &1u8, true);
        }
        let mut ebpf = loader.load(XDP_OBJECT).map_err(DatapathError::Load)?;
        let prog: &mut Xdp = ebpf
            .program_mut(lb_common::XDP_PROGRAM)
            .ok_or(DatapathError::NoProgram(lb_common::XDP_PROGRAM))?
            .try_into()
            .map_err(DatapathError::Verify)?;
        prog.load().map_err(DatapathError::Verify)?;
        let steer: &mut SkLookup = ebpf
            .program_mut(lb_common::SK_LOOKUP_PROGRAM)
            .ok_or(DatapathError::NoProgram(lb_common::SK_LOOKUP_PROGRAM))?
            .try_into()
            .map_err(DatapathError::VerifySteering)?;
        steer.load().map_err(DatapathError::VerifySteering)?;
        let maps = Maps::take_from(&mut ebpf)?;
        let verdict_log = if verdict_log {
            Some(VerdictLog::start(&mut ebpf)?)
        } else {
            None
        };
        Ok(Self {
            ebpf,
            maps,
            links: Default::default(),
            verdict_log,
            steering: false,
        })
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
        Ok(self.maps.apply(cfg)?)
    }

    /// Attaches to each interface once (whatever number of balancers share
    /// it) and detaches from interfaces no longer wanted. On error the
    /// interfaces already handled stay as they are.
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
            let (link, mode) = self.attach(iface, choice)?;
            info!(interface = iface, mode, "XDP attached");
            self.links.insert(iface.to_string(), (link, mode));
        }
        let gone: Vec<String> = self
            .links
            .keys()
            .filter(|i| !wanted.contains(i.as_str()))
            .cloned()
            .collect();
        for iface in gone {
            if let Some((link, _)) = self.links.remove(&iface) {
                let _ = self.program_mut().detach(link);
                info!(interface = %iface, "XDP detached");
            }
        }
        Ok(())
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
        // The link stays with the program (inside `ebpf`), so with this process.
        prog.attach(&netns).map_err(DatapathError::AttachSteering)?;
        self.steering = true;
        info!("sk_lookup steering attached");
        Ok(())
    }

    /// (interface, mode) of every attachment.
    pub fn attached(&self) -> Vec<(String, &'static str)> {
        self.links
            .iter()
            .map(|(i, (_, m))| (i.clone(), *m))
            .collect()
    }
}
