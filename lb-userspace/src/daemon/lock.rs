//! One xalb per network namespace: `<state_dir>/netns-<cookie>.lock`, held
//! (flock) for the life of `xalb run` and for the span of `xalb detach`. The
//! kernel releases it when the holder ends, however it ends; the file keeps
//! the holder's pid for the message of the one refused.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another xalb{} holds {path}", pid_text(*.pid))]
    Busy { pid: Option<u32>, path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn pid_text(pid: Option<u32>) -> String {
    pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
}

impl LockError {
    /// " (pid N)" when the holder is known.
    pub fn holder(&self) -> String {
        match self {
            LockError::Busy { pid, .. } => pid_text(*pid),
            LockError::Io { .. } => String::new(),
        }
    }
}

/// Held until dropped.
#[derive(Debug)]
pub struct NetnsLock {
    file: File,
    path: PathBuf,
}

pub fn path(state_dir: &Path, cookie: u64) -> PathBuf {
    state_dir.join(format!("netns-{cookie}.lock"))
}

impl NetnsLock {
    /// Takes the lock of namespace `cookie` in `state_dir` (made if
    /// missing), without waiting.
    pub fn acquire(state_dir: &Path, cookie: u64) -> Result<Self, LockError> {
        let path = path(state_dir, cookie);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(io)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        // SAFETY: flock on an fd we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(io(e));
            }
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(LockError::Busy {
                pid: text.trim().parse().ok(),
                path,
            });
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(Self { file, path })
    }

    /// The lock a predecessor handed over (its open file, so the flock
    /// was never released); the file now names this process.
    pub fn adopt(state_dir: &Path, cookie: u64, file: std::os::fd::OwnedFd) -> Self {
        let path = path(state_dir, cookie);
        let mut file = File::from(file);
        let named = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()));
        if let Err(e) = named {
            tracing::warn!(path = %path.display(), error = %e, "cannot write this pid into the lock file");
        }
        Self { file, path }
    }

    /// Another descriptor of the lock's open file, to hand it over.
    pub fn share(&self) -> std::io::Result<std::os::fd::OwnedFd> {
        self.file.try_clone().map(Into::into)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid() {
        let dir = std::env::temp_dir().join(format!("xalb-lock-test-{}", std::process::id()));
        let first = NetnsLock::acquire(&dir, 7).unwrap();
        assert_eq!(first.path(), dir.join("netns-7.lock"));
        let err = NetnsLock::acquire(&dir, 7).unwrap_err();
        assert_eq!(err.holder(), format!(" (pid {})", std::process::id()));
        assert!(matches!(err, LockError::Busy { .. }), "{err}");
        // Another namespace has its own lock.
        let other = NetnsLock::acquire(&dir, 8).unwrap();
        drop((first, other));
        NetnsLock::acquire(&dir, 7).unwrap();
        // Handed over: the flock holds as long as either descriptor is open.
        let first = NetnsLock::acquire(&dir, 7).unwrap();
        let shared = first.share().unwrap();
        drop(first);
        assert!(matches!(
            NetnsLock::acquire(&dir, 7),
            Err(LockError::Busy { .. })
        ));
        let adopted = NetnsLock::adopt(&dir, 7, shared);
        let err = NetnsLock::acquire(&dir, 7).unwrap_err();
        assert_eq!(err.holder(), format!(" (pid {})", std::process::id()));
        drop(adopted);
        NetnsLock::acquire(&dir, 7).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
