//! The daemon's side of `edgeaictl doctor` (`GET /admin/v1/doctor`): the
//! checks only the running daemon can make, each with what to do when it
//! is not right: the model file (size and sha256 against a checksum we
//! know), the model's load state, the cgroup limits and the thread count
//! chosen, free disk in the state directory, and the database's integrity.
//!
//! Owns: what each check compares and the advice it gives. Must not: change
//! anything (a doctor only looks), run SQL on the writer, or know HTTP.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::Service;

/// The default chat model of design.md ("Models available offline"): its
/// file name, size in bytes and sha256, used when no `<model>.sha256` file
/// lies next to the model.
const KNOWN_MODELS: &[(&str, u64, &str)] =
    &[("SmolLM2-135M-Instruct.Q4_1.gguf", 98_362_432, "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53")];

/// Less free space than this in the state directory fails: SQLite cannot
/// checkpoint its WAL, and an ingest or a cache write fails.
const DISK_FAIL_BYTES: u64 = 64 << 20;
/// Less than this warns.
const DISK_WARN_BYTES: u64 = 256 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

/// One check's outcome; `fix` is set for WARN and FAIL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// One of `edgeai_common::admin::DAEMON_CHECKS`.
    pub name: &'static str,
    pub status: Status,
    pub message: String,
    pub fix: Option<String>,
}

impl Check {
    fn pass(name: &'static str, message: String) -> Check {
        Check { name, status: Status::Pass, message, fix: None }
    }

    fn warn(name: &'static str, message: String, fix: impl Into<String>) -> Check {
        Check { name, status: Status::Warn, message, fix: Some(fix.into()) }
    }

    fn fail(name: &'static str, message: String, fix: impl Into<String>) -> Check {
        Check { name, status: Status::Fail, message, fix: Some(fix.into()) }
    }
}

/// Every daemon-side check, in the order of `DAEMON_CHECKS`.
pub async fn run(svc: &Service) -> Vec<Check> {
    let report = svc.model_report();
    let model_path = report.config.path.clone();
    let enabled = report.config.enabled;
    let model_file = match tokio::task::spawn_blocking(move || model_file(&model_path, enabled)).await {
        Ok(check) => check,
        Err(e) => Check::fail("model file", format!("the check itself failed: {e}"), "see the daemon's log (journalctl -u edgeai)"),
    };
    let load = model_load(report.status.state, report.status.error.as_deref(), &report.config.path);
    let limits = match svc.governor() {
        Some(g) => limits(&g.limits(), g.budget().total(), report.config.threads, report.config.adaptive_threads, report.threads),
        None => Check::warn("limits", "the memory governor is not running".into(), "see the daemon's log at start-up"),
    };
    let dir = state_dir(svc.store().path());
    let disk = match nix::sys::statvfs::statvfs(&dir) {
        Ok(s) => {
            // These are u32 on 32-bit targets (an ARM gateway), u64 here.
            #[allow(clippy::useless_conversion)]
            let (block, available, total) = (u64::from(s.fragment_size()), u64::from(s.blocks_available()), u64::from(s.blocks()));
            disk(&dir, available * block, total * block)
        }
        Err(e) => Check::fail("disk", format!("cannot statvfs {}: {e}", dir.display()), "check that store.path's directory exists"),
    };
    let database = match svc.store().integrity().await {
        Ok(found) => database(svc.store().path(), &found),
        Err(e) => Check::fail("database", format!("{}: {}", svc.store().path().display(), chain(&e)), RESTORE),
    };
    vec![model_file, load, limits, disk, database]
}

const RESTORE: &str = "stop the daemon, keep a copy of the file, then restore the last backup \
    (edgeaictl backup restore) or salvage it with `sqlite3 DB .recover | sqlite3 NEW.db`";

/// The directory of the store file (the state directory).
fn state_dir(store: &Path) -> PathBuf {
    match store.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The checksum to compare with: `<model>.sha256` (sha256sum's format, or
/// the bare hex digest), else the known default's by file name. With the
/// known size when there is one.
fn expected(model: &Path) -> Result<Option<(String, Option<u64>, String)>, String> {
    let mut side = model.as_os_str().to_owned();
    side.push(".sha256");
    let side = PathBuf::from(side);
    match std::fs::read_to_string(&side) {
        Ok(text) => {
            let digest = text.split_whitespace().next().unwrap_or("").to_ascii_lowercase();
            if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("{} holds no sha256 digest", side.display()));
            }
            return Ok(Some((digest, None, side.display().to_string())));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot read {}: {e}", side.display())),
    }
    let name = model.file_name().and_then(|n| n.to_str()).unwrap_or("");
    Ok(KNOWN_MODELS
        .iter()
        .find(|(known, _, _)| *known == name)
        .map(|(_, size, sha)| ((*sha).to_owned(), Some(*size), "the default model's published checksum".to_owned())))
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The model file exists, and its size and sha256 match what we know.
fn model_file(path: &Path, enabled: bool) -> Check {
    const NAME: &str = "model file";
    if !enabled {
        return Check::pass(NAME, "no local model configured (model calls answer 503)".into());
    }
    let refetch =
        format!("fetch the model again (scripts/setup.sh for the default) to {}, or point model.path at a good copy", path.display());
    let size = match std::fs::metadata(path) {
        Ok(m) if m.is_file() => m.len(),
        Ok(_) => return Check::fail(NAME, format!("{} is not a file", path.display()), refetch),
        Err(e) => return Check::fail(NAME, format!("{}: {e}", path.display()), refetch),
    };
    let (digest, known_size, source) = match expected(path) {
        Ok(Some(e)) => e,
        Ok(None) => {
            return Check::warn(
                NAME,
                format!("{} ({size} bytes): no checksum known to verify it against", path.display()),
                format!("write its published sha256 to {}.sha256 (sha256sum's format)", path.display()),
            )
        }
        Err(why) => return Check::warn(NAME, why, format!("write the model's sha256 into {}.sha256 (sha256sum's format)", path.display())),
    };
    if let Some(known) = known_size.filter(|k| *k != size) {
        return Check::fail(
            NAME,
            format!("{} has {size} bytes, {source} is for {known} bytes: damaged or truncated", path.display()),
            refetch,
        );
    }
    match sha256_file(path) {
        Ok(actual) if actual == digest => Check::pass(NAME, format!("{} ({size} bytes), sha256 matches {source}", path.display())),
        Ok(actual) => {
            Check::fail(NAME, format!("{} has sha256 {actual}, {source} says {digest}: damaged or not that model", path.display()), refetch)
        }
        Err(e) => Check::fail(NAME, format!("cannot read {}: {e}", path.display()), refetch),
    }
}

fn model_load(state: &str, error: Option<&str>, path: &Path) -> Check {
    const NAME: &str = "model load";
    match state {
        "ready" => Check::pass(NAME, "loaded and ready".into()),
        "loading" => Check::warn(NAME, "still loading".into(), "wait, then run doctor again (edgeaictl status shows the progress)"),
        "disabled" => Check::pass(NAME, "no local model".into()),
        "unloaded" | "unloading" => Check::warn(
            NAME,
            format!("{state} by an operator: model calls answer 503"),
            "edgeaictl --bus system models load, when the model should serve again",
        ),
        other => Check::fail(
            NAME,
            format!("{other}: {}", error.unwrap_or("no reason given")),
            format!("check {} (model file above) and the log (journalctl -u edgeai), then systemctl restart edgeai", path.display()),
        ),
    }
}

/// The cgroup's memory and CPU limits against what the daemon chose.
fn limits(l: &crate::governor::Limits, needs: u64, threads: u32, derived: bool, in_use: u32) -> Check {
    const NAME: &str = "limits";
    let mib = |b: u64| format!("{} MiB", b >> 20);
    let memory = match (l.memory_max, l.memory_high) {
        (Some(max), Some(high)) => format!("memory max {}, high {}", mib(max), mib(high)),
        (Some(max), None) => format!("memory max {}", mib(max)),
        (None, Some(high)) => format!("memory high {}", mib(high)),
        (None, None) => "no memory limit".to_owned(),
    };
    let quota = l.cpu_quota.map_or_else(|| "no CPU quota".to_owned(), |q| format!("CPU quota {q:.2}"));
    let allowed = l.inference_threads();
    let how = if derived { "derived from the CPU limits" } else { "model.threads" };
    let message = format!(
        "cgroup {}: {memory}, {quota}, {} CPUs in the affinity mask; {threads} inference threads ({how}), {in_use} in use now",
        l.cgroup, l.affinity_cpus
    );
    if threads > allowed {
        return Check::warn(
            NAME,
            format!("{message}; more threads than the {allowed} CPUs allowed, which slows every token"),
            format!("set model.threads to at most {allowed}, or remove it to derive it"),
        );
    }
    match l.pressure_limit() {
        Some(limit) if needs > limit => Check::warn(
            NAME,
            format!("{message}; the daemon needs about {} (model, KV cache, buffers), more than the limit", mib(needs)),
            "raise MemoryMax=/MemoryHigh= of edgeai.service, or lower model.context_size or model.slots, or use a smaller model",
        ),
        _ => Check::pass(NAME, message),
    }
}

fn disk(dir: &Path, available: u64, total: u64) -> Check {
    const NAME: &str = "disk";
    let message = format!("{} MiB free of {} MiB in {}", available >> 20, total >> 20, dir.display());
    let fix = format!("free space on the volume of {} (old exports, logs) or move store.path to a larger one", dir.display());
    if available < DISK_FAIL_BYTES {
        Check::fail(NAME, format!("{message}: below {} MiB, writes will fail", DISK_FAIL_BYTES >> 20), fix)
    } else if available < DISK_WARN_BYTES {
        Check::warn(NAME, format!("{message}: below {} MiB", DISK_WARN_BYTES >> 20), fix)
    } else {
        Check::pass(NAME, message)
    }
}

fn database(path: &Path, found: &crate::store::Integrity) -> Check {
    const NAME: &str = "database";
    if found.problems.is_empty() && found.foreign_keys.is_empty() {
        return Check::pass(NAME, format!("{}: integrity_check ok, no foreign key violations", path.display()));
    }
    let mut what = Vec::new();
    if !found.problems.is_empty() {
        what.push(format!("integrity_check: {}", found.problems.join("; ")));
    }
    if !found.foreign_keys.is_empty() {
        what.push(format!("foreign_key_check: {}", found.foreign_keys.join("; ")));
    }
    Check::fail(NAME, format!("{}: {}", path.display(), what.join("; ")), RESTORE)
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(&format!(": {c}"));
        cur = c.source();
    }
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap (style.md)
mod tests {
    use super::*;

    fn limits_of(affinity: u32, quota: Option<f64>, max: Option<u64>) -> crate::governor::Limits {
        crate::governor::Limits {
            affinity_cpus: affinity,
            cpu_quota: quota,
            memory_max: max,
            cgroup: "v2",
            memory_current: None,
            memory_high: None,
            inactive_file: None,
            oom_kills: None,
            memory_dir: None,
        }
    }

    #[test]
    fn a_sha256_file_next_to_the_model_decides() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m.gguf");
        std::fs::write(&model, b"abc").unwrap();
        assert_eq!(model_file(&model, true).status, Status::Warn, "no checksum known");
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        std::fs::write(dir.path().join("m.gguf.sha256"), format!("{abc}  m.gguf\n")).unwrap();
        let ok = model_file(&model, true);
        assert_eq!(ok.status, Status::Pass, "{ok:?}");
        std::fs::write(dir.path().join("m.gguf.sha256"), format!("{}\n", abc.replace('b', "c"))).unwrap();
        let bad = model_file(&model, true);
        assert_eq!(bad.status, Status::Fail, "{bad:?}");
        assert!(bad.message.contains(abc) && bad.fix.is_some(), "{bad:?}");
        std::fs::write(dir.path().join("m.gguf.sha256"), "not a digest\n").unwrap();
        assert_eq!(model_file(&model, true).status, Status::Warn);
    }

    #[test]
    fn the_default_model_by_name_is_checked_by_size_first() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join(KNOWN_MODELS[0].0);
        std::fs::write(&model, b"truncated").unwrap();
        let c = model_file(&model, true);
        assert_eq!(c.status, Status::Fail);
        assert!(c.message.contains("9 bytes") && c.message.contains("98362432"), "{c:?}");
        assert_eq!(model_file(&dir.path().join("gone.gguf"), true).status, Status::Fail);
    }

    #[test]
    fn too_many_threads_or_too_little_memory_warn() {
        let l = limits_of(2, Some(1.0), Some(1 << 30));
        assert_eq!(limits(&l, 200 << 20, 1, true, 1).status, Status::Pass);
        let many = limits(&l, 200 << 20, 2, false, 2);
        assert_eq!(many.status, Status::Warn);
        assert!(many.fix.unwrap().contains("at most 1"));
        let small = limits(&l, 2 << 30, 1, false, 1);
        assert_eq!(small.status, Status::Warn);
        assert!(small.message.contains("2048 MiB"), "{}", small.message);
        assert_eq!(limits(&limits_of(2, None, None), 2 << 30, 2, true, 2).status, Status::Pass);
    }

    #[test]
    fn disk_thresholds() {
        let d = Path::new("/var/lib/edgeai");
        assert_eq!(disk(d, 10 << 20, 1 << 30).status, Status::Fail);
        assert_eq!(disk(d, 100 << 20, 1 << 30).status, Status::Warn);
        assert_eq!(disk(d, 1 << 30, 4 << 30).status, Status::Pass);
    }

    #[test]
    fn integrity_problems_fail_with_each_line() {
        let found = crate::store::Integrity { problems: vec!["row 3 missing from index i".into()], foreign_keys: vec![] };
        let c = database(Path::new("/x.db"), &found);
        assert_eq!(c.status, Status::Fail);
        assert!(c.message.contains("row 3 missing from index i"), "{c:?}");
        assert_eq!(database(Path::new("/x.db"), &crate::store::Integrity::default()).status, Status::Pass);
    }
}
