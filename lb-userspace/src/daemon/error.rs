//! Why the daemon could not start, or could not apply a configuration on
//! reload. One type for both, because start and reload apply a file the same
//! way; `POST /reload` answers with it as JSON and `xalb reload` prints its
//! located diagnostics exactly as `xalb check` does.

use std::net::SocketAddr;

use serde::Serialize;

use super::lock::LockError;
use crate::config::{ConfigError, Diagnostic};
use crate::kernel::host::HostError;
use crate::kernel::pins::PinError;
use crate::kernel::{CompileError, DatapathError};
use crate::proxy::conn::listener::BindError;

/// A configuration that could not be applied; the running one (if any) stays.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Registration(#[from] super::registrations::RegistrationError),
    #[error("configuration does not fit the kernel tables: {0}")]
    Kernel(#[from] CompileError),
    #[error("the host does not match the configuration:\n  {}", lines(.0))]
    Host(Vec<HostError>),
    #[error("cannot open the access log {path}: {source}")]
    AccessLog {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error(transparent)]
    Tls(#[from] crate::tls::server::TlsError),
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    #[error("cannot start the worker threads: {0}")]
    Workers(#[source] std::io::Error),
}

fn lines(errors: &[HostError]) -> String {
    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    lines.join("\n  ")
}

impl ApplyError {
    /// A stable word for scripts: which step refused the configuration.
    pub fn kind(&self) -> &'static str {
        match self {
            ApplyError::Config(_) => "config",
            ApplyError::Registration(e) => e.kind(),
            ApplyError::Kernel(_) => "kernel",
            ApplyError::Host(_) => "host",
            ApplyError::AccessLog { .. } => "access_log",
            ApplyError::Bind(_) => "bind",
            ApplyError::Tls(_) => "tls",
            ApplyError::Datapath(_) => "datapath",
            ApplyError::Workers(_) => "workers",
        }
    }

    /// The admin endpoint's status for it: 400 when the file is wrong, 409
    /// when the file is right but the host disagrees with it, 500 when xalb
    /// itself failed.
    pub fn http_status(&self) -> u16 {
        match self {
            ApplyError::Registration(e) => e.http_status(),
            ApplyError::Config(_) | ApplyError::Kernel(_) => 400,
            ApplyError::Host(_)
            | ApplyError::AccessLog { .. }
            | ApplyError::Bind(_)
            | ApplyError::Tls(_) => 409,
            ApplyError::Datapath(_) | ApplyError::Workers(_) => 500,
        }
    }

    /// The located problems in the file; empty when the refusal is not about
    /// a place in it.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            ApplyError::Config(e) => e.diagnostics(),
            _ => &[],
        }
    }

    pub fn report(&self) -> Refusal {
        Refusal {
            status: "error".into(),
            kind: self.kind().into(),
            message: self.to_string(),
            errors: self.diagnostics().iter().map(Located::from).collect(),
            http_status: self.http_status(),
        }
    }
}

/// `POST /reload`'s answer when the configuration was refused.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct Refusal {
    /// Always `"error"`.
    pub status: String,
    /// [`ApplyError::kind`], or `"shutting_down"`.
    pub kind: String,
    /// The whole reason, as the daemon logs it.
    pub message: String,
    /// One entry per located problem (as `xalb check` prints them).
    pub errors: Vec<Located>,
    /// The admin endpoint's status for it; not part of the JSON.
    #[serde(skip)]
    pub http_status: u16,
}

impl Refusal {
    pub fn shutting_down() -> Self {
        Refusal {
            status: "error".into(),
            kind: "shutting_down".into(),
            message: "xalb is shutting down".into(),
            errors: Vec::new(),
            http_status: 503,
        }
    }

    /// While a successor takes over, the configuration is its to apply.
    pub fn taking_over() -> Self {
        Refusal {
            status: "error".into(),
            kind: "takeover_in_progress".into(),
            message: "a new xalb is taking over; reload that one".into(),
            errors: Vec::new(),
            http_status: 409,
        }
    }
}

/// A [`Diagnostic`] as JSON.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct Located {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub field: String,
    pub message: String,
}

impl From<&Diagnostic> for Located {
    fn from(d: &Diagnostic) -> Self {
        Located {
            file: d.file.clone(),
            line: d.line,
            column: d.column,
            field: d.field.clone(),
            message: d.message.clone(),
        }
    }
}

impl std::fmt::Display for Located {
    /// The same line `xalb check` prints for the [`Diagnostic`].
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = Diagnostic {
            file: self.file.clone(),
            line: self.line,
            column: self.column,
            field: self.field.clone(),
            message: self.message.clone(),
        };
        d.fmt(f)
    }
}

/// A configuration applied by a reload, in numbers.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Applied {
    /// Always `"ok"`.
    pub status: String,
    /// The numbers below in one line, as the daemon logs it.
    pub summary: String,
    pub listener_sockets: usize,
    pub new_sockets: usize,
    pub closed_sockets: usize,
    pub target_groups: usize,
    pub targets_draining: usize,
}

impl Applied {
    pub fn new(
        listener_sockets: usize,
        new_sockets: usize,
        closed_sockets: usize,
        target_groups: usize,
        targets_draining: usize,
    ) -> Self {
        let summary = format!(
            "{listener_sockets} listener sockets ({new_sockets} new, {closed_sockets} closed), \
             {target_groups} target groups, {targets_draining} targets draining"
        );
        Applied {
            status: "ok".into(),
            summary,
            listener_sockets,
            new_sockets,
            closed_sockets,
            target_groups,
            targets_draining,
        }
    }
}

/// Why `xalb run` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("cannot listen on the admin address {addr}: {source}")]
    Admin {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot handle signals: {0}")]
    Signals(#[source] std::io::Error),
    #[error(
        "xalb{holder} already runs in this network namespace; stop it before starting \
         another, or start the new one with --takeover"
    )]
    AlreadyRunning { holder: String },
    #[error(transparent)]
    Lock(LockError),
    #[error(transparent)]
    Pins(#[from] PinError),
    #[error("takeover: {0}")]
    Takeover(#[from] super::takeover::TakeoverError),
    #[error("cannot serve the takeover socket: {0}")]
    ControlSocket(#[source] std::io::Error),
}

/// Why `xalb detach` removed nothing.
#[derive(Debug, thiserror::Error)]
pub enum DetachError {
    #[error(
        "xalb{holder} runs in this network namespace; stop it first (it leaves the \
         security groups pinned), then run `xalb detach`"
    )]
    Running { holder: String },
    #[error(transparent)]
    Lock(LockError),
    #[error(transparent)]
    Pins(#[from] PinError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid() -> ApplyError {
        crate::config::parse_str("[[listener]]\nport = 1\n", "bad.toml")
            .unwrap_err()
            .into()
    }

    #[test]
    fn a_config_refusal_carries_each_located_problem() {
        let e = invalid();
        assert_eq!((e.kind(), e.http_status()), ("config", 400));
        let r = e.report();
        assert_eq!((r.status.as_str(), r.kind.as_str()), ("error", "config"));
        assert!(!r.errors.is_empty());
        let ConfigError::Structure(d) = (match e {
            ApplyError::Config(c) => c,
            _ => unreachable!(),
        }) else {
            panic!("a missing field is a structure error")
        };
        assert_eq!(r.errors[0].to_string(), d.to_string());
        assert!(d.to_string().starts_with("bad.toml:1:1: "), "{d}");
    }

    #[test]
    fn each_step_has_its_kind_and_status() {
        let host = ApplyError::Host(vec![HostError::Getifaddrs("x".into())]);
        assert_eq!((host.kind(), host.http_status()), ("host", 409));
        assert!(host.report().errors.is_empty());
        assert!(host
            .to_string()
            .contains("cannot list the host's addresses: x"));
        let bind = ApplyError::Bind(BindError {
            addr: ([10, 0, 0, 1], 80).into(),
            source: std::io::ErrorKind::AddrInUse.into(),
        });
        assert_eq!((bind.kind(), bind.http_status()), ("bind", 409));
        let log = ApplyError::AccessLog {
            path: "/x".into(),
            source: std::io::ErrorKind::NotFound.into(),
        };
        assert_eq!((log.kind(), log.http_status()), ("access_log", 409));
        let dp = ApplyError::Datapath(DatapathError::NoObject);
        assert_eq!((dp.kind(), dp.http_status()), ("datapath", 500));
        let w = ApplyError::Workers(std::io::ErrorKind::Other.into());
        assert_eq!((w.kind(), w.http_status()), ("workers", 500));
    }

    #[test]
    fn the_summary_names_every_number() {
        let a = Applied::new(3, 1, 2, 4, 5);
        assert_eq!(
            a.summary,
            "3 listener sockets (1 new, 2 closed), 4 target groups, 5 targets draining"
        );
        let json = serde_json::to_value(&a).unwrap();
        assert_eq!(json["status"], "ok");
        assert_eq!(json["targets_draining"], 5);
    }
}
