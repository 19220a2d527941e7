//! Resource limits the daemon lives inside: CPU affinity, the cgroup CPU
//! quota and memory limit (cgroup v1 and v2). Today it decides how many
//! inference threads to run and reports the limits; admission control and
//! load shedding under memory pressure belong here too (a later issue).
//! Reads /proc and /sys only; never writes them.

use std::path::{Path, PathBuf};

/// What the daemon may use, as found at start-up.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// CPUs in this process's affinity mask.
    pub affinity_cpus: u32,
    /// CPU quota in CPUs (quota / period), if a cgroup sets one.
    pub cpu_quota: Option<f64>,
    /// Memory limit in bytes, if a cgroup sets one.
    pub memory_max: Option<u64>,
    /// Which cgroup hierarchy was read: "v2", "v1" or "none".
    pub cgroup: &'static str,
}

impl Limits {
    /// Inference threads: min(affinity, ceil(quota)), at least 1.
    pub fn inference_threads(&self) -> u32 {
        let mut n = self.affinity_cpus.max(1);
        if let Some(q) = self.cpu_quota {
            // A fractional quota still needs one thread; round up otherwise
            // a 1.5-CPU quota would leave half a core unused.
            let q = q.ceil().max(1.0) as u32;
            n = n.min(q);
        }
        n
    }
}

/// Tasks runnable on the whole machine right now (`procs_running` in
/// /proc/stat), the caller included.
pub fn runnable_tasks() -> Option<u32> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines().find_map(|l| l.strip_prefix("procs_running ")).and_then(|v| v.trim().parse().ok())
}

/// Decides how many inference threads to run when other processes compete
/// for the cores. A decode step waits at barriers for its slowest thread, so
/// a thread that loses its core stalls all the others: measured here, with one
/// of two cores busy, 1 thread ran at 85 tok/s and 2 threads at 38. Fed with
/// the number of other runnable tasks while the inference thread is idle, it
/// advises `max - others` (at least 1), and changes its advice only after it
/// held for `settle` observations in a row.
#[derive(Debug, Clone)]
pub struct ThreadAdvisor {
    max: u32,
    ema: f64,
    advice: u32,
    streak: u32,
    settle: u32,
}

impl ThreadAdvisor {
    pub fn new(max: u32, settle: u32) -> Self {
        ThreadAdvisor { max: max.max(1), ema: 0.0, advice: max.max(1), streak: 0, settle: settle.max(1) }
    }

    /// Records how many other tasks were runnable; returns the new advice
    /// when it changes.
    pub fn observe(&mut self, others: u32) -> Option<u32> {
        self.ema = 0.7 * self.ema + 0.3 * f64::from(others);
        let want = (f64::from(self.max) - self.ema).round().clamp(1.0, f64::from(self.max)) as u32;
        if want == self.advice {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        if self.streak < self.settle {
            return None;
        }
        self.streak = 0;
        self.advice = want;
        Some(want)
    }

    pub fn advice(&self) -> u32 {
        self.advice
    }
}

/// Reads the limits of the calling process from the real system.
pub fn detect() -> Limits {
    let affinity_cpus = affinity_cpus();
    let proc_cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    detect_in(Path::new("/sys/fs/cgroup"), &proc_cgroup, affinity_cpus)
}

fn affinity_cpus() -> u32 {
    match nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)) {
        Ok(set) => (0..nix::sched::CpuSet::count()).filter(|&i| set.is_set(i).unwrap_or(false)).count() as u32,
        Err(_) => std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1),
    }
}

/// The limits found under `root` (normally /sys/fs/cgroup) for a process
/// whose /proc/self/cgroup reads `proc_cgroup`. Public for tests that lay out
/// a fake hierarchy.
pub fn detect_in(root: &Path, proc_cgroup: &str, affinity_cpus: u32) -> Limits {
    // cgroup v2: a single "0::/path" line and cgroup.controllers at the root.
    if root.join("cgroup.controllers").exists() {
        if let Some(rel) = proc_cgroup.lines().find_map(|l| l.strip_prefix("0::")) {
            let dirs = ancestors(root, rel);
            let cpu_quota = min_f64(dirs.iter().filter_map(|d| read_cpu_max(&d.join("cpu.max"))));
            let memory_max = min_u64(dirs.iter().filter_map(|d| read_u64_or_max(&d.join("memory.max"))));
            return Limits { affinity_cpus, cpu_quota, memory_max, cgroup: "v2" };
        }
    }
    // cgroup v1: one line per hierarchy, "N:controllers:/path".
    let v1_path = |controller: &str| {
        proc_cgroup.lines().find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
            ctrls.split(',').any(|c| c == controller).then(|| (ctrls.to_owned(), path.to_owned()))
        })
    };
    let mut found = false;
    let mut cpu_quota = None;
    if let Some((ctrls, rel)) = v1_path("cpu") {
        found = true;
        let base = root.join(&ctrls);
        let base = if base.exists() { base } else { root.join("cpu") };
        cpu_quota = min_f64(ancestors(&base, &rel).iter().filter_map(|d| {
            let quota: i64 = read_trim(&d.join("cpu.cfs_quota_us"))?.parse().ok()?;
            let period: i64 = read_trim(&d.join("cpu.cfs_period_us"))?.parse().ok()?;
            (quota > 0 && period > 0).then(|| quota as f64 / period as f64)
        }));
    }
    let mut memory_max = None;
    if let Some((ctrls, rel)) = v1_path("memory") {
        found = true;
        let base = root.join(ctrls);
        // v1 reports "no limit" as a huge page-aligned number.
        memory_max = min_u64(
            ancestors(&base, &rel).iter().filter_map(|d| read_u64_or_max(&d.join("memory.limit_in_bytes"))).filter(|&v| v < (1u64 << 60)),
        );
    }
    Limits { affinity_cpus, cpu_quota, memory_max, cgroup: if found { "v1" } else { "none" } }
}

/// `base/rel` and each of its parents up to `base`, deepest first.
fn ancestors(base: &Path, rel: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut p = PathBuf::from(rel.trim_start_matches('/'));
    loop {
        out.push(base.join(&p));
        if !p.pop() {
            break;
        }
    }
    out
}

fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok().map(|s| s.trim().to_owned())
}

fn read_u64_or_max(p: &Path) -> Option<u64> {
    let s = read_trim(p)?;
    if s == "max" {
        return None;
    }
    s.parse().ok()
}

/// cgroup v2 `cpu.max`: "QUOTA PERIOD" or "max PERIOD".
fn read_cpu_max(p: &Path) -> Option<f64> {
    let s = read_trim(p)?;
    let mut it = s.split_whitespace();
    let quota = it.next()?;
    let period: f64 = it.next().and_then(|x| x.parse().ok()).unwrap_or(100_000.0);
    if quota == "max" || period <= 0.0 {
        return None;
    }
    Some(quota.parse::<f64>().ok()? / period)
}

fn min_f64(it: impl Iterator<Item = f64>) -> Option<f64> {
    it.fold(None, |acc, v| Some(acc.map_or(v, |a: f64| a.min(v))))
}

fn min_u64(it: impl Iterator<Item = u64>) -> Option<u64> {
    it.min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn write(p: &Path, s: &str) {
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(p, s).expect("write");
    }

    #[test]
    fn v2_quota_and_memory_take_the_tightest_ancestor() {
        let d = tempfile::tempdir().expect("tmp");
        let r = d.path();
        write(&r.join("cgroup.controllers"), "cpu memory");
        write(&r.join("system.slice/cpu.max"), "max 100000");
        write(&r.join("system.slice/memory.max"), "1073741824");
        write(&r.join("system.slice/edgeai.service/cpu.max"), "150000 100000");
        write(&r.join("system.slice/edgeai.service/memory.max"), "max");
        let l = detect_in(r, "0::/system.slice/edgeai.service\n", 8);
        assert_eq!(l.cgroup, "v2");
        assert_eq!(l.cpu_quota, Some(1.5));
        assert_eq!(l.memory_max, Some(1 << 30));
        assert_eq!(l.inference_threads(), 2);
    }

    #[test]
    fn v1_quota_and_memory_are_read_and_unlimited_is_ignored() {
        let d = tempfile::tempdir().expect("tmp");
        let r = d.path();
        write(&r.join("cpu,cpuacct/edge/cpu.cfs_quota_us"), "100000");
        write(&r.join("cpu,cpuacct/edge/cpu.cfs_period_us"), "100000");
        write(&r.join("cpu,cpuacct/cpu.cfs_quota_us"), "-1");
        write(&r.join("cpu,cpuacct/cpu.cfs_period_us"), "100000");
        write(&r.join("memory/edge/memory.limit_in_bytes"), "536870912");
        write(&r.join("memory/memory.limit_in_bytes"), "9223372036854771712");
        let pc = "12:memory:/edge\n4:cpu,cpuacct:/edge\n1:name=systemd:/edge\n";
        let l = detect_in(r, pc, 2);
        assert_eq!(l.cgroup, "v1");
        assert_eq!(l.cpu_quota, Some(1.0));
        assert_eq!(l.memory_max, Some(512 << 20));
        assert_eq!(l.inference_threads(), 1);
    }

    #[test]
    fn no_cgroup_means_affinity_decides() {
        let d = tempfile::tempdir().expect("tmp");
        let l = detect_in(d.path(), "", 2);
        assert_eq!((l.cgroup, l.cpu_quota, l.memory_max, l.inference_threads()), ("none", None, None, 2));
    }

    #[test]
    fn advisor_backs_off_under_sustained_contention_and_recovers() {
        let mut a = ThreadAdvisor::new(2, 3);
        // One blip is not enough.
        assert_eq!(a.observe(2), None);
        assert_eq!(a.observe(0), None);
        assert_eq!(a.advice(), 2);
        // Sustained load: after the ema crosses and the streak settles, 1 thread.
        let changed: Vec<_> = (0..10).filter_map(|_| a.observe(1)).collect();
        assert_eq!(changed, vec![1]);
        assert_eq!(a.advice(), 1);
        // Load gone: back to 2.
        let changed: Vec<_> = (0..10).filter_map(|_| a.observe(0)).collect();
        assert_eq!(changed, vec![2]);
        // Never below 1 however heavy the load.
        let mut b = ThreadAdvisor::new(2, 1);
        (0..10).for_each(|_| {
            b.observe(50);
        });
        assert_eq!(b.advice(), 1);
    }

    #[test]
    fn the_real_system_is_readable() {
        assert!(runnable_tasks().is_some_and(|n| n >= 1));
        let l = detect();
        assert!(l.affinity_cpus >= 1);
        assert!(l.inference_threads() >= 1 && l.inference_threads() <= l.affinity_cpus);
    }
}
