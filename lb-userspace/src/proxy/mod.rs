//! The user half's HTTP proxy: listeners, the routing decision, actions, and
//! forwarding to targets over pooled keep-alive connections.

pub mod access_log;
pub mod client_body;
pub mod client_socket;
pub mod errors;
pub mod framing;
pub mod h1_fields;
pub mod h1_server;
pub mod headers;
pub mod meter;
pub mod raw_fields;
pub mod rebalance;
pub mod redirect;
pub mod router;
pub mod runtime;
pub mod server;
pub mod service;
pub mod spread;
pub mod tls;
pub mod upstream;
pub mod upstream_h1;
pub mod wildcard;
