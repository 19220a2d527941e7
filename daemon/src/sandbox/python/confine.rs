//! confine: what a sandboxed python process may do, prepared in the parent
//! (the landlock ruleset for one run's scratch directory, the rlimits) and
//! applied in the child between fork and exec by [`Confinement::apply`],
//! which only makes system calls on memory prepared before the fork (no
//! allocation, no lock).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use landlock::{
    Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr, Scope,
    ABI,
};
use seccompiler::{sock_filter, BpfProgram};

/// Descriptors a run may hold open (the interpreter needs about ten).
const NOFILE: u64 = 32;
/// Largest file a run may write in its scratch directory.
const FSIZE: u64 = 16 * 1024 * 1024;

/// The kernel's landlock ABI version (0: none).
pub(super) fn landlock_abi() -> i32 {
    // SAFETY: landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)
    // only returns the version; no memory is passed.
    let v = unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, std::ptr::null::<u8>(), 0usize, 1u32) };
    if v < 0 {
        0
    } else {
        i32::try_from(v).unwrap_or(i32::MAX)
    }
}

/// What the sandbox lets code read, and the two files it may execute.
#[derive(Debug, Clone)]
pub(super) struct ReadView {
    /// Directories and files readable (never writable).
    pub read: Vec<PathBuf>,
    /// The interpreter and its ELF loader: readable and executable.
    pub exec: Vec<PathBuf>,
}

/// Builds the landlock ruleset of one run: every access right this ABI
/// knows is handled (so denied unless granted), TCP bind/connect denied
/// (ABI 4+), signals and abstract unix sockets scoped to the run (ABI 6+).
pub(super) fn ruleset(abi: ABI, view: &ReadView, scratch: &Path) -> Result<OwnedFd, String> {
    let all = AccessFs::from_all(abi);
    let read = AccessFs::ReadFile | AccessFs::ReadDir;
    let exec = AccessFs::ReadFile | AccessFs::Execute;
    let write = read
        | AccessFs::WriteFile
        | AccessFs::RemoveDir
        | AccessFs::RemoveFile
        | AccessFs::MakeReg
        | AccessFs::MakeDir
        | (BitFlags::from(AccessFs::Truncate) & all);
    let mut ruleset = Ruleset::default().set_compatibility(CompatLevel::HardRequirement).handle_access(all).map_err(|e| e.to_string())?;
    if abi >= ABI::V4 {
        ruleset = ruleset.handle_access(AccessNet::from_all(abi)).map_err(|e| e.to_string())?;
    }
    if abi >= ABI::V6 {
        ruleset = ruleset.scope(Scope::from_all(abi)).map_err(|e| e.to_string())?;
    }
    let mut created = ruleset.create().map_err(|e| e.to_string())?;
    let rules =
        view.read.iter().map(|p| (p.as_path(), read)).chain(view.exec.iter().map(|p| (p.as_path(), exec))).chain([(scratch, write)]);
    for (path, access) in rules {
        let fd = PathFd::new(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let access = if path.is_dir() { access } else { access & AccessFs::from_file(abi) };
        created = created.add_rule(PathBeneath::new(fd, access & all)).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Option::<OwnedFd>::from(created).ok_or_else(|| "landlock made no ruleset".to_owned())
}

/// Everything `apply` needs, prepared before the fork.
pub(super) struct Confinement {
    ruleset: OwnedFd,
    filter: *const sock_filter,
    filter_len: u16,
    parent: libc::pid_t,
}

// SAFETY: the filter pointer refers to a BpfProgram the owner keeps alive
// (an `Arc` held by the pool) for as long as a Confinement exists; it is only
// read.
unsafe impl Send for Confinement {}
unsafe impl Sync for Confinement {}

impl Confinement {
    /// `filter` must outlive the returned value.
    pub(super) fn new(ruleset: OwnedFd, filter: &BpfProgram) -> Result<Confinement, String> {
        let filter_len = u16::try_from(filter.len()).map_err(|_| "the seccomp filter is too long".to_owned())?;
        // SAFETY: getpid has no preconditions.
        let parent = unsafe { libc::getpid() };
        Ok(Confinement { ruleset, filter: filter.as_ptr(), filter_len, parent })
    }

    /// Runs in the child after fork, before exec: own session and process
    /// group, killed with its parent, first for the OOM killer, no inherited
    /// descriptor but stdio, no capabilities, rlimits, no new
    /// privileges, landlock, and the seccomp filter last.
    ///
    /// # Safety
    /// Only between fork and exec (async-signal-safe calls only).
    pub(super) unsafe fn apply(&self) -> io::Result<()> {
        fn check(r: libc::c_long) -> io::Result<()> {
            if r < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        }
        // SAFETY (whole block): plain system calls on values and on memory
        // prepared before the fork; nothing allocates.
        unsafe {
            check(libc::setsid() as libc::c_long)?;
            check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) as libc::c_long)?;
            if libc::getppid() != self.parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            // Descriptors the daemon holds without O_CLOEXEC (a library's
            // fopen) must not reach the code: landlock does not cover files
            // already open. Marked close-on-exec, not closed: std's own
            // error pipe is among them.
            // First in line for the OOM killer: the runs share edgeaid's
            // cgroup, and a run, not the daemon, must die when it is full.
            // Best effort (/proc may be hidden).
            let fd = libc::open(c"/proc/self/oom_score_adj".as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd >= 0 {
                libc::write(fd, b"1000".as_ptr().cast(), 4);
                libc::close(fd);
            }
            check(libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC))?;
            for (resource, limit) in [(libc::RLIMIT_NOFILE, NOFILE), (libc::RLIMIT_FSIZE, FSIZE), (libc::RLIMIT_CORE, 0)] {
                let lim = libc::rlimit { rlim_cur: limit, rlim_max: limit };
                check(libc::setrlimit(resource, &lim) as libc::c_long)?;
            }
            // Capabilities (only a daemon run as root has any): ambient
            // cleared, bounding set emptied (EPERM without CAP_SETPCAP is
            // fine: there is nothing to drop then), then all sets zeroed so
            // exec gives none back even to uid 0.
            libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong, 0, 0, 0);
            for cap in 0..64 {
                libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0);
            }
            let header = CapHeader { version: 0x2008_0522, pid: 0 };
            let data = [CapData::default(); 2];
            check(libc::syscall(libc::SYS_capset, &header, data.as_ptr()))?;
            check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0) as libc::c_long)?;
            check(libc::syscall(libc::SYS_landlock_restrict_self, self.ruleset.as_raw_fd(), 0u32))?;
            let prog = libc::sock_fprog { len: self.filter_len, filter: self.filter as *mut libc::sock_filter };
            check(libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER as libc::c_ulong, &prog as *const libc::sock_fprog)
                as libc::c_long)?;
        }
        Ok(())
    }
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Sets a waiting process's limits for its run from the parent (the child
/// cannot change them: seccomp lets it only read limits). CPU time past
/// the soft limit gets SIGXCPU, one second more SIGKILL.
pub(super) fn set_run_limits(pid: libc::pid_t, memory_bytes: u64, cpu_secs: u64) -> io::Result<()> {
    for (resource, soft, hard) in [(libc::RLIMIT_AS, memory_bytes, memory_bytes), (libc::RLIMIT_CPU, cpu_secs, cpu_secs + 1)] {
        let lim = libc::rlimit64 { rlim_cur: soft, rlim_max: hard };
        // SAFETY: prlimit64 on a pid with a valid new limit and no old one.
        if unsafe { libc::prlimit64(pid, resource, &lim, std::ptr::null_mut()) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
