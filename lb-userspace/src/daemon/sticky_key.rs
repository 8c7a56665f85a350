//! The stickiness cookie key, kept in the state directory so that cookies
//! issued before a restart still name their targets after it (HAProxy's and
//! nginx's stickiness cookies survive a restart too).

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use ring::rand::SecureRandom;

use crate::targets::sticky::KEY_LEN;

const FILE: &str = "sticky.key";

#[derive(Debug, thiserror::Error)]
pub enum StickyKeyError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "{path} holds {len} bytes, not a {KEY_LEN}-byte key; remove it to start fresh sessions"
    )]
    Length { path: PathBuf, len: usize },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("the system's random source failed")]
    Random,
}

/// The key in `dir`, made (and the directory with it, owner-only) on first use.
pub fn load_or_create(dir: &Path) -> Result<[u8; KEY_LEN], StickyKeyError> {
    let path = dir.join(FILE);
    match fs::read(&path) {
        Ok(bytes) => {
            return bytes
                .as_slice()
                .try_into()
                .map_err(|_| StickyKeyError::Length {
                    path,
                    len: bytes.len(),
                })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(StickyKeyError::Read { path, source }),
    }
    let mut key = [0u8; KEY_LEN];
    ring::rand::SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| StickyKeyError::Random)?;
    let write = |p: &Path| -> io::Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(p)?;
        f.write_all(&key)?;
        f.sync_all()
    };
    // Written whole under another name, then renamed: a crash leaves no
    // half key behind.
    let tmp = dir.join(format!("{FILE}.{}", std::process::id()));
    write(&tmp)
        .and_then(|()| fs::rename(&tmp, &path))
        .map_err(|source| {
            let _ = fs::remove_file(&tmp);
            StickyKeyError::Write {
                path: path.clone(),
                source,
            }
        })?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("xalb-sticky-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn the_key_is_made_once_and_then_read_back() {
        let dir = temp_dir("once").join("nested");
        let first = load_or_create(&dir).unwrap();
        assert_eq!(load_or_create(&dir).unwrap(), first);
        assert_ne!(first, [0u8; KEY_LEN]);
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir.join(FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let _ = fs::remove_dir_all(dir.parent().unwrap());
    }

    #[test]
    fn a_key_of_the_wrong_length_is_refused_and_kept() {
        let dir = temp_dir("short");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(FILE), b"short").unwrap();
        let err = load_or_create(&dir).unwrap_err();
        assert!(
            matches!(err, StickyKeyError::Length { len: 5, .. }),
            "{err}"
        );
        assert_eq!(fs::read(dir.join(FILE)).unwrap(), b"short");
        let _ = fs::remove_dir_all(&dir);
    }
}
