//! A listening socket in a namespace whose connections each get a thread of
//! their own: the skeleton of the small blocking peers the tests script
//! (`tcp`, `scripted`, `recording`).

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::netns::Netns;

/// Accepts until dropped; connections already handed to `serve` run on.
pub struct Acceptor {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Acceptor {
    /// Binds `addr` inside `ns` and runs `serve` on its own thread for each
    /// connection, in blocking mode.
    pub fn start(
        ns: &Netns,
        addr: SocketAddr,
        serve: impl Fn(TcpStream) + Send + Sync + 'static,
    ) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let listener = ns.run(move || -> std::io::Result<TcpListener> {
            let l = TcpListener::bind(addr)?;
            l.set_nonblocking(true)?;
            Ok(l)
        })?;
        let listener = listener.with_context(|| format!("binding {addr}"))?;
        let flag = stop.clone();
        let serve = Arc::new(serve);
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let serve = serve.clone();
                        std::thread::spawn(move || serve(s));
                    }
                    // Polled only so that the loop can notice it is to stop.
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => break,
                }
            }
        });
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
