//! The progress bar of a long D-Bus job (CreateBackup, LoadModel): it
//! follows the daemon's Progress signals for that job while the call runs,
//! on a terminal only (stderr), and is cleared when the call answers.
//!
//! Owns: subscribing to Progress before the call and drawing the bar.
//! Must not: print results (the commands do).

use std::future::Future;

use edgeai_common::dbus::{BusClient, BusError};

use crate::error::CtlError;

/// Runs `call` (a D-Bus call of `operation`, not yet polled) while a bar
/// labelled `label` follows the daemon's Progress signals for `operation`.
/// The subscription is made before `call` is first polled, so no signal of
/// this call is missed.
pub async fn follow<T>(
    bus: &BusClient,
    operation: &str,
    label: &str,
    call: impl Future<Output = Result<T, BusError>>,
) -> Result<T, CtlError> {
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
    Ok(answer?)
}
