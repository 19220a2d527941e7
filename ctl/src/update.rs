//! `edgeaictl update status|install|mark-good|mark-bad|rollback`: the daemon's A/B
//! slots over the admin socket (`/admin/v1/update`) or, where the control
//! commands go over D-Bus, its update methods (`GetUpdateStatus`, `MarkGood`,
//! `MarkBad`, `Rollback`, `InstallUpdate` by descriptor); docs/update.md.
//!
//! Owns: what the commands print. Must not: choose the transport or map
//! operations onto it ([`crate::control`] does), choose exit codes (see
//! [`crate::error`]; a refusal is the daemon's 409 with its code, exit 1, or
//! its `org.edgeai.Error.Update*` with the same code) or touch the slot files
//! itself (the daemon owns them).

use edgeai_common::admin::{UpdateActionResponse, UpdateStatus};
use serde_json::Value;

use crate::cli::UpdateCommand;
use crate::commands::{print, print_json};
use crate::control::{Control, InstallFlags, UpdateAction};
use crate::error::CtlError;

/// `timeout` is `--timeout` (an install over D-Bus waits longer, see `Control::install_update`).
pub async fn run(control: &Control, command: UpdateCommand, timeout: std::time::Duration, json: bool) -> Result<(), CtlError> {
    match command {
        UpdateCommand::Status => status(control, json).await,
        UpdateCommand::MarkGood => action(control, UpdateAction::MarkGood, json).await,
        UpdateCommand::MarkBad => action(control, UpdateAction::MarkBad, json).await,
        UpdateCommand::Rollback => action(control, UpdateAction::Rollback, json).await,
        UpdateCommand::Install { bundle, allow_downgrade, reinstall } => {
            let answer = control.install_update(&bundle, InstallFlags { allow_downgrade, reinstall }, timeout).await?;
            answered(answer, "update install", json)
        }
    }
}

async fn status(control: &Control, json: bool) -> Result<(), CtlError> {
    let answer = control.update_status().await?;
    if json {
        return print_json(&answer);
    }
    let s: UpdateStatus = serde_json::from_value(answer).map_err(|source| CtlError::Answer { command: "update status".into(), source })?;
    print(&render_status(&s))
}

async fn action(control: &Control, action: UpdateAction, json: bool) -> Result<(), CtlError> {
    let answer = control.update_action(action).await?;
    answered(answer, &format!("update {}", action.path()), json)
}

/// An action's answer: as it is with --json, else its message.
fn answered(answer: Value, command: &str, json: bool) -> Result<(), CtlError> {
    if json {
        return print_json(&answer);
    }
    let a: UpdateActionResponse = serde_json::from_value(answer).map_err(|source| CtlError::Answer { command: command.into(), source })?;
    print(&format!("{}\n", a.message))
}

/// The status as text: one line per fact, then the slots and the history.
pub fn render_status(s: &UpdateStatus) -> String {
    let mut out = String::new();
    if !s.enabled {
        out.push_str("updates: disabled (update.enabled = false); the installed binary runs\n");
    }
    out.push_str(&format!("running: {}\ncurrent link: {}\ndir: {}\n", s.running, s.current_link, s.dir));
    if let Some(e) = &s.state_error {
        out.push_str(&format!("state: UNUSABLE: {e}\n"));
    }
    match &s.state {
        None if s.state_error.is_none() => out.push_str("state: nothing installed\n"),
        None => {}
        Some(st) => {
            out.push_str(&format!("status: {}\nversion: {} (slot {})\n", st.status, st.version, st.current));
            if st.status == "pending" {
                out.push_str(&format!("attempts: {} of {}\n", st.attempts, st.max_attempts));
            }
            if let Some(p) = &st.previous {
                out.push_str(&format!("previous: {} ({})\n", st.previous_version.as_deref().unwrap_or("?"), p));
            }
            if let Some(f) = &st.failed_version {
                out.push_str(&format!("rolled back: {f}\n"));
            }
            if let Some(e) = &st.last_error {
                out.push_str(&format!("last error: {e}\n"));
            }
            out.push_str(&format!("switched: {}\n", time(st.switched_at)));
            if let Some(c) = st.committed_at {
                out.push_str(&format!("committed: {}\n", time(c)));
            }
        }
    }
    for slot in &s.slots {
        let what = match (&slot.version, &slot.problem) {
            (Some(v), _) => format!("{v}{}", if slot.has_binary { " (with bin/edgeaid)" } else { "" }),
            (None, Some(p)) => format!("incomplete: {p}"),
            (None, None) => "empty".to_owned(),
        };
        out.push_str(&format!("slot {}: {what}\n", slot.name));
    }
    if let Some(st) = &s.state {
        if !st.history.is_empty() {
            out.push_str("history:\n");
            for e in &st.history {
                let detail = e.detail.as_deref().map_or_else(String::new, |d| format!(": {d}"));
                out.push_str(&format!("  {} {} {}{detail}\n", time(e.at), e.event, e.version));
            }
        }
    }
    out
}

fn time(unix: i64) -> String {
    u64::try_from(unix)
        .ok()
        .map(|s| humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(s)).to_string())
        .unwrap_or_else(|| unix.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap (style.md)
mod tests {
    use super::*;
    use edgeai_common::admin::{SlotStatus, UpdateStateInfo};

    #[test]
    fn status_text_names_the_status_attempts_and_error() {
        let s = UpdateStatus {
            enabled: true,
            dir: "/var/lib/edgeai".into(),
            running: "b".into(),
            current_link: "b".into(),
            state: Some(UpdateStateInfo {
                current: "b".into(),
                previous: Some("a".into()),
                status: "pending".into(),
                version: "1.2.0".into(),
                previous_version: Some("1.1.0".into()),
                attempts: 2,
                max_attempts: 3,
                switched_at: 0,
                committed_at: None,
                failed_version: None,
                last_error: Some("self-test failed".into()),
                history: vec![],
            }),
            state_error: None,
            slots: vec![SlotStatus { name: "a".into(), version: None, complete: false, has_binary: false, problem: None }],
        };
        let text = render_status(&s);
        for want in ["status: pending", "attempts: 2 of 3", "previous: 1.1.0 (a)", "last error: self-test failed", "slot a: empty"] {
            assert!(text.contains(want), "{want} in {text}");
        }
    }
}
