//! Target groups at run time: which targets may take traffic, how one is chosen
//! for a request, and the stickiness cookies that pin a client to it.
//!
//! The split follows pingora's: the target set ([`TargetGroupRuntime`], whose
//! [`TargetState`]s the health checker flips with [`TargetState::set_usable`]) is
//! kept apart from the selection structure (`algorithm`, rebuilt lazily when the
//! usable set's generation changes) and from the per-request pick
//! ([`TargetGroupRuntime::pick`], which returns a [`Pick`] guard counting the
//! request as outstanding, where the algorithm reads that, until it is
//! dropped).
//!
//! Stickiness ([`sticky`]) works as ALB's: `AWSALB` (lb_cookie), `AWSALBAPP-0`
//! (app_cookie) and `AWSALBTG` (group level, [`WeightedGroups`]), each re-issued
//! on every response with `Expires` = now + duration. Cookie values are keyed
//! hashes (HMAC) under a key kept in the state directory, so a client cannot
//! name a target it was never sent to, and sessions survive a restart.

mod algorithm;
pub mod group;
pub mod health;
pub mod sticky;

/// The target groups by name, as every listener shares them.
pub use crate::proxy::service::Groups;
pub use group::{GroupPick, Outstanding, Pick, TargetGroupRuntime, TargetState, WeightedGroups};
pub use health::{Health, HealthState, Reason};
pub use sticky::{APP_COOKIE, GROUP_COOKIE, LB_COOKIE};
