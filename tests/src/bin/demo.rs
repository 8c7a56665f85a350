//! `cargo xtask demo`: the seed scenario (../examples/seed-alb.toml) in network
//! namespaces, with `xalb run` on the balancer host, explained in plain words;
//! then a TCP listener forwarded by the kernel (../examples/tcp-listener.toml),
//! and an HTTPS listener (../examples/https-listener.toml).
//!
//!   client 10.0.0.100 ──eth0── balancer host 10.0.0.10 ──eth1── web1 10.0.1.10
//!                                                      └─eth2── web2 10.0.2.10

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use xalb_tests::daemon::Daemon;
use xalb_tests::http::{get, in_ns, Backend};
use xalb_tests::netns::{addr, veth, Netns};
use xalb_tests::tcp::{probe, Outcome, Server};

const WAIT: Duration = Duration::from_millis(1500);

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut config = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/seed-alb.toml"
    ));
    while let Some(a) = args.next() {
        match a.as_str() {
            "--xalb" => std::env::set_var("XALB_BIN", args.next().context("--xalb PATH")?),
            "--config" => config = PathBuf::from(args.next().context("--config PATH")?),
            other => {
                bail!("unknown argument {other}; usage: xalb-demo [--xalb PATH] [--config FILE]")
            }
        }
    }
    xalb_tests::require_root();
    xalb_tests::interrupt::clean_up_on_signal()?;

    println!("== xalb demo: the seed scenario ({})", config.display());
    println!("   security group alb-web admits TCP 80 from anywhere (IPv4 and IPv6); everything else is denied.");
    println!("   listener HTTP:80 forwards to target group web: 10.0.1.10 and 10.0.2.10.");
    let client = Netns::new("client")?;
    let lb = Netns::new("balancer")?;
    let web1 = Netns::new("web1")?;
    let web2 = Netns::new("web2")?;
    veth(&client, "eth0", &lb, "eth0")?;
    veth(&lb, "eth1", &web1, "eth0")?;
    veth(&lb, "eth2", &web2, "eth0")?;
    addr(&client, "eth0", "10.0.0.100/24")?;
    addr(&lb, "eth0", "10.0.0.10/24")?;
    addr(&lb, "eth1", "10.0.1.1/24")?;
    addr(&lb, "eth2", "10.0.2.1/24")?;
    addr(&web1, "eth0", "10.0.1.10/24")?;
    addr(&web2, "eth0", "10.0.2.10/24")?;
    web1.ip(&["route", "add", "default", "via", "10.0.1.1"])?;
    web2.ip(&["route", "add", "default", "via", "10.0.2.1"])?;
    println!(
        "   namespaces: {} (client), {} (balancer host), {} and {} (web servers)",
        client.name(),
        lb.name(),
        web1.name(),
        web2.name()
    );

    // An "ssh" on the balancer host that the security group does not admit,
    // and the two web servers of target group "web".
    let _ssh = Server::start(&lb, "10.0.0.10:22".parse()?, "SSH-2")?;
    let _client_svc = Server::start(&client, "10.0.0.100:8000".parse()?, "reply")?;
    let w1 = Backend::start(&web1, "10.0.1.10:80".parse()?, "web-1")?;
    let _w2 = Backend::start(&web2, "10.0.2.10:80".parse()?, "web-2")?;

    println!("\n-- before xalb runs, every port of the balancer answers:");
    show(&client, None, "10.0.0.10:22", "client -> balancer TCP 22")?;

    let daemon = Daemon::start(&lb, &config, &[])?;
    println!(
        "\n-- xalb run -c {} : XDP attached to the balancer host's eth0",
        config.display()
    );
    println!("   client -> http://10.0.0.10/ six times (listener HTTP:80, forward to target group web, round robin):");
    let replies = in_ns(&client, async || {
        let mut out = Vec::new();
        for i in 0..6 {
            out.push(get("10.0.0.10:80".parse().unwrap(), &format!("/page/{i}"), &[]).await);
        }
        out
    })?;
    for (i, r) in replies.into_iter().enumerate() {
        match r {
            Ok(r) => println!("     GET /page/{i} -> {} from {}", r.status, r.backend()),
            Err(e) => println!("     GET /page/{i} -> error: {e:#}"),
        }
    }
    show(
        &client,
        None,
        "10.0.0.10:22",
        "client -> balancer TCP 22 (no rule: dropped in XDP)",
    )?;
    show(
        &lb,
        Some("10.0.0.10:0"),
        "10.0.0.100:8000",
        "balancer host opens a connection to the client: replies pass",
    )?;

    println!("\n-- target health (checks every 5 s, a new target healthy after 1 pass):");
    wait_for(&lb, "10.0.1.10", 80, "healthy")?;
    wait_for(&lb, "10.0.2.10", 80, "healthy")?;
    describe(&lb)?;

    println!("\n-- web-1 stops. The client keeps asking:");
    drop(w1);
    requests(&client, 6)?;
    wait_for(&lb, "10.0.1.10", 80, "unhealthy")?;
    describe(&lb)?;

    println!("\n-- web-1 starts again (healthy after 2 passes):");
    let _w1 = Backend::start(&web1, "10.0.1.10:80".parse()?, "web-1")?;
    wait_for(&lb, "10.0.1.10", 80, "healthy")?;
    describe(&lb)?;
    requests(&client, 4)?;

    let (counters, _) = daemon.stop()?;
    println!("\n-- xalb stopped. What the XDP program counted:");
    for (lb, reason, packets) in &counters.0 {
        println!("   {:<8} {:<26} {packets} packets", lb, reason);
    }
    println!(
        "\n-- the security group outlives xalb (pinned in a bpf filesystem), as an AWS one does:"
    );
    show(
        &client,
        None,
        "10.0.0.10:22",
        "client -> balancer TCP 22 (still dropped in XDP)",
    )?;
    println!("\n-- xalb detach : removes what xalb left pinned");
    let (ok, out, err) = xalb_tests::daemon::detach(&lb, None)?;
    for line in out.lines().chain(err.lines()) {
        println!("   {line}");
    }
    if !ok {
        bail!("xalb detach failed");
    }
    println!("\n-- after xalb detach, port 22 answers again:");
    show(&client, None, "10.0.0.10:22", "client -> balancer TCP 22")?;
    tcp_listener(&client, &lb, &web1, &web2)?;
    https_listener(&client, &lb)?;
    println!("\n== demo done; namespaces removed.");
    Ok(())
}

/// The second act: a TCP listener the kernel forwards, from
/// examples/tcp-listener.toml.
fn tcp_listener(client: &Netns, lb: &Netns, web1: &Netns, web2: &Netns) -> Result<()> {
    let config = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/tcp-listener.toml"
    ));
    println!(
        "\n== a TCP listener, forwarded by the kernel ({})",
        config.display()
    );
    println!(
        "   listener TCP:7000 forwards to target group echo: 10.0.1.10:7000 and 10.0.2.10:7000."
    );
    println!("   XDP picks a target by Maglev hashing and translates addresses both ways; no socket of xalb's holds these connections.");
    // veth hands translated frames on promptly only to an end running XDP,
    // and a sender's checksum offload would leave XDP a partial checksum.
    let mut pass = Vec::new();
    for ns in [client, web1, web2] {
        xalb_tests::tcp_bed::offloads(ns, "eth0", &["tx", "off"])?;
        pass.push(xalb_tests::xdp_pass::attach(ns, "eth0")?);
    }
    let _e1 = Server::start(web1, "10.0.1.10:7000".parse()?, "echo-1\n")?;
    let _e2 = Server::start(web2, "10.0.2.10:7000".parse()?, "echo-2\n")?;
    let daemon = Daemon::start(lb, &config, &[])?;
    println!(
        "\n-- xalb run -c {} : XDP on eth0, eth1 and eth2",
        config.display()
    );
    wait_for(lb, "10.0.1.10", 7000, "healthy")?;
    wait_for(lb, "10.0.2.10", 7000, "healthy")?;
    println!("   both echo targets healthy; client -> 10.0.0.10:7000, twelve connections:");
    let mut held = Vec::new();
    for i in 0..12 {
        let (s, name) = session(client)?;
        println!("     connection {i:>2} -> {name}");
        held.push((s, name));
    }
    let ones = held.iter().filter(|(_, n)| n == "echo-1").count();
    println!(
        "   echo-1 took {ones}, echo-2 took {}; each connection stays on its target.",
        held.len() - ones
    );
    let ss = lb.command("ss").args(["-Htan"]).output()?;
    let on_7000: Vec<String> = String::from_utf8_lossy(&ss.stdout)
        .lines()
        .filter(|l| l.contains(":7000"))
        .map(str::to_string)
        .collect();
    println!(
        "   the balancer host's socket table (ss -tan) for port 7000 with 12 connections open: {}",
        if on_7000.is_empty() {
            "empty".to_string()
        } else {
            on_7000.join("; ")
        }
    );

    println!("\n-- web-1's host drops off the network (its address removed):");
    web1.ip(&["addr", "del", "10.0.1.10/24", "dev", "eth0"])?;
    wait_for(lb, "10.0.1.10", 7000, "unhealthy")?;
    println!(
        "   xalb's checks find echo-1 unhealthy; the kernel resets its flows on their next packet:"
    );
    let mut reset = 0;
    let mut alive = 0;
    for (s, name) in &mut held {
        match echo(s) {
            Ok(()) => alive += 1,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => reset += 1,
            Err(e) => println!("     a connection to {name}: {e}"),
        }
    }
    println!("   of the 12 open connections, {reset} were reset (echo-1's) and {alive} go on (echo-2's).");
    let mut after = Vec::new();
    for _ in 0..6 {
        after.push(session(client)?.1);
    }
    println!("   six new connections went to: {}", after.join(", "));
    drop(held);
    let (counters, _) = daemon.stop()?;
    println!("\n-- xalb stopped. Its forwarding counters:");
    for line in counters
        .1
        .iter()
        .filter(|l| l.starts_with("listener_counter") || l.starts_with("target_counter"))
    {
        println!("   {line}");
    }
    let (ok, _, _) = xalb_tests::daemon::detach(lb, None)?;
    if !ok {
        bail!("xalb detach failed");
    }
    web1.ip(&["addr", "add", "10.0.1.10/24", "dev", "eth0"])?;
    drop(pass);
    Ok(())
}

/// The third act: an HTTPS listener with two certificates chosen by SNI,
/// and HTTP redirected to it, from examples/https-listener.toml.
fn https_listener(client: &Netns, lb: &Netns) -> Result<()> {
    let examples = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples"));
    let config = examples.join("https-listener.toml");
    let ca = examples.join("certs/demo-ca.pem");
    println!("\n== an HTTPS listener ({})", config.display());
    println!("   listener HTTPS:443 terminates TLS: www.example.com (ECDSA, the default certificate) and");
    println!("   api.example.com (RSA), chosen by SNI; HTTP/2 by ALPN; listener HTTP:80 redirects to HTTPS.");
    let daemon = Daemon::start(lb, &config, &[])?;
    wait_for(lb, "10.0.1.10", 80, "healthy")?;
    wait_for(lb, "10.0.2.10", 80, "healthy")?;

    println!("\n-- curl http://10.0.0.10/hello : the HTTP listener's answer");
    let out = client
        .command("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{response_code} Location: %{redirect_url}",
        ])
        .arg("http://10.0.0.10/hello")
        .output()?;
    println!("   {}", String::from_utf8_lossy(&out.stdout));

    println!("\n-- curl -L http://www.example.com/hello (resolved to 10.0.0.10, checked against the demo CA):");
    for host in ["www.example.com", "api.example.com"] {
        let out = client
            .command("curl")
            .args(["-sS", "-L", "--cacert"])
            .arg(&ca)
            .args(["--resolve", &format!("{host}:80:10.0.0.10")])
            .args(["--resolve", &format!("{host}:443:10.0.0.10")])
            .args([
                "-w",
                "\n%{url_effective} HTTP/%{http_version} %{response_code}",
            ])
            .arg(format!("http://{host}/hello"))
            .output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let backend = stdout.lines().next().unwrap_or_default();
        let last = stdout.lines().last().unwrap_or_default();
        let proto = stdout
            .lines()
            .find_map(|l| l.strip_prefix("x-forwarded-proto: "))
            .unwrap_or("?");
        println!("   {host}: followed to {last}, answered by {backend} (it saw X-Forwarded-Proto: {proto})");
        if !out.status.success() {
            println!("   curl: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
    }

    println!("\n-- openssl s_client -connect 10.0.0.10:443, three ways of asking:");
    for sni in [Some("www.example.com"), Some("api.example.com"), None] {
        let mut cmd = client.command("openssl");
        cmd.args([
            "s_client",
            "-connect",
            "10.0.0.10:443",
            "-alpn",
            "h2,http/1.1",
        ]);
        match sni {
            Some(name) => cmd.args(["-servername", name]),
            None => cmd.arg("-noservername"),
        };
        let out = cmd.stdin(std::process::Stdio::null()).output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let field = |prefix: &str| {
            text.lines()
                .find_map(|l| l.trim().strip_prefix(prefix))
                .unwrap_or("?")
                .trim()
                .to_string()
        };
        println!(
            "   SNI {:<16} -> certificate {}; {}; ALPN {}",
            sni.unwrap_or("(none)"),
            field("subject="),
            field("New, "),
            field("ALPN protocol:")
        );
    }
    let (_, _) = daemon.stop()?;
    let (ok, _, _) = xalb_tests::daemon::detach(lb, None)?;
    if !ok {
        bail!("xalb detach failed");
    }
    Ok(())
}

/// A connection to the TCP listener: the stream and its target's greeting.
fn session(client: &Netns) -> Result<(std::net::TcpStream, String)> {
    client.run(|| -> Result<(std::net::TcpStream, String)> {
        use std::io::Read;
        let to: SocketAddr = "10.0.0.10:7000".parse()?;
        let mut s = std::net::TcpStream::connect_timeout(&to, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while byte[0] != b'\n' {
            s.read_exact(&mut byte)?;
            line.push(byte[0]);
        }
        Ok((s, String::from_utf8_lossy(&line).trim().to_string()))
    })?
}

/// One echo round trip on an open connection.
fn echo(s: &mut std::net::TcpStream) -> std::io::Result<()> {
    use std::io::{Read, Write};
    s.write_all(b"ping")?;
    let mut back = [0u8; 4];
    s.read_exact(&mut back)?;
    Ok(())
}

/// Sends `n` requests and says who answered.
fn requests(client: &Netns, n: usize) -> Result<()> {
    let replies = in_ns(client, async move || {
        let mut out = Vec::new();
        for i in 0..n {
            out.push(get("10.0.0.10:80".parse().unwrap(), &format!("/page/{i}"), &[]).await);
        }
        out
    })?;
    for (i, r) in replies.into_iter().enumerate() {
        match r {
            Ok(r) => println!("     GET /page/{i} -> {} from {}", r.status, r.backend()),
            Err(e) => println!("     GET /page/{i} -> error: {e:#}"),
        }
    }
    Ok(())
}

/// `xalb describe-target-health --target-group web`, run on the balancer host.
fn describe(lb: &Netns) -> Result<()> {
    let out = lb
        .command(xalb_tests::xalb_bin())
        .args(["describe-target-health", "--target-group", "web"])
        .output()?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        println!("   {line}");
    }
    Ok(())
}

/// Waits (up to 40 s) until the admin endpoint reports `state` for
/// `address`:`port`.
fn wait_for(lb: &Netns, address: &str, port: u16, state: &str) -> Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    let needle = format!(
        "\"address\": \"{address}\",\n      \"port\": {port},\n      \"state\": \"{state}\""
    );
    while std::time::Instant::now() < deadline {
        let body = in_ns(lb, async || {
            get("127.0.0.1:9901".parse().unwrap(), "/targets", &[])
                .await
                .map(|r| r.body)
        })?;
        if let Ok(b) = body {
            if String::from_utf8_lossy(&b).contains(&needle) {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    bail!("{address} did not become {state} in time")
}

fn show(ns: &Netns, from: Option<&str>, to: &str, what: &str) -> Result<()> {
    let to: SocketAddr = to.parse()?;
    let from = from.map(str::parse).transpose()?;
    let verdict = match probe(ns, from, to, 5, WAIT)? {
        Outcome::Answered(g) => format!("answered ({g:?})"),
        Outcome::Refused => "refused by the host (reached it)".to_string(),
        Outcome::NoAnswer => format!("no answer within {} ms (dropped)", WAIT.as_millis()),
        Outcome::Other(e) => format!("error: {e}"),
    };
    println!("   {what:<70} {verdict}");
    Ok(())
}
