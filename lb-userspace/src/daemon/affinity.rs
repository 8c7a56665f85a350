//! Which CPU each worker runs on.
//!
//! A worker serves its own connections from accept to close (`workers.rs`),
//! so nothing is gained when the scheduler moves it. Something is lost on a
//! busy host: when both workers land on one core while the other core runs
//! the clients' or the targets' threads, every connection of both waits
//! twice as long for its turn, which is the tail latency. By default worker
//! i therefore stays on the i-th CPU the process may use, as nginx's
//! `worker_cpu_affinity auto` or HAProxy's `cpu-map` would place them;
//! whoever starts xalb under `taskset` or in a cpuset chooses those CPUs.
//! Under a CPU quota smaller than that set there are fewer workers than
//! CPUs, and the workers are left unpinned.

use std::io;

/// Where the workers may run (`xalb run --worker-affinity`).
/// The default is the command line's (`pinned`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum WorkerAffinity {
    /// Worker i stays on the i-th CPU the process may use.
    Pinned,
    /// The scheduler places the workers, like any thread.
    Any,
}

/// The CPUs the calling thread may run on, in ascending order.
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: an all-zero cpu_set_t is a valid, empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is writable and of the size passed; pid 0 is this thread.
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((0..libc::CPU_SETSIZE as usize)
        // SAFETY: every index is below CPU_SETSIZE.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect())
}

/// Keeps the calling thread on `cpu`.
pub fn pin_to(cpu: usize) -> io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("CPU {cpu} is beyond what a CPU set can name"),
        ));
    }
    // SAFETY: an all-zero cpu_set_t is a valid, empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: cpu is below CPU_SETSIZE (checked above).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid set of the size passed; pid 0 is this thread.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The CPU for each of `workers` workers under `affinity`: one allowed CPU
/// each when there is a worker per allowed CPU. Otherwise (fewer workers,
/// as under a CPU quota, or the allowed set unknown) none: pinning would
/// keep the workers off CPUs they could use.
pub fn plan(affinity: WorkerAffinity, workers: usize, allowed: &[usize]) -> Vec<Option<usize>> {
    match affinity {
        WorkerAffinity::Pinned if allowed.len() == workers => {
            allowed.iter().copied().map(Some).collect()
        }
        _ => vec![None; workers],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_workers_take_one_allowed_cpu_each() {
        assert_eq!(plan(WorkerAffinity::Pinned, 2, &[2, 5]), [Some(2), Some(5)]);
        assert_eq!(plan(WorkerAffinity::Any, 2, &[0, 1]), [None, None]);
        // Fewer workers than CPUs (a CPU quota): pinning would idle a CPU.
        assert_eq!(plan(WorkerAffinity::Pinned, 1, &[0, 1]), [None]);
        assert_eq!(plan(WorkerAffinity::Pinned, 2, &[]), [None, None]);
    }

    #[test]
    fn a_cpu_beyond_any_set_is_refused() {
        let e = std::thread::spawn(|| pin_to(libc::CPU_SETSIZE as usize))
            .join()
            .unwrap()
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
