//! Listening sockets and client connections: accept loops, the client socket
//! and its accounting, and how connections are spread over the workers.

pub mod lifecycle;
pub mod listener;
pub mod meter;
pub mod rebalance;
pub mod socket;
pub mod spread;
