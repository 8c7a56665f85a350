//! The systems under test and their configurations: nginx backends (the same
//! for everyone), and the balancers xalb, nginx and HAProxy, each configured
//! as its users would for this job: one worker per core, logging off,
//! upstream connections kept alive.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use super::cleanup::{Proc, Stopped};
use super::topology::{ip4, Ns, Topology, BACKENDS, LB_ADDR};

/// The backends' fixed response body: exactly 100 bytes.
pub const BODY: &str =
    "xalb bench: a fixed 100-byte body, the same for every balancer, from nginx's return 200 ...........\n";

/// Port on which nginx (balancer and backends) speaks h2c with prior
/// knowledge; nginx 1.22 cannot offer HTTP/1.1 and h2c on one plain port.
pub const NGINX_H2C_PORT: u16 = 8080;

/// Where every balancer terminates TLS with the ECDSA P-256 certificate,
/// and with the RSA-2048 one (the same files for all).
pub const HTTPS_PORT: u16 = 443;
pub const HTTPS_RSA_PORT: u16 = 8443;

/// The TLS files of a run, made by [`write_tls_files`]: `ecdsa.pem` and
/// `rsa.pem` (certificate), `*-key.pem`, and `*.haproxy.pem` (both in one
/// file, as HAProxy's `crt` takes them).
pub fn tls_dir(dir: &Path) -> PathBuf {
    dir.join("tls")
}

/// Self-signed certificates for `bench.test`, one ECDSA P-256 and one
/// RSA-2048, made with openssl.
pub fn write_tls_files(dir: &Path) -> Result<()> {
    let d = tls_dir(dir);
    std::fs::create_dir_all(&d)?;
    for (name, algo) in [
        (
            "ecdsa",
            &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"][..],
        ),
        ("rsa", &["-newkey", "rsa:2048"][..]),
    ] {
        let cert = d.join(format!("{name}.pem"));
        let key = d.join(format!("{name}-key.pem"));
        let out = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-nodes",
                "-days",
                "30",
                "-subj",
                "/CN=bench.test",
            ])
            .args(["-addext", "subjectAltName=DNS:bench.test"])
            .args(algo)
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .context("openssl req")?;
        anyhow::ensure!(
            out.status.success(),
            "openssl req failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let both = format!(
            "{}{}",
            std::fs::read_to_string(&cert)?,
            std::fs::read_to_string(&key)?
        );
        std::fs::write(d.join(format!("{name}.haproxy.pem")), both)?;
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
pub enum System {
    Xalb,
    /// A second xalb binary in the same run (`--xalb-b`), for A/B comparisons.
    XalbB,
    Nginx,
    Haproxy,
    Direct,
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::Xalb => "xalb",
            System::XalbB => "xalb B",
            System::Nginx => "nginx",
            System::Haproxy => "haproxy",
            System::Direct => "direct (no balancer)",
        }
    }

    /// The balancers xalb is compared against.
    pub fn is_peer(self) -> bool {
        matches!(self, System::Nginx | System::Haproxy)
    }
}

pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// The configuration files of one run, kept to print with the results.
#[derive(Serialize, Clone)]
pub struct Configs {
    pub nginx_backend: String,
    pub nginx: String,
    pub haproxy: String,
    pub xalb: String,
    pub xalb_kernel: String,
}

impl Configs {
    /// `clients`: client connections each balancer must hold at once (the
    /// idle scenario's count, whether or not it runs, so that every run with
    /// the same options measures the same configurations).
    pub fn new(dir: &Path, clients: u32) -> Self {
        Self {
            nginx_backend: nginx_backend(&dir.join("nginx-be1"), BACKENDS[0]),
            nginx: nginx_balancer(&dir.join("nginx-lb"), &tls_dir(dir), clients),
            haproxy: haproxy(&tls_dir(dir), clients),
            xalb: xalb(&tls_dir(dir), "0.0.0.0/0"),
            // Only the client's subnet: the generator's source is denied.
            xalb_kernel: xalb(&tls_dir(dir), "10.231.1.0/24"),
        }
    }
}

/// Settings every nginx here shares: the prefix holds pid, logs and temp
/// files so nothing outside the run's directory is touched.
fn nginx_common(prefix: &Path, worker_connections: u32) -> String {
    let p = prefix.display();
    format!(
        "worker_processes {cores};
worker_rlimit_nofile 20000;
pid {p}/nginx.pid;
error_log {p}/error.log warn;
events {{
    worker_connections {worker_connections};
}}
",
        cores = cores()
    )
}

/// The backends' worker_connections, and the least any balancer gets.
const NGINX_WORKER_CONNECTIONS: u32 = 8192;

fn nginx_http_common(prefix: &Path) -> String {
    let p = prefix.display();
    format!(
        "    access_log off;
    client_body_temp_path {p}/client_body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
    # The default closes a keep-alive connection every 1000 requests;
    # HAProxy and xalb do not, so neither does nginx here.
    keepalive_requests 1000000;
"
    )
}

/// A backend: a fixed 100-byte body from `return 200`.
pub fn nginx_backend(prefix: &Path, addr: [u8; 4]) -> String {
    let a = ip4(addr);
    format!(
        "{common}http {{
{http}    server {{
        listen {a}:80 backlog=8192;
        listen {a}:{NGINX_H2C_PORT} http2 backlog=8192;
        location / {{
            default_type text/plain;
            return 200 \"{body}\";
        }}
    }}
}}
",
        common = nginx_common(prefix, NGINX_WORKER_CONNECTIONS),
        http = nginx_http_common(prefix),
        body = BODY.replace('\n', "\\n"),
    )
}

pub fn nginx_balancer(prefix: &Path, tls: &Path, clients: u32) -> String {
    let lb = ip4(LB_ADDR);
    let tls = tls.display();
    let location = "        location / {
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Port $server_port;
            proxy_set_header X-Request-Id $xalb_request_id;
        }
";
    // Per worker, and nothing makes the kernel spread accepts evenly: one
    // worker may get every client, plus its listeners and upstream
    // connections. Every slot is allocated at start (a few hundred bytes
    // each, in the idle RSS), so no more than that.
    let worker_connections = (clients + 1024).max(NGINX_WORKER_CONNECTIONS);
    format!(
        "{common}http {{
{http}    # The defaults, spelled out: the idle scenario holds connections that
    # send nothing for a few seconds, well within both.
    client_header_timeout 60s;
    keepalive_timeout 75s;
    # The same job as xalb's: the client's Host kept, X-Forwarded-For
    # appended, -Proto and -Port set, X-Request-Id added when absent.
    map $http_x_request_id $xalb_request_id {{
        \"\" $request_id;
        default $http_x_request_id;
    }}
    upstream backends {{
        server {b1}:80;
        server {b2}:80;
        keepalive 64;
        keepalive_requests 1000000;
    }}
    # TLS as xalb's default policy has it (nginx 1.22 would also offer
    # TLS 1.0 and 1.1), with a session cache and tickets (on by default).
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:20m;
    ssl_session_timeout 1h;
    server {{
        listen {lb}:80 backlog=8192;
        listen {lb}:{NGINX_H2C_PORT} http2 backlog=8192;
{location}    }}
    server {{
        listen {lb}:{HTTPS_PORT} ssl http2 backlog=8192;
        ssl_certificate {tls}/ecdsa.pem;
        ssl_certificate_key {tls}/ecdsa-key.pem;
{location}    }}
    server {{
        listen {lb}:{HTTPS_RSA_PORT} ssl http2 backlog=8192;
        ssl_certificate {tls}/rsa.pem;
        ssl_certificate_key {tls}/rsa-key.pem;
{location}    }}
}}
",
        common = nginx_common(prefix, worker_connections),
        http = nginx_http_common(prefix),
        b1 = ip4(BACKENDS[0]),
        b2 = ip4(BACKENDS[1]),
    )
}

/// No `log` line anywhere: HAProxy logs nothing. A plain `mode http` bind
/// also takes h2c with prior knowledge.
///
/// HAProxy reserves two descriptors per connection (client and server side)
/// and by default refuses to start when the file limit (20,000 here, which
/// root cannot raise) is below that: `no strict-limits` lets it run with
/// what there is, which idle clients (one descriptor each) stay within.
pub fn haproxy(tls: &Path, clients: u32) -> String {
    format!(
        "global
    nbthread {cores}
    maxconn {maxconn}
    no strict-limits
    # TLS 1.2 and 1.3, as xalb's default policy (HAProxy's default too).
    ssl-default-bind-options ssl-min-ver TLSv1.2

defaults
    mode http
    timeout connect 5s
    timeout client 30s
    # The default (timeout client), spelled out: the idle scenario's clients
    # send nothing for a few seconds.
    timeout http-request 30s
    timeout server 30s
    http-reuse always

frontend fe
    bind {lb}:80 backlog 8192
    bind {lb}:{https} ssl crt {tls}/ecdsa.haproxy.pem alpn h2,http/1.1 backlog 8192
    bind {lb}:{https_rsa} ssl crt {tls}/rsa.haproxy.pem alpn h2,http/1.1 backlog 8192
    # The same job as xalb's (and nginx's here): X-Forwarded-For appended,
    # -Proto and -Port set, X-Request-Id added when absent.
    option forwardfor
    http-request set-header X-Forwarded-Proto http unless {{ ssl_fc }}
    http-request set-header X-Forwarded-Proto https if {{ ssl_fc }}
    http-request set-header X-Forwarded-Port %[dst_port]
    unique-id-format %{{+X}}o%ci%cp%fi%fp%Ts%rt%pid
    http-request set-header X-Request-Id %[unique-id] unless {{ req.hdr(x-request-id) -m found }}
    default_backend backends

backend backends
    balance roundrobin
    server b1 {b1}:80
    server b2 {b2}:80
",
        cores = cores(),
        maxconn = (clients + 1000).max(8000),
        lb = ip4(LB_ADDR),
        https = HTTPS_PORT,
        https_rsa = HTTPS_RSA_PORT,
        tls = tls.display(),
        b1 = ip4(BACKENDS[0]),
        b2 = ip4(BACKENDS[1]),
    )
}

/// xalb: one security group allowing tcp/80, 443 and 8443 from `source`,
/// one balancer on the balancer's eth0, an HTTP:80 listener and two HTTPS
/// ones (ECDSA, RSA certificates from `tls`) forwarding to the two backends.
pub fn xalb(tls: &Path, source: &str) -> String {
    let tls = tls.display();
    format!(
        r#"[[security_group]]
name = "bench-web"
ingress = [
  {{ protocol = "tcp", ports = "80", source = "{source}" }},
  {{ protocol = "tcp", ports = "{HTTPS_PORT}", source = "{source}" }},
  {{ protocol = "tcp", ports = "{HTTPS_RSA_PORT}", source = "{source}" }},
]

[[target_group]]
name = "backends"
protocol = "HTTP"
port = 80
targets = [{{ address = "{b1}" }}, {{ address = "{b2}" }}]

# The peers run no active health checks either.
[target_group.health_check]
enabled = false

[[load_balancer]]
name = "bench"
interfaces = ["eth0"]
addresses = ["{lb}"]
security_groups = ["bench-web"]
# The default, spelled out: the idle scenario's clients send nothing for a
# few seconds.
idle_timeout = "60s"

[[listener]]
load_balancer = "bench"
protocol = "HTTP"
port = 80
default_action = {{ type = "forward", target_group = "backends" }}

[[listener]]
load_balancer = "bench"
protocol = "HTTPS"
port = {HTTPS_PORT}
certificates = [{{ cert = "{tls}/ecdsa.pem", key = "{tls}/ecdsa-key.pem" }}]
default_action = {{ type = "forward", target_group = "backends" }}

[[listener]]
load_balancer = "bench"
protocol = "HTTPS"
port = {HTTPS_RSA_PORT}
certificates = [{{ cert = "{tls}/rsa.pem", key = "{tls}/rsa-key.pem" }}]
default_action = {{ type = "forward", target_group = "backends" }}
"#,
        lb = ip4(LB_ADDR),
        b1 = ip4(BACKENDS[0]),
        b2 = ip4(BACKENDS[1]),
    )
}

/// Where the TCP scenario's balancers take the stream load, and where the
/// backends' stream sinks (iperf 2 servers) listen.
pub const STREAM_PORT: u16 = 5001;

/// Debian's libnginx-mod-stream installs the module here; nginx's own
/// build leaves it out.
pub const NGINX_STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

/// The TCP scenario's configurations: each balancer forwards TCP on
/// `LB_ADDR:80` to the backends' nginx on port 80, and on `STREAM_PORT` to
/// their stream sinks, the connections spread round robin (xalb: by flow
/// hash), full NAT (the backends see the balancer's address).
#[derive(Serialize, Clone)]
pub struct TcpConfigs {
    pub haproxy: String,
    pub nginx: String,
    pub nftables: String,
    pub xalb: String,
}

impl TcpConfigs {
    pub fn new(dir: &Path) -> Self {
        Self {
            haproxy: haproxy_tcp(),
            nginx: nginx_stream(&dir.join("nginx-stream")),
            nftables: nftables_nat(),
            xalb: xalb_tcp(),
        }
    }
}

/// HAProxy `mode tcp`, otherwise as the HTTP one: a thread per core, no log.
pub fn haproxy_tcp() -> String {
    let mut s = format!(
        "global
    nbthread {cores}
    maxconn 20000
    no strict-limits

defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
",
        cores = cores()
    );
    for (name, port) in [("web", 80), ("sink", STREAM_PORT)] {
        s.push_str(&format!(
            "
listen {name}
    bind {lb}:{port} backlog 8192
    balance roundrobin
    server b1 {b1}:{port}
    server b2 {b2}:{port}
",
            lb = ip4(LB_ADDR),
            b1 = ip4(BACKENDS[0]),
            b2 = ip4(BACKENDS[1]),
        ));
    }
    s
}

/// nginx's `stream` module, round robin over the backends, a worker per core.
pub fn nginx_stream(prefix: &Path) -> String {
    let mut s = format!(
        "load_module {NGINX_STREAM_MODULE};
{common}stream {{
",
        common = nginx_common(prefix, NGINX_WORKER_CONNECTIONS),
    );
    for (name, port) in [("web", 80), ("sink", STREAM_PORT)] {
        s.push_str(&format!(
            "    upstream {name} {{
        server {b1}:{port};
        server {b2}:{port};
    }}
    server {{
        listen {lb}:{port} backlog=8192;
        proxy_pass {name};
    }}
",
            lb = ip4(LB_ADDR),
            b1 = ip4(BACKENDS[0]),
            b2 = ip4(BACKENDS[1]),
        ));
    }
    s.push_str("}\n");
    s
}

/// The name of the nftables table `nftables_nat` makes.
pub const NFT_NAT_TABLE: &str = "xbench_nat";

/// The kernel's own balancing, in the balancer namespace: each new
/// connection to the balancer's ports gets the next backend (numgen inc over
/// the two; only a connection's first packet meets the nat chains, the rest
/// follow its conntrack entry), then masquerade, so replies come back
/// through the balancer as they do through the other systems: full NAT.
pub fn nftables_nat() -> String {
    format!(
        "table ip {NFT_NAT_TABLE} {{
    chain prerouting {{
        type nat hook prerouting priority dstnat; policy accept;
        ip daddr {lb} tcp dport {{ 80, {STREAM_PORT} }} dnat to numgen inc mod 2 map {{ 0 : {b1}, 1 : {b2} }}
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        ct status dnat oifname {{ \"eth1\", \"eth2\" }} masquerade
    }}
}}
",
        lb = ip4(LB_ADDR),
        b1 = ip4(BACKENDS[0]),
        b2 = ip4(BACKENDS[1]),
    )
}

/// xalb with two TCP listeners, forwarded by its kernel path; the balancer
/// lists every interface its flows cross, the client's and the targets'.
pub fn xalb_tcp() -> String {
    let mut s = format!(
        r#"[[security_group]]
name = "bench-tcp"
ingress = [
  {{ protocol = "tcp", ports = "80", source = "0.0.0.0/0" }},
  {{ protocol = "tcp", ports = "{STREAM_PORT}", source = "0.0.0.0/0" }},
]

[[load_balancer]]
name = "bench"
interfaces = ["eth0", "eth1", "eth2"]
addresses = ["{lb}"]
security_groups = ["bench-tcp"]
"#,
        lb = ip4(LB_ADDR),
    );
    for (name, port) in [("web", 80), ("sink", STREAM_PORT)] {
        s.push_str(&format!(
            r#"
[[target_group]]
name = "{name}"
protocol = "TCP"
port = {port}
targets = [{{ address = "{b1}" }}, {{ address = "{b2}" }}]

# The peers run no active health checks either.
[target_group.health_check]
enabled = false

[[listener]]
load_balancer = "bench"
protocol = "TCP"
port = {port}
default_action = {{ type = "forward", target_group = "{name}" }}
"#,
            b1 = ip4(BACKENDS[0]),
            b2 = ip4(BACKENDS[1]),
        ));
    }
    s
}

fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn start_nginx(ns: &Ns, name: &str, prefix: &Path, conf: &str) -> Result<Proc> {
    write(&prefix.join("nginx.conf"), conf)?;
    let mut cmd = ns.command("nginx");
    cmd.arg("-p")
        .arg(prefix)
        .arg("-e")
        .arg(prefix.join("error.log"))
        .arg("-c")
        .arg(prefix.join("nginx.conf"))
        .args(["-g", "daemon off; master_process on;"]);
    Proc::spawn(name, cmd, &prefix.join("stdout.log"))
}

/// The two nginx backends, serving once this returns.
pub fn start_backends(topo: &Topology, dir: &Path) -> Result<Vec<Proc>> {
    let mut procs = Vec::new();
    for (i, addr) in BACKENDS.iter().enumerate() {
        let prefix = dir.join(format!("nginx-be{}", i + 1));
        let ns = &topo.backends[i];
        let p = start_nginx(
            ns,
            &format!("nginx backend {}", i + 1),
            &prefix,
            &nginx_backend(&prefix, *addr),
        )?;
        wait_ready(ns, &p, SocketAddr::from((*addr, 80)))?;
        procs.push(p);
    }
    Ok(procs)
}

fn wait_ready(ns: &Ns, p: &Proc, addr: SocketAddr) -> Result<()> {
    ns.wait_tcp(addr, Duration::from_secs(20), || !p.exited())
        .with_context(|| format!("{} did not start; its output:\n{}", p.name, p.log_tail()))
}

/// How long a balancer may take to exit after SIGTERM with no client
/// connection open. Generous for a process with nothing in flight; xalb
/// waits up to its 10 s shutdown grace, which would otherwise dominate a
/// quick run (see the note the bench prints when that happens).
pub const STOP_GRACE: Duration = Duration::from_secs(3);

/// A balancer under test, serving; `proc` is None for the direct baseline.
pub struct Running {
    pub proc: Option<Proc>,
    pub http1: SocketAddr,
    /// Where to send h2c with prior knowledge.
    pub h2c: SocketAddr,
    /// Whether it terminates TLS ([`HTTPS_PORT`], [`HTTPS_RSA_PORT`]).
    pub tls: bool,
    /// How xalb was started, for a successor that takes it over.
    xalb: Option<XalbCommand>,
    /// What xalb pins; removed after `proc` has stopped (field order). Held
    /// for its drop only.
    _pinned: Option<Pinned>,
}

/// The security groups an xalb leaves pinned when it stops, removed with
/// `xalb detach` so that the next system meets a host without xalb.
struct Pinned {
    ns: String,
    bin: PathBuf,
    state: PathBuf,
    bpffs: PathBuf,
}

impl Pinned {
    /// For an xalb that pins (a build from before pinning, as `--xalb-b`
    /// may be, has no `--bpffs`): the run's bpffs, mounted on first use
    /// outside /sys, which `ip netns exec` hides.
    fn prepare(ns: &Ns, bin: &Path, dir: &Path, state: &Path) -> Result<Option<Self>> {
        let help = std::process::Command::new(bin)
            .args(["run", "--help"])
            .output()
            .with_context(|| format!("{} run --help", bin.display()))?;
        if !String::from_utf8_lossy(&help.stdout).contains("--bpffs") {
            return Ok(None);
        }
        let bpffs = dir.join("xalb-bpffs");
        let mounts = std::fs::read_to_string("/proc/self/mounts")?;
        let mounted = mounts.lines().any(|l| {
            let mut f = l.split(' ');
            f.nth(1) == Some(&*bpffs.to_string_lossy()) && f.next() == Some("bpf")
        });
        if !mounted {
            std::fs::create_dir_all(&bpffs)?;
            super::cleanup::register_mount(&bpffs);
            let ok = std::process::Command::new("mount")
                .args(["-t", "bpf", "bpf"])
                .arg(&bpffs)
                .status()
                .context("mount -t bpf")?
                .success();
            anyhow::ensure!(ok, "mounting a bpffs at {} failed", bpffs.display());
        }
        Ok(Some(Self {
            ns: ns.name.clone(),
            bin: bin.to_path_buf(),
            state: state.to_path_buf(),
            bpffs,
        }))
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(&self.bin)
            .arg("detach")
            .arg("--state-dir")
            .arg(&self.state)
            .arg("--bpffs")
            .arg(&self.bpffs)
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "xtask bench: xalb detach failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => eprintln!("xtask bench: cannot run xalb detach: {e}"),
        }
    }
}

impl Running {
    /// Where a `kind` load goes; `None` when this system does not serve it
    /// (TLS to the direct baseline).
    pub fn target(&self, kind: super::load::Kind) -> Option<SocketAddr> {
        use super::load::Kind;
        match kind {
            Kind::H2c => Some(self.h2c),
            k if k.tls() => self.tls.then(|| {
                SocketAddr::from((LB_ADDR, if k.rsa() { HTTPS_RSA_PORT } else { HTTPS_PORT }))
            }),
            _ => Some(self.http1),
        }
    }

    /// SIGTERM, then SIGKILL after `STOP_GRACE`; None for the direct baseline.
    pub fn stop(self) -> Option<Stopped> {
        self.proc.map(|p| p.stop(libc::SIGTERM, STOP_GRACE))
    }

    /// Starts `xalb run --takeover` with this xalb's configuration, state
    /// directory and bpffs, and makes it this balancer's process; the old
    /// one, returned, hands its sockets over, drains and exits by itself.
    pub fn take_over(&mut self, topo: &Topology) -> Result<Proc> {
        let x = self.xalb.as_ref().context("not an xalb")?;
        let mut cmd = topo.lb.command(&x.bin.to_string_lossy());
        cmd.args(&x.args)
            .arg("--takeover")
            .env("RUST_LOG", &x.log_filter);
        let successor = Proc::spawn("xalb (successor)", cmd, &x.dir.join("successor.log"))?;
        self.proc
            .replace(successor)
            .context("the old xalb is not running")
    }
}

/// An xalb's command line in the balancer namespace, without `--takeover`.
struct XalbCommand {
    bin: PathBuf,
    args: Vec<std::ffi::OsString>,
    log_filter: String,
    /// Where its configuration and logs are.
    dir: PathBuf,
}

/// How a balancer is started.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Launch {
    /// As its users run it to serve: what the L7, kernel and idle scenarios
    /// measure.
    Serve,
    /// Ready to be upgraded in place: HAProxy in master-worker mode (`-W`,
    /// what Debian's unit runs), whose master reloads on SIGUSR2; xalb
    /// logging its handover and drain (INFO for the daemon).
    Upgradable,
}

pub fn start(
    system: System,
    topo: &Topology,
    dir: &Path,
    xalb_bin: &Path,
    configs: &Configs,
    xalb_config: &str,
) -> Result<Running> {
    launch(
        system,
        Launch::Serve,
        topo,
        dir,
        xalb_bin,
        configs,
        xalb_config,
    )
}

pub fn launch(
    system: System,
    how: Launch,
    topo: &Topology,
    dir: &Path,
    xalb_bin: &Path,
    configs: &Configs,
    xalb_config: &str,
) -> Result<Running> {
    let lb80 = SocketAddr::from((LB_ADDR, 80));
    let ns = &topo.lb;
    let mut pinned = None;
    let mut xalb = None;
    let (proc, http1, h2c) = match system {
        System::Direct => {
            return Ok(Running {
                proc: None,
                http1: SocketAddr::from((BACKENDS[0], 80)),
                h2c: SocketAddr::from((BACKENDS[0], NGINX_H2C_PORT)),
                tls: false,
                xalb: None,
                _pinned: None,
            })
        }
        System::Nginx => {
            let prefix = dir.join("nginx-lb");
            let p = start_nginx(ns, "nginx balancer", &prefix, &configs.nginx)?;
            (p, lb80, SocketAddr::from((LB_ADDR, NGINX_H2C_PORT)))
        }
        System::Haproxy => {
            let d = dir.join("haproxy");
            let conf = d.join("haproxy.cfg");
            write(&conf, &configs.haproxy)?;
            let mut cmd = ns.command("haproxy");
            if how == Launch::Upgradable {
                cmd.arg("-W");
            }
            cmd.arg("-db").arg("-f").arg(&conf);
            (
                Proc::spawn("haproxy", cmd, &d.join("stdout.log"))?,
                lb80,
                lb80,
            )
        }
        System::Xalb | System::XalbB => {
            let d = dir.join(if system == System::XalbB {
                "xalb-b"
            } else {
                "xalb"
            });
            let (p, pin, x) = spawn_xalb(ns, how, d, dir, xalb_bin, xalb_config, &[])?;
            pinned = pin;
            xalb = Some(x);
            (p, lb80, lb80)
        }
    };
    wait_ready(ns, &proc, http1)?;
    Ok(Running {
        proc: Some(proc),
        http1,
        h2c,
        tls: true,
        xalb,
        _pinned: pinned,
    })
}

/// Starts xalb with `config` in `d` (its configuration, state and logs);
/// it has printed `xalb: ready` once this returns.
fn spawn_xalb(
    ns: &Ns,
    how: Launch,
    d: PathBuf,
    dir: &Path,
    xalb_bin: &Path,
    config: &str,
    extra: &[&str],
) -> Result<(Proc, Option<Pinned>, XalbCommand)> {
    let conf = d.join("xalb.toml");
    write(&conf, config)?;
    let state = d.join("state");
    let mut args: Vec<std::ffi::OsString> = vec!["run".into(), "-c".into(), conf.into()];
    args.extend(extra.iter().map(|a| a.into()));
    args.extend(["--stats-interval".into(), "0".into()]);
    args.extend(["--state-dir".into(), state.clone().into()]);
    let pinned = Pinned::prepare(ns, xalb_bin, dir, &state)?;
    if let Some(p) = &pinned {
        args.extend(["--bpffs".into(), p.bpffs.clone().into()]);
    }
    let x = XalbCommand {
        bin: xalb_bin.to_path_buf(),
        args,
        log_filter: match how {
            Launch::Serve => "warn",
            Launch::Upgradable => "warn,xalb::daemon=info",
        }
        .into(),
        dir: d.clone(),
    };
    let mut cmd = ns.command(&xalb_bin.to_string_lossy());
    cmd.args(&x.args).env("RUST_LOG", &x.log_filter);
    // Declared after `pinned`, so on an error it stops before the detach.
    let p = Proc::spawn("xalb", cmd, &d.join("output.log"))?;
    wait_for_line(&p, "xalb: ready")?;
    Ok((p, pinned, x))
}

/// A TCP balancer of the TCP scenario (nginx, HAProxy or xalb with
/// `TcpConfigs`), serving once this returns: a connection from the client
/// namespace to `LB_ADDR:80` reaches a backend through it. (xalb's TCP
/// listeners have no socket in the balancer namespace to try from there.)
///
/// `xalb_extra`: arguments added to `xalb run` (the XDP mode).
pub fn start_tcp(
    system: System,
    topo: &Topology,
    dir: &Path,
    xalb_bin: &Path,
    configs: &TcpConfigs,
    xalb_extra: &[&str],
) -> Result<Running> {
    let ns = &topo.lb;
    let lb80 = SocketAddr::from((LB_ADDR, 80));
    let mut pinned = None;
    let proc = match system {
        System::Nginx => start_nginx(
            ns,
            "nginx stream balancer",
            &dir.join("nginx-stream"),
            &configs.nginx,
        )?,
        System::Haproxy => {
            let d = dir.join("haproxy-tcp");
            let conf = d.join("haproxy.cfg");
            write(&conf, &configs.haproxy)?;
            let mut cmd = ns.command("haproxy");
            cmd.arg("-db").arg("-f").arg(&conf);
            Proc::spawn("haproxy (mode tcp)", cmd, &d.join("stdout.log"))?
        }
        System::Xalb => {
            let d = dir.join("xalb-tcp");
            // `xalb check` first: a configuration xalb refuses (TCP listeners
            // before its kernel path serves them) is named in one line.
            let conf = d.join("xalb.toml");
            write(&conf, &configs.xalb)?;
            let out = ns
                .command(&xalb_bin.to_string_lossy())
                .arg("check")
                .arg("-c")
                .arg(&conf)
                .output()
                .context("running xalb check")?;
            if !out.status.success() {
                anyhow::bail!(
                    "xalb check refuses the configuration: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            let (p, pin, _) = spawn_xalb(
                ns,
                Launch::Serve,
                d,
                dir,
                xalb_bin,
                &configs.xalb,
                xalb_extra,
            )?;
            pinned = pin;
            p
        }
        other => anyhow::bail!("{} is not a TCP balancer process", other.name()),
    };
    topo.client
        .wait_tcp(lb80, Duration::from_secs(20), || !proc.exited())
        .with_context(|| {
            format!(
                "{} did not start forwarding; its output:\n{}",
                proc.name,
                proc.log_tail()
            )
        })?;
    Ok(Running {
        proc: Some(proc),
        http1: lb80,
        h2c: lb80,
        tls: false,
        xalb: None,
        _pinned: pinned,
    })
}

/// The stream sinks: an iperf 2 server on `STREAM_PORT` in each backend,
/// receiving once this returns.
pub fn start_stream_sinks(topo: &Topology, dir: &Path) -> Result<Vec<Proc>> {
    let mut procs = Vec::new();
    for (i, addr) in BACKENDS.iter().enumerate() {
        let ns = &topo.backends[i];
        let mut cmd = ns.command("iperf");
        cmd.args(["-s", "-p", &STREAM_PORT.to_string(), "-B", &ip4(*addr)]);
        let p = Proc::spawn(
            &format!("iperf server, backend {}", i + 1),
            cmd,
            &dir.join(format!("iperf-be{}.log", i + 1)),
        )?;
        wait_ready(ns, &p, SocketAddr::from((*addr, STREAM_PORT)))?;
        procs.push(p);
    }
    Ok(procs)
}

fn wait_for_line(p: &Proc, line: &str) -> Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if p.log_text().lines().any(|l| l == line) {
            return Ok(());
        }
        if p.exited() || std::time::Instant::now() > deadline {
            anyhow::bail!(
                "{} did not print {line:?}; its output:\n{}",
                p.name,
                p.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The run's scratch directory (configs, logs, pid files), removed at the end.
pub fn scratch_dir() -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("xbench-{}", std::process::id()));
    super::cleanup::register_dir(&d);
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_100_bytes_and_configs_name_it() {
        assert_eq!(BODY.len(), 100);
        let c = Configs::new(Path::new("/tmp/x"), 10_000);
        assert!(c.nginx_backend.contains("return 200"));
        assert!(c.nginx.contains("keepalive 64;"));
        assert!(c.haproxy.contains("http-reuse always"));
        assert!(!c.haproxy.lines().any(|l| l.trim_start().starts_with("log")));
        assert!(c.xalb_kernel.contains("10.231.1.0/24"));
    }

    /// A scratch directory of one test's own, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Self {
            let d = std::env::temp_dir().join(format!("xtask-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            Self(d)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// The tool's path. A missing tool fails the test rather than skipping
    /// it: `cargo xtask test` installs it.
    fn require(cmd: &str) -> PathBuf {
        super::super::find_command(cmd)
            .unwrap_or_else(|| panic!("`{cmd}` is not installed: `cargo xtask test` installs it"))
    }

    fn check(cmd: &mut std::process::Command) {
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{cmd:?} refused the configuration:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// nginx itself accepts each configuration written for it (`nginx -t`,
    /// with the TLS files they name), not only the lines asserted above.
    #[test]
    fn nginx_accepts_every_configuration_the_bench_writes() {
        let nginx = require("nginx");
        let dir = Scratch::new("nginx-t");
        write_tls_files(&dir.0).unwrap();
        let c = Configs::new(&dir.0, 10_000);
        let stream = TcpConfigs::new(&dir.0).nginx;
        for (prefix, conf) in [
            ("nginx-be1", &c.nginx_backend),
            ("nginx-lb", &c.nginx),
            ("nginx-stream", &stream),
        ] {
            // As `start_nginx` runs it, testing instead of serving. `nginx
            // -t` binds the listening addresses, which only the bench's
            // namespaces have: it runs in a network namespace of its own
            // where any address may be bound.
            let prefix = dir.0.join(prefix);
            write(&prefix.join("nginx.conf"), conf).unwrap();
            check(
                std::process::Command::new("unshare")
                    .args(["--net", "--", "sh", "-c"])
                    .arg("echo 1 > /proc/sys/net/ipv4/ip_nonlocal_bind && exec \"$@\"")
                    .arg("sh")
                    .arg(&nginx)
                    .arg("-t")
                    .arg("-p")
                    .arg(&prefix)
                    .arg("-e")
                    .arg(prefix.join("error.log"))
                    .arg("-c")
                    .arg(prefix.join("nginx.conf")),
            );
        }
    }

    /// HAProxy itself accepts both configurations written for it
    /// (`haproxy -c`, with the TLS files the HTTP one names).
    #[test]
    fn haproxy_accepts_every_configuration_the_bench_writes() {
        let tool = require("haproxy");
        let dir = Scratch::new("haproxy-c");
        write_tls_files(&dir.0).unwrap();
        for (name, conf) in [
            ("http.cfg", haproxy(&tls_dir(&dir.0), 10_000)),
            ("tcp.cfg", haproxy_tcp()),
        ] {
            let path = dir.0.join(name);
            write(&path, &conf).unwrap();
            check(
                std::process::Command::new(&tool)
                    .arg("-c")
                    .arg("-f")
                    .arg(&path),
            );
        }
    }
}
