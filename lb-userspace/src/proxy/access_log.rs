//! The access log (`[access_log]`): one JSON line per request with the ALB
//! access log's fields. Lines go through a channel to one writer task, so a
//! slow disk never holds a request up.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tracing::warn;

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
    tx: mpsc::UnboundedSender<String>,
}

impl AccessLog {
    /// Starts the writer task (inside a runtime); `None` when disabled.
    pub async fn open(cfg: &AccessLogConfig) -> std::io::Result<Option<Self>> {
        if !cfg.enabled {
            return Ok(None);
        }
        let mut out: Box<dyn tokio::io::AsyncWrite + Send + Unpin> = if cfg.path == "-" {
            Box::new(tokio::io::stdout())
        } else {
            Box::new(
                tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&cfg.path)
                    .await?,
            )
        };
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(64 * 1024);
            while let Some(line) = rx.recv().await {
                buf.extend_from_slice(line.as_bytes());
                // Take whatever else is queued, then write once.
                while let Ok(more) = rx.try_recv() {
                    buf.extend_from_slice(more.as_bytes());
                    if buf.len() > 1 << 20 {
                        break;
                    }
                }
                if let Err(e) = out.write_all(&buf).await {
                    warn!(error = %e, "cannot write the access log");
                }
                let _ = out.flush().await;
                buf.clear();
            }
        });
        Ok(Some(Self { tx }))
    }

    pub fn write(&self, entry: &Entry) {
        if let Ok(mut line) = serde_json::to_string(entry) {
            line.push('\n');
            let _ = self.tx.send(line);
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
