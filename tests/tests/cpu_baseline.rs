//! The CPU check on CPUs with and without AVX2 (ARCHITECTURE.md, "CPU
//! features"): the real `edgeaid` runs under `qemu-x86_64` (Debian
//! `qemu-user`, installed by scripts/setup.sh) with an emulated CPU model.
//! On a Nehalem (SSE4.2, no AVX) it must refuse with exit 79 naming the
//! missing features instead of dying of SIGILL before `main` (C++ static
//! initialisers of llama.cpp run first, so they must be baseline code too);
//! on a Haswell (AVX2) it passes. The disassembly shows why: our Rust code
//! and the static initialisers use no AVX/BMI2 instruction, while ggml's
//! vec_dot kernels do use AVX2's ymm registers, and ggml says `AVX2 = 1`.

#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use edgeai_tests::{paths, DaemonBuilder};

fn x86_64(test: &str) -> bool {
    if cfg!(target_arch = "x86_64") {
        return true;
    }
    eprintln!("SKIP {test}: the CPU baseline check is about x86-64 builds");
    false
}

/// `edgeaid --check-config --config <a valid config>` under an emulated CPU.
fn check_config_on(qemu: &Path, cpu: &str, b: &mut DaemonBuilder) -> Output {
    let config = b.write_config();
    Command::new(qemu).args(["-cpu", cpu]).arg(paths::edgeaid()).arg("--check-config").arg("--config").arg(&config).output().unwrap()
}

/// A control for the emulator: a program that executes one AVX2 instruction
/// must die of SIGILL on the emulated Nehalem, or exit 79 proves nothing.
fn avx2_probe_dies_on_nehalem(qemu: &Path, cc: &Path, dir: &Path) {
    let src = dir.join("avx2.c");
    std::fs::write(&src, "int main(void) { __asm__ volatile(\"vpxor %%ymm0, %%ymm0, %%ymm0\" ::: \"xmm0\"); return 0; }\n").unwrap();
    let probe = dir.join("avx2");
    let built = Command::new(cc).arg("-O0").arg("-o").arg(&probe).arg(&src).output().unwrap();
    assert!(built.status.success(), "cc failed: {}", String::from_utf8_lossy(&built.stderr));
    let out = Command::new(qemu).args(["-cpu", "Nehalem"]).arg(&probe).output().unwrap();
    assert_eq!(out.status.signal(), Some(sigill()), "an AVX2 instruction must SIGILL on an emulated Nehalem: {out:?}");
    let out = Command::new(qemu).args(["-cpu", "Haswell"]).arg(&probe).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "an AVX2 instruction must run on an emulated Haswell: {out:?}");
}

fn sigill() -> i32 {
    nix::sys::signal::Signal::SIGILL as i32
}

#[test]
fn without_avx2_edgeaid_exits_79_naming_the_missing_features() {
    const TEST: &str = "without_avx2_edgeaid_exits_79_naming_the_missing_features";
    if !x86_64(TEST) {
        return;
    }
    let (Some(qemu), Some(cc)) = (paths::tool("qemu-x86_64", "qemu-user", TEST), paths::tool("cc", "gcc", TEST)) else {
        return;
    };
    let mut b = DaemonBuilder::new();
    avx2_probe_dies_on_nehalem(&qemu, &cc, b.dir());

    let out = check_config_on(&qemu, "Nehalem", &mut b);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.signal(), Some(sigill()), "edgeaid died of SIGILL before its CPU check: {out:?}");
    assert_eq!(out.status.code(), Some(79), "{out:?}");
    // Nehalem has SSE4.2 but none of the AVX2 set; the message names each.
    assert!(stderr.contains("this CPU lacks avx, avx2, fma, f16c, bmi2 which this build requires"), "{stderr}");
    assert!(stderr.contains("x86_64 baseline: avx avx2 bmi2 f16c fma sse4.2"), "{stderr}");
    assert!(out.stdout.is_empty(), "nothing else ran: {}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn with_avx2_edgeaid_passes_and_ggml_has_its_avx2_kernels() {
    const TEST: &str = "with_avx2_edgeaid_passes_and_ggml_has_its_avx2_kernels";
    if !x86_64(TEST) {
        return;
    }
    let Some(qemu) = paths::tool("qemu-x86_64", "qemu-user", TEST) else {
        return;
    };
    let mut b = DaemonBuilder::new();
    let out = check_config_on(&qemu, "Haswell", &mut b);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(stdout.contains("configuration is valid"), "{stdout}");
    // ggml's own system info, asked only after the check passed.
    let ggml = stdout.lines().find(|l| l.starts_with("llama.cpp: CPU : ")).unwrap_or_else(|| panic!("no ggml line: {stdout}"));
    for feature in ["AVX = 1", "AVX2 = 1", "FMA = 1", "F16C = 1", "BMI2 = 1"] {
        assert!(ggml.contains(feature), "{feature} missing from {ggml}");
    }
}

/// Functions of `edgeaid` in `objdump -d` order: (symbol, instructions).
fn disassembly(binary: &Path, mut keep: impl FnMut(&str) -> bool) -> Vec<(String, Vec<String>)> {
    let mut child = Command::new("objdump").args(["-d", "--no-show-raw-insn"]).arg(binary).stdout(Stdio::piped()).spawn().unwrap();
    let mut funcs: Vec<(String, Vec<String>)> = Vec::new();
    let mut current = false;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        // "0000000000bb4d40 <ggml_vec_dot_q4_1_q8_1>:"
        if let Some(sym) = line.strip_suffix(">:").and_then(|l| l.split_once(" <")).map(|(_, s)| s) {
            current = keep(sym);
            if current {
                funcs.push((sym.to_owned(), Vec::new()));
            }
        } else if current {
            // "  bb4d46:\tvxorps %xmm4,%xmm4,%xmm4"
            if let (Some((_, insn)), Some(f)) = (line.split_once('\t'), funcs.last_mut()) {
                f.1.push(insn.trim().to_owned());
            }
        }
    }
    assert!(child.wait().unwrap().success(), "objdump failed");
    funcs
}

/// An instruction that needs more than the x86-64 baseline plus SSE4.2:
/// VEX/EVEX-encoded (AVX, AVX2, FMA, F16C: mnemonics starting with `v`),
/// ymm/zmm registers, or BMI2.
fn needs_extended_baseline(insn: &str) -> bool {
    let mnemonic = insn.split_whitespace().next().unwrap_or("");
    mnemonic.starts_with('v')
        || insn.contains("%ymm")
        || insn.contains("%zmm")
        || matches!(mnemonic, "shlx" | "shrx" | "sarx" | "rorx" | "mulx" | "pdep" | "pext" | "bzhi")
}

#[test]
fn our_code_is_baseline_while_ggml_kernels_use_avx2() {
    const TEST: &str = "our_code_is_baseline_while_ggml_kernels_use_avx2";
    if !x86_64(TEST) {
        return;
    }
    if paths::tool("objdump", "binutils", TEST).is_none() {
        return;
    }
    // Our crate's functions (legacy mangling `_ZN7edgeaid…`, the lib and the
    // bin), the C++ static initialisers (they run before main, so before the
    // check), and one of ggml's AVX2 kernels for the model we ship.
    const KERNEL: &str = "ggml_vec_dot_q4_1_q8_1";
    let funcs = disassembly(&paths::edgeaid(), |s| s.starts_with("_ZN7edgeaid") || s.starts_with("_GLOBAL__sub_I_") || s == KERNEL);

    let ours: Vec<_> = funcs.iter().filter(|(s, _)| s.starts_with("_ZN7edgeaid")).collect();
    assert!(ours.len() > 100, "only {} edgeaid functions found: is the binary stripped?", ours.len());
    assert!(ours.iter().any(|(s, _)| s.contains("3cpu7missing")), "cpu::missing not among the functions checked");
    let statics: Vec<_> = funcs.iter().filter(|(s, _)| s.starts_with("_GLOBAL__sub_I_")).collect();
    assert!(!statics.is_empty(), "no C++ static initialisers found (llama.cpp has several)");
    // The one exception: kernels built with `#[target_feature(enable =
    // "avx2,fma")]` and called only after `is_x86_feature_detected!` (the
    // vector index's scan). They are named `*_avx2` in `knowledge::vectors`;
    // the dispatcher must exist and stay baseline.
    let dispatched = |sym: &str| sym.contains("9knowledge7vectors") && sym.contains("_avx2");
    assert!(ours.iter().any(|(s, _)| dispatched(s)), "the vector index's AVX2 scan is not in the binary (renamed?)");
    for (sym, insns) in ours.iter().filter(|(s, _)| !dispatched(s)).chain(statics.iter()) {
        if let Some(insn) = insns.iter().find(|i| needs_extended_baseline(i)) {
            panic!("{sym} runs before or in the CPU check but uses `{insn}`: it must be built for the plain x86-64 baseline");
        }
    }

    let (_, kernel) = funcs.iter().find(|(s, _)| s == KERNEL).unwrap_or_else(|| panic!("{KERNEL} not in the binary"));
    let ymm = kernel.iter().filter(|i| i.contains("%ymm")).count();
    assert!(ymm > 0, "{KERNEL} uses no ymm register: ggml's CPU backend was not built with AVX2");
}
