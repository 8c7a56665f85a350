//! HTTP/1: one codec — head parsing ([`head`]), the body-framing decision
//! ([`framing`]), chunked bodies ([`chunked`]) — and what is built on it: the
//! request-smuggling guard in front of hyper ([`guard`]), the fast server path
//! for bodyless requests ([`server`]) and the fast client path to plain-HTTP
//! targets ([`client`]).

pub mod chunked;
pub mod client;
pub mod framing;
pub mod guard;
pub mod head;
pub mod raw_fields;
pub mod server;
