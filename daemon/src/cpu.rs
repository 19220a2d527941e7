//! The CPU features llama.cpp's CPU backend was built for, checked against
//! the CPU this runs on before anything else executes, so a gateway CPU
//! without them gets a clear message (exit 79) instead of dying of SIGILL
//! inside llama.cpp.
//!
//! Our own Rust code is built for the plain x86-64 baseline, so this check
//! itself runs on any x86-64 CPU. Only ggml's CPU backend is built for the
//! extended baseline, named by the `GGML_*` variables in .cargo/config.toml
//! (llama-cpp-sys-2 forwards them to CMake); this module reads the same
//! variables at compile time, so the check names exactly what ggml got.
//! [`ggml_system_info`] asks ggml itself what its CPU backend was built with,
//! once the check has passed.

use std::ffi::{c_char, CStr};

extern "C" {
    /// llama.cpp's one-line summary of its backends' build features
    /// (`CPU : SSE3 = 1 | ... | AVX2 = 1 | ... | OPENMP = 1 | REPACK = 1 |`).
    /// llama-cpp-2 links libllama but does not wrap this function.
    fn llama_print_system_info() -> *const c_char;
}

/// (feature name for `is_x86_feature_detected!`, the GGML_* variable that
/// turns it on in ggml's CPU backend).
#[cfg(target_arch = "x86_64")]
fn built_for() -> Vec<&'static str> {
    // option_env! must see a literal name, hence one line per feature.
    let on = |v: Option<&str>| v.is_some_and(|v| v.eq_ignore_ascii_case("on"));
    let mut v = Vec::new();
    if on(option_env!("GGML_SSE42")) {
        v.push("sse4.2");
    }
    if on(option_env!("GGML_AVX")) {
        v.push("avx");
    }
    if on(option_env!("GGML_AVX2")) {
        v.push("avx2");
    }
    if on(option_env!("GGML_FMA")) {
        v.push("fma");
    }
    if on(option_env!("GGML_F16C")) {
        v.push("f16c");
    }
    if on(option_env!("GGML_BMI2")) {
        v.push("bmi2");
    }
    v
}

#[cfg(target_arch = "x86_64")]
fn detected(feature: &str) -> bool {
    match feature {
        "sse4.2" => std::arch::is_x86_feature_detected!("sse4.2"),
        "avx" => std::arch::is_x86_feature_detected!("avx"),
        "avx2" => std::arch::is_x86_feature_detected!("avx2"),
        "fma" => std::arch::is_x86_feature_detected!("fma"),
        "f16c" => std::arch::is_x86_feature_detected!("f16c"),
        "bmi2" => std::arch::is_x86_feature_detected!("bmi2"),
        _ => false,
    }
}

/// Features the build requires, with whether this CPU has them.
pub fn required() -> Vec<(&'static str, bool)> {
    #[cfg(target_arch = "x86_64")]
    {
        built_for().into_iter().map(|f| (f, detected(f))).collect()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        Vec::new()
    }
}

/// The features this CPU lacks, if any.
pub fn missing() -> Vec<&'static str> {
    required().into_iter().filter(|(_, have)| !have).map(|(n, _)| n).collect()
}

/// "x86_64 baseline: avx avx2 bmi2 f16c fma sse4.2" or "x86_64 baseline (no extended features)".
pub fn describe() -> String {
    let mut names: Vec<&str> = required().into_iter().map(|(n, _)| n).collect();
    names.sort_unstable();
    let arch = std::env::consts::ARCH;
    if names.is_empty() {
        format!("{arch} baseline (no extended features)")
    } else {
        format!("{arch} baseline: {}", names.join(" "))
    }
}

/// ggml's own account of the features its CPU backend was compiled with,
/// e.g. `CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | ...`. `None` on
/// a CPU that lacks a required feature: the answer comes from code in ggml's
/// CPU backend, which is built for the extended baseline and may not run here.
pub fn ggml_system_info() -> Option<String> {
    if !missing().is_empty() {
        return None;
    }
    // SAFETY: takes no arguments and returns a pointer to a NUL-terminated
    // buffer inside libllama (a function-local static string) that stays
    // valid until the next call; it is copied out at once.
    let p = unsafe { llama_print_system_info() };
    if p.is_null() {
        return None;
    }
    // SAFETY: non-null and NUL-terminated (see above).
    let text = unsafe { CStr::from_ptr(p) }.to_string_lossy();
    Some(text.trim().trim_end_matches('|').trim_end().to_owned())
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_machine_runs_this_build() {
        // The test binary itself runs here, so nothing it needs is missing.
        assert!(super::missing().is_empty(), "{:?}", super::missing());
        assert!(super::describe().contains(std::env::consts::ARCH));
    }

    #[test]
    fn the_build_baseline_is_the_documented_one() {
        // .cargo/config.toml names the AVX2 baseline for ggml's CPU backend;
        // a build without it would silently fall back to SSE2 and be 4-10x slower.
        #[cfg(target_arch = "x86_64")]
        assert_eq!(super::describe(), "x86_64 baseline: avx avx2 bmi2 f16c fma sse4.2");
    }

    #[test]
    fn ggml_reports_the_avx2_kernels() {
        // ggml's CPU backend got the baseline named in .cargo/config.toml.
        #[cfg(target_arch = "x86_64")]
        {
            let info = super::ggml_system_info().expect("this machine runs this build");
            assert!(info.contains("AVX2 = 1") && info.contains("FMA = 1"), "{info}");
        }
    }

    #[test]
    // A constant by design: it fails the test run (rather than the build) of
    // a build whose rustflags turned AVX2 on.
    #[allow(clippy::assertions_on_constants)]
    fn our_own_code_is_not_built_for_avx2() {
        // The check must run on a CPU without AVX2, so the Rust code (this
        // test included) is built for the plain baseline.
        #[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
        panic!("the Rust code is built with AVX2; remove -C target-cpu from the rustflags");
    }
}
