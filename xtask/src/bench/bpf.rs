//! The few bpf(2) commands the kernel scenario needs, made directly: run-time
//! statistics (held on by an fd, so they switch off by themselves when xtask
//! ends however it ends), a program fd by id, its counters from fdinfo, and
//! BPF_PROG_TEST_RUN.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{bail, Context, Result};

const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_ENABLE_STATS: libc::c_long = 32;
const BPF_STATS_RUN_TIME: u32 = 0;

/// Large enough for every union member used here; the kernel accepts a
/// larger attr when the tail is zero.
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Self {
        Self([0; 128])
    }
    fn u32(&mut self, off: usize, v: u32) {
        self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
    }
    fn u64(&mut self, off: usize, v: u64) {
        self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
    }
    fn get_u32(&self, off: usize) -> u32 {
        u32::from_ne_bytes(self.0[off..off + 4].try_into().unwrap())
    }
}

fn bpf(cmd: libc::c_long, attr: &mut Attr, size: usize) -> Result<i64> {
    // SAFETY: attr is a valid buffer of at least `size` bytes for the call.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.0.as_mut_ptr(), size as u32) };
    if rc < 0 {
        bail!("bpf({cmd}): {}", std::io::Error::last_os_error());
    }
    Ok(rc)
}

/// Turns on run_time_ns / run_cnt accounting for every BPF program (the
/// same switch as kernel.bpf_stats_enabled) for as long as the fd lives.
pub fn enable_stats() -> Result<OwnedFd> {
    let mut a = Attr::new();
    a.u32(0, BPF_STATS_RUN_TIME);
    let fd = bpf(BPF_ENABLE_STATS, &mut a, 4).context("BPF_ENABLE_STATS")?;
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

pub fn prog_fd(id: u32) -> Result<OwnedFd> {
    let mut a = Attr::new();
    a.u32(0, id);
    let fd = bpf(BPF_PROG_GET_FD_BY_ID, &mut a, 12)
        .with_context(|| format!("BPF_PROG_GET_FD_BY_ID {id}"))?;
    // SAFETY: as above.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// (run_time_ns, run_cnt) of a program, from its fd's fdinfo.
pub fn prog_stats(fd: &OwnedFd) -> Result<(u64, u64)> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))?;
    let field = |k: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    match (field("run_time_ns:"), field("run_cnt:")) {
        (Some(t), Some(c)) => Ok((t, c)),
        _ => bail!("fdinfo has no run_time_ns/run_cnt (kernel without BPF stats?)"),
    }
}

/// Runs an XDP program `repeat` times on `packet` as if received on
/// `ifindex` (which must exist in the calling thread's namespace); returns
/// (verdict, average ns per run).
pub fn test_run_xdp(fd: &OwnedFd, packet: &[u8], ifindex: u32, repeat: u32) -> Result<(u32, u32)> {
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex
    let mut ctx = [0u32; 6];
    ctx[1] = packet.len() as u32;
    ctx[3] = ifindex;
    let mut a = Attr::new();
    a.u32(0, fd.as_raw_fd() as u32); // prog_fd
    a.u32(8, packet.len() as u32); // data_size_in
    a.u64(16, packet.as_ptr() as u64); // data_in
    a.u32(32, repeat); // repeat
    a.u32(40, std::mem::size_of_val(&ctx) as u32); // ctx_size_in
    a.u64(48, ctx.as_ptr() as u64); // ctx_in
    bpf(BPF_PROG_TEST_RUN, &mut a, 80).context("BPF_PROG_TEST_RUN")?;
    Ok((a.get_u32(4), a.get_u32(36)))
}

pub fn xdp_verdict(v: u32) -> &'static str {
    match v {
        0 => "XDP_ABORTED",
        1 => "XDP_DROP",
        2 => "XDP_PASS",
        3 => "XDP_TX",
        4 => "XDP_REDIRECT",
        _ => "?",
    }
}
