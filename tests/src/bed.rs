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
        Daemon::start(&self.lb, &self.config, &[])
    }
}

impl Drop for HttpBed {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.config);
    }
}
