//! Which unix socket `edgeaictl` talks to when `--socket`/`EDGEAI_SOCKET` is
//! not given: the dev daemon's socket inside a source checkout, else none (the caller
//! then uses the system daemon's).
//!
//! Owns: the discovery rule. Must not: connect, or read the process's current
//! directory itself (the caller passes it, so tests need no chdir).

use std::path::{Path, PathBuf};

/// Socket of the installed daemon (`RuntimeDirectory=edgeai`).
pub const SYSTEM_SOCKET: &str = "/run/edgeai/edgeai.sock";

/// `<checkout>/run/edgeai.sock` for the nearest of `start` and its ancestors
/// holding both `Cargo.toml` and `configs/dev.toml` (a source checkout);
/// `None` outside one (the caller then uses [`SYSTEM_SOCKET`]).
pub fn checkout_socket(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .find(|dir| dir.join("Cargo.toml").is_file() && dir.join("configs").join("dev.toml").is_file())
        .map(|checkout| checkout.join("run").join("edgeai.sock"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap (style.md)
mod tests {
    use super::*;
    use std::fs;

    fn checkout(root: &Path) {
        fs::write(root.join("Cargo.toml"), "[workspace]\n").unwrap();
        fs::create_dir_all(root.join("configs")).unwrap();
        fs::write(root.join("configs/dev.toml"), "").unwrap();
    }

    #[test]
    fn checkout_root_itself() {
        let dir = tempfile::tempdir().unwrap();
        checkout(dir.path());
        assert_eq!(checkout_socket(dir.path()), Some(dir.path().join("run/edgeai.sock")));
    }

    #[test]
    fn nested_directory_finds_the_checkout_above() {
        let dir = tempfile::tempdir().unwrap();
        checkout(dir.path());
        let deep = dir.path().join("ctl/src/deeper");
        fs::create_dir_all(&deep).unwrap();
        // A member crate's own Cargo.toml without configs/dev.toml is skipped.
        fs::write(dir.path().join("ctl/Cargo.toml"), "[package]\n").unwrap();
        assert_eq!(checkout_socket(&deep), Some(dir.path().join("run/edgeai.sock")));
    }

    #[test]
    fn cargo_toml_alone_is_not_a_checkout() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("Cargo.toml"), "").unwrap();
        assert_eq!(checkout_socket(dir.path()), None);
    }

    #[test]
    fn dev_toml_as_directory_does_not_count() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("Cargo.toml"), "").unwrap();
        fs::create_dir_all(dir.path().join("configs/dev.toml")).unwrap();
        assert_eq!(checkout_socket(dir.path()), None);
    }

    #[test]
    fn missing_start_directory_falls_back_to_the_system_socket() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(checkout_socket(&dir.path().join("gone")), None);
    }
}
