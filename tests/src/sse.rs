//! Server-Sent Events read incrementally from a [`Streaming`] response,
//! decoded by `edgeai_common::sse` (the decoder `edgeaictl` uses too): an
//! event is dispatched at a blank line once it has any field, so `event:
//! ping` keep-alives are seen; comments (`:`) are skipped. Each event
//! records when its bytes arrived, so tests can reason about timing (pings,
//! how fast a stop ends a stream).

use std::collections::VecDeque;
use std::io::{Error, ErrorKind};
use std::time::Instant;

use edgeai_common::sse::{SseDecoder, SseError};
use serde_json::Value;

use crate::http::Streaming;

/// One event as sent.
#[derive(Debug, Clone)]
pub struct SseEvent {
    /// The `event:` field, if any (Dify sends `event: ping`).
    pub event: Option<String>,
    /// The `data:` lines joined by `\n`.
    pub data: String,
    pub at: Instant,
}

impl SseEvent {
    /// `data` as JSON, if it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.data).ok()
    }

    /// The event's name: the `event:` field, else the JSON `"event"` member
    /// (Dify's `message`, `message_end`, ...), else "".
    pub fn name(&self) -> String {
        if let Some(e) = &self.event {
            return e.clone();
        }
        self.json().and_then(|v| v["event"].as_str().map(str::to_owned)).unwrap_or_default()
    }
}

pub struct SseReader {
    stream: Streaming,
    decoder: SseDecoder,
    /// Decoded events not yet returned, with the time their chunk arrived.
    ready: VecDeque<SseEvent>,
    eof: bool,
}

impl SseReader {
    pub fn new(stream: Streaming) -> SseReader {
        SseReader { stream, decoder: SseDecoder::new(), ready: VecDeque::new(), eof: false }
    }

    pub fn status(&self) -> u16 {
        self.stream.status
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.stream.header(name)
    }

    /// The next event; `Ok(None)` when the stream has ended. A final event
    /// without its blank line is dropped, as the SSE spec says; a test sees
    /// the stream end instead. Malformed SSE is an `InvalidData` error.
    pub fn next_event(&mut self) -> std::io::Result<Option<SseEvent>> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Ok(Some(event));
            }
            if self.eof {
                return Ok(None);
            }
            let decoded = match self.stream.next_chunk()? {
                Some(chunk) => self.decoder.push(&chunk),
                None => {
                    self.eof = true;
                    match self.decoder.finish() {
                        Err(SseError::Truncated { .. }) => Ok(Vec::new()),
                        other => other.map(Vec::from_iter),
                    }
                }
            };
            let at = Instant::now();
            let events = decoded.map_err(|e| Error::new(ErrorKind::InvalidData, e))?;
            self.ready.extend(events.into_iter().map(|e| SseEvent { event: e.event, data: e.data.unwrap_or_default(), at }));
        }
    }

    /// Closes the connection (the client goes away mid-stream).
    pub fn close(self) {
        self.stream.close();
    }
}
