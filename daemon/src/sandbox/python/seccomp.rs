//! seccomp: the system-call allowlist of a sandboxed python process, compiled
//! once (in the parent) to a BPF program that `confine` installs last, just
//! before exec. Anything not listed fails with EPERM, so Python raises a
//! plain `PermissionError`; `clone3` fails with ENOSYS so glibc falls back to
//! `clone`, which is allowed only with `CLONE_THREAD` (threads, never a new
//! process). x86_64 and aarch64 are supported (their tables differ: aarch64
//! has only the `*at` forms).

use std::collections::BTreeMap;

use seccompiler::{BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch};

/// System calls allowed without conditions, by family (see the module
/// header of `python` for why each family is there).
const ALLOWED: &[libc::c_long] = &[
    // Files, within what landlock lets the process see.
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_lseek,
    libc::SYS_openat,
    libc::SYS_close,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_statfs,
    libc::SYS_fstatfs,
    libc::SYS_getdents64,
    libc::SYS_readlinkat,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_getcwd,
    libc::SYS_chdir,
    libc::SYS_fchdir,
    libc::SYS_mkdirat,
    libc::SYS_unlinkat,
    libc::SYS_renameat2,
    libc::SYS_ftruncate,
    libc::SYS_truncate,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_fchmod,
    libc::SYS_fchmodat,
    libc::SYS_utimensat,
    libc::SYS_flock,
    libc::SYS_fcntl,
    libc::SYS_dup,
    libc::SYS_dup3,
    libc::SYS_pipe2,
    libc::SYS_sendfile,
    libc::SYS_copy_file_range,
    libc::SYS_fadvise64,
    libc::SYS_umask,
    libc::SYS_ppoll,
    libc::SYS_pselect6,
    // Memory.
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    // This process and its threads.
    libc::SYS_execve,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_set_tid_address,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_futex,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_getppid,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_getgroups,
    libc::SYS_getresuid,
    libc::SYS_getresgid,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_getrusage,
    libc::SYS_times,
    libc::SYS_uname,
    libc::SYS_sysinfo,
    libc::SYS_restart_syscall,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sigaltstack,
    libc::SYS_getitimer,
    libc::SYS_setitimer,
    // Time and randomness.
    libc::SYS_clock_gettime,
    libc::SYS_clock_getres,
    libc::SYS_gettimeofday,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_getrandom,
];

/// The legacy forms x86_64 still has (glibc and the loader use some).
#[cfg(target_arch = "x86_64")]
const ALLOWED_ARCH: &[libc::c_long] = &[
    libc::SYS_open,
    libc::SYS_stat,
    libc::SYS_lstat,
    libc::SYS_access,
    libc::SYS_readlink,
    libc::SYS_mkdir,
    libc::SYS_rmdir,
    libc::SYS_unlink,
    libc::SYS_rename,
    libc::SYS_renameat,
    libc::SYS_dup2,
    libc::SYS_pipe,
    libc::SYS_poll,
    libc::SYS_select,
    libc::SYS_time,
    libc::SYS_getrlimit,
    libc::SYS_arch_prctl,
    libc::SYS_alarm,
    libc::SYS_chmod,
];

#[cfg(target_arch = "aarch64")]
const ALLOWED_ARCH: &[libc::c_long] = &[];

#[cfg(target_arch = "x86_64")]
const ARCH: TargetArch = TargetArch::x86_64;
#[cfg(target_arch = "aarch64")]
const ARCH: TargetArch = TargetArch::aarch64;

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;

/// `ioctl` requests Python makes on its own descriptors (is it a terminal,
/// close-on-exec, non-blocking, bytes ready, window size); no other request
/// (TIOCSTI and the like) is allowed. (The casts are not useless on musl,
/// where the request type is `c_int`.)
#[allow(clippy::unnecessary_cast)]
const IOCTLS: &[u64] = &[
    libc::TCGETS as u64,
    libc::FIOCLEX as u64,
    libc::FIONCLEX as u64,
    libc::FIONBIO as u64,
    libc::FIONREAD as u64,
    libc::TIOCGWINSZ as u64,
];

fn condition(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, seccompiler::BackendError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Qword, op, value)
}

/// The filter as a BPF program for this host's architecture.
pub(super) fn program() -> Result<BpfProgram, String> {
    let build = || -> Result<BpfProgram, seccompiler::BackendError> {
        let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
        for &nr in ALLOWED.iter().chain(ALLOWED_ARCH) {
            rules.insert(nr, Vec::new());
        }
        // Threads only: CLONE_THREAD set (the kernel then requires CLONE_VM
        // and CLONE_SIGHAND); fork, vfork and a clone without it fail.
        let thread = libc::CLONE_THREAD as u64;
        rules.insert(libc::SYS_clone, vec![SeccompRule::new(vec![condition(0, SeccompCmpOp::MaskedEq(thread), thread)?])?]);
        // Reading limits (Python asks for RLIMIT_STACK); setting them fails.
        rules.insert(libc::SYS_prlimit64, vec![SeccompRule::new(vec![condition(2, SeccompCmpOp::Eq, 0)?])?]);
        let ioctls =
            IOCTLS.iter().map(|&req| SeccompRule::new(vec![condition(1, SeccompCmpOp::Eq, req)?])).collect::<Result<Vec<_>, _>>()?;
        rules.insert(libc::SYS_ioctl, ioctls);
        let filter = SeccompFilter::new(rules, SeccompAction::Errno(libc::EPERM as u32), SeccompAction::Allow, ARCH)?;
        filter.try_into()
    };
    let allowlist = build().map_err(|e| format!("compiling the seccomp filter: {e}"))?;
    Ok([clone3_prefix(), allowlist].concat())
}

/// Checks the architecture (another one is killed), then answers `clone3`
/// with ENOSYS; the allowlist follows and repeats the architecture check.
/// Nothing after this prefix jumps back into it.
fn clone3_prefix() -> BpfProgram {
    use seccompiler::sock_filter;
    const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    // Offsets in struct seccomp_data: nr at 0, arch at 4.
    vec![
        sock_filter { code: LD_W_ABS, jt: 0, jf: 0, k: 4 },
        sock_filter { code: JEQ_K, jt: 1, jf: 0, k: AUDIT_ARCH },
        sock_filter { code: RET_K, jt: 0, jf: 0, k: libc::SECCOMP_RET_KILL_PROCESS },
        sock_filter { code: LD_W_ABS, jt: 0, jf: 0, k: 0 },
        sock_filter { code: JEQ_K, jt: 0, jf: 1, k: libc::SYS_clone3 as u32 },
        sock_filter { code: RET_K, jt: 0, jf: 0, k: libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32 },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_compiles_and_starts_with_the_clone3_prefix() {
        let program = program().expect("compiles");
        assert_eq!(&program[..6], &clone3_prefix()[..]);
        assert!(program.len() > ALLOWED.len(), "every allowed call has its test in the program");
        assert!(program.len() <= 4096, "BPF programs are at most 4096 instructions");
    }

    #[test]
    fn no_call_that_makes_processes_or_sockets_is_listed() {
        for forbidden in [
            libc::SYS_socket,
            libc::SYS_socketpair,
            libc::SYS_ptrace,
            libc::SYS_mount,
            libc::SYS_unshare,
            libc::SYS_setns,
            libc::SYS_bpf,
            libc::SYS_keyctl,
            libc::SYS_kill,
            libc::SYS_tgkill,
            libc::SYS_prctl,
            libc::SYS_memfd_create,
        ] {
            assert!(!ALLOWED.contains(&forbidden) && !ALLOWED_ARCH.contains(&forbidden), "syscall {forbidden} must not be allowed");
        }
    }
}
