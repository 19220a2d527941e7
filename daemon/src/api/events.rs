//! Consuming a run's events for HTTP, once for both APIs: the streaming
//! loop (SSE with keep-alive pings, the stream deadline, the client-gone
//! check and the slow-reader cut-off) and the blocking collector. The wire
//! shapes come from an [`Encoder`] (Dify's in `dify.rs`, OpenAI's in
//! `openai.rs`).
//!
//! The loop never waits outside its `select!`: a chunk the client cannot
//! take yet stays pending while the deadline and the client-gone check keep
//! running, and no new event is read meanwhile (the run feels the back
//! pressure). A client that stops reading altogether is cut off by the
//! connection's [`StallGuard`](super::stall::StallGuard); the run is then
//! recorded as stopped with that reason.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use http::Response;

use super::body::{self, Body};
use super::error::ApiError;
use super::stall::StallFlag;
use crate::model::{FinishReason, ModelError};
use crate::service::{Run, RunEvent, Usage};

/// A whole answer, for a blocking response.
pub struct Collected {
    pub answer: String,
    pub usage: Usage,
    pub finish: FinishReason,
}

/// One API's wire shapes for a run.
pub trait Encoder: Send + 'static {
    /// Chunks sent before the run's first event.
    fn open(&self) -> Vec<Bytes> {
        Vec::new()
    }
    fn text(&self, text: &str) -> Bytes;
    fn end(&self, usage: &Usage, finish: FinishReason) -> Bytes;
    /// A failure after the response head was sent.
    fn error(&self, e: &ApiError) -> Bytes;
    /// Chunks after the last event (OpenAI's `[DONE]`).
    fn close(&self) -> Vec<Bytes> {
        Vec::new()
    }
    /// A keep-alive chunk, if the API has one.
    fn ping(&self) -> Option<Bytes> {
        None
    }
    fn blocking(&self, answer: Collected) -> Response<Body>;
}

/// Limits of one streaming response.
pub struct StreamLimits {
    pub ping: Duration,
    /// The whole stream (`server.request_timeout_secs`).
    pub deadline: Duration,
    /// `server.slow_client_timeout_secs`, for the recorded reason.
    pub slow_client: Duration,
}

/// Waits for the end of the run and answers in one piece. Bounded by the
/// request timeout in `api::handle`.
pub async fn blocking(mut run: Run, enc: impl Encoder) -> Result<Response<Body>, ApiError> {
    let mut answer = String::new();
    while let Some(ev) = run.events.recv().await {
        match ev {
            RunEvent::Text(t) => answer.push_str(&t),
            RunEvent::End { usage, finish } => return Ok(enc.blocking(Collected { answer, usage, finish })),
            RunEvent::Failed { message } => return Err(ModelError::Inference(message).into()),
        }
    }
    Err(ModelError::ThreadGone.into())
}

/// A run's events as wire chunks, for the one streaming loop: chat and
/// completion runs through an [`Encoder`] ([`Encoded`]), workflow runs
/// through `workflow.rs`.
pub trait Source: Send + 'static {
    fn task_id(&self) -> String;
    /// Chunks sent before the run's first event.
    fn open(&mut self) -> Vec<Bytes>;
    /// The next event's chunks, and whether it was the last (then the
    /// closing chunks are included).
    fn next(&mut self) -> impl std::future::Future<Output = (Vec<Bytes>, bool)> + Send;
    /// An error after the head was sent, with the closing chunks.
    fn fail(&self, e: &ApiError) -> Vec<Bytes>;
    /// A keep-alive chunk, if the API has one.
    fn ping(&self) -> Option<Bytes>;
    /// The client left (or was cut off) for `reason`.
    fn abandon(self, reason: String);
}

/// A chat or completion run with its API's encoder.
pub struct Encoded<E> {
    pub run: Run,
    pub enc: E,
}

impl<E: Encoder> Source for Encoded<E> {
    fn task_id(&self) -> String {
        self.run.task_id.clone()
    }
    fn open(&mut self) -> Vec<Bytes> {
        self.enc.open()
    }
    async fn next(&mut self) -> (Vec<Bytes>, bool) {
        let mut out = Vec::new();
        match self.run.events.recv().await {
            Some(RunEvent::Text(t)) => return (vec![self.enc.text(&t)], false),
            Some(RunEvent::End { usage, finish }) => out.push(self.enc.end(&usage, finish)),
            Some(RunEvent::Failed { message }) => out.push(self.enc.error(&ModelError::Inference(message).into())),
            None => out.push(self.enc.error(&ModelError::ThreadGone.into())),
        }
        out.extend(self.enc.close());
        (out, true)
    }
    fn fail(&self, e: &ApiError) -> Vec<Bytes> {
        let mut out = vec![self.enc.error(e)];
        out.extend(self.enc.close());
        out
    }
    fn ping(&self) -> Option<Bytes> {
        self.enc.ping()
    }
    fn abandon(self, reason: String) {
        self.run.abandon(reason);
    }
}

/// Streams a run as SSE from a task of its own.
pub fn stream(source: impl Source, limits: StreamLimits, stall: StallFlag) -> Response<Body> {
    let (tx, resp) = body::sse_response();
    tokio::spawn(pump(source, limits, stall, tx));
    resp
}

async fn pump(mut source: impl Source, limits: StreamLimits, stall: StallFlag, tx: tokio::sync::mpsc::Sender<Bytes>) {
    let task_id = source.task_id();
    let deadline = tokio::time::Instant::now() + limits.deadline;
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + limits.ping, limits.ping);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut out: VecDeque<Bytes> = source.open().into();
    // The run's last event has been encoded; what is left is to send it.
    let mut ended = false;
    let left = loop {
        if ended && out.is_empty() {
            break None;
        }
        tokio::select! {
            biased;
            // The client is gone (or was cut off): hyper dropped the body.
            _ = tx.closed() => break Some(if stall.tripped() {
                format!("the client stopped reading for {} s (server.slow_client_timeout_secs)", limits.slow_client.as_secs())
            } else {
                "client disconnected".to_owned()
            }),
            _ = tokio::time::sleep_until(deadline) => {
                // Best effort: the client may not be reading.
                for c in source.fail(&ApiError::Timeout { secs: limits.deadline.as_secs() }) {
                    let _ = tx.try_send(c);
                }
                break Some(format!("the stream exceeded {} s (server.request_timeout_secs)", limits.deadline.as_secs()));
            }
            permit = tx.reserve(), if !out.is_empty() => match (permit, out.pop_front()) {
                (Ok(p), Some(chunk)) => p.send(chunk),
                _ => continue,
            },
            (chunks, last) = source.next(), if out.is_empty() && !ended => {
                out.extend(chunks);
                ended = last;
            },
            _ = ping.tick(), if out.is_empty() && !ended => out.extend(source.ping()),
        }
    };
    if let Some(reason) = left {
        tracing::info!(task_id = %task_id, reason = %reason, "stream ended early");
        source.abandon(reason);
    }
}
