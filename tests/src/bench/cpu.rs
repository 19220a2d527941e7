//! Foreign CPU load: how many cores other processes kept busy while the
//! bench measured, from /proc/stat minus the bench process (its threads and
//! its reaped children) and the running daemon. On a shared machine the
//! figures are only as good as the machine was quiet, so the bench reports
//! this next to them. Reads /proc only.

use std::time::Instant;

use anyhow::{anyhow, Context as _, Result};

/// USER_HZ: the unit of /proc/stat and /proc/PID/stat times (100 on Linux
/// for every architecture the daemon targets).
const TICKS_PER_S: f64 = 100.0;

/// CPU counters at one instant.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot {
    at: Instant,
    machine_busy: u64,
    own: u64,
}

/// Busy ticks of all CPUs: user, nice, system, irq, softirq, steal (guest
/// time is already inside user).
fn machine_busy() -> Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    busy_of(&stat)
}

fn busy_of(stat: &str) -> Result<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu ")).ok_or_else(|| anyhow!("/proc/stat has no cpu line"))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).map(|x| x.parse().unwrap_or(0)).collect();
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    Ok(at(0) + at(1) + at(2) + at(5) + at(6) + at(7))
}

/// utime + stime of a process (and of its reaped children with `children`).
fn process_ticks(pid: &str, children: bool) -> Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    ticks_of(&path, &text, children)
}

fn ticks_of(path: &str, text: &str, children: bool) -> Result<u64> {
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = text.rsplit_once(')').map(|(_, r)| r).ok_or_else(|| anyhow!("{path}: no command name"))?;
    let f: Vec<u64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
    // After ')': state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
    let at = |i: usize| f.get(i).copied().unwrap_or(0);
    Ok(at(11) + at(12) + if children { at(13) + at(14) } else { 0 })
}

/// Counters now; `daemon` is a running (not yet reaped) child to count as ours.
pub fn snapshot(daemon: Option<u32>) -> Result<Snapshot> {
    let mut own = process_ticks("self", true)?;
    if let Some(pid) = daemon {
        own += process_ticks(&pid.to_string(), false).unwrap_or(0);
    }
    Ok(Snapshot { at: Instant::now(), machine_busy: machine_busy()?, own })
}

impl Snapshot {
    /// Average number of cores other processes kept busy since `self`.
    pub fn foreign_cores_until(&self, later: &Snapshot) -> f64 {
        let secs = (later.at - self.at).as_secs_f64();
        if secs <= 0.0 {
            return 0.0;
        }
        let busy = later.machine_busy.saturating_sub(self.machine_busy) as f64;
        let own = later.own.saturating_sub(self.own) as f64;
        ((busy - own) / TICKS_PER_S / secs).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_are_parsed() {
        let stat = "cpu  100 5 50 1000 7 3 2 1 0 0\ncpu0 1 2 3 4\n";
        assert_eq!(busy_of(stat).expect("cpu line"), 100 + 5 + 50 + 3 + 2 + 1);
        assert!(busy_of("intr 1 2 3\n").is_err());
        // A command name with spaces and a parenthesis.
        let pid = "42 (a b) c) S 1 42 42 0 -1 4194560 10 0 0 0 30 20 5 4 20 0 1 0 100 1000 10";
        assert_eq!(ticks_of("stat", pid, false).expect("fields"), 50);
        assert_eq!(ticks_of("stat", pid, true).expect("fields"), 59);
        assert!(ticks_of("stat", "42 no parenthesis", false).is_err());
    }

    #[test]
    fn own_busy_loop_is_not_foreign() {
        let a = snapshot(None).expect("snapshot");
        let until = Instant::now() + std::time::Duration::from_millis(300);
        let mut x = 0u64;
        while Instant::now() < until {
            x = x.wrapping_add(1);
        }
        let b = snapshot(None).expect("snapshot");
        assert!(x > 0);
        // The busy loop is ours; anything else on a shared test machine is
        // noise, so only check the figure is sane.
        let f = a.foreign_cores_until(&b);
        assert!(f.is_finite() && f >= 0.0, "{f}");
    }
}
