//! The access log (`[access_log]`): one JSON line per request with the ALB
//! access log's fields. Lines go through a channel to one writer task, so a
//! slow disk never holds a request up.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::config::model::AccessLog as AccessLogConfig;

/// One request, as the ALB's access log describes it (names as in its
/// documentation; times in seconds, -1 where a phase did not happen).
#[derive(Debug, Default, Serialize)]
pub struct Entry {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub time: String,
    pub elb: String,
    pub client_port: String,
    pub target_port: String,
    pub request_processing_time: f64,
    pub target_processing_time: f64,
    pub response_processing_time: f64,
    pub elb_status_code: u16,
    pub target_status_code: String,
    pub received_bytes: u64,
    pub sent_bytes: u64,
    pub request: String,
    pub user_agent: String,
    pub ssl_cipher: &'static str,
    pub ssl_protocol: &'static str,
    pub target_group: String,
    pub trace_id: String,
    pub domain_name: String,
    pub matched_rule_priority: i64,
    pub request_creation_time: String,
    pub actions_executed: &'static str,
    pub redirect_url: String,
    pub error_reason: String,
    pub classification: &'static str,
}

/// Where lines go; cheap to clone into every listener.
#[derive(Clone)]
pub struct AccessLog {
    tx: mpsc::UnboundedSender<Msg>,
}

/// What the writer task is told: in order, so that every line queued
/// before a reopen goes to the file it replaces.
enum Msg {
    Line(String),
    /// Open the path again (SIGUSR1, after logrotate moved the file).
    Reopen,
}

type Out = Box<dyn tokio::io::AsyncWrite + Send + Unpin>;

async fn open_out(path: &str) -> std::io::Result<Out> {
    Ok(if path == "-" {
        Box::new(tokio::io::stdout())
    } else {
        Box::new(
            tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .await?,
        )
    })
}

impl AccessLog {
    /// Starts the writer task (inside a runtime); `None` when disabled.
    pub async fn open(cfg: &AccessLogConfig) -> std::io::Result<Option<Self>> {
        if !cfg.enabled {
            return Ok(None);
        }
        let path = cfg.path.clone();
        let mut out = open_out(&path).await?;
        let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(64 * 1024);
            while let Some(msg) = rx.recv().await {
                let mut reopen = false;
                match msg {
                    Msg::Line(line) => buf.extend_from_slice(line.as_bytes()),
                    Msg::Reopen => reopen = true,
                }
                // Take whatever else is queued, then write once; a reopen
                // ends the batch, which belongs to the file before it.
                while !reopen && buf.len() <= 1 << 20 {
                    match rx.try_recv() {
                        Ok(Msg::Line(more)) => buf.extend_from_slice(more.as_bytes()),
                        Ok(Msg::Reopen) => reopen = true,
                        Err(_) => break,
                    }
                }
                if !buf.is_empty() {
                    if let Err(e) = out.write_all(&buf).await {
                        warn!(error = %e, "cannot write the access log");
                    }
                    let _ = out.flush().await;
                    buf.clear();
                }
                if reopen {
                    match open_out(&path).await {
                        Ok(new) => {
                            out = new;
                            info!(path = %path, "access log reopened");
                        }
                        Err(e) => {
                            warn!(path = %path, error = %e, "cannot reopen the access log; writing to the old file")
                        }
                    }
                }
            }
        });
        Ok(Some(Self { tx }))
    }

    /// Opens the file again, after the lines queued so far.
    pub fn reopen(&self) {
        let _ = self.tx.send(Msg::Reopen);
    }

    pub fn write(&self, entry: &Entry) {
        if let Ok(mut line) = serde_json::to_string(entry) {
            line.push('\n');
            let _ = self.tx.send(Msg::Line(line));
        }
    }
}

/// Formats an address as the log does: `ip:port`.
pub fn endpoint(addr: SocketAddr) -> String {
    addr.to_string()
}

pub fn time(t: SystemTime) -> String {
    crate::clock::rfc3339_micros(t)
}

pub fn secs(d: Option<Duration>) -> f64 {
    d.map_or(-1.0, |d| d.as_secs_f64())
}
