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
    fn our_own_code_is_not_built_for_avx2() {
        // The check must run on a CPU without AVX2, so the Rust code (this
        // test included) is built for the plain baseline.
        #[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
        panic!("the Rust code is built with AVX2; remove -C target-cpu from the rustflags");
    }
}
