//! A bpf filesystem for each namespace an xalb runs in, where it pins the
//! security groups that outlive it.
//!
//! Mounted in this process's mount namespace, outside /sys: `ip netns exec`
//! hides /sys/fs/bpf, and a bpffs mounted inside it would vanish with the
//! daemon, pins and all. One per namespace, so a daemon restarted in the
//! same namespace adopts what the previous one pinned, and tests never see
//! each other's pins. Unmounting it removes every pin in it (and so detaches
//! XDP): that happens when the namespace is dropped, also when a test fails.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use anyhow::{bail, Context, Result};

/// Namespace name → its bpffs mount point.
static MOUNTS: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());

fn mounts() -> MutexGuard<'static, BTreeMap<String, PathBuf>> {
    // A panic elsewhere must not stop the clean-up.
    MOUNTS.lock().unwrap_or_else(|e| e.into_inner())
}

fn c_path(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("no NUL in a temp path")
}

/// The bpffs of the namespace `netns` (by name), mounted on first use.
pub fn for_netns(netns: &str) -> Result<PathBuf> {
    let mut mounts = mounts();
    if let Some(p) = mounts.get(netns) {
        return Ok(p.clone());
    }
    let dir = std::env::temp_dir().join(format!("xalb-bpffs-{netns}"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let bpf = CString::new("bpf").unwrap();
    let target = c_path(&dir);
    // SAFETY: NUL-terminated strings; no mount data.
    let rc = unsafe {
        libc::mount(
            bpf.as_ptr(),
            target.as_ptr(),
            bpf.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        let _ = std::fs::remove_dir(&dir);
        bail!("mount -t bpf bpf {}: {e}", dir.display());
    }
    mounts.insert(netns.to_string(), dir.clone());
    Ok(dir)
}

fn unmount(dir: &Path) {
    let target = c_path(dir);
    // SAFETY: a NUL-terminated path of a mount we made.
    unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    let _ = std::fs::remove_dir(dir);
}

/// Unmounts the bpffs of `netns`, if it has one: every pin in it goes.
pub fn release(netns: &str) {
    let dir = mounts().remove(netns);
    if let Some(dir) = dir {
        unmount(&dir);
    }
}

/// Unmounts every bpffs made here (on an interrupt).
pub(crate) fn release_all() {
    let all = std::mem::take(&mut *mounts());
    for dir in all.values() {
        unmount(dir);
    }
}
