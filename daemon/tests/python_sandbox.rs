//! The Python code sandbox against the real `python3` and the real kernel
//! (landlock, seccomp, rlimits): results, errors, escapes refused, limits,
//! the pool. Without python3 or landlock each test prints a loud SKIP.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use edgeaid::sandbox::python::{Python, PythonConfig};
use edgeaid::sandbox::{RunLimits, SandboxError};
use serde_json::{json, Map, Value};

fn limits() -> RunLimits {
    RunLimits { timeout: Duration::from_secs(3), memory_bytes: 256 << 20, max_output_bytes: 1 << 20 }
}

fn config(dir: &Path, pool_size: usize, protected: Vec<PathBuf>) -> PythonConfig {
    PythonConfig { interpreter: None, scratch_dir: dir.join("code-scratch"), pool_size, protected }
}

/// The sandbox, or `None` after a loud SKIP when this machine cannot have
/// one (no python3, no landlock). Any other failure fails the test.
fn start(dir: &Path, pool_size: usize, protected: Vec<PathBuf>) -> Option<Python> {
    match Python::start(config(dir, pool_size, protected)) {
        Ok(p) => Some(p),
        Err(SandboxError::Unavailable(why)) if why.contains("landlock") && why.contains("none") || why.contains("cannot run python3") => {
            eprintln!("SKIP: the Python sandbox cannot run here: {why}");
            None
        }
        Err(e) => panic!("the Python sandbox did not start: {e}"),
    }
}

fn inputs(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

async fn run(p: &Python, code: &str) -> Result<Map<String, Value>, SandboxError> {
    p.run(code, &Map::new(), &limits()).await
}

fn denied(r: Result<Map<String, Value>, SandboxError>, what: &str) -> String {
    match r {
        Err(SandboxError::Denied(reason)) => {
            assert!(reason.contains(what), "the reason {reason:?} should contain {what:?}");
            reason
        }
        other => panic!("expected Denied containing {what:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn a_trivial_main_returns_its_dict() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(p) = start(dir.path(), 1, vec![]) else { return };
    let out = p.run("def main(a: str, b: int) -> dict:\n    return {'r': a * b}\n", &inputs(json!({"a": "ab", "b": 2})), &limits()).await;
    assert_eq!(out, Ok(inputs(json!({"r": "abab"}))));
    assert!(p.info().version.starts_with("3."), "{:?}", p.info());
    assert!(p.info().modules.contains("json") && !p.info().modules.contains("ctypes"));
    assert!(p.info().landlock_abi >= 1);
    eprintln!(
        "python sandbox: {} {}, landlock ABI {}, {} modules, reads {:?}",
        p.info().executable.display(),
        p.info().version,
        p.info().landlock_abi,
        p.info().modules.len(),
        p.info().read_paths
    );
}

#[tokio::test]
async fn every_json_type_round_trips() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(p) = start(dir.path(), 1, vec![]) else { return };
    let value = json!({
        "s": "text", "u": "ünïcödé ✓ 漢字 😀", "i": 42, "neg": -7, "big": 9007199254740993i64, "f": 3.25, "t": true, "fa": false,
        "n": null, "l": [1, "two", [3.5, null]], "d": {"x": {"y": [true, {}]}}, "e": [], "empty": ""
    });
    let out = p.run("def main(**kw):\n    return dict(kw)\n", &inputs(value.clone()), &limits()).await;
    assert_eq!(out, Ok(inputs(value)));
}

#[tokio::test]
async fn inputs_larger_than_a_pipe_buffer_arrive_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(p) = start(dir.path(), 1, vec![]) else { return };
    let big = "é".repeat(300_000);
    let out = p.run("def main(s: str) -> dict:\n    return {'n': len(s)}\n", &inputs(json!({"s": big})), &limits()).await;
    assert_eq!(out, Ok(inputs(json!({"n": 300_000}))));
}

#[tokio::test]
async fn code_errors_name_the_exception_and_the_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(p) = start(dir.path(), 1, vec![]) else { return };
    let out = run(&p, "def main():\n    y = 1\n    return {'a': x}\n").await;
    assert_eq!(out, Err(SandboxError::Code("NameError: name 'x' is not defined (line 3)".into())));
    let out = run(&p, "def main():\n    return {'a': 1 +}\n").await;
    assert!(matches!(&out, Err(SandboxError::Code(m)) if m.starts_with("SyntaxError") && m.ends_with("(line 2)")), "{out:?}");
    let out = run(&p, "def main():\n    return {'a': float('nan')}\n").await;
    assert!(matches!(&out, Err(SandboxError::Code(m)) if m.contains("ValueError")), "{out:?}");
    let out = run(&p, "import sys\ndef main():\n    sys.exit(3)\n").await;
    assert_eq!(out, Err(SandboxError::Code("SystemExit: 3 (line 3)".into())));
}

#[tokio::test]
async fn no_main_and_a_non_dict_result_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(p) = start(dir.path(), 1, vec![]) else { return };
    assert_eq!(run(&p, "def helper():\n    return {}\n").await, Err(SandboxError::NoMain));
    assert_eq!(run(&p, "main = 5\n").await, Err(SandboxError::NoMain));
    assert_eq!(run(&p, "def main():\n    return [1, 2]\n").await, Err(SandboxError::NotAnObject("list".into())));
    assert_eq!(run(&p, "def main():\n    return None\n").await, Err(SandboxError::NotAnObject("NoneType".into())));
}

#[tokio::test]
async fn secrets_and_files_outside_the_read_view_are_unreadable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = tempfile::tempdir().expect("tempdir");
    let other = tempfile::tempdir().expect("tempdir");
    let (store, key, plain) = (state.path().join("store.db"), state.path().join("api.key"), other.path().join("notes.txt"));
    for f in [&store, &key, &plain] {
        std::fs::write(f, "secret").expect("write");
    }
    let Some(p) = start(dir.path(), 1, vec![store.clone(), key.clone()]) else { return };
    if Path::new("/etc/shadow").exists() {
        denied(run(&p, "def main():\n    return {'s': open('/etc/shadow').read()}\n").await, "Permission denied");
    }
    for f in [&store, &key, &plain] {
        let code = format!("def main():\n    return {{'s': open({:?}).read()}}\n", f.display().to_string());
        let reason = denied(run(&p, &code).await, "PermissionError");
        assert!(reason.ends_with("(line 2)"), "{reason}");
    }
    let listing = format!("import os\ndef main():\n    return {{'l': os.listdir({:?})}}\n", state.path().display().to_string());
    denied(run(&p, &listing).await, "Permission denied");
    denied(run(&p, "import os\ndef main():\n    return {'l': os.listdir('/root')}\n").await, "Permission denied");
    denied(run(&p, "def main():\n    return {'e': open('/proc/self/environ').read()}\n").await, "Permission denied");
    denied(run(&p, "def main():\n    return {'e': open('/proc/1/cmdline').read()}\n").await, "Permission denied");
    // What the interpreter needs stays readable.
    let ok = run(
        &p,
        "import json, re, datetime, math\ndef main():\n    return {'t': datetime.datetime(2024,1,2).isoformat(), 'm': math.floor(2.5)}\n",
    )
    .await;
    assert_eq!(ok, Ok(inputs(json!({"t": "2024-01-02T00:00:00", "m": 2}))));
}

#[tokio::test]
async fn sockets_are_refused_with_and_without_the_guard() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(p) = start(dir.path(), 1, vec![]) else { return };
    assert_eq!(
        run(&p, "import socket\ndef main():\n    return {}\n").await,
        Err(SandboxError::Denied("import of module 'socket' (line 1)".into()))
    );
    // The guard removed: the system call itself fails.
    let bypass = "import sys\nsys.meta_path[:] = [f for f in sys.meta_path if getattr(f, '__name__', '') != '_Guard']\nimport _socket\n\
                  def main():\n    s = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)\n    return {}\n";
    let reason = denied(run(&p, bypass).await, "Operation not permitted");
    assert!(reason.ends_with("(line 5)"), "{reason}");
    let unix = "import sys\nsys.meta_path[:] = [f for f in sys.meta_path if getattr(f, '__name__', '') != '_Guard']\nimport _socket\n\
                def main():\n    _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)\n    return {}\n";
    denied(run(&p, unix).await, "Operation not permitted");
}

#[tokio::test]
async fn processes_cannot_be_started_or_signalled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(p) = start(dir.path(), 1, vec![]) else { return };
    denied(run(&p, "import os\ndef main():\n    while True:\n        os.fork()\n").await, "os.fork() (line 4)");
    denied(run(&p, "import posix\ndef main():\n    while True:\n        posix.fork()\n").await, "Operation not permitted");
    denied(run(&p, "import os\ndef main():\n    return {'r': os.system('id')}\n").await, "os.system()");
    denied(run(&p, "import subprocess\ndef main():\n    return {}\n").await, "import of module 'subprocess'");
    denied(run(&p, "import os\ndef main():\n    os.execv('/bin/sh', ['sh', '-c', 'id'])\n").await, "os.execv()");
    // Without the guard: exec of anything but the interpreter is refused,
    // and system() starts nothing.
    denied(run(&p, "import posix\ndef main():\n    posix.execv('/bin/sh', ['sh', '-c', 'id'])\n").await, "Permission denied");
    let system = run(
        &p,
        "import posix, os\ndef main():\n    r = posix.system('echo pwned > pwned')\n    return {'r': r, 'made': os.path.exists('pwned')}\n",
    )
    .await;
    let system = system.expect("system() returns a status");
    assert_ne!(system.get("r"), Some(&json!(0)), "{system:?}");
    assert_eq!(system.get("made"), Some(&json!(false)));
    // Signals to the daemon (its parent) fail; it is still here to see it.
    denied(run(&p, "import posix, os\ndef main():\n    posix.kill(os.getppid(), 9)\n").await, "Operation not permitted");
    denied(run(&p, "import multiprocessing\ndef main():\n    return {}\n").await, "import of module 'multiprocessing'");
}

#[tokio::test]
async fn ctypes_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(p) = start(dir.path(), 1, vec![]) else { return };
    assert_eq!(
        run(&p, "import ctypes\ndef main():\n    return {}\n").await,
        Err(SandboxError::Denied("import of module 'ctypes' (line 1)".into()))
    );
    assert_eq!(
        run(&p, "def main():\n    import ctypes.util\n    return {}\n").await,
        Err(SandboxError::Denied("import of module 'ctypes' (line 2)".into()))
    );
}

#[tokio::test]
async fn descriptors_the_daemon_left_inheritable_do_not_reach_the_code() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let secrets = tempfile::tempdir().expect("tempdir");
    let secret = secrets.path().join("key.pem");
    std::fs::write(&secret, "the-secret-value").expect("write");
    // Spawned per call, so the process starts while the descriptor is open.
    let Some(p) = start(dir.path(), 0, vec![secret.clone()]) else { return };
    // Opened without O_CLOEXEC, as a C library's fopen(path, "r") does.
    let path = std::ffi::CString::new(secret.as_os_str().as_bytes()).expect("path");
    // SAFETY: a valid NUL-terminated path; the descriptor is closed below.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY) };
    assert!(fd >= 0, "open: {}", std::io::Error::last_os_error());
    let code = "import os\ndef main():\n    found = []\n    for fd in range(3, 1024):\n        try:\n            os.lseek(fd, 0, 0)\n\
                \x20           found.append(os.read(fd, 100).decode('utf-8', 'replace'))\n        except OSError:\n            pass\n\
                \x20   return {'found': found}\n";
    let out = run(&p, code).await;
    // SAFETY: the descriptor opened above.
    unsafe { libc::close(fd) };
    let out = out.expect("the scan runs");
    assert!(!format!("{out:?}").contains("the-secret-value"), "the code read an inherited descriptor: {out:?}");
}

/// The pid of the run's process, found by its cwd under `scratch`.
fn sandboxed_pid(scratch: &Path) -> Option<u32> {
    let me = std::process::id().to_string();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let ppid = stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().nth(1).unwrap_or("").to_owned());
        if ppid.as_deref() == Some(me.as_str()) && std::fs::read_link(entry.path().join("cwd")).is_ok_and(|cwd| cwd.starts_with(scratch)) {
            return Some(pid);
        }
    }
    None
}

#[tokio::test]
async fn an_infinite_loop_times_out_and_its_process_is_gone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(p) = start(dir.path(), 0, vec![]) else { return };
    let p = std::sync::Arc::new(p);
    let limits = RunLimits { timeout: Duration::from_secs(1), ..limits() };
    let started = Instant::now();
    let task = {
        let (p, limits) = (p.clone(), limits.clone());
        tokio::spawn(async move { p.run("def main():\n    while True:\n        pass\n", &Map::new(), &limits).await })
    };
    let scratch = std::fs::canonicalize(dir.path().join("code-scratch")).expect("scratch");
    let mut pid = None;
    while pid.is_none() && started.elapsed() < Duration::from_millis(900) {
        pid = sandboxed_pid(&scratch);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = task.await.expect("task");
    let took = started.elapsed();
    assert_eq!(out, Err(SandboxError::Timeout(Duration::from_secs(1))));
    assert!(took < Duration::from_secs(2), "timed out after {took:?}");
    let pid = pid.expect("the sandboxed process was seen running");
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "process {pid} survived (or is an unreaped zombie)");
    assert_eq!(std::fs::read_dir(&scratch).expect("scratch").count(), 0, "its scratch directory is removed");
    // The sandbox still works.
    assert_eq!(run(&p, "def main():\n    return {'a': 1}\n").await, Ok(inputs(json!({"a": 1}))));
}

#[tokio::test]
async fn waiting_processes_are_first_for_the_oom_killer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(_p) = start(dir.path(), 1, vec![]) else { return };
    let scratch = std::fs::canonicalize(dir.path().join("code-scratch")).expect("scratch");
    let started = Instant::now();
    let mut pid = None;
    while pid.is_none() && started.elapsed() < Duration::from_secs(5) {
        pid = sandboxed_pid(&scratch);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = pid.expect("the pool's process is running");
    let adj = std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj")).expect("oom_score_adj");
    assert_eq!(adj.trim(), "1000");
}

#[tokio::test]
async fn two_gigabytes_exceed_the_memory_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(p) = start(dir.path(), 1, vec![]) else { return };
    assert_eq!(
        run(&p, "def main():\n    b = bytearray(2 * 1024**3)\n    return {'n': len(b)}\n").await,
        Err(SandboxError::Memory(256 << 20))
    );
    assert_eq!(
        run(&p, "def main():\n    l = []\n    while True:\n        l.append('x' * 1024 * 1024)\n").await,
        Err(SandboxError::Memory(256 << 20))
    );
    // The limit cannot be lifted from inside.
    let lift = "import resource\ndef main():\n    resource.setrlimit(resource.RLIMIT_AS, (-1, -1))\n    return {}\n";
    assert_eq!(run(&p, lift).await, Err(SandboxError::Code("ValueError: not allowed to raise maximum limit (line 3)".into())));
}

#[tokio::test]
async fn files_are_writable_in_the_scratch_dir_only_and_it_is_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let outside = tempfile::tempdir().expect("tempdir");
    let Some(p) = start(dir.path(), 1, vec![]) else { return };
    let code = "import os\ndef main():\n    with open('out.txt', 'w') as f:\n        f.write('hello')\n    os.mkdir('d')\n\
                \x20   return {'cwd': os.getcwd(), 'back': open('out.txt').read(), 'ls': sorted(os.listdir('.'))}\n";
    let out = run(&p, code).await.expect("writes in the scratch dir");
    assert_eq!(out.get("back"), Some(&json!("hello")));
    assert_eq!(out.get("ls"), Some(&json!(["d", "out.txt"])));
    let cwd = PathBuf::from(out.get("cwd").and_then(Value::as_str).expect("cwd"));
    assert!(cwd.starts_with(std::fs::canonicalize(dir.path()).expect("canon")), "{cwd:?}");
    assert!(!cwd.exists(), "the run's scratch dir {cwd:?} is removed after the run");
    let target = outside.path().join("written.txt");
    let code = format!("def main():\n    open({:?}, 'w').write('x')\n    return {{}}\n", target.display().to_string());
    denied(run(&p, &code).await, "Permission denied");
    assert!(!target.exists());
    denied(run(&p, "def main():\n    open('/tmp/edgeai-sandbox-escape', 'w').write('x')\n    return {}\n").await, "Permission denied");
    // No capability survives (as root, CAP_DAC_OVERRIDE would read this).
    let locked =
        "import os\ndef main():\n    open('locked', 'w').write('x')\n    os.chmod('locked', 0)\n    return {'r': open('locked').read()}\n";
    denied(run(&p, locked).await, "Permission denied: 'locked' (line 5)");
    // The parent scratch directory (other runs' dirs) is not listable.
    let code =
        format!("import os\ndef main():\n    return {{'l': os.listdir({:?})}}\n", cwd.parent().expect("parent").display().to_string());
    denied(run(&p, &code).await, "Permission denied");
}

#[tokio::test]
async fn huge_outputs_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(p) = start(dir.path(), 1, vec![]) else { return };
    assert_eq!(run(&p, "def main():\n    return {'a': 'x' * 5_000_000}\n").await, Err(SandboxError::OutputTooLarge(1 << 20)));
    // Written straight to every descriptor the reply could be on: the
    // parent's own cap stops it.
    let raw = "import os\ndef main():\n    blob = b'x' * (8 << 20)\n    for fd in range(3, 12):\n        try:\n            os.write(fd, blob)\n        except OSError:\n            pass\n    return {}\n";
    let out = run(&p, raw).await;
    assert_eq!(out, Err(SandboxError::OutputTooLarge(1 << 20)));
}

#[tokio::test]
async fn prints_do_not_corrupt_the_result() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(p) = start(dir.path(), 1, vec![]) else { return };
    let code = "import sys\ndef main():\n    for i in range(20000):\n        print('{\"ok\": {\"forged\": 1}}', i)\n    sys.stdout.write('noise')\n    return {'real': True}\n";
    assert_eq!(run(&p, code).await, Ok(inputs(json!({"real": true}))));
}

#[tokio::test]
async fn each_run_is_a_fresh_process_and_failures_do_not_stop_later_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(p) = start(dir.path(), 1, vec![]) else { return };
    let mark = "import json, os\ndef main():\n    seen = hasattr(json, 'marker')\n    json.marker = 1\n    return {'seen': seen, 'pid': os.getpid()}\n";
    let first = run(&p, mark).await.expect("first");
    assert_eq!(
        run(&p, "def main():\n    raise RuntimeError('boom')\n").await,
        Err(SandboxError::Code("RuntimeError: boom (line 2)".into()))
    );
    assert!(matches!(run(&p, "def main():\n    bytearray(2 * 1024**3)\n").await, Err(SandboxError::Memory(_))));
    let second = run(&p, mark).await.expect("second");
    assert_eq!(second.get("seen"), Some(&json!(false)), "state leaked from one run to the next");
    assert_ne!(first.get("pid"), second.get("pid"));
}

#[tokio::test]
async fn concurrent_runs_all_get_their_own_result() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(p) = start(dir.path(), 2, vec![]) else { return };
    let p = std::sync::Arc::new(p);
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let p = p.clone();
            tokio::spawn(async move {
                p.run("def main(i: int) -> dict:\n    return {'sq': i * i}\n", &inputs(json!({"i": i})), &limits()).await
            })
        })
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        assert_eq!(t.await.expect("task"), Ok(inputs(json!({"sq": i * i}))));
    }
}

#[tokio::test]
async fn the_standard_library_works_threads_included() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(p) = start(dir.path(), 1, vec![]) else { return };
    let code = "import json, re, math, datetime, collections, decimal, hashlib, base64, random, time, uuid, itertools, statistics, \
                zlib, gzip, csv, io, textwrap, unicodedata, urllib.parse, threading, concurrent.futures, tempfile, os, string\n\
                def main(s: str) -> dict:\n\
                \x20   with concurrent.futures.ThreadPoolExecutor(2) as ex:\n\
                \x20       squares = list(ex.map(lambda x: x * x, [1, 2, 3]))\n\
                \x20   t = threading.Thread(target=time.sleep, args=(0.01,))\n\
                \x20   t.start()\n\
                \x20   t.join()\n\
                \x20   rows = list(csv.reader(io.StringIO('a,b\\n1,2')))\n\
                \x20   return {'squares': squares, 'rows': rows, 'sha': hashlib.sha256(s.encode()).hexdigest()[:8],\n\
                \x20           'mean': statistics.mean([1, 2, 3]), 'dec': str(decimal.Decimal('1.10') + decimal.Decimal('2.2')),\n\
                \x20           'q': urllib.parse.quote('a b'), 'z': len(zlib.compress(s.encode())) > 0, 'u': len(str(uuid.uuid4())),\n\
                \x20           'year': datetime.datetime.now().year > 2000, 'words': re.findall(r'\\w+', s), 'tmp': tempfile.gettempdir() != ''}\n";
    let out = p.run(code, &inputs(json!({"s": "hello world"})), &limits()).await;
    let expected = json!({"squares": [1, 4, 9], "rows": [["a", "b"], ["1", "2"]], "sha": "b94d27b9", "mean": 2, "dec": "3.30",
                          "q": "a%20b", "z": true, "u": 36, "year": true, "words": ["hello", "world"], "tmp": true});
    assert_eq!(out, Ok(inputs(expected)));
}

#[tokio::test]
async fn installed_site_packages_import() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(p) = start(dir.path(), 1, vec![]) else { return };
    let Some(module) = ["numpy", "yaml", "dateutil", "attr"].into_iter().find(|m| p.info().modules.contains(*m)) else {
        eprintln!("SKIP: no third-party module installed for {} to import", p.info().executable.display());
        return;
    };
    let code = format!("import {module}\ndef main():\n    return {{'file': {module}.__file__}}\n");
    let out = run(&p, &code).await;
    assert!(matches!(&out, Ok(m) if m.get("file").and_then(Value::as_str).is_some_and(|f| f.contains("-packages"))), "{module}: {out:?}");
}

#[test]
fn start_refuses_a_protected_path_the_code_could_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(p) = start(dir.path(), 0, vec![]) else { return };
    let readable = p.info().read_paths.iter().find(|p| p.is_dir()).expect("a readable directory").join("edgeai-store.db");
    drop(p);
    match Python::start(config(dir.path(), 0, vec![readable.clone()])) {
        Err(SandboxError::Unavailable(why)) => assert!(why.contains(&readable.display().to_string()), "{why}"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("start accepted a protected path inside {readable:?}"),
    }
}

#[test]
fn a_missing_interpreter_is_unavailable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = PythonConfig { interpreter: Some(dir.path().join("no-python3")), ..config(dir.path(), 0, vec![]) };
    assert!(matches!(Python::start(cfg), Err(SandboxError::Unavailable(why)) if why.contains("no-python3")));
}

/// Not an assertion: the per-call time, warm (from the pool) and cold.
#[tokio::test]
async fn timing_warm_and_cold() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(warm) = start(dir.path(), 2, vec![]) else { return };
    let cold_dir = tempfile::tempdir().expect("tempdir");
    let Some(cold) = start(cold_dir.path(), 0, vec![]) else { return };
    let code = "def main(a: str) -> dict:\n    return {'r': a}\n";
    let args = inputs(json!({"a": "x"}));
    for (name, p) in [("warm", &warm), ("cold", &cold)] {
        let mut times = Vec::new();
        for _ in 0..20 {
            // Let the pool refill, so "warm" measures a waiting process.
            tokio::time::sleep(Duration::from_millis(150)).await;
            let t = Instant::now();
            p.run(code, &args, &limits()).await.expect("run");
            times.push(t.elapsed());
        }
        times.sort();
        eprintln!("python {name}: p50 {:?}, p99/max {:?}", times[times.len() / 2], times[times.len() - 1]);
    }
}
