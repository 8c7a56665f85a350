//! The scheduler slice a worker asks for.
//!
//! Linux's fair scheduler (EEVDF, 6.6+) gives each runnable task a slice
//! before the next may take the core, 0.75 ms by default and longer on
//! machines with more cores. A worker is runnable nearly all the time under
//! load, so when it has used its share it waits a full slice of the client's
//! or the targets' threads, and so does every connection it serves: the tail
//! latency. A worker asks for a short slice instead (Linux 6.12+ takes
//! `sched_runtime` of a normal task as its slice). That changes when it runs,
//! not how much: its share of the core stays that of any other task. Older
//! kernels ignore the request.

use std::io;
use std::time::Duration;

/// The shortest slice the kernel accepts.
pub const WORKER_SLICE: Duration = Duration::from_micros(100);

/// `struct sched_attr` (SCHED_ATTR_SIZE_VER1), which libc does not define.
#[repr(C)]
#[derive(Debug, Default)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
    util_min: u32,
    util_max: u32,
}

fn get() -> io::Result<SchedAttr> {
    let mut attr = SchedAttr::default();
    let size = std::mem::size_of::<SchedAttr>() as u32;
    // SAFETY: attr is a writable sched_attr of `size` bytes; pid 0 is this thread.
    let r = unsafe { libc::syscall(libc::SYS_sched_getattr, 0, &mut attr, size, 0) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(attr)
}

/// Asks for `slice` on the calling thread, keeping its policy and nice value.
/// Only normal tasks: a real-time policy an operator chose is left alone.
pub fn request(slice: Duration) -> io::Result<()> {
    let mut attr = get()?;
    if attr.policy != libc::SCHED_OTHER as u32 && attr.policy != libc::SCHED_BATCH as u32 {
        return Ok(());
    }
    attr.size = std::mem::size_of::<SchedAttr>() as u32;
    attr.flags = 0;
    attr.runtime = slice.as_nanos() as u64;
    // SAFETY: attr is a valid sched_attr; pid 0 is this thread.
    let r = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr, 0) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The calling thread's requested slice; zero when it asked for none.
#[cfg(test)]
pub fn current() -> io::Result<Duration> {
    Ok(Duration::from_nanos(get()?.runtime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_gets_the_slice_it_asks_for_and_keeps_its_nice_value() {
        std::thread::spawn(|| {
            // SAFETY: setpriority on this thread (who 0) has no preconditions.
            assert_eq!(unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 3) }, 0);
            request(WORKER_SLICE).unwrap();
            if current().unwrap().is_zero() {
                eprintln!("this kernel (before 6.12) ignores slice requests");
                return;
            }
            assert_eq!(current().unwrap(), WORKER_SLICE);
            assert_eq!(get().unwrap().nice, 3, "nice value kept");
        })
        .join()
        .unwrap();
    }
}
