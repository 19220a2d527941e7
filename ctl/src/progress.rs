//! The progress bar of a long job over D-Bus (`backup create|restore
//! --bus`): it follows the daemon's Progress signals for one operation while
//! the call runs.
//!
//! Owns: subscribing before the call (so no early signal is missed) and the
//! indicatif bar on stderr, drawn only on a terminal and cleared at the end.
//! Must not: print anything else (the caller prints the result).

use std::future::Future;

use edgeai_common::dbus::BusClient;

use crate::error::CtlError;

/// Runs `call` (a D-Bus call of `operation`) while a bar labelled `label`
/// follows the daemon's Progress signals of `operation`; `call`'s outcome.
pub async fn follow<T>(bus: &BusClient, operation: &str, label: &str, call: impl Future<Output = T>) -> Result<T, CtlError> {
    let mut progress = bus.signals("Progress").await?;
    let bar = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
        let b = indicatif::ProgressBar::new(100);
        b.set_style(
            indicatif::ProgressStyle::with_template(&format!("{label} {{bar:30}} {{pos:>3}}% {{msg}}"))
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    tokio::pin!(call);
    let answer = loop {
        tokio::select! {
            answer = &mut call => break answer,
            Some(signal) = futures_util::StreamExt::next(&mut progress) => {
                if let (Some(b), Ok((op, percent, message))) = (&bar, signal.body().deserialize::<(String, u32, String)>()) {
                    if op == operation {
                        b.set_position(u64::from(percent));
                        b.set_message(message);
                    }
                }
            }
        }
    };
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(answer)
}
