//! Towards targets: keep-alive connection pools and one attempt at a request
//! ([`pool`]), TLS ([`tls`]), and the client's request body on its way
//! ([`body`]).

pub mod body;
pub mod pool;
pub mod tls;
