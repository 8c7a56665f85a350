//! Towards targets: keep-alive connection pools and one attempt at a request
//! ([`pool`]), HTTP/2 ([`h2`]), TLS ([`tls`]), and the client's request body
//! on its way ([`body`]).

pub mod body;
pub mod h2;
pub mod pool;
pub mod tls;
