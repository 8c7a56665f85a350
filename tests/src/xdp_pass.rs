//! A two-instruction `XDP_PASS` program on a veth end that receives
//! frames the balancer sends with `XDP_TX` or redirects. veth hands such
//! frames to its peer's queue but wakes the peer to take them only when the
//! peer runs an XDP program of its own (GRO's NAPI is enough for redirects,
//! not for `XDP_TX`), so without one a reset the balancer transmits sits in
//! the queue until some other frame arrives.

use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd};

use anyhow::{bail, Context, Result};

use crate::netns::Netns;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
const XDP_PASS: i32 = 2;

/// `bpf(cmd, attr)` with `attr` as the kernel's union, zero-padded.
fn bpf(cmd: libc::c_long, attr: &mut [u8; 128]) -> std::io::Result<OwnedFd> {
    // SAFETY: the attribute buffer is larger than every field the kernel
    // reads for these commands.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len() as u32) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just made this fd for us alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn put<const N: usize>(attr: &mut [u8; 128], at: usize, bytes: [u8; N]) {
    attr[at..at + N].copy_from_slice(&bytes);
}

/// Attaches `XDP_PASS` to `iface` in `ns`; detached when the returned link
/// is dropped (or the namespace goes).
pub fn attach(ns: &Netns, iface: &str) -> Result<OwnedFd> {
    let iface = CString::new(iface)?;
    ns.run(move || -> Result<OwnedFd> {
        // r0 = XDP_PASS; exit.
        let insns: [u64; 2] = [0xb7 | (u64::from(XDP_PASS as u32) << 32), 0x95];
        let license = c"GPL";
        let mut attr = [0u8; 128];
        put(&mut attr, 0, BPF_PROG_TYPE_XDP.to_ne_bytes());
        put(&mut attr, 4, 2u32.to_ne_bytes());
        put(&mut attr, 8, (insns.as_ptr() as u64).to_ne_bytes());
        put(&mut attr, 16, (license.as_ptr() as u64).to_ne_bytes());
        // expected_attach_type, after log_level, log_size, log_buf,
        // kern_version, prog_flags, prog_name[16], prog_ifindex.
        put(&mut attr, 68, BPF_XDP.to_ne_bytes());
        let prog = bpf(BPF_PROG_LOAD, &mut attr).context("loading XDP_PASS")?;
        // SAFETY: a NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(iface.as_ptr()) };
        if ifindex == 0 {
            bail!("no interface {iface:?}");
        }
        let mut attr = [0u8; 128];
        use std::os::fd::AsRawFd;
        put(&mut attr, 0, (prog.as_raw_fd() as u32).to_ne_bytes());
        put(&mut attr, 4, ifindex.to_ne_bytes());
        put(&mut attr, 8, BPF_XDP.to_ne_bytes());
        bpf(BPF_LINK_CREATE, &mut attr).context("attaching XDP_PASS")
    })?
}
