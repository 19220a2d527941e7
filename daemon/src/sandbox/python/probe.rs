//! probe: finds the interpreter once at start, unsandboxed (`python3` on
//! PATH may be a shim script such as pyenv's): the real executable, its
//! version, prefixes, `sys.path`, ELF loader and importable top-level
//! modules; then what a run may read, checked against the protected paths.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::confine::ReadView;

/// Printed as one JSON object by the interpreter under `-I` (the flags runs
/// use, so `sys.path` is the one they see).
const PROBE: &str = r#"
import json, os, pkgutil, sys
def loader(exe):
    try:
        with open(exe, "rb") as f:
            head = f.read(64)
            if head[:4] != b"\x7fELF" or head[4] != 2:
                return None
            order = "<" if head[5] == 1 else ">"
            import struct
            phoff, = struct.unpack_from(order + "Q", head, 0x20)
            phentsize, phnum = struct.unpack_from(order + "HH", head, 0x36)
            for i in range(phnum):
                f.seek(phoff + i * phentsize)
                ph = f.read(phentsize)
                if struct.unpack_from(order + "I", ph, 0)[0] == 3:
                    off, = struct.unpack_from(order + "Q", ph, 8)
                    size, = struct.unpack_from(order + "Q", ph, 0x20)
                    f.seek(off)
                    return os.path.realpath(f.read(size).rstrip(b"\0").decode())
    except OSError:
        return None
    return None
exe = os.path.realpath(sys.executable)
mods = set(sys.builtin_module_names) | {m.name for m in pkgutil.iter_modules()}
print(json.dumps({
    "executable": exe,
    "version": "%d.%d.%d" % sys.version_info[:3],
    "prefixes": [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix],
    "path": [p for p in sys.path if p],
    "loader": loader(exe),
    "modules": sorted(mods),
}))
"#;

const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Deserialize)]
pub(super) struct Probe {
    pub executable: PathBuf,
    pub version: String,
    prefixes: Vec<PathBuf>,
    path: Vec<PathBuf>,
    loader: Option<PathBuf>,
    pub modules: BTreeSet<String>,
}

/// Runs `interpreter -I -c PROBE` with the daemon's environment (a shim
/// needs it) and a bounded wait.
pub(super) fn probe(interpreter: &Path) -> Result<Probe, String> {
    let mut child = Command::new(interpreter)
        .args(["-I", "-c", PROBE])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", interpreter.display()))?;
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < PROBE_TIMEOUT => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{} did not answer within {PROBE_TIMEOUT:?}", interpreter.display()));
            }
            Err(e) => return Err(format!("waiting for {}: {e}", interpreter.display())),
        }
    };
    let (mut out, mut err) = (String::new(), String::new());
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    if !status.success() {
        return Err(format!("{} failed ({status}): {}", interpreter.display(), err.trim()));
    }
    let probe: Probe =
        serde_json::from_str(out.trim()).map_err(|e| format!("{} is not a usable python3 ({e}): {}", interpreter.display(), out.trim()))?;
    if !probe.version.starts_with("3.") {
        return Err(format!("{} is Python {}, not Python 3", probe.executable.display(), probe.version));
    }
    Ok(probe)
}

/// System files any process needs (the loader cache, the time zone, the
/// harmless devices).
const SYSTEM_FILES: &[&str] = &["/etc/ld.so.cache", "/etc/localtime", "/dev/null", "/dev/urandom", "/dev/zero"];
/// System directories of libraries and data (zoneinfo, locales).
const SYSTEM_DIRS: &[&str] = &["/usr", "/lib", "/lib64"];

/// What a run may read: the interpreter's prefixes and `sys.path`, the
/// system library directories and a few files; the interpreter and its
/// loader executable. Paths are resolved; those missing are left out, and
/// so is any path inside another one listed.
pub(super) fn read_view(probe: &Probe) -> ReadView {
    let candidates = probe.prefixes.iter().chain(&probe.path).cloned().chain(SYSTEM_DIRS.iter().chain(SYSTEM_FILES).map(PathBuf::from));
    let mut resolved: Vec<PathBuf> = candidates.filter_map(|p| std::fs::canonicalize(p).ok()).collect();
    resolved.sort();
    resolved.dedup();
    let read = resolved.iter().filter(|p| !resolved.iter().any(|q| q != *p && p.starts_with(q))).cloned().collect();
    let exec = std::iter::once(probe.executable.clone()).chain(probe.loader.clone()).collect();
    ReadView { read, exec }
}

/// The absolute, resolved form of a path that may not exist yet (its
/// nearest existing ancestor resolved).
pub(super) fn resolve(path: &Path) -> PathBuf {
    if let Ok(p) = std::fs::canonicalize(path) {
        return p;
    }
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) if parent != path => resolve(parent).join(name),
        _ => path.to_path_buf(),
    }
}

/// Refuses a protected path that code could read (inside a readable or
/// executable path or the scratch directory), or that contains one.
pub(super) fn check_protected(view: &ReadView, scratch: &Path, protected: &[PathBuf]) -> Result<(), String> {
    let open = view.read.iter().chain(&view.exec).map(PathBuf::as_path).chain([scratch]);
    for p in protected {
        let p = resolve(p);
        for r in open.clone() {
            if p.starts_with(r) || r.starts_with(&p) {
                return Err(format!(
                    "the protected path {} would be readable by Python code nodes (the sandbox lets code read {}); move it or use another python3",
                    p.display(),
                    r.display()
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(read: &[&str]) -> ReadView {
        ReadView { read: read.iter().map(PathBuf::from).collect(), exec: vec![PathBuf::from("/usr/bin/python3.11")] }
    }

    #[test]
    fn a_protected_path_under_a_read_path_is_refused() {
        let err =
            check_protected(&view(&["/usr", "/opt/py"]), Path::new("/var/lib/edgeai/code-scratch"), &[PathBuf::from("/opt/py/keys/k.pem")])
                .expect_err("refused");
        assert!(err.contains("/opt/py/keys/k.pem") && err.contains("/opt/py"), "{err}");
    }

    #[test]
    fn a_protected_directory_holding_a_read_path_is_refused() {
        assert!(check_protected(&view(&["/opt/state/python"]), Path::new("/s"), &[PathBuf::from("/opt/state")]).is_err());
    }

    #[test]
    fn a_protected_path_under_the_scratch_dir_is_refused() {
        assert!(check_protected(&view(&["/usr"]), Path::new("/var/x/scratch"), &[PathBuf::from("/var/x/scratch/store.db")]).is_err());
    }

    #[test]
    fn paths_elsewhere_are_fine() {
        let protected = [PathBuf::from("/var/lib/edgeai/store.db"), PathBuf::from("/etc/edgeai/keys")];
        assert_eq!(check_protected(&view(&["/usr", "/lib"]), Path::new("/var/lib/edgeai/code-scratch"), &protected), Ok(()));
    }

    #[test]
    fn resolve_keeps_missing_tails() {
        assert_eq!(resolve(Path::new("/nonexistent-edgeai/a/b")), PathBuf::from("/nonexistent-edgeai/a/b"));
    }
}
