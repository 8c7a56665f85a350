//! The routing decision of a listener (rules, conditions, wildcards) and the
//! redirect action's URL templates.

pub mod redirect;
pub mod router;
pub mod wildcard;
