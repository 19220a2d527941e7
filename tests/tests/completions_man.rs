//! `edgeaictl completions` and `edgeaictl man`: the bash script parses
//! (`bash -n`) and completes subcommands when bash drives it as on a TAB
//! (COMP_WORDS/COMP_CWORD), the zsh and fish scripts parse where those
//! shells are installed, and every man page renders without a warning with
//! groff (and `man -l`, through man-db's preconv for UTF-8).

#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)

use std::path::Path;
use std::process::{Command, Output};

use edgeai_tests::paths;

fn ctl(args: &[&str]) -> String {
    let out = Command::new(paths::edgeaictl()).args(args).output().unwrap();
    assert!(out.status.success(), "edgeaictl {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn have(tool: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().is_ok_and(|o| o.status.success())
}

fn check_ok(out: &Output, what: &str) {
    assert!(out.status.success(), "{what}: {out:?}");
    assert!(out.stderr.is_empty(), "{what} warned: {}", String::from_utf8_lossy(&out.stderr));
}

/// What the bash completion offers for the words typed so far (the last
/// one is the word under the cursor).
fn complete(script: &Path, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let program = format!(
        "source '{}'\nCOMP_WORDS=({})\nCOMP_CWORD={}\nCOMP_LINE='{}'\nCOMP_POINT=${{#COMP_LINE}}\n\
         _edgeaictl edgeaictl '{}' '{}'\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display(),
        quoted.join(" "),
        words.len() - 1,
        words.join(" "),
        words[words.len() - 1],
        words[words.len() - 2],
    );
    let out = Command::new("bash").arg("-c").arg(program).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().lines().map(str::to_owned).filter(|l| !l.is_empty()).collect()
}

#[test]
fn bash_completion_parses_and_completes_subcommands() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("edgeaictl.bash");
    std::fs::write(&script, ctl(&["completions", "bash"])).unwrap();
    check_ok(&Command::new("bash").arg("-n").arg(&script).output().unwrap(), "bash -n");
    assert_eq!(complete(&script, &["edgeaictl", "ap"]), ["apps"]);
    assert_eq!(complete(&script, &["edgeaictl", "do"]), ["doctor"]);
    assert_eq!(complete(&script, &["edgeaictl", "apps", "im"]), ["import"]);
    assert!(complete(&script, &["edgeaictl", "doctor", "--con"]).contains(&"--config".to_owned()));
    assert_eq!(complete(&script, &["edgeaictl", "completions", "f"]), ["fish"]);
}

#[test]
fn zsh_and_fish_scripts_parse() {
    for (shell, check) in [("zsh", ["-n"]), ("fish", ["--no-execute"])] {
        let script = ctl(&["completions", shell]);
        assert!(script.contains("doctor") && script.contains("completions"), "{shell} script: {script}");
        if !have(shell) {
            eprintln!("SKIP: {shell} is not installed; its completion script was generated but not parsed");
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(format!("edgeaictl.{shell}"));
        std::fs::write(&file, script).unwrap();
        check_ok(&Command::new(shell).args(check).arg(&file).output().unwrap(), shell);
    }
}

#[test]
fn man_pages_render_without_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("man1");
    let listed = ctl(&["man", "--dir", out_dir.to_str().unwrap()]);
    let mut pages: Vec<String> = std::fs::read_dir(&out_dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    pages.sort();
    assert_eq!(listed.lines().count(), pages.len(), "{listed}");
    for name in ["edgeaictl.1", "edgeaictl-apps.1", "edgeaictl-apps-import.1", "edgeaictl-doctor.1", "edgeaictl-completions.1"] {
        assert!(pages.iter().any(|p| p == name), "{name} not in {pages:?}");
    }
    let doctor = std::fs::read_to_string(out_dir.join("edgeaictl-doctor.1")).unwrap();
    assert!(doctor.contains(".TH edgeaictl-doctor 1") && doctor.contains("integrity_check"), "{doctor}");
    if !have("groff") {
        eprintln!("SKIP: groff is not installed; {} man pages were written but not rendered", pages.len());
        return;
    }
    for page in &pages {
        let path = out_dir.join(page);
        // -k: preconv, as man-db does, since the pages hold UTF-8 text; -ww: every warning.
        let out = Command::new("groff").args(["-k", "-man", "-Tutf8", "-ww", "-z"]).arg(&path).output().unwrap();
        check_ok(&out, &format!("groff {page}"));
    }
    if have("man") {
        let out =
            Command::new("man").args(["--warnings", "-l"]).arg(out_dir.join("edgeaictl-doctor.1")).env("MANPAGER", "cat").output().unwrap();
        check_ok(&out, "man -l edgeaictl-doctor.1");
        assert!(String::from_utf8_lossy(&out.stdout).contains("edgeaictl-doctor"), "{out:?}");
    } else {
        eprintln!("SKIP: man is not installed; the pages were checked with groff only");
    }
}
