//! The CPU features this binary was built for, checked against the CPU it
//! runs on before anything else executes, so a gateway CPU without them gets
//! a clear message instead of dying of SIGILL inside llama.cpp.

/// Features the build baseline requires (from `-C target-cpu`, see
/// .cargo/config.toml), with whether this CPU has them.
pub fn required() -> Vec<(&'static str, bool)> {
    #[allow(unused_mut)]
    let mut v: Vec<(&'static str, bool)> = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if cfg!(target_feature = "avx2") {
            v.push(("avx2", std::arch::is_x86_feature_detected!("avx2")));
        }
        if cfg!(target_feature = "fma") {
            v.push(("fma", std::arch::is_x86_feature_detected!("fma")));
        }
        if cfg!(target_feature = "f16c") {
            v.push(("f16c", std::arch::is_x86_feature_detected!("f16c")));
        }
        if cfg!(target_feature = "bmi2") {
            v.push(("bmi2", std::arch::is_x86_feature_detected!("bmi2")));
        }
        if cfg!(target_feature = "avx") {
            v.push(("avx", std::arch::is_x86_feature_detected!("avx")));
        }
    }
    v
}

/// The features this CPU lacks, if any.
pub fn missing() -> Vec<&'static str> {
    required().into_iter().filter(|(_, have)| !have).map(|(n, _)| n).collect()
}

/// "x86_64 baseline: avx avx2 bmi2 f16c fma" or "x86_64 baseline: sse2 only".
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
        assert!(super::missing().is_empty());
        assert!(super::describe().contains(std::env::consts::ARCH));
    }

    #[test]
    fn the_build_baseline_is_the_documented_one() {
        // .cargo/config.toml sets x86-64-v3; a build without it would
        // silently fall back to SSE2 and be 4-10x slower.
        #[cfg(target_arch = "x86_64")]
        assert!(super::describe().contains("avx2"), "{}", super::describe());
    }
}
