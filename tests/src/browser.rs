//! Headless Chromium driven over WebDriver, inside a namespace: for tests of
//! the pages the admin endpoint serves.
//!
//! `chromedriver` (and so the Chromium it starts) runs inside the namespace,
//! and every WebDriver call is made from a thread that has entered it: the
//! admin endpoint listens on the namespace's loopback. The client is plain
//! HTTP/1.1 over a blocking socket, one connection per call.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

use crate::netns::Netns;

pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// How long one WebDriver call may take (a navigation waits for the load).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long chromedriver may take to answer `/status`.
const START_TIMEOUT: Duration = Duration::from_secs(30);

static NEXT: AtomicU32 = AtomicU32::new(0);

type Job = Box<dyn FnOnce() + Send>;

/// A thread inside a namespace that runs the jobs sent to it.
struct NsThread {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NsThread {
    fn new(ns: &Netns) -> Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = ns.spawn(move || {
            for job in rx {
                job();
            }
        })?;
        Ok(Self {
            jobs: Some(tx),
            thread: Some(thread),
        })
    }

    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let (tx, rx) = mpsc::channel();
        self.jobs
            .as_ref()
            .context("namespace thread stopped")?
            .send(Box::new(move || {
                let _ = tx.send(f());
            }))
            .map_err(|_| anyhow!("namespace thread gone"))?;
        rx.recv().map_err(|_| anyhow!("namespace thread panicked"))
    }
}

impl Drop for NsThread {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One HTTP/1.1 exchange with `Connection: close`: the status and the body.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
    timeout: Duration,
) -> Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body.as_bytes())?;
    // chromedriver may keep the connection open despite `Connection:
    // close`: the body ends at its Content-Length, or at the last chunk.
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = s.read(&mut buf)?;
        raw.extend_from_slice(&buf[..n]);
        if let Some(reply) = complete(&raw, n == 0)? {
            return Ok(reply);
        }
    }
}

/// The status and body of a reply read so far, once it is complete.
fn complete(raw: &[u8], closed: bool) -> Result<Option<(u16, Vec<u8>)>> {
    let short = || {
        if closed {
            bail!("connection closed after a partial reply")
        }
        Ok(None)
    };
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return short();
    };
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line in {head:?}"))?;
    let field = |name: &str| {
        head.lines()
            .find_map(|l| Some(l.strip_prefix(name)?.strip_prefix(':')?.trim().to_string()))
    };
    let body = &raw[end + 4..];
    if field("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        return match dechunk(body)? {
            Some(b) => Ok(Some((status, b))),
            None => short(),
        };
    }
    match field("content-length").and_then(|v| v.parse::<usize>().ok()) {
        Some(n) if body.len() >= n => Ok(Some((status, body[..n].to_vec()))),
        None if closed => Ok(Some((status, body.to_vec()))),
        _ => short(),
    }
}

/// The body of a chunked reply, or None while it is incomplete.
fn dechunk(mut b: &[u8]) -> Result<Option<Vec<u8>>> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let size = std::str::from_utf8(&b[..eol])?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .with_context(|| format!("bad chunk size {size:?}"))?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(Some(out));
        }
        let Some(chunk) = b.get(..size) else {
            return Ok(None);
        };
        out.extend_from_slice(chunk);
        let Some(rest) = b.get(size + 2..) else {
            return Ok(None);
        };
        b = rest;
    }
}

/// Standard base64 (with or without padding), as WebDriver sends screenshots.
pub fn base64_decode(text: &str) -> Result<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let digits: Vec<u8> = text.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let digits = match digits.iter().position(|&c| c == b'=') {
        Some(p) if digits[p..].iter().all(|&c| c == b'=') && digits.len().is_multiple_of(4) => {
            &digits[..p]
        }
        Some(_) => bail!("misplaced padding in base64"),
        None => &digits[..],
    };
    if digits.len() % 4 == 1 {
        bail!("base64 of impossible length");
    }
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for group in digits.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in group.iter().enumerate() {
            let v = value(c).with_context(|| format!("not a base64 digit: {:?}", c as char))?;
            acc |= v << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..group.len()]);
    }
    Ok(out)
}

/// Headless Chromium in a namespace, with one WebDriver session. Dropping it
/// ends the session, kills chromedriver and anything left of Chromium, and
/// removes Chromium's profile directory, also when a test fails.
pub struct Browser {
    ns: NsThread,
    driver: Child,
    addr: SocketAddr,
    session: Option<String>,
    dir: PathBuf,
    /// Console errors read so far (reading them empties chromedriver's log).
    errors: Vec<String>,
}

impl Browser {
    /// Starts chromedriver in `ns` on a free port and opens a session.
    pub fn start(ns: &Netns) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "xalb-chromium-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let thread = NsThread::new(ns)?;
        // A port free in the namespace: the kernel picks, chromedriver takes.
        let port = thread
            .run(|| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|l| l.local_addr()))??;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port.port()));
        std::fs::create_dir_all(dir.join("profile"))
            .with_context(|| format!("creating {}", dir.display()))?;
        crate::interrupt::add_dir(&dir);
        let spawned = std::fs::File::create(dir.join("chromedriver.log")).and_then(|log| {
            ns.command(CHROMEDRIVER)
                .arg(format!("--port={}", addr.port()))
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                // Its own process group: Chromium's processes join it, and
                // a kill of the group leaves none behind.
                .process_group(0)
                .spawn()
        });
        let driver = match spawned {
            Ok(d) => d,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                crate::interrupt::remove_dir(&dir);
                return Err(e).with_context(|| {
                    format!("starting {CHROMEDRIVER} (apt-get install chromium-driver)")
                });
            }
        };
        crate::interrupt::add_daemon(driver.id());
        let mut b = Self {
            ns: thread,
            driver,
            addr,
            session: None,
            dir,
            errors: Vec::new(),
        };
        b.wait_ready().with_context(|| b.driver_log())?;
        let profile = b.dir.join("profile");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--window-size=1400,1000",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let v = b
            .call("POST", "/session", Some(caps))
            .with_context(|| b.driver_log())?;
        let id = v["sessionId"]
            .as_str()
            .with_context(|| format!("no sessionId in {v}"))?;
        b.session = Some(id.to_string());
        Ok(b)
    }

    fn driver_log(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("chromedriver.log")).unwrap_or_default();
        format!("chromedriver's log:\n{log}")
    }

    /// Polls `/status` until chromedriver says it is ready.
    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = self.addr;
        loop {
            let reply = self
                .ns
                .run(move || http(addr, "GET", "/status", None, Duration::from_secs(2)))?;
            let last = match reply {
                Ok((200, body)) => {
                    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
                    if v["value"]["ready"] == json!(true) {
                        return Ok(());
                    }
                    format!("not ready: {v}")
                }
                Ok((status, _)) => format!("status {status}"),
                Err(e) => format!("{e:#}"),
            };
            if let Some(status) = self.driver.try_wait()? {
                bail!("chromedriver exited ({status}) before it was ready");
            }
            if Instant::now() >= deadline {
                bail!("chromedriver not ready after {START_TIMEOUT:?}: {last}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// One WebDriver command: its `value`, or the WebDriver error.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let (addr, method_s, path_s) = (self.addr, method.to_string(), path.to_string());
        let (status, body) = self
            .ns
            .run(move || http(addr, &method_s, &path_s, body.as_ref(), CALL_TIMEOUT))??;
        let v: Value = serde_json::from_slice(&body).with_context(|| {
            format!(
                "{method} {path}: status {status}, not JSON: {}",
                String::from_utf8_lossy(&body)
            )
        })?;
        let value = v.get("value").cloned().unwrap_or(Value::Null);
        if status != 200 {
            bail!(
                "{method} {path}: status {status}: {} {}",
                value["error"].as_str().unwrap_or("?"),
                value["message"].as_str().unwrap_or("")
            );
        }
        Ok(value)
    }

    fn session_path(&self, rest: &str) -> Result<String> {
        let id = self.session.as_deref().context("no session")?;
        Ok(format!("/session/{id}{rest}"))
    }

    /// Opens `url` and waits for its load (WebDriver's default).
    pub fn navigate(&self, url: &str) -> Result<()> {
        self.call(
            "POST",
            &self.session_path("/url")?,
            Some(json!({"url": url})),
        )?;
        Ok(())
    }

    /// Runs `script` as a function body in the page; what it returns.
    pub fn execute(&self, script: &str) -> Result<Value> {
        self.call(
            "POST",
            &self.session_path("/execute/sync")?,
            Some(json!({"script": script, "args": []})),
        )
    }

    /// A PNG of the window.
    pub fn screenshot_png(&self) -> Result<Vec<u8>> {
        let v = self.call("GET", &self.session_path("/screenshot")?, None)?;
        base64_decode(v.as_str().context("screenshot is not a string")?)
    }

    /// Every error the page's console has had since the start (`SEVERE`
    /// entries of the browser log: console.error, uncaught exceptions,
    /// failed loads), as "level message".
    pub fn console_errors(&mut self) -> Result<Vec<String>> {
        let v = self.call(
            "POST",
            &self.session_path("/se/log")?,
            Some(json!({"type": "browser"})),
        )?;
        let entries = v.as_array().with_context(|| format!("not a log: {v}"))?;
        for e in entries {
            let level = e["level"].as_str().unwrap_or("");
            if level == "SEVERE" || level == "ERROR" {
                self.errors.push(format!(
                    "{level} {}",
                    e["message"].as_str().unwrap_or_default()
                ));
            }
        }
        Ok(self.errors.clone())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Ok(path) = self.session_path("") {
            // Quits Chromium; bounded, and a failure only leaves the kill.
            let addr = self.addr;
            let _ = self
                .ns
                .run(move || http(addr, "DELETE", &path, None, Duration::from_secs(10)));
        }
        let pid = self.driver.id();
        // SAFETY: kill of the process group we made for chromedriver (its
        // pid is the group's id; the child is not reaped yet, so the id is
        // still ours).
        unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
        let _ = self.driver.wait();
        crate::interrupt::remove_daemon(pid);
        let _ = std::fs::remove_dir_all(&self.dir);
        crate::interrupt::remove_dir(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::base64_decode;

    #[test]
    fn base64_decodes_with_and_without_padding() {
        assert_eq!(base64_decode("").unwrap(), b"");
        assert_eq!(base64_decode("Zg==").unwrap(), b"f");
        assert_eq!(base64_decode("Zm8=").unwrap(), b"fo");
        assert_eq!(base64_decode("Zm9v").unwrap(), b"foo");
        assert_eq!(base64_decode("Zm9vYg").unwrap(), b"foob");
        assert_eq!(
            base64_decode("iVBORw0K\nGgo=").unwrap(),
            b"\x89PNG\r\n\x1a\n"
        );
        assert_eq!(base64_decode("+/+/").unwrap(), [0xfb, 0xff, 0xbf]);
        assert!(base64_decode("Zm9v!").is_err());
        assert!(base64_decode("Z").is_err());
        assert!(base64_decode("Zg=a").is_err());
    }
}
