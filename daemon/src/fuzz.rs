//! Mutation fuzzing under plain `cargo test` (stable toolchain, no extra
//! tool): owns the bounded fuzz loop that the fuzz targets share, and the
//! targets of the config reader and the DSL importer (the API body parsers'
//! targets are in `api/fuzz_tests.rs`, beside the private functions they
//! call).
//!
//! Each target starts from valid seeds and mutates them (bytes, tokens of a
//! small dictionary, splices of two seeds; for JSON also whole values), so
//! most inputs get past the first parse into the checks behind it. A target
//! must return `Ok` or its typed error for every input: a panic fails the
//! test, printing the input, the file it was saved to and the RNG seed that
//! reproduces it.
//!
//! Budget per target: `EDGEAI_FUZZ_SECS` seconds (default 3), or fewer
//! when `EDGEAI_FUZZ_ITERS` inputs (default: no limit) come first;
//! `EDGEAI_FUZZ_SEED` fixes the RNG (with ITERS, a run replays exactly).
//! `make fuzz` runs them longer.

use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

/// Strings that tend to break parsers and range checks.
const HOSTILE: &[&str] = &[
    "",
    "\"",
    "\\",
    "\\u0000",
    "\\ud800",
    "\u{0}",
    "\u{feff}",
    "é",
    "𝄞",
    "\u{202e}",
    "-1",
    "0",
    "1e999",
    "-1e999",
    "NaN",
    "inf",
    "18446744073709551616",
    "-9223372036854775809",
    "4294967296",
    "0.0000001",
    "null",
    "true",
    "[]",
    "{}",
    "\n",
    "\r\n",
    "\t",
    "{{",
    "}}",
    "{{#",
    "..",
    "/",
    "../../etc/passwd",
];

/// Runs `target` on mutants of `seeds` until the budget is spent. `dict`
/// adds format tokens to the mutator; `json` adds value-level mutations
/// (every seed must then be JSON). `target` says whether it accepted the
/// input; a target that accepts only its seeds reaches no deep code, so the
/// count is printed and at least one mutant must be accepted.
pub(crate) fn run(name: &str, seeds: &[Vec<u8>], dict: &[&str], json: bool, mut target: impl FnMut(&[u8]) -> bool) {
    assert!(!seeds.is_empty(), "fuzz target {name} has no seeds");
    let secs = env_u64("EDGEAI_FUZZ_SECS", 3);
    let iters = env_u64("EDGEAI_FUZZ_ITERS", u64::MAX);
    let seed = env_u64("EDGEAI_FUZZ_SEED", rand::random());
    let mut rng = StdRng::seed_from_u64(seed);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let mut done = 0u64;
    let mut accepted = 0u64;
    while done < iters && Instant::now() < deadline {
        let input = if done < seeds.len() as u64 { seeds[done as usize].clone() } else { mutate(&mut rng, seeds, dict, json) };
        let Ok(ok) = panic::catch_unwind(AssertUnwindSafe(|| target(&input))) else {
            let path = std::env::temp_dir().join(format!("edgeai-fuzz-{name}-{seed}-{done}.bin"));
            let saved = match std::fs::write(&path, &input) {
                Ok(()) => format!("saved to {}", path.display()),
                Err(e) => format!("not saved: {e}"),
            };
            panic!(
                "fuzz target {name} panicked on input #{done} (EDGEAI_FUZZ_SEED={seed}; {saved}):\n{:?}",
                String::from_utf8_lossy(&input)
            );
        };
        if ok && done >= seeds.len() as u64 {
            accepted += 1;
        }
        done += 1;
    }
    eprintln!(
        "fuzz target {name}: {done} inputs ({accepted} mutants accepted) in {:.1} s, no panic (EDGEAI_FUZZ_SEED={seed})",
        start.elapsed().as_secs_f64()
    );
    let mutants = done.saturating_sub(seeds.len() as u64);
    assert!(
        mutants < 1000 || accepted > 0,
        "fuzz target {name}: none of {mutants} mutants was accepted; the seeds or the mutator are broken"
    );
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v.parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number")),
        Err(_) => default,
    }
}

/// One mutant: a seed with one to eight mutations.
fn mutate(rng: &mut StdRng, seeds: &[Vec<u8>], dict: &[&str], json: bool) -> Vec<u8> {
    let seed = &seeds[rng.gen_range(0..seeds.len())];
    if json && rng.gen_bool(0.5) {
        if let Ok(mut v) = serde_json::from_slice::<Value>(seed) {
            for _ in 0..rng.gen_range(1..=3) {
                mutate_value(rng, &mut v, dict);
            }
            return serde_json::to_vec(&v).unwrap_or_default();
        }
    }
    let mut out = seed.clone();
    for _ in 0..rng.gen_range(1..=8) {
        mutate_bytes(rng, &mut out, seeds, dict);
    }
    out
}

fn token<'a>(rng: &mut StdRng, dict: &[&'a str]) -> &'a str {
    if !dict.is_empty() && rng.gen_bool(0.5) {
        dict[rng.gen_range(0..dict.len())]
    } else {
        HOSTILE[rng.gen_range(0..HOSTILE.len())]
    }
}

fn mutate_bytes(rng: &mut StdRng, out: &mut Vec<u8>, seeds: &[Vec<u8>], dict: &[&str]) {
    let len = out.len();
    let at = if len == 0 { 0 } else { rng.gen_range(0..=len) };
    match rng.gen_range(0..8) {
        0 if len > 0 => out[at.min(len - 1)] ^= 1 << rng.gen_range(0..8),
        1 if len > 0 => out[at.min(len - 1)] = rng.gen(),
        2 => out.insert(at, rng.gen()),
        3 if len > 0 => {
            let end = rng.gen_range(at..=len.min(at + 16));
            out.drain(at..end);
        }
        4 if len > 0 => {
            let end = rng.gen_range(at..=len.min(at + 64));
            let chunk = out[at..end].to_vec();
            let to = rng.gen_range(0..=len);
            out.splice(to..to, chunk);
        }
        5 => {
            let t = token(rng, dict).as_bytes().to_vec();
            out.splice(at..at, t);
        }
        6 => {
            let other = &seeds[rng.gen_range(0..seeds.len())];
            let from = rng.gen_range(0..=other.len());
            out.truncate(at);
            out.extend_from_slice(&other[from..]);
        }
        _ => out.truncate(at),
    }
}

/// Replaces, removes or adds one value somewhere in `v`.
fn mutate_value(rng: &mut StdRng, v: &mut Value, dict: &[&str]) {
    match v {
        Value::Object(m) if !m.is_empty() && rng.gen_bool(0.8) => {
            let keys: Vec<String> = m.keys().cloned().collect();
            let key = &keys[rng.gen_range(0..keys.len())];
            match rng.gen_range(0..6) {
                0 => {
                    m.remove(key);
                }
                1 => {
                    m.insert(token(rng, dict).to_owned(), random_value(rng, dict, 2));
                }
                _ => {
                    if let Some(child) = m.get_mut(key) {
                        mutate_value(rng, child, dict);
                    }
                }
            }
        }
        Value::Array(a) if !a.is_empty() && rng.gen_bool(0.8) => {
            let i = rng.gen_range(0..a.len());
            match rng.gen_range(0..5) {
                0 => {
                    a.remove(i);
                }
                1 => a.push(a[i].clone()),
                _ => mutate_value(rng, &mut a[i], dict),
            }
        }
        _ => *v = random_value(rng, dict, 2),
    }
}

fn random_value(rng: &mut StdRng, dict: &[&str], depth: u32) -> Value {
    match rng.gen_range(0..if depth == 0 { 6 } else { 8 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.gen()),
        2 => Value::from(rng.gen::<i64>() >> rng.gen_range(0..64)),
        3 => serde_json::Number::from_f64(rng.gen::<f64>() * 10f64.powi(rng.gen_range(-5..20)) - 1.0).map_or(Value::Null, Value::Number),
        4 => Value::String(token(rng, dict).repeat(rng.gen_range(1..4))),
        5 => Value::String("x".repeat(rng.gen_range(0..5000))),
        6 => Value::Array((0..rng.gen_range(0..4)).map(|_| random_value(rng, dict, depth - 1)).collect()),
        _ => Value::Object((0..rng.gen_range(0..4)).map(|_| (token(rng, dict).to_owned(), random_value(rng, dict, depth - 1))).collect()),
    }
}

/// The seeds in `dir` (from the repository's root) whose name ends in
/// `.ext`: `configs/*.toml`, the DSL fixtures, the sample request bodies.
pub(crate) fn files(dir: &str, ext: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(dir);
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("dir entry").path();
        if path.extension().is_some_and(|e| e == ext) {
            out.push(std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())));
        }
    }
    assert!(!out.is_empty(), "no *.{ext} seeds in {}", dir.display());
    out
}

#[cfg(test)]
mod tests {
    use super::{files, run};
    use crate::config::{load_text, ConfigError};
    use crate::engine::workflow::dsl::{import, ImportOptions};
    use crate::fuzzing::{config_text, dsl_text};

    /// The loop itself: a panicking target fails with the input, whatever
    /// byte the mutator had to invent for it, and saves it.
    #[test]
    fn fuzz_loop_reports_a_panic() {
        let caught = std::panic::catch_unwind(|| {
            run("canary", &[b"{}".to_vec()], &[], false, |bytes| {
                assert!(!bytes.contains(&b'!'), "found the canary");
                true
            })
        })
        .expect_err("the mutator must find the canary");
        let message = caught.downcast_ref::<String>().expect("a formatted panic message");
        assert!(message.contains("fuzz target canary panicked on input"), "{message}");
        let path = message.split("saved to ").nth(1).and_then(|rest| rest.split("):").next()).expect("the input was saved");
        let saved = std::fs::read(path).expect("the saved input");
        std::fs::remove_file(path).expect("remove the saved input");
        assert!(saved.contains(&b'!'), "the saved input is the crashing one: {saved:?}");
    }

    const TOML_DICT: &[&str] = &[
        "[server]\n",
        "[model]\n",
        "[limits]\n",
        "[[apps]]\n",
        "[upstream]\n",
        "[model_map]\n",
        "[cache]\n",
        "[dev]\n",
        "= ",
        "=\"\"\n",
        "= 0\n",
        "= -1\n",
        "= true\n",
        "= []\n",
        "= {}\n",
        "= 1979-05-27T07:32:00Z\n",
        "\"\"\"",
        "'''",
        "listen",
        "socket_mode",
        "mode = \"chat\"\n",
        "id = \"a\"\n",
        "api_key_file = \"/dev/null\"\n",
    ];

    #[test]
    fn fuzz_config_reader() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("edgeai.toml");
        let mut seeds = files("configs", "toml");
        seeds.push(b"[[apps]]\nid = \"demo\"\nname = \"Demo\"\nmode = \"chat\"\n".to_vec());
        run("config_reader", &seeds, TOML_DICT, false, |bytes| config_text(&path, bytes));
    }

    /// Deeper than any parser here should recurse (a stack overflow would
    /// abort the test binary): mutation does not build such inputs.
    const DEEP: usize = 5000;

    /// Aliases that expand to 10^9 nodes ("billion laughs").
    fn laughs() -> String {
        let mut doc = String::from("kind: app\nversion: 0.1.5\nl0: &l0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..=9 {
            let prev = format!("*l{}", i - 1);
            doc += &format!("l{i}: &l{i} [{}]\n", [prev.as_str(); 10].join(", "));
        }
        doc + "app: *l9\n"
    }

    const YAML_DICT: &[&str] = &[
        "kind: app\n",
        "version: 0.1.5\n",
        "app:\n",
        "  mode: workflow\n",
        "  mode: advanced-chat\n",
        "workflow:\n",
        "  graph:\n",
        "    nodes:\n",
        "    edges:\n",
        "- ",
        ": ",
        "&a ",
        "*a",
        "!!binary ",
        "<<: *a\n",
        "---\n",
        "...\n",
        "{{#",
        "#}}",
        "sys.query",
        "type: llm\n",
        "type: code\n",
        "type: if-else\n",
        "type: iteration\n",
        "type: loop\n",
        "id: '1'\n",
        "source: '1'\n",
        "target: '2'\n",
        "variable_selector:\n",
        "value_selector: [a, b]\n",
        "dataset_ids: [x]\n",
    ];

    #[test]
    fn fuzz_dsl_importer() {
        let mut seeds = files("tests/fixtures/dsl", "yml");
        seeds.extend(files("configs", "yml"));
        let opts = ImportOptions::default();
        run("dsl_importer", &seeds, YAML_DICT, false, |bytes| dsl_text(bytes, &opts));
    }

    /// What the mutator never builds: nesting deep enough to overflow a
    /// recursive parser's stack, and aliases that expand to 10^9 nodes. Both
    /// must be refused with an error, quickly.
    #[test]
    fn fuzz_nesting_and_alias_bombs_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("edgeai.toml");
        for toml in
            [format!("a = {}{}\n", "[".repeat(DEEP), "]".repeat(DEEP)), format!("a = {}1{}\n", "{b = ".repeat(DEEP), "}".repeat(DEEP))]
        {
            assert!(matches!(load_text(&path, &toml), Err(ConfigError::Parse { .. })), "{}", &toml[..20]);
        }
        let opts = ImportOptions::default();
        for yaml in [format!("kind: app\napp: {}{}\n", "[".repeat(DEEP), "]".repeat(DEEP)), laughs()] {
            assert!(import(&yaml, &opts).is_err(), "{}", &yaml[..20]);
        }
    }
}
