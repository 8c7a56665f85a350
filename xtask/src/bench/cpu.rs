//! The whole host's CPU time by kind, from the first line of `/proc/stat`.
//!
//! Where a balancer works in the kernel (XDP, netfilter) its cost shows in no
//! process's CPU time but in softirq time, and the client's and backends'
//! work is on the same two cores: only the host's total compares such
//! systems with balancers that are processes.

/// CPU seconds summed over every CPU since boot, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct HostCpu {
    pub user: f64,
    pub nice: f64,
    pub system: f64,
    pub idle: f64,
    pub iowait: f64,
    pub irq: f64,
    pub softirq: f64,
    /// Time the hypervisor ran something else while this host wanted the CPU.
    pub steal: f64,
}

impl HostCpu {
    pub fn now() -> Self {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        Self::parse(stat.lines().next().unwrap_or(""), hz)
    }

    /// The aggregate `cpu` line, in clock ticks of `hz` per second.
    fn parse(line: &str, hz: f64) -> Self {
        let f: Vec<f64> = line
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse::<f64>().unwrap_or(0.0) / hz)
            .collect();
        let at = |i: usize| f.get(i).copied().unwrap_or(0.0);
        // user nice system idle iowait irq softirq steal guest guest_nice;
        // guest time is already counted in user (and guest_nice in nice).
        Self {
            user: at(0),
            nice: at(1),
            system: at(2),
            idle: at(3),
            iowait: at(4),
            irq: at(5),
            softirq: at(6),
            steal: at(7),
        }
    }

    /// Work done on this host: user + nice + system + irq + softirq. Steal
    /// is left out: it is time another tenant of the hypervisor ran, which
    /// no system under test spent.
    pub fn busy_s(&self) -> f64 {
        self.user + self.nice + self.system + self.irq + self.softirq
    }

    /// What changed from `earlier` to `self`.
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            user: self.user - earlier.user,
            nice: self.nice - earlier.nice,
            system: self.system - earlier.system,
            idle: self.idle - earlier.idle,
            iowait: self.iowait - earlier.iowait,
            irq: self.irq - earlier.irq,
            softirq: self.softirq - earlier.softirq,
            steal: self.steal - earlier.steal,
        }
    }
}

/// CPU seconds of the host's processes that are not the bench's: user and
/// system, their own and their reaped children's, summed over every process
/// that is neither a kernel thread, nor this process, nor in a process group
/// `ours` names. The difference of two readings is what other work (another
/// build, another bench) spent meanwhile, which the host's busy time
/// includes: a process that exits in between moves its time to the parent
/// that reaps it, so the sum keeps it.
pub fn others_cpu_s(ours: impl Fn(i32) -> bool) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    let mut ticks = 0.0;
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        ticks += foreign_ticks(&stat, &ours).unwrap_or(0.0);
    }
    ticks / hz
}

/// PF_KTHREAD in /proc/PID/stat's flags.
const PF_KTHREAD: u64 = 0x0020_0000;

/// utime + stime + cutime + cstime of a /proc/PID/stat line, unless the
/// process is a kernel thread or in one of `ours`' groups.
fn foreign_ticks(stat: &str, ours: &impl Fn(i32) -> bool) -> Option<f64> {
    // Fields from the state on (field 3); the command name may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let pgid: i32 = f.get(2)?.parse().ok()?;
    let flags: u64 = f.get(6)?.parse().ok()?;
    if flags & PF_KTHREAD != 0 || ours(pgid) {
        return Some(0.0);
    }
    // utime, stime, cutime, cstime are fields 14-17.
    Some((11..15).filter_map(|i| f.get(i)?.parse::<f64>().ok()).sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_is_work_without_idle_iowait_or_steal() {
        let a = HostCpu::parse("cpu  100 10 50 1000 5 2 30 7 0 0", 100.0);
        assert_eq!(a.user, 1.0);
        assert_eq!(a.steal, 0.07);
        assert!((a.busy_s() - 1.92).abs() < 1e-9);
        let b = HostCpu::parse("cpu  300 10 150 1100 5 2 80 9 0 0", 100.0);
        let d = b.since(&a);
        assert!((d.busy_s() - 3.5).abs() < 1e-9);
        assert!((d.softirq - 0.5).abs() < 1e-9);
        // A short line (old kernels) reads as zeros past its end.
        assert_eq!(HostCpu::parse("cpu 1 2 3 4", 1.0).steal, 0.0);
        assert!(HostCpu::now().busy_s() > 0.0);
    }

    #[test]
    fn others_are_processes_neither_kernel_threads_nor_ours() {
        // pid 42 "(a b)", state S, ppid 1, pgrp 42, ..., flags 0; utime 10,
        // stime 5, cutime 3, cstime 2.
        let user = "42 (a b) S 1 42 42 0 -1 4194304 0 0 0 0 10 5 3 2 20 0 1 0";
        let kthread = "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 7 8 0 0 20 0 1 0";
        let none = |_| false;
        assert_eq!(foreign_ticks(user, &none), Some(20.0));
        assert_eq!(foreign_ticks(kthread, &none), Some(0.0));
        assert_eq!(foreign_ticks(user, &|g| g == 42), Some(0.0));
        assert!(others_cpu_s(none) >= 0.0);
    }
}
