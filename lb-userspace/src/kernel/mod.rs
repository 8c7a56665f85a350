//! The kernel half as the daemon sees it: compile the configuration into map
//! contents, load and attach the XDP program, write the maps, read the counters.

pub mod compile;
pub mod counters;
pub mod datapath;
pub mod forwarding;
pub mod grace;
pub mod host;
pub mod maglev;
pub mod maps;
pub mod pins;
pub mod slots;
pub mod verdict_log;

pub use compile::{compile, steering, CompileError, KernelConfig};
pub use datapath::{Datapath, DatapathError, XdpModeChoice};
pub use slots::{LbSlots, ListenerRows, TargetRows};
