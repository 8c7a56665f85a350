//! The user half's HTTP proxy: listeners, the routing decision, actions, and
//! forwarding to targets over pooled keep-alive connections.
//!
//! - [`conn`]: listening sockets, client connections and how they are spread
//!   over the workers;
//! - [`h1`]: the HTTP/1 codec (heads, framing, chunked bodies), the
//!   request-smuggling guard, and the fast server and client paths built on it;
//! - [`route`]: the routing decision and the redirect action;
//! - [`upstream`]: connections to targets, their pools and TLS;
//! - [`service`]: one request from start to end, with [`headers`] (the
//!   forwarding header rules), [`errors`] (the balancer's own answers) and
//!   [`access_log`];
//! - [`plan`]: the configuration compiled into the proxy's run-time state.

pub mod access_log;
pub mod conn;
pub mod errors;
pub mod h1;
pub mod headers;
pub mod plan;
pub mod route;
pub mod service;
pub mod upstream;
