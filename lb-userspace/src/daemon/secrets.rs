//! Secrets kept in the state directory, owner-only: the stickiness cookie
//! key, so that cookies issued before a restart still name their targets
//! after it (HAProxy's and nginx's stickiness cookies survive a restart
//! too), and the admin token that mutating admin calls must carry.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use ring::rand::SecureRandom;

use crate::targets::sticky::KEY_LEN;

const STICKY_KEY: &str = "sticky.key";
/// The admin token's file: 64 hex digits and a newline, for `curl -H
/// "Authorization: Bearer $(cat ...)"`.
pub const ADMIN_TOKEN: &str = "admin.token";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} is not {what}; remove it to make a new one")]
    Malformed { path: PathBuf, what: &'static str },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("the system's random source failed")]
    Random,
}

/// The stickiness key in `dir`, made on first use.
pub fn sticky_key(dir: &Path) -> Result<[u8; KEY_LEN], SecretError> {
    let path = dir.join(STICKY_KEY);
    let bytes = read_or_make(dir, &path, || random::<KEY_LEN>().map(Vec::from))?;
    bytes
        .as_slice()
        .try_into()
        .map_err(|_| SecretError::Malformed {
            path,
            what: "a 32-byte key",
        })
}

/// The admin token in `dir`, made on first use.
pub fn admin_token(dir: &Path) -> Result<String, SecretError> {
    let path = dir.join(ADMIN_TOKEN);
    let bytes = read_or_make(dir, &path, || {
        let hex: String = random::<32>()?.iter().map(|b| format!("{b:02x}")).collect();
        Ok(format!("{hex}\n").into_bytes())
    })?;
    parse_token(&bytes).ok_or(SecretError::Malformed {
        path,
        what: "an admin token (64 hex digits)",
    })
}

/// A token file's token: 64 hex digits, surrounding whitespace ignored.
pub fn parse_token(bytes: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(bytes).ok()?.trim();
    (text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())).then(|| text.to_string())
}

fn random<const N: usize>() -> Result<[u8; N], SecretError> {
    let mut b = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| SecretError::Random)?;
    Ok(b)
}

/// `path`'s bytes; when it does not exist, `make`'s, written to it first
/// (and `dir` made owner-only).
fn read_or_make(
    dir: &Path,
    path: &Path,
    make: impl FnOnce() -> Result<Vec<u8>, SecretError>,
) -> Result<Vec<u8>, SecretError> {
    match fs::read(path) {
        Ok(bytes) => return Ok(bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(SecretError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    }
    let bytes = make()?;
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
        f.write_all(&bytes)?;
        f.sync_all()
    };
    // Written whole under another name, then renamed: a crash leaves no
    // half secret behind.
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!("{name}.{}", std::process::id()));
    write(&tmp)
        .and_then(|()| fs::rename(&tmp, path))
        .map_err(|source| {
            let _ = fs::remove_file(&tmp);
            SecretError::Write {
                path: path.to_path_buf(),
                source,
            }
        })?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("xalb-secret-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_key_is_made_once_and_then_read_back() {
        let dir = temp_dir("once").join("nested");
        let first = sticky_key(&dir).unwrap();
        assert_eq!(sticky_key(&dir).unwrap(), first);
        assert_ne!(first, [0u8; KEY_LEN]);
        assert_eq!(mode(&dir.join(STICKY_KEY)), 0o600);
        assert_eq!(mode(&dir), 0o700);
        let _ = fs::remove_dir_all(dir.parent().unwrap());
    }

    #[test]
    fn an_unreadable_secret_is_an_error_not_made_again() {
        let dir = temp_dir("unreadable");
        fs::create_dir_all(dir.join(STICKY_KEY)).unwrap();
        let err = sticky_key(&dir).unwrap_err();
        assert!(matches!(err, SecretError::Read { .. }), "{err}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_key_of_the_wrong_length_is_refused_and_kept() {
        let dir = temp_dir("short");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(STICKY_KEY), b"short").unwrap();
        let err = sticky_key(&dir).unwrap_err();
        assert!(matches!(err, SecretError::Malformed { .. }), "{err}");
        assert_eq!(fs::read(dir.join(STICKY_KEY)).unwrap(), b"short");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_admin_token_is_64_hex_digits_owner_only_and_stable() {
        let dir = temp_dir("token");
        let token = admin_token(&dir).unwrap();
        assert_eq!(token.len(), 64);
        assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(admin_token(&dir).unwrap(), token);
        assert_eq!(mode(&dir.join(ADMIN_TOKEN)), 0o600);
        assert_ne!(admin_token(&temp_dir("token2")).unwrap(), token);
        fs::write(dir.join(ADMIN_TOKEN), "not-a-token\n").unwrap();
        assert!(matches!(
            admin_token(&dir),
            Err(SecretError::Malformed { .. })
        ));
        assert_eq!(
            parse_token(format!("  {token}\r\n").as_bytes()),
            Some(token)
        );
        let _ = fs::remove_dir_all(&dir);
        let _ = fs::remove_dir_all(temp_dir("token2"));
    }
}
