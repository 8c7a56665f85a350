//! The commands' side of the admin endpoint: one HTTP/1.1 request over a
//! plain socket, blocking, as a command line needs it.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach xalb's admin endpoint at {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("admin endpoint {addr}: {source}")]
    Io {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "cannot read the admin token {path}: {source} (changes need it: run as root, or pass \
         --state-dir with the directory `xalb run` uses)"
    )]
    Token {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no admin token (64 hex digits)")]
    BadToken { path: PathBuf },
}

/// An answer: status and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

/// The admin token `xalb run` keeps in `state_dir`.
pub fn read_token(state_dir: &Path) -> Result<String, ClientError> {
    let path = state_dir.join(crate::daemon::secrets::ADMIN_TOKEN);
    let bytes = std::fs::read(&path).map_err(|source| ClientError::Token {
        path: path.clone(),
        source,
    })?;
    crate::daemon::secrets::parse_token(&bytes).ok_or(ClientError::BadToken { path })
}

/// `method path` with `body` (JSON when not empty) and the token, if any.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> Result<Answer, ClientError> {
    let io = |source| ClientError::Io { addr, source };
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .map_err(|source| ClientError::Connect { addr, source })?;
    // A reload or a change waits for the configuration to be applied.
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(io)?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .map_err(io)?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(io)?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok(Answer {
        status,
        body: body.to_string(),
    })
}
