//! The HTTP test topology: a client, the balancer host, and a backend host.
//!
//!   client 10.231.0.2, fd00:231::2 ──eth0── balancer 10.231.0.10, fd00:231::10
//!   balancer 10.231.2.1 ──eth1── backends 10.231.2.11 … 10.231.2.19

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;

use crate::daemon::Daemon;
use crate::http::Backend;
use crate::netns::{addr, veth, Netns};

pub struct HttpBed {
    pub client: Netns,
    pub lb: Netns,
    pub backends: Netns,
    pub config: PathBuf,
}

impl HttpBed {
    pub fn new(config: &str) -> Result<Self> {
        crate::require_root();
        let client = Netns::new("hcl")?;
        let lb = Netns::new("hlb")?;
        let backends = Netns::new("hbe")?;
        veth(&client, "eth0", &lb, "eth0")?;
        veth(&lb, "eth1", &backends, "eth0")?;
        addr(&client, "eth0", "10.231.0.2/24")?;
        addr(&client, "eth0", "fd00:231::2/64")?;
        addr(&lb, "eth0", "10.231.0.10/24")?;
        addr(&lb, "eth0", "fd00:231::10/64")?;
        addr(&lb, "eth1", "10.231.2.1/24")?;
        for i in 11..20 {
            addr(&backends, "eth0", &format!("10.231.2.{i}/24"))?;
        }
        let config_path = std::env::temp_dir().join(format!("{}.toml", lb.name()));
        std::fs::write(&config_path, config)?;
        Ok(Self {
            client,
            lb,
            backends,
            config: config_path,
        })
    }

    /// A backend named `name` at 10.231.2.`host`:`port`.
    pub fn backend(&self, host: u8, port: u16, name: &str) -> Result<Backend> {
        Backend::start(
            &self.backends,
            SocketAddr::from(([10, 231, 2, host], port)),
            name,
        )
    }

    pub fn start(&self) -> Result<Daemon> {
        self.start_with(&[])
    }

    /// Starts xalb with `extra` arguments after the usual ones.
    pub fn start_with(&self, extra: &[&str]) -> Result<Daemon> {
        Daemon::start(&self.lb, &self.config, extra)
    }
}

impl Drop for HttpBed {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.config);
    }
}

/// The balancer's HTTP listener as the client reaches it.
pub const LB: &str = "10.231.0.10:80";

pub fn lb() -> SocketAddr {
    LB.parse().expect("a socket address")
}

/// The balancer's admin endpoint, inside its namespace.
pub const ADMIN: &str = "127.0.0.1:9901";

/// A balancer "edge" on the bed's balancer addresses, a security group
/// admitting TCP 80 from anywhere, one HTTP:80 listener with
/// `default_action`, and `extra` sections appended. `idle_timeout` also bounds
/// how long a target may take to answer.
pub fn http_config(idle_timeout: &str, extra: &str, default_action: &str) -> String {
    format!(
        r#"
[[security_group]]
name = "web"
ingress = [
  {{ protocol = "tcp", ports = "80", source = "0.0.0.0/0" }},
  {{ protocol = "tcp", ports = "80", source = "::/0" }},
]

[[load_balancer]]
name = "edge"
interfaces = ["eth0"]
addresses = ["10.231.0.10", "fd00:231::10"]
security_groups = ["web"]
idle_timeout = "{idle_timeout}"

[[listener]]
load_balancer = "edge"
protocol = "HTTP"
port = 80
default_action = {default_action}
{extra}
"#
    )
}

/// Target group "web": the bed's two backend addresses (hosts 11 and 12) on
/// port 80, for [`http_config`]'s `extra`.
pub const WEB_GROUP: &str = r#"
[[target_group]]
name = "web"
protocol = "HTTP"
port = 80
targets = [{ address = "10.231.2.11" }, { address = "10.231.2.12" }]
"#;

/// The action that forwards to [`WEB_GROUP`].
pub const FORWARD_WEB: &str = r#"{ type = "forward", target_group = "web" }"#;
