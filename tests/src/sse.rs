//! Server-Sent Events read incrementally from a [`Streaming`] response:
//! `event:` and `data:` lines up to a blank line make one event, comments
//! (`:`) are skipped. Each event records when it arrived, so tests can
//! reason about timing (pings, how fast a stop ends a stream).

use std::time::Instant;

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
    buf: Vec<u8>,
    eof: bool,
}

impl SseReader {
    pub fn new(stream: Streaming) -> SseReader {
        SseReader { stream, buf: Vec::new(), eof: false }
    }

    pub fn status(&self) -> u16 {
        self.stream.status
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.stream.header(name)
    }

    /// The next event; `Ok(None)` when the stream has ended.
    pub fn next_event(&mut self) -> std::io::Result<Option<SseEvent>> {
        let mut event = None;
        let mut data: Vec<String> = Vec::new();
        let mut seen_field = false;
        loop {
            let Some(line) = self.next_line()? else {
                // A final event without its blank line is dropped, as the
                // SSE spec says; a test sees the stream end instead.
                return Ok(None);
            };
            if line.is_empty() {
                if seen_field {
                    return Ok(Some(SseEvent { event, data: data.join("\n"), at: Instant::now() }));
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line.as_str(), ""),
            };
            seen_field = true;
            match field {
                "event" => event = Some(value.to_owned()),
                "data" => data.push(value.to_owned()),
                _ => {}
            }
        }
    }

    fn next_line(&mut self) -> std::io::Result<Option<String>> {
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=pos).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return String::from_utf8(line)
                    .map(Some)
                    .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "SSE line is not UTF-8"));
            }
            if self.eof {
                return Ok(None);
            }
            match self.stream.next_chunk()? {
                Some(c) => self.buf.extend_from_slice(&c),
                None => self.eof = true,
            }
        }
    }

    /// Closes the connection (the client goes away mid-stream).
    pub fn close(self) {
        self.stream.close();
    }
}
