//! xalb: an ALB-style load balancer whose kernel half (XDP) enforces security
//! groups per packet and whose user half terminates and routes HTTP.
//!
//! Modules by concern: [`config`] (parse, validate), [`kernel`] (compile to maps,
//! load, attach, counters), [`daemon`] (the `xalb run` process), [`proxy`]
//! (HTTP listeners and forwarding), [`tls`] (HTTPS listeners' TLS).

/// `xalb 0.1.0 (git 1a2b3c4d5e6f, release)`: which build answers, as
/// `--version` and the dashboard show it.
pub const VERSION: &str = concat!(
    "xalb ",
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("XALB_GIT_REVISION"),
    ", ",
    env!("XALB_BUILD_PROFILE"),
    ")"
);

pub mod admin;
pub(crate) mod clock;
pub mod config;
pub mod daemon;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod kernel;
pub mod memory;
pub(crate) mod metrics;
pub(crate) mod proxy;
pub mod targets;
pub mod tls;
pub(crate) mod worker;
