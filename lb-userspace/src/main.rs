//! `xalb`: the command line. Errors end here (anyhow); the library uses typed errors.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use xalb::daemon::WorkerAffinity;
use xalb::kernel::XdpModeChoice;

/// See `xalb::memory` for why.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// What `--version` prints after the name.
const VERSION: &str = xalb::VERSION.split_at(5).1;

/// Where the configuration is when neither `-c` nor `XALB_CONFIG` says.
const DEFAULT_CONFIG: &str = "/etc/xalb/xalb.toml";

#[derive(Parser)]
#[command(
    name = "xalb",
    version = VERSION,
    about = "An ALB-style load balancer with an XDP security-group layer"
)]
struct Cli {
    /// How application logs (standard error) are written: text, or one JSON
    /// object per line.
    #[arg(long, value_enum, global = true, default_value = "text")]
    log_format: LogFormat,
    /// The least severe level logged (error, warn, info, debug, trace), or
    /// a filter as RUST_LOG takes it; overrides RUST_LOG. Default: RUST_LOG,
    /// else info.
    #[arg(long, global = true)]
    log_level: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Parse and validate a configuration file; print a summary.
    Check {
        /// The configuration file [env: XALB_CONFIG, else /etc/xalb/xalb.toml].
        #[arg(short, long, env = "XALB_CONFIG", default_value = DEFAULT_CONFIG, hide_env = true, hide_default_value = true)]
        config: PathBuf,
    },
    /// Run the load balancer: attach XDP, enforce security groups, serve.
    Run {
        /// The configuration file [env: XALB_CONFIG, else /etc/xalb/xalb.toml].
        #[arg(short, long, env = "XALB_CONFIG", default_value = DEFAULT_CONFIG, hide_env = true, hide_default_value = true)]
        config: PathBuf,
        /// XDP attach mode: native (driver), generic (skb), or auto (native, else generic).
        #[arg(long, value_enum, default_value = "auto")]
        xdp_mode: XdpModeChoice,
        /// Where the workers (one per CPU xalb may use) run: pinned (worker i
        /// stays on the i-th of those CPUs) or any (the scheduler places them).
        #[arg(long, value_enum, default_value = "pinned")]
        worker_affinity: WorkerAffinity,
        /// Seconds between counter logs (0 = off).
        #[arg(long, default_value_t = 10)]
        stats_interval: u64,
        /// Where xalb keeps what must survive a restart (the stickiness
        /// cookie key).
        #[arg(long, env = "XALB_STATE_DIR", default_value = "/var/lib/xalb")]
        state_dir: PathBuf,
        /// Log every XDP verdict on a balancer's packets (target `xalb::xdp`,
        /// INFO). Off, the XDP program carries no logging at all.
        #[arg(long)]
        xdp_log: bool,
        /// The bpf filesystem where the security groups stay pinned when xalb
        /// stops or dies (never mounted by xalb; it must outlive it).
        #[arg(long, default_value = "/sys/fs/bpf")]
        bpffs: PathBuf,
        /// Seconds a stop (SIGTERM) lets requests in flight and WebSocket
        /// tunnels finish before closing them, and a predecessor drains
        /// after a takeover.
        #[arg(long, default_value_t = 10)]
        shutdown_grace: u64,
        /// Take over from the xalb running in this network namespace (same
        /// --state-dir): its listening sockets are handed over, so no
        /// connection is refused, and it drains and exits. With none
        /// running, start as usual.
        #[arg(long)]
        takeover: bool,
    },
    /// Remove what `xalb run` left pinned in this network namespace: XDP
    /// leaves the interfaces and the security groups are no longer enforced.
    Detach {
        /// The state directory `xalb run` used.
        #[arg(long, env = "XALB_STATE_DIR", default_value = "/var/lib/xalb")]
        state_dir: PathBuf,
        /// The bpf filesystem `xalb run` pinned in.
        #[arg(long, default_value = "/sys/fs/bpf")]
        bpffs: PathBuf,
    },
    /// Ask a running xalb to re-read its configuration (as SIGHUP does) and
    /// say whether it was applied.
    Reload {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Show the balancers, as `aws elbv2 describe-load-balancers` does.
    DescribeLoadBalancers {
        /// Only these balancers.
        #[arg(long, num_args = 1..)]
        names: Vec<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Show the listeners, as `aws elbv2 describe-listeners` does.
    DescribeListeners {
        /// Only this balancer's.
        #[arg(long)]
        load_balancer: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Show a listener's rules in priority order, its default action last,
    /// as `aws elbv2 describe-rules` does.
    DescribeRules {
        /// BALANCER:PORT, e.g. edge:80.
        #[arg(long)]
        listener: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Show the target groups, as `aws elbv2 describe-target-groups` does.
    DescribeTargetGroups {
        /// Only these groups.
        #[arg(long, num_args = 1..)]
        names: Vec<String>,
        /// Only the groups this balancer's listeners forward to.
        #[arg(long)]
        load_balancer: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Show the health of a target group's targets, as `aws elbv2
    /// describe-target-health` does.
    DescribeTargetHealth {
        #[arg(long)]
        target_group: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Add targets to a running group, as `aws elbv2 register-targets`
    /// does; kept in the state directory across restarts and reloads.
    RegisterTargets {
        #[arg(long)]
        target_group: String,
        /// ADDRESS or ADDRESS:PORT ([IPv6]:PORT); the group's port by default.
        #[arg(long, num_args = 1.., required = true)]
        targets: Vec<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Remove targets from a running group; they drain for the group's
    /// deregistration delay, as `aws elbv2 deregister-targets` does.
    DeregisterTargets {
        #[arg(long)]
        target_group: String,
        /// ADDRESS or ADDRESS:PORT ([IPv6]:PORT); the group's port by default.
        #[arg(long, num_args = 1.., required = true)]
        targets: Vec<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Print the man page (roff) or a shell's completion script, made from
    /// this command line's own definition (the package installs them).
    Generate {
        #[arg(value_enum)]
        what: Generated,
    },
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Generated {
    Man,
    Bash,
    Zsh,
    Fish,
}

/// Where the running daemon's admin endpoint is, and how to answer.
#[derive(clap::Args)]
struct AdminArgs {
    /// The admin address [default: the configuration's `[admin] listen`, else 127.0.0.1:9901].
    #[arg(long)]
    admin: Option<std::net::SocketAddr>,
    /// The configuration file whose `[admin] listen` to use [env: XALB_CONFIG, else /etc/xalb/xalb.toml if it exists].
    #[arg(short, long, env = "XALB_CONFIG", hide_env = true)]
    config: Option<PathBuf>,
    /// The running xalb's state directory: changes (reload, register,
    /// deregister) read its admin token there.
    #[arg(long, env = "XALB_STATE_DIR", default_value = "/var/lib/xalb")]
    state_dir: PathBuf,
    /// text: aligned columns; table: boxed, as the AWS CLI's; json: the AWS
    /// CLI's JSON shapes.
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    Text,
    Table,
    Json,
}

impl AdminArgs {
    fn addr(&self) -> anyhow::Result<std::net::SocketAddr> {
        if let Some(a) = self.admin {
            return Ok(a);
        }
        let config = match &self.config {
            Some(c) => Some(c.clone()),
            None => Some(PathBuf::from(DEFAULT_CONFIG)).filter(|p| p.exists()),
        };
        match config {
            Some(c) => Ok(xalb::config::load(&c)?.admin.listen),
            None => Ok(([127, 0, 0, 1], 9901).into()),
        }
    }

    /// A GET; its JSON body when the answer is 200.
    fn get(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let addr = self.addr()?;
        let a = xalb::admin::client::request(addr, "GET", path, "", None)?;
        if a.status != 200 {
            return Err(refused(addr, a.status, &a.body));
        }
        serde_json::from_str(&a.body)
            .map_err(|e| anyhow::anyhow!("unexpected answer from {addr}: {e}: {}", a.body))
    }

    /// A change, with the admin token; what was applied.
    fn post(&self, path: &str, body: &str) -> anyhow::Result<xalb::daemon::Applied> {
        let addr = self.addr()?;
        let token = xalb::admin::client::read_token(&self.state_dir)?;
        let a = xalb::admin::client::request(addr, "POST", path, body, Some(&token))?;
        if a.status != 200 {
            return Err(refused(addr, a.status, &a.body));
        }
        serde_json::from_str(&a.body)
            .map_err(|e| anyhow::anyhow!("unexpected answer from {addr}: {e}: {}", a.body))
    }

    /// `rows` under `headers`, as `--output` asks; `json` as it is.
    fn print(
        &self,
        title: &str,
        headers: &[&str],
        rows: Vec<Vec<String>>,
        json: &serde_json::Value,
    ) {
        match self.output {
            Output::Json => {
                println!("{}", serde_json::to_string_pretty(json).unwrap_or_default())
            }
            Output::Table | Output::Text => {
                let mut t = xalb::admin::table::Table::new(title, headers);
                for r in rows {
                    t.row(r);
                }
                if self.output == Output::Table {
                    print!("{}", t.render());
                } else {
                    print!("{}", t.render_text());
                }
            }
        }
    }
}

/// A refusal from the endpoint: its located errors printed as `xalb check`
/// prints them, or its message.
fn refused(addr: std::net::SocketAddr, status: u16, body: &str) -> anyhow::Error {
    match serde_json::from_str::<xalb::daemon::Refusal>(body) {
        Ok(r) if !r.errors.is_empty() => print_diagnostics(&r.errors),
        Ok(r) => anyhow::anyhow!("{}", r.message),
        Err(_) => anyhow::anyhow!(
            "admin endpoint {addr} answered {status}: {}",
            body.trim_end()
        ),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = match &cli.log_level {
        Some(level) => tracing_subscriber::EnvFilter::try_new(level).ok(),
        None => tracing_subscriber::EnvFilter::try_from_default_env().ok(),
    }
    .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    let result = match cli.cmd {
        Cmd::Check { config } => check(&config),
        Cmd::Generate { what } => generate(what),
        Cmd::Reload { admin } => reload(&admin),
        Cmd::DescribeLoadBalancers { names, admin } => describe_load_balancers(&admin, &names),
        Cmd::DescribeListeners {
            load_balancer,
            admin,
        } => describe_listeners(&admin, load_balancer.as_deref()),
        Cmd::DescribeRules { listener, admin } => describe_rules(&admin, &listener),
        Cmd::DescribeTargetGroups {
            names,
            load_balancer,
            admin,
        } => describe_target_groups(&admin, &names, load_balancer.as_deref()),
        Cmd::RegisterTargets {
            target_group,
            targets,
            admin,
        } => change_targets(&admin, "register", &target_group, targets),
        Cmd::DeregisterTargets {
            target_group,
            targets,
            admin,
        } => change_targets(&admin, "deregister", &target_group, targets),
        Cmd::Detach { state_dir, bpffs } => {
            xalb::daemon::detach(&xalb::daemon::DetachOptions { state_dir, bpffs })
                .map(|lines| {
                    for l in lines {
                        println!("{l}");
                    }
                })
                .map_err(Into::into)
        }
        Cmd::DescribeTargetHealth {
            target_group,
            admin,
        } => describe_target_health(&admin, &target_group),
        Cmd::Run {
            config,
            xdp_mode,
            worker_affinity,
            stats_interval,
            state_dir,
            xdp_log,
            bpffs,
            takeover,
            shutdown_grace,
        } => xalb::daemon::run(xalb::daemon::RunOptions {
            config,
            xdp_mode,
            worker_affinity,
            stats_interval: Duration::from_secs(stats_interval),
            state_dir,
            xdp_log,
            bpffs,
            takeover,
            shutdown_grace: Duration::from_secs(shutdown_grace),
        })
        .map_err(|e| match e {
            xalb::daemon::RunError::Apply(xalb::daemon::ApplyError::Config(c))
                if !c.diagnostics().is_empty() =>
            {
                print_diagnostics(c.diagnostics())
            }
            e => e.into(),
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<Reported>() => ExitCode::FAILURE,
        Err(e) => {
            // Every error's message already names its cause.
            eprintln!("xalb: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A failure already printed, line by line; only the exit status is left.
#[derive(Debug, thiserror::Error)]
#[error("reported")]
struct Reported;

/// One `xalb: error:` line per located problem, the way compilers print them.
fn print_diagnostics<T: std::fmt::Display>(located: &[T]) -> anyhow::Error {
    for d in located {
        eprintln!("xalb: error: {d}");
    }
    Reported.into()
}

fn check(config: &std::path::Path) -> anyhow::Result<()> {
    let cfg = match xalb::config::load(config) {
        Ok(cfg) => cfg,
        Err(e) if !e.diagnostics().is_empty() => return Err(print_diagnostics(e.diagnostics())),
        Err(e) => return Err(e.into()),
    };
    xalb::kernel::compile(&cfg, &xalb::kernel::LbSlots::for_config(&cfg))
        .map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))?;
    println!("{}: OK", config.display());
    println!("{}", cfg.summary());
    for w in &cfg.warnings {
        println!("warning: {w}");
    }
    // About the host this runs on, which may not be the balancer's.
    for note in xalb::kernel::host::interface_notes(&cfg) {
        println!("note: {note}");
    }
    Ok(())
}

/// `POST /reload`, printing what was applied, or why nothing was with the
/// same lines `xalb check` prints.
fn reload(admin: &AdminArgs) -> anyhow::Result<()> {
    match admin.post("/reload", "") {
        Ok(applied) => {
            println!("reloaded: {}", applied.summary);
            Ok(())
        }
        Err(e) => {
            eprintln!("xalb: the configuration was not reloaded; the running one stays");
            Err(e)
        }
    }
}

fn change_targets(
    admin: &AdminArgs,
    verb: &str,
    group: &str,
    targets: Vec<String>,
) -> anyhow::Result<()> {
    let body = serde_json::to_string(&xalb::admin::TargetsChange {
        target_group_name: group.to_string(),
        targets,
    })?;
    let applied = admin.post(&format!("/api/{verb}-targets"), &body)?;
    match admin.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&applied)?),
        _ => println!("{verb}ed: {}", applied.summary),
    }
    Ok(())
}

/// A JSON value's field as text ("" when absent; lists joined by commas).
fn field(v: &serde_json::Value, key: &str) -> String {
    match &v[key] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        serde_json::Value::Array(a) => a.iter().map(field_text).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

fn field_text(v: &serde_json::Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}

/// Keeps the entries of the list under `list` that `names` names by their
/// field `name` (all when `names` is empty) and that `keep` accepts, and
/// returns them; or the first of `names` that none answers to.
fn named(
    json: &mut serde_json::Value,
    (list, name): (&str, &str),
    names: &[String],
    keep: impl Fn(&serde_json::Value) -> bool,
) -> Result<Vec<serde_json::Value>, String> {
    if let Some(entries) = json[list].as_array_mut() {
        entries.retain(|e| (names.is_empty() || names.contains(&field(e, name))) && keep(e));
    }
    let kept = json[list].as_array().cloned().unwrap_or_default();
    match names
        .iter()
        .find(|n| !kept.iter().any(|e| &field(e, name) == *n))
    {
        Some(missing) => Err(missing.clone()),
        None => Ok(kept),
    }
}

fn describe_load_balancers(admin: &AdminArgs, names: &[String]) -> anyhow::Result<()> {
    let mut json = admin.get("/api/load-balancers")?;
    let lbs = named(
        &mut json,
        ("LoadBalancers", "LoadBalancerName"),
        names,
        |_| true,
    )
    .map_err(|n| anyhow::anyhow!("load balancer {n:?} not found"))?;
    let rows = lbs
        .iter()
        .map(|lb| {
            vec![
                field(lb, "LoadBalancerName"),
                field(lb, "Scheme"),
                field(&lb["State"], "Code"),
                field(lb, "IpAddressType"),
                field(lb, "Interfaces"),
                field(lb, "Addresses"),
                field(lb, "SecurityGroups"),
            ]
        })
        .collect();
    let headers = [
        "Name",
        "Scheme",
        "State",
        "IpAddressType",
        "Interfaces",
        "Addresses",
        "SecurityGroups",
    ];
    admin.print("DescribeLoadBalancers", &headers, rows, &json);
    Ok(())
}

/// An action in one line: `forward web`, `forward web:90,api:10`,
/// `redirect HTTP_301 HTTPS://#{host}:443/#{path}?#{query}`, `fixed-response 503`.
fn action_text(a: &serde_json::Value) -> String {
    let kind = field(a, "Type");
    if let Some(g) = a["TargetGroupName"].as_str() {
        return format!("{kind} {g}");
    }
    if let Some(groups) = a["ForwardConfig"]["TargetGroups"].as_array() {
        let list: Vec<String> = groups
            .iter()
            .map(|g| format!("{}:{}", field(g, "TargetGroupName"), field(g, "Weight")))
            .collect();
        return format!("{kind} {}", list.join(","));
    }
    let r = &a["RedirectConfig"];
    if r.is_object() {
        return format!(
            "{kind} {} {}://{}:{}{}?{}",
            field(r, "StatusCode"),
            field(r, "Protocol"),
            field(r, "Host"),
            field(r, "Port"),
            field(r, "Path"),
            field(r, "Query")
        );
    }
    format!("{kind} {}", field(&a["FixedResponseConfig"], "StatusCode"))
}

fn actions_text(v: &serde_json::Value, key: &str) -> String {
    v[key]
        .as_array()
        .map(|a| a.iter().map(action_text).collect::<Vec<_>>().join("; "))
        .unwrap_or_default()
}

fn describe_listeners(admin: &AdminArgs, lb: Option<&str>) -> anyhow::Result<()> {
    let mut json = admin.get("/api/listeners")?;
    let of_lb = |l: &serde_json::Value| lb.is_none_or(|n| field(l, "LoadBalancerName") == n);
    let rows = named(&mut json, ("Listeners", "ListenerName"), &[], of_lb)
        .unwrap_or_default()
        .iter()
        .map(|l| {
            vec![
                field(l, "ListenerName"),
                field(l, "LoadBalancerName"),
                field(l, "Protocol"),
                field(l, "Port"),
                field(l, "SslPolicy"),
                actions_text(l, "DefaultActions"),
            ]
        })
        .collect();
    let headers = [
        "Listener",
        "LoadBalancer",
        "Protocol",
        "Port",
        "SslPolicy",
        "DefaultActions",
    ];
    admin.print("DescribeListeners", &headers, rows, &json);
    Ok(())
}

fn describe_rules(admin: &AdminArgs, listener: &str) -> anyhow::Result<()> {
    let json = admin.get(&format!("/api/rules?listener={listener}"))?;
    let rows = json["Rules"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let conditions: Vec<String> = r["Conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| match c["HttpHeaderName"].as_str() {
                    Some(h) => format!("{} {h}={}", field(c, "Field"), field(c, "Values")),
                    None => format!("{}={}", field(c, "Field"), field(c, "Values")),
                })
                .collect();
            vec![
                field(r, "Priority"),
                conditions.join(" and "),
                actions_text(r, "Actions"),
            ]
        })
        .collect();
    admin.print(
        "DescribeRules",
        &["Priority", "Conditions", "Actions"],
        rows,
        &json,
    );
    Ok(())
}

fn describe_target_groups(
    admin: &AdminArgs,
    names: &[String],
    lb: Option<&str>,
) -> anyhow::Result<()> {
    let mut json = admin.get("/api/target-groups")?;
    let used_by = |g: &serde_json::Value| {
        lb.is_none_or(|n| {
            g["LoadBalancerNames"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == n))
        })
    };
    let groups = named(
        &mut json,
        ("TargetGroups", "TargetGroupName"),
        names,
        used_by,
    )
    .map_err(|n| anyhow::anyhow!("target group {n:?} not found"))?;
    let rows = groups
        .iter()
        .map(|g| {
            vec![
                field(g, "TargetGroupName"),
                field(g, "Protocol"),
                field(g, "Port"),
                field(g, "LoadBalancerNames"),
                field(g, "RegisteredTargetCount"),
                if g["HealthCheckEnabled"] == true {
                    format!(
                        "{} {}",
                        field(g, "HealthCheckProtocol"),
                        field(g, "HealthCheckPath")
                    )
                    .trim_end()
                    .to_string()
                } else {
                    "off".into()
                },
            ]
        })
        .collect();
    let headers = [
        "Name",
        "Protocol",
        "Port",
        "LoadBalancers",
        "Targets",
        "HealthCheck",
    ];
    admin.print("DescribeTargetGroups", &headers, rows, &json);
    Ok(())
}

fn describe_target_health(admin: &AdminArgs, group: &str) -> anyhow::Result<()> {
    let json = admin.get(&format!("/targets?target_group={group}"))?;
    let reply: xalb::admin::TargetsReply = serde_json::from_value(json)?;
    anyhow::ensure!(
        !reply.targets.is_empty(),
        "target group {group:?} has no targets (or does not exist)"
    );
    // The AWS CLI's shape, with where each target comes from beside it.
    let aws = serde_json::json!({
        "TargetHealthDescriptions": reply.targets.iter().map(|t| serde_json::json!({
            "Target": { "Id": t.address, "Port": t.port },
            "TargetHealth": {
                "State": t.state,
                "Reason": (!t.reason.is_empty()).then_some(&t.reason),
                "Description": (!t.description.is_empty()).then_some(&t.description),
            },
            "Source": t.source,
        })).collect::<Vec<_>>()
    });
    let rows = reply
        .targets
        .iter()
        .map(|t| {
            vec![
                t.address.clone(),
                t.port.to_string(),
                t.state.clone(),
                t.reason.clone(),
                t.source.clone(),
                t.description.clone(),
            ]
        })
        .collect();
    let headers = ["Target", "Port", "State", "Reason", "Source", "Description"];
    admin.print("DescribeTargetHealth", &headers, rows, &aws);
    Ok(())
}

fn generate(what: Generated) -> anyhow::Result<()> {
    use clap::CommandFactory;
    use std::io::Write;
    let cmd = Cli::command();
    // Made whole first: a closed pipe is then an error, not a panic.
    let mut text = Vec::new();
    let mut complete = |shell| clap_complete::generate(shell, &mut cmd.clone(), "xalb", &mut text);
    match what {
        Generated::Bash => complete(clap_complete::Shell::Bash),
        Generated::Zsh => complete(clap_complete::Shell::Zsh),
        Generated::Fish => complete(clap_complete::Shell::Fish),
        Generated::Man => clap_mangen::Man::new(cmd).render(&mut text)?,
    }
    std::io::stdout().lock().write_all(&text)?;
    Ok(())
}
