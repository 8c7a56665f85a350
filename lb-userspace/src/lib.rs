//! xalb: an ALB-style load balancer whose kernel half (XDP) enforces security
//! groups per packet and whose user half terminates and routes HTTP.
//!
//! Modules by concern: [`config`] (parse, validate), [`kernel`] (compile to maps,
//! load, attach, counters), [`daemon`] (the `xalb run` process), [`proxy`]
//! (HTTP listeners and forwarding), [`tls`] (HTTPS listeners' TLS).

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
