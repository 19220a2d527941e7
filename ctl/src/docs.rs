//! `edgeaictl completions SHELL` and `edgeaictl man --dir DIR`: the shell
//! completion scripts (clap_complete) and the man pages (clap_mangen) made
//! from the same clap definition as the parser, so they cannot drift.
//!
//! Owns: which scripts and pages exist and their file names. Must not: talk
//! to the daemon.

use crate::cli::{Cli, CompletionShell};
use crate::error::CtlError;
use clap::CommandFactory;
use std::path::{Path, PathBuf};

/// Prints the completion script for `shell` on stdout.
pub fn completions(shell: CompletionShell) -> Result<(), CtlError> {
    let shell = match shell {
        CompletionShell::Bash => clap_complete::Shell::Bash,
        CompletionShell::Zsh => clap_complete::Shell::Zsh,
        CompletionShell::Fish => clap_complete::Shell::Fish,
    };
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "edgeaictl", &mut script);
    crate::commands::print(&String::from_utf8_lossy(&script))
}

/// Writes `edgeaictl.1` and one page per subcommand (`edgeaictl-apps.1`,
/// `edgeaictl-apps-import.1`, ...) into `dir`, creating it; prints each
/// file's path.
pub fn man(dir: &Path) -> Result<(), CtlError> {
    std::fs::create_dir_all(dir).map_err(|source| CtlError::WriteOutput { path: dir.to_owned(), source })?;
    let mut cmd = Cli::command().disable_help_subcommand(true);
    // Sets each subcommand's display name to `edgeaictl-apps-import`, which
    // names its page.
    cmd.build();
    let mut written = Vec::new();
    write_pages(cmd, dir, &mut written)?;
    let list: String = written.iter().map(|p| format!("{}\n", p.display())).collect();
    crate::commands::print(&list)
}

fn write_pages(cmd: clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> Result<(), CtlError> {
    let page = clap_mangen::Man::new(cmd.clone());
    let path = dir.join(page.get_filename());
    page.generate_to(dir).map_err(|source| CtlError::WriteOutput { path: path.clone(), source })?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned() {
        write_pages(sub, dir, written)?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap (style.md)
mod tests {
    use super::*;

    #[test]
    fn one_page_per_command() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Cli::command().disable_help_subcommand(true);
        cmd.build();
        let mut written = Vec::new();
        write_pages(cmd, dir.path(), &mut written).unwrap();
        for name in ["edgeaictl.1", "edgeaictl-apps.1", "edgeaictl-apps-import.1", "edgeaictl-doctor.1", "edgeaictl-man.1"] {
            assert!(written.contains(&dir.path().join(name)), "{name} missing from {written:?}");
        }
        let apps = std::fs::read_to_string(dir.path().join("edgeaictl-apps.1")).unwrap();
        assert!(apps.contains(".TH edgeaictl-apps 1") && apps.contains("import"), "{apps}");
        assert!(!written.iter().any(|p| p.ends_with("edgeaictl-help.1")), "no page for the help subcommand");
    }
}
