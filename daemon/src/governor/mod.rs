//! Resource limits the daemon lives inside: CPU affinity, the cgroup CPU
//! quota and memory limits (cgroup v1 and v2). It decides how many
//! inference threads to run (and fewer while other processes take the
//! affinity mask's CPUs or CPU pressure shows tasks waiting for one),
//! reports the limits and the memory in use (RSS,
//! cgroup usage, working set), and (`pressure`) watches memory pressure:
//! it shrinks what registered a [`shrink::Shrink`] and then sheds new
//! generations until the pressure is gone. Fair admission between apps is
//! the model's queue (`model::queue`), bounded by `[admission]`.
//! Reads /proc and /sys; writes only the pressure triggers it registers
//! (a PSI trigger, a v1 `cgroup.event_control` line).

pub mod pressure;
pub mod shrink;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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
    /// Memory the cgroup uses now in bytes (v2 `memory.current`, v1
    /// `memory.usage_in_bytes` of the deepest cgroup that has the file).
    pub memory_current: Option<u64>,
    /// v2 `memory.high` (the tightest ancestor's): above it the kernel
    /// throttles and reclaims hard. v1 has no equivalent.
    pub memory_high: Option<u64>,
    /// Inactive file cache of that cgroup (`memory.stat`: v2
    /// `inactive_file`, v1 `total_inactive_file`): usage the kernel takes
    /// back first, so not pressure.
    pub inactive_file: Option<u64>,
    /// Times the OOM killer acted in that cgroup (v2 `memory.events`
    /// `oom_kill`, v1 `memory.oom_control` `oom_kill`).
    pub oom_kills: Option<u64>,
    /// That cgroup's directory, where the pressure triggers are registered.
    pub memory_dir: Option<PathBuf>,
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

    /// The cgroup's usage less its inactive file cache: what the watermarks
    /// compare with the limit (a full page cache is not pressure).
    pub fn working_set(&self) -> Option<u64> {
        Some(self.memory_current?.saturating_sub(self.inactive_file.unwrap_or(0)))
    }

    /// The limit the watermarks are taken from: the lower of the hard limit
    /// and `memory.high`.
    pub fn pressure_limit(&self) -> Option<u64> {
        match (self.memory_max, self.memory_high) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// CPU time counters at one moment, in clock ticks, for the CPUs of the
/// affinity mask only, and this process's own CPU time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuSample {
    /// Non-idle time of the mask's CPUs (user, nice, system, irq, softirq, steal).
    busy: u64,
    /// All time of the mask's CPUs (busy plus idle and iowait).
    total: u64,
    /// How many of the mask's CPUs /proc/stat listed.
    cpus: u32,
    /// This process's user + system time (all its threads).
    own: u64,
}

impl CpuSample {
    /// Builds a sample from the text of /proc/stat and /proc/self/stat for
    /// the CPUs in `mask`; `None` if either cannot be parsed or no CPU of the
    /// mask is listed.
    pub fn parse(proc_stat: &str, self_stat: &str, mask: &[usize]) -> Option<CpuSample> {
        let (mut busy, mut total, mut cpus) = (0u64, 0u64, 0u32);
        for line in proc_stat.lines() {
            let mut fields = line.split_whitespace();
            let Some(cpu) = fields.next().and_then(|n| n.strip_prefix("cpu")).and_then(|n| n.parse::<usize>().ok()) else {
                continue;
            };
            if !mask.contains(&cpu) {
                continue;
            }
            // user nice system idle iowait irq softirq steal (guest time is
            // already counted in user).
            let t: Vec<u64> = fields.take(8).map(str::parse).collect::<Result<_, _>>().ok()?;
            let [user, nice, system, idle, iowait, irq, softirq, steal] = t[..] else { return None };
            let b = user + nice + system + irq + softirq + steal;
            busy += b;
            total += b + idle + iowait;
            cpus += 1;
        }
        // utime and stime are fields 14 and 15; the command name (field 2)
        // may hold spaces and parentheses, so count from the last ')'.
        let after_comm = &self_stat[self_stat.rfind(')')? + 1..];
        let mut rest = after_comm.split_whitespace().skip(11);
        let utime: u64 = rest.next()?.parse().ok()?;
        let stime: u64 = rest.next()?.parse().ok()?;
        (cpus > 0).then_some(CpuSample { busy, total, cpus, own: utime + stime })
    }

    /// How many of the mask's CPUs other processes kept busy between
    /// `earlier` and `self` (0.0 ..= cpus): the mask's busy time minus ours,
    /// over the elapsed time per CPU. `None` if no time passed.
    pub fn others_since(&self, earlier: &CpuSample) -> Option<f64> {
        let busy = self.busy.saturating_sub(earlier.busy);
        let own = self.own.saturating_sub(earlier.own);
        self.cpus_of(busy.saturating_sub(own), earlier)
    }

    /// How many CPUs this process kept busy between `earlier` and `self`
    /// (0.0 ..= cpus). `None` if no time passed.
    pub fn own_since(&self, earlier: &CpuSample) -> Option<f64> {
        self.cpus_of(self.own.saturating_sub(earlier.own), earlier)
    }

    /// `ticks` of CPU time since `earlier` as CPUs kept busy.
    fn cpus_of(&self, ticks: u64, earlier: &CpuSample) -> Option<f64> {
        let total = self.total.checked_sub(earlier.total)?;
        if total == 0 || self.cpus != earlier.cpus {
            return None;
        }
        let per_cpu = total as f64 / f64::from(self.cpus);
        Some((ticks as f64 / per_cpu).clamp(0.0, f64::from(self.cpus)))
    }
}

/// A CPU pressure (PSI) stall share at or above this, over the advisor's
/// interval, counts as one core taken (see [`ThreadAdvisor`]). A decode step
/// waits at barriers for its slowest thread, so a thread that waits for a
/// core a tenth of the time already costs the whole step about a tenth, and
/// losing a core costs far more than running one thread fewer (85 against
/// 38 tok/s here). Below it are the few milliseconds of wake-up latency an
/// otherwise quiet machine shows.
pub const CPU_PRESSURE_THRESHOLD: f64 = 0.10;

/// The machine's CPU pressure is not counted over an interval in which the
/// daemon itself kept this many CPUs busy (it was generating; see
/// [`CpuReading::advisor_stall`]). An idle daemon uses a few hundredths of a
/// CPU; one generating keeps about its thread count busy.
pub const OWN_BUSY_LIMIT: f64 = 0.5;

/// Which line of a PSI file is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PsiLine {
    /// Some runnable task waited for a CPU.
    Some,
    /// Every runnable task of the cgroup waited.
    Full,
}

/// The `total=` stall counter (microseconds) of `line` in the text of a PSI
/// file (`/proc/pressure/cpu`, a cgroup's `cpu.pressure`):
/// `some avg10=0.00 avg60=0.00 avg300=0.00 total=12345`. `None` when the
/// line is missing or malformed.
pub fn psi_total(text: &str, line: PsiLine) -> Option<u64> {
    let word = match line {
        PsiLine::Some => "some",
        PsiLine::Full => "full",
    };
    let fields = text.lines().find_map(|l| l.strip_prefix(word)?.strip_prefix(' '))?;
    let mut total = None;
    for field in fields.split_whitespace() {
        let (key, value) = field.split_once('=')?;
        match key {
            "total" => total = Some(value.parse::<u64>().ok()?),
            _ => {
                value.parse::<f64>().ok().filter(|v| v.is_finite())?;
            }
        }
    }
    total
}

/// The share of `elapsed` that a PSI `total` counter (microseconds) grew
/// from `earlier` to `now`, in 0.0 ..= 1.0. `None` if no time passed or
/// the counter went back (a reset).
pub fn stall_share(earlier: u64, now: u64, elapsed: Duration) -> Option<f64> {
    let stalled = now.checked_sub(earlier)?;
    let elapsed = elapsed.as_micros();
    (elapsed > 0).then(|| (stalled as f64 / elapsed as f64).clamp(0.0, 1.0))
}

/// The CPU pressure file the daemon follows and which of its lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuPsi {
    pub path: PathBuf,
    pub line: PsiLine,
    /// `cgroup` (the daemon's own cgroup) or `machine`.
    pub scope: &'static str,
}

/// The CPU pressure to follow for a process whose /proc/self/cgroup reads
/// `proc_cgroup`, with the cgroup hierarchy at `root` (normally
/// /sys/fs/cgroup) and the machine's file at `machine` (/proc/pressure/cpu).
/// On cgroup v2, the `full` line of the daemon's own cgroup's
/// `cpu.pressure` (its deepest ancestor below the root that has one): the
/// time every runnable thread of the daemon waited, which only other
/// cgroups or the cgroup's CPU quota cause, never the daemon's own threads
/// crowding each other. Else (v1, or the daemon in the root cgroup, where
/// CPU `full` is always zero) the machine's `some` line: the time some task
/// waited, the daemon's own included.
pub fn cpu_psi_in(root: &Path, proc_cgroup: &str, machine: &Path) -> Option<CpuPsi> {
    if root.join("cgroup.controllers").exists() {
        if let Some(rel) = proc_cgroup.lines().find_map(|l| l.strip_prefix("0::")) {
            let mut dirs = ancestors(root, rel);
            // The last one is the root itself.
            dirs.pop();
            if let Some(dir) = dirs.into_iter().find(|d| d.join("cpu.pressure").exists()) {
                return Some(CpuPsi { path: dir.join("cpu.pressure"), line: PsiLine::Full, scope: "cgroup" });
            }
        }
    }
    machine.exists().then(|| CpuPsi { path: machine.to_path_buf(), line: PsiLine::Some, scope: "machine" })
}

/// A CPU pressure figure over one interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuStall {
    /// Share of the interval tasks waited for a CPU (0.0 ..= 1.0).
    pub share: f64,
    /// Where it was read: `cgroup` or `machine` (see [`cpu_psi_in`]).
    pub scope: &'static str,
}

/// What [`CpuLoad::read`] measured since its previous call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuReading {
    /// CPUs of the mask kept busy by other processes.
    pub others: Option<f64>,
    /// CPUs the daemon itself kept busy.
    pub own: Option<f64>,
    /// CPU pressure; `None` without a readable PSI file.
    pub stall: Option<CpuStall>,
}

impl CpuReading {
    /// The stall share the [`ThreadAdvisor`] counts. The machine's `some`
    /// line also counts the daemon's own threads waiting for each other (a
    /// tokio worker woken for each streamed token while the inference
    /// threads fill the cores), which is no reason to run fewer threads: a
    /// machine figure over an interval in which the daemon kept
    /// [`OWN_BUSY_LIMIT`] CPUs or more busy (or an unknown number) is not
    /// counted, and busy time alone decides. The cgroup's `full` line never
    /// counts the daemon's threads crowding each other, so it always counts.
    pub fn advisor_stall(&self) -> Option<f64> {
        let stall = self.stall?;
        let own_busy = self.own.is_none_or(|own| own >= OWN_BUSY_LIMIT);
        (stall.scope == "cgroup" || !own_busy).then_some(stall.share)
    }
}

/// Measures how busy other processes keep the CPUs this daemon may run on
/// (its affinity mask), excluding the daemon's own threads: busy cores
/// outside the mask do not slow inference and must not cut its threads.
/// Also follows CPU pressure (PSI, see [`cpu_psi_in`]): tasks waiting for a
/// CPU are contention even when the busy time looks fine (a CPU quota
/// throttling the daemon, short bursts of other tasks).
#[derive(Debug)]
pub struct CpuLoad {
    mask: Vec<usize>,
    last: Option<CpuSample>,
    psi: Option<CpuPsi>,
    last_psi: Option<(u64, Instant)>,
}

impl CpuLoad {
    /// For the calling process's affinity mask and cgroup.
    pub fn for_this_process() -> CpuLoad {
        let proc_cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let psi = cpu_psi_in(Path::new("/sys/fs/cgroup"), &proc_cgroup, Path::new("/proc/pressure/cpu"));
        CpuLoad { mask: affinity_mask(), last: None, psi, last_psi: None }
    }

    /// The load since the previous call (nothing the first time, or what
    /// cannot be read).
    pub fn read(&mut self) -> CpuReading {
        let (others, own) = match self.busy() {
            Some((now, earlier)) => (now.others_since(&earlier), now.own_since(&earlier)),
            None => (None, None),
        };
        CpuReading { others, own, stall: self.stall() }
    }

    /// This sample and the previous one.
    fn busy(&mut self) -> Option<(CpuSample, CpuSample)> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let own = std::fs::read_to_string("/proc/self/stat").ok()?;
        let now = CpuSample::parse(&stat, &own, &self.mask)?;
        Some((now, self.last.replace(now)?))
    }

    fn stall(&mut self) -> Option<CpuStall> {
        let psi = self.psi.as_ref()?;
        let Some(total) = std::fs::read_to_string(&psi.path).ok().and_then(|t| psi_total(&t, psi.line)) else {
            // Unreadable (PSI off: EOPNOTSUPP) or malformed: start over.
            self.last_psi = None;
            return None;
        };
        let now = Instant::now();
        let (earlier, at) = self.last_psi.replace((total, now))?;
        Some(CpuStall { share: stall_share(earlier, total, now.duration_since(at))?, scope: psi.scope })
    }
}

/// Decides how many inference threads to run when other processes compete
/// for the cores. A decode step waits at barriers for its slowest thread, so
/// a thread that loses its core stalls all the others: measured here, with one
/// of two cores busy, 1 thread ran at 85 tok/s and 2 threads at 38. Fed with
/// how many CPUs of the mask other processes kept busy (see [`CpuLoad`]) and
/// the CPU pressure stall share, if known, it takes the contention as the
/// busy CPUs, or one CPU if the stall share reached
/// [`CPU_PRESSURE_THRESHOLD`] and the busy CPUs are fewer (a stall says that
/// some task waited, not how many cores it wanted: one is the least that
/// explains it). It advises `max - contention` (smoothed, at least 1), and
/// changes its advice only after it held for `settle` observations in a row.
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

    /// Records how many CPUs other processes kept busy and the CPU pressure
    /// stall share (`None`: unknown, only the busy CPUs count); returns the
    /// new advice when it changes.
    pub fn observe(&mut self, others: f64, stall: Option<f64>) -> Option<u32> {
        let stalled = stall.is_some_and(|s| s >= CPU_PRESSURE_THRESHOLD);
        let contention = if stalled { others.max(1.0) } else { others };
        self.ema = 0.7 * self.ema + 0.3 * contention;
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

/// The CPUs in the calling thread's affinity mask (every CPU if it cannot
/// be read).
fn affinity_mask() -> Vec<usize> {
    match nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)) {
        Ok(set) => (0..nix::sched::CpuSet::count()).filter(|&i| set.is_set(i).unwrap_or(false)).collect(),
        Err(_) => (0..nix::sched::CpuSet::count()).collect(),
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
            let memory_high = min_u64(dirs.iter().filter_map(|d| read_u64_or_max(&d.join("memory.high"))));
            let memory_dir = dirs.iter().find(|d| d.join("memory.current").exists()).cloned();
            let memory_current = memory_dir.as_ref().and_then(|d| read_u64_or_max(&d.join("memory.current")));
            let inactive_file = memory_dir.as_ref().and_then(|d| keyed(&d.join("memory.stat"), "inactive_file"));
            let oom_kills = memory_dir.as_ref().and_then(|d| keyed(&d.join("memory.events"), "oom_kill"));
            return Limits {
                affinity_cpus,
                cpu_quota,
                memory_max,
                cgroup: "v2",
                memory_current,
                memory_high,
                inactive_file,
                oom_kills,
                memory_dir,
            };
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
    let (mut memory_max, mut memory_current, mut inactive_file, mut oom_kills, mut memory_dir) = (None, None, None, None, None);
    if let Some((ctrls, rel)) = v1_path("memory") {
        found = true;
        let dirs = ancestors(&root.join(ctrls), &rel);
        // v1 reports "no limit" as a huge page-aligned number.
        memory_max = min_u64(dirs.iter().filter_map(|d| read_u64_or_max(&d.join("memory.limit_in_bytes"))).filter(|&v| v < (1u64 << 60)));
        memory_dir = dirs.iter().find(|d| d.join("memory.usage_in_bytes").exists()).cloned();
        if let Some(d) = &memory_dir {
            memory_current = read_u64_or_max(&d.join("memory.usage_in_bytes"));
            inactive_file = keyed(&d.join("memory.stat"), "total_inactive_file");
            oom_kills = keyed(&d.join("memory.oom_control"), "oom_kill");
        }
    }
    Limits {
        affinity_cpus,
        cpu_quota,
        memory_max,
        cgroup: if found { "v1" } else { "none" },
        memory_current,
        memory_high: None,
        inactive_file,
        oom_kills,
        memory_dir,
    }
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

/// This process's resident set size in bytes (`VmRSS` of /proc/self/status).
pub fn rss_bytes() -> Option<u64> {
    vm_rss(&std::fs::read_to_string("/proc/self/status").ok()?)
}

fn vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib * 1024)
}

/// The value of `key` in a flat keyed file (`memory.stat`, `memory.events`,
/// `memory.oom_control`: one "key value" per line).
fn keyed(p: &Path, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(p).ok()?;
    text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
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
    fn memory_use_is_read_from_the_deepest_cgroup_that_has_it() {
        let d = tempfile::tempdir().expect("tempdir");
        let r = d.path();
        write(&r.join("cgroup.controllers"), "memory");
        write(&r.join("memory.current"), "999");
        write(&r.join("edge/memory.current"), "4096");
        assert_eq!(detect_in(r, "0::/edge\n", 2).memory_current, Some(4096));
        let d = tempfile::tempdir().expect("tempdir");
        let r = d.path();
        write(&r.join("memory/edge/memory.usage_in_bytes"), "8192");
        assert_eq!(detect_in(r, "4:memory:/edge\n", 2).memory_current, Some(8192));
        assert_eq!(vm_rss("Name:\tedgeaid\nVmRSS:\t  185312 kB\n"), Some(185312 * 1024));
        assert!(rss_bytes().is_some_and(|b| b > 0), "this process has an RSS");
    }

    #[test]
    fn v2_high_working_set_and_oom_kills_are_read() {
        let d = tempfile::tempdir().expect("tmp");
        let r = d.path();
        write(&r.join("cgroup.controllers"), "cpu memory");
        write(&r.join("system.slice/memory.high"), "805306368");
        write(&r.join("system.slice/memory.max"), "1073741824");
        write(&r.join("system.slice/edgeai.service/memory.high"), "max");
        write(&r.join("system.slice/edgeai.service/memory.current"), "600000000");
        write(
            &r.join("system.slice/edgeai.service/memory.stat"),
            "anon 400000000\nfile 200000000\nactive_file 50000000\ninactive_file 150000000\n",
        );
        write(&r.join("system.slice/edgeai.service/memory.events"), "low 0\nhigh 12\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n");
        let l = detect_in(r, "0::/system.slice/edgeai.service\n", 2);
        assert_eq!(l.memory_high, Some(768 << 20));
        assert_eq!(l.pressure_limit(), Some(768 << 20), "memory.high is below memory.max");
        assert_eq!(l.working_set(), Some(450_000_000));
        assert_eq!(l.oom_kills, Some(1), "oom_kill, not oom or oom_group_kill");
        assert_eq!(l.memory_dir.as_deref(), Some(r.join("system.slice/edgeai.service").as_path()));
    }

    #[test]
    fn v1_working_set_and_oom_kills_are_read() {
        let d = tempfile::tempdir().expect("tmp");
        let r = d.path();
        write(&r.join("memory/edge/memory.limit_in_bytes"), "536870912");
        write(&r.join("memory/edge/memory.usage_in_bytes"), "500000000");
        write(
            &r.join("memory/edge/memory.stat"),
            "cache 300000000\nrss 200000000\ninactive_file 1\ntotal_cache 300000000\ntotal_inactive_file 250000000\n",
        );
        write(&r.join("memory/edge/memory.oom_control"), "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n");
        let l = detect_in(r, "4:memory:/edge\n", 2);
        assert_eq!((l.memory_high, l.pressure_limit()), (None, Some(512 << 20)));
        assert_eq!(l.working_set(), Some(250_000_000), "total_inactive_file, the hierarchy's");
        assert_eq!(l.oom_kills, Some(2));
        // No stat file: the usage is the working set.
        fs::remove_file(r.join("memory/edge/memory.stat")).expect("rm");
        assert_eq!(detect_in(r, "4:memory:/edge\n", 2).working_set(), Some(500_000_000));
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
        assert_eq!(a.observe(2.0, None), None);
        assert_eq!(a.observe(0.0, None), None);
        assert_eq!(a.advice(), 2);
        // Sustained load: after the ema crosses and the streak settles, 1 thread.
        let changed: Vec<_> = (0..10).filter_map(|_| a.observe(1.0, None)).collect();
        assert_eq!(changed, vec![1]);
        assert_eq!(a.advice(), 1);
        // Load gone: back to 2.
        let changed: Vec<_> = (0..10).filter_map(|_| a.observe(0.0, None)).collect();
        assert_eq!(changed, vec![2]);
        // Never below 1 however heavy the load.
        let mut b = ThreadAdvisor::new(2, 1);
        (0..10).for_each(|_| {
            b.observe(50.0, None);
        });
        assert_eq!(b.advice(), 1);
    }

    /// The advice after each observation of `steps`.
    fn advice_trace(max: u32, steps: &[(f64, Option<f64>)]) -> Vec<u32> {
        let mut a = ThreadAdvisor::new(max, 3);
        steps
            .iter()
            .map(|&(others, stall)| {
                a.observe(others, stall);
                a.advice()
            })
            .collect()
    }

    #[test]
    fn sustained_cpu_pressure_lowers_the_advice_and_its_absence_lets_it_recover() {
        // Busy time says the mask's CPUs are free (a quota throttling the
        // daemon, other cgroups' bursts), but tasks waited 30% of the time.
        let mut a = ThreadAdvisor::new(2, 3);
        let lowered: Vec<_> = (0..10).filter_map(|_| a.observe(0.0, Some(0.30))).collect();
        assert_eq!(lowered, vec![1], "pressure alone counts as one core taken");
        // The pressure goes: back to 2 threads.
        let recovered: Vec<_> = (0..10).filter_map(|_| a.observe(0.0, Some(0.01))).collect();
        assert_eq!(recovered, vec![2]);
        // A short burst of pressure is smoothed away like a burst of load.
        let mut blip = vec![(0.0, Some(0.9)); 2];
        blip.extend([(0.0, Some(0.0)); 8]);
        assert!(advice_trace(2, &blip).iter().all(|&t| t == 2), "{:?}", advice_trace(2, &blip));
        // Below the threshold it is the quiet machine's wake-up latency.
        let quiet = [(0.0, Some(CPU_PRESSURE_THRESHOLD / 2.0)); 20];
        assert!(advice_trace(2, &quiet).iter().all(|&t| t == 2));
        // A stall says one core, not more: 4 threads become 3, and busy time
        // that says more than one core still decides.
        assert_eq!(advice_trace(4, &[(0.0, Some(0.5)); 20]).last(), Some(&3));
        assert_eq!(advice_trace(4, &[(2.0, Some(0.5)); 20]).last(), Some(&2));
    }

    #[test]
    fn without_cpu_pressure_the_advice_follows_busy_time_only() {
        // The same busy-time series, with pressure unknown and with none
        // measured, gives the same advice at every step.
        let load = [0.0, 2.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.3, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.8, 1.8, 1.8, 1.8];
        let unknown: Vec<_> = load.iter().map(|&o| (o, None)).collect();
        let none: Vec<_> = load.iter().map(|&o| (o, Some(0.0))).collect();
        let trace = advice_trace(2, &unknown);
        assert_eq!(trace, advice_trace(2, &none));
        assert!(trace.contains(&1) && trace.contains(&2), "the series moves the advice both ways: {trace:?}");
    }

    #[test]
    fn the_machines_pressure_is_not_counted_while_the_daemon_itself_kept_the_cpus_busy() {
        let reading = |scope, own| CpuReading { others: Some(0.0), own, stall: Some(CpuStall { share: 0.4, scope }) };
        // Idle daemon: the machine's stalls are others'.
        assert_eq!(reading("machine", Some(0.02)).advisor_stall(), Some(0.4));
        // Generating: its own threads waited for each other; not counted.
        assert_eq!(reading("machine", Some(1.9)).advisor_stall(), None);
        assert_eq!(reading("machine", Some(OWN_BUSY_LIMIT)).advisor_stall(), None);
        assert_eq!(reading("machine", None).advisor_stall(), None, "unknown own use: not counted");
        // The cgroup's `full` never counts its threads crowding each other.
        assert_eq!(reading("cgroup", Some(1.9)).advisor_stall(), Some(0.4));
        assert_eq!(CpuReading { others: Some(0.0), own: Some(0.0), stall: None }.advisor_stall(), None);
        // Sustained, the counted pressure lowers the advice; the same figures
        // while generating leave it.
        let mut a = ThreadAdvisor::new(2, 3);
        let busy: Vec<_> = (0..10).filter_map(|_| a.observe(0.0, reading("machine", Some(1.9)).advisor_stall())).collect();
        assert_eq!(busy, Vec::<u32>::new());
        let idle: Vec<_> = (0..10).filter_map(|_| a.observe(0.0, reading("machine", Some(0.02)).advisor_stall())).collect();
        assert_eq!(idle, vec![1]);
    }

    #[test]
    fn own_cpu_time_is_counted_in_cpus() {
        let mask = [0, 1];
        let start = [[100, 0, 0, 900, 0, 0, 0, 0]; 4];
        let before = CpuSample::parse(&proc_stat(start), &self_stat(10, 5), &mask).expect("parse");
        // 100 ticks per CPU pass; this process used 150 of the 200.
        let cpu = [175, 0, 0, 925, 0, 0, 0, 0];
        let after = CpuSample::parse(&proc_stat([cpu, cpu, start[2], start[3]]), &self_stat(110, 55), &mask).expect("parse");
        let own = after.own_since(&before).expect("time passed");
        assert!((own - 1.5).abs() < 1e-9, "{own}");
        assert_eq!(after.others_since(&before), Some(0.0));
        assert_eq!(before.own_since(&before), None);
    }

    const PSI_CPU: &str = "some avg10=1.52 avg60=0.87 avg300=0.30 total=17924863445\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";

    #[test]
    fn psi_totals_are_parsed_and_bad_text_gives_none() {
        assert_eq!(psi_total(PSI_CPU, PsiLine::Some), Some(17_924_863_445));
        assert_eq!(psi_total(PSI_CPU, PsiLine::Full), Some(0));
        // Kernels before 5.13 have no CPU `full` line.
        let old = "some avg10=0.00 avg60=0.00 avg300=0.00 total=42\n";
        assert_eq!((psi_total(old, PsiLine::Some), psi_total(old, PsiLine::Full)), (Some(42), None));
        for bad in [
            "",
            "garbage\n",
            "some avg10=0.00 avg60=0.00 avg300=0.00\n",
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=-5\n",
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=12x\n",
            "some avg10=abc avg60=0.00 avg300=0.00 total=12\n",
            "some avg10=0.00 total\n",
            "somewhat avg10=0.00 total=12\n",
        ] {
            assert_eq!(psi_total(bad, PsiLine::Some), None, "{bad:?}");
        }
    }

    #[test]
    fn stall_share_is_the_counter_growth_over_the_interval() {
        let s = stall_share(1_000_000, 1_250_000, Duration::from_secs(1)).expect("time passed");
        assert!((s - 0.25).abs() < 1e-12, "{s}");
        // Clamped: the machine's `some` may exceed the wall time by rounding.
        assert_eq!(stall_share(0, 3_000_000, Duration::from_secs(1)), Some(1.0));
        assert_eq!(stall_share(5, 5, Duration::from_millis(250)), Some(0.0));
        // A counter that went back, or no time: no figure, no panic.
        assert_eq!(stall_share(10, 5, Duration::from_secs(1)), None);
        assert_eq!(stall_share(0, 5, Duration::ZERO), None);
    }

    #[test]
    fn cpu_pressure_is_the_own_cgroups_full_line_on_v2_else_the_machines_some() {
        let d = tempfile::tempdir().expect("tmp");
        let r = d.path().join("cgroup");
        let machine = d.path().join("proc-pressure-cpu");
        write(&machine, PSI_CPU);
        write(&r.join("cgroup.controllers"), "cpu memory");
        write(&r.join("cpu.pressure"), PSI_CPU);
        write(&r.join("system.slice/edgeai.service/cpu.pressure"), PSI_CPU);
        let own = cpu_psi_in(&r, "0::/system.slice/edgeai.service\n", &machine).expect("found");
        assert_eq!(own, CpuPsi { path: r.join("system.slice/edgeai.service/cpu.pressure"), line: PsiLine::Full, scope: "cgroup" });
        // In the root cgroup (CPU `full` is always 0 there): the machine's.
        let root = cpu_psi_in(&r, "0::/\n", &machine).expect("found");
        assert_eq!((root.path, root.line, root.scope), (machine.clone(), PsiLine::Some, "machine"));
        // cgroup v1 (this project's gateways): the machine's.
        let v1 = d.path().join("v1");
        write(&v1.join("cpu,cpuacct/edge/cpu.cfs_quota_us"), "-1");
        assert_eq!(cpu_psi_in(&v1, "4:cpu,cpuacct:/edge\n", &machine).map(|p| p.scope), Some("machine"));
        // No PSI at all (a kernel without it): none, and the advisor goes by busy time.
        assert_eq!(cpu_psi_in(&v1, "4:cpu,cpuacct:/edge\n", &d.path().join("missing")), None);
    }

    #[test]
    fn a_missing_or_malformed_pressure_file_gives_no_stall_and_no_panic() {
        let d = tempfile::tempdir().expect("tmp");
        let path = d.path().join("cpu");
        let psi = CpuPsi { path: path.clone(), line: PsiLine::Some, scope: "machine" };
        let mut load = CpuLoad { mask: vec![0], last: None, psi: Some(psi), last_psi: None };
        assert_eq!(load.stall(), None, "missing file");
        write(&path, "some avg10=0.00 avg60=0.00 avg300=0.00 total=1000\n");
        assert_eq!(load.stall(), None, "the first reading has nothing to compare with");
        write(&path, "some avg10=broken\n");
        assert_eq!(load.stall(), None, "malformed");
        write(&path, "some avg10=0.00 avg60=0.00 avg300=0.00 total=2000\n");
        assert_eq!(load.stall(), None, "a malformed reading starts over");
        std::thread::sleep(Duration::from_millis(20));
        write(&path, "some avg10=0.00 avg60=0.00 avg300=0.00 total=3000\n");
        let stall = load.stall().expect("two good readings");
        assert_eq!(stall.scope, "machine");
        assert!(stall.share > 0.0 && stall.share <= 1.0, "{stall:?}");
    }

    /// /proc/stat with four CPUs: cpu lines are user nice system idle iowait
    /// irq softirq steal guest guest_nice.
    fn proc_stat(cpus: [[u64; 8]; 4]) -> String {
        let mut s = String::from("cpu  1 2 3 4 5 6 7 8 0 0\n");
        for (i, c) in cpus.iter().enumerate() {
            let f: Vec<String> = c.iter().map(u64::to_string).collect();
            s.push_str(&format!("cpu{i} {} 0 0\n", f.join(" ")));
        }
        s.push_str("intr 12345 0 0\nctxt 999\nbtime 1700000000\nprocesses 4242\nprocs_running 7\nprocs_blocked 0\n");
        s
    }

    /// /proc/self/stat with this utime and stime, and a command name with a
    /// space and a parenthesis to trip naive splitting.
    fn self_stat(utime: u64, stime: u64) -> String {
        format!(
            "4242 (edge aid) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 {utime} {stime} 0 0 20 0 5 0 100 1000000 500 18446744073709551615"
        )
    }

    #[test]
    fn busy_cpus_outside_the_mask_do_not_count() {
        let mask = [0, 1];
        let before = CpuSample::parse(&proc_stat([[100, 0, 0, 900, 0, 0, 0, 0]; 4]), &self_stat(10, 5), &mask).expect("parse");
        // Over 100 ticks per CPU, CPUs 2 and 3 (outside the mask) ran flat out;
        // procs_running would say 7, yet the mask's CPUs were idle.
        let idle_mask = [100, 0, 0, 1000, 0, 0, 0, 0];
        let busy_other = [200, 0, 0, 900, 0, 0, 0, 0];
        let after = CpuSample::parse(&proc_stat([idle_mask, idle_mask, busy_other, busy_other]), &self_stat(10, 5), &mask).expect("parse");
        assert_eq!(after.others_since(&before), Some(0.0));
    }

    #[test]
    fn another_process_on_a_mask_cpu_counts_and_our_own_time_does_not() {
        let mask = [0, 1];
        let start = [[100, 0, 0, 900, 0, 0, 0, 0]; 4];
        let before = CpuSample::parse(&proc_stat(start), &self_stat(10, 5), &mask).expect("parse");
        // 100 ticks pass. CPU 0: 60 user + 20 system + 20 idle; CPU 1: 100 idle.
        let cpu0 = [160, 0, 20, 920, 0, 0, 0, 0];
        let cpu1 = [100, 0, 0, 1000, 0, 0, 0, 0];
        // We used 50 + 30 of those 80 busy ticks: others kept 0 CPUs busy.
        let ours = CpuSample::parse(&proc_stat([cpu0, cpu1, start[2], start[3]]), &self_stat(60, 35), &mask).expect("parse");
        assert_eq!(ours.others_since(&before), Some(0.0));
        // We used none of them: 80 ticks of 100 on a 2-CPU mask is 0.8 CPUs.
        let theirs = CpuSample::parse(&proc_stat([cpu0, cpu1, start[2], start[3]]), &self_stat(10, 5), &mask).expect("parse");
        let others = theirs.others_since(&before).expect("time passed");
        assert!((others - 0.8).abs() < 1e-9, "{others}");
        // irq, softirq and steal are busy time too; iowait is not.
        // CPU 0 idle; CPU 1: 40 idle, 20 iowait, 40 irq/softirq/steal.
        let cpu0 = [100, 0, 0, 1000, 0, 0, 0, 0];
        let cpu1 = [100, 0, 0, 940, 20, 10, 10, 20];
        let s = CpuSample::parse(&proc_stat([cpu0, cpu1, start[2], start[3]]), &self_stat(10, 5), &mask).expect("parse");
        let others = s.others_since(&before).expect("time passed");
        assert!((others - 0.4).abs() < 1e-9, "{others}");
        // No time passed: no answer rather than a division by zero.
        assert_eq!(before.others_since(&before), None);
    }

    #[test]
    fn unreadable_input_gives_no_sample() {
        let good = proc_stat([[1, 0, 0, 1, 0, 0, 0, 0]; 4]);
        assert_eq!(CpuSample::parse(&good, "garbage", &[0]), None);
        assert_eq!(CpuSample::parse("cpu0 1 2 x 4 5 6 7 8\n", &self_stat(1, 1), &[0]), None);
        assert_eq!(CpuSample::parse("cpu0 1 2 3\n", &self_stat(1, 1), &[0]), None);
        // No CPU of the mask is listed (offline).
        assert_eq!(CpuSample::parse(&good, &self_stat(1, 1), &[9]), None);
    }

    #[test]
    fn the_real_system_is_readable() {
        let mut load = CpuLoad::for_this_process();
        assert_eq!(load.read(), CpuReading { others: None, own: None, stall: None }, "the first call has nothing to compare with");
        std::thread::sleep(std::time::Duration::from_millis(50));
        let reading = load.read();
        let others = reading.others.expect("a second sample of /proc/stat and /proc/self/stat");
        assert!(others >= 0.0 && others <= f64::from(affinity_cpus()), "{others}");
        let own = reading.own.expect("the same samples");
        assert!(own >= 0.0 && own <= f64::from(affinity_cpus()), "{own}");
        match (&load.psi, reading.stall) {
            (Some(psi), Some(stall)) => {
                assert_eq!(stall.scope, psi.scope);
                assert!((0.0..=1.0).contains(&stall.share), "{stall:?}");
            }
            (Some(psi), None) => eprintln!("SKIP CPU pressure reading: {} is not readable (PSI off?)", psi.path.display()),
            (None, _) => eprintln!("SKIP CPU pressure reading: no cpu.pressure and no /proc/pressure/cpu on this kernel"),
        }
        let l = detect();
        assert!(l.affinity_cpus >= 1);
        assert!(l.inference_threads() >= 1 && l.inference_threads() <= l.affinity_cpus);
    }
}
