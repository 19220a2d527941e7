//! Incremental Server-Sent Events decoding: bytes in, events out. The one
//! SSE decoder of the workspace: `edgeaictl` reads it through [`SseReader`],
//! the end-to-end tests push their raw socket's bytes into [`SseDecoder`].
//!
//! Owns: line splitting (LF, CRLF and lone CR, even when a chunk boundary falls
//! between CR and LF or inside a UTF-8 sequence), field parsing and event
//! dispatch on a blank line, following the WHATWG rules for the `data` and
//! `event` fields. Unlike a browser it also dispatches events without data
//! (`event: ping`), so a reader sees keep-alives; `data` is then `None`.
//! Must not: interpret payloads (that is [`crate::dify`]) or open connections.
//! `id:` and `retry:` fields and `:` comments are accepted and ignored.

use bytes::Buf;
use http_body_util::BodyExt;
use hyper::body::Body;
use std::collections::VecDeque;

/// Largest event (unterminated line plus collected `data` lines) the decoder
/// buffers before giving up; a stream that never ends its lines is an error,
/// not an out-of-memory.
pub const MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SseError {
    #[error("SSE line {line} is not valid UTF-8")]
    InvalidUtf8 { line: u64, source: std::str::Utf8Error },
    #[error("SSE event exceeds {limit} bytes without ending")]
    EventTooLarge { limit: usize },
    #[error("SSE stream ended inside an event ({pending_bytes} bytes undelivered)")]
    Truncated { pending_bytes: usize },
    #[error("reading the SSE body failed")]
    Body { source: Box<dyn std::error::Error + Send + Sync> },
}

/// One dispatched event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field, if the event had one (Dify sends `event: ping`).
    pub event: Option<String>,
    /// The `data:` lines joined by `\n`; `None` for an event without data.
    pub data: Option<String>,
}

/// Push bytes in with [`SseDecoder::push`], call [`SseDecoder::finish`] at the
/// end of the body. After an error the decoder must not be used again.
#[derive(Debug, Default)]
pub struct SseDecoder {
    /// Bytes of the line not yet terminated.
    buf: Vec<u8>,
    /// The event being built; `None` until one of its fields arrives.
    pending: Option<Event>,
    /// Lines consumed so far, for error messages.
    lines: u64,
}

impl SseDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one chunk; returns the events it completed, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Event>, SseError> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(pos) = self.buf[start..].iter().position(|&b| b == b'\n' || b == b'\r') {
            let end = start + pos;
            let terminator_len = if self.buf[end] == b'\n' {
                1
            } else {
                match self.buf.get(end + 1) {
                    Some(b'\n') => 2,
                    Some(_) => 1,
                    // CR at the end of the chunk: the LF of a CRLF may follow.
                    None => break,
                }
            };
            self.lines += 1;
            if let Some(event) = process_line(&self.buf[start..end], &mut self.pending, self.lines)? {
                out.push(event);
            }
            start = end + terminator_len;
        }
        self.buf.drain(..start);
        if self.pending_bytes() > MAX_EVENT_BYTES {
            return Err(SseError::EventTooLarge { limit: MAX_EVENT_BYTES });
        }
        Ok(out)
    }

    /// Ends the stream: a trailing CR still ends its line; a partial line or an
    /// event without its closing blank line is [`SseError::Truncated`].
    pub fn finish(&mut self) -> Result<Option<Event>, SseError> {
        let mut event = None;
        if self.buf.last() == Some(&b'\r') {
            self.lines += 1;
            let end = self.buf.len() - 1;
            event = process_line(&self.buf[..end], &mut self.pending, self.lines)?;
            self.buf.clear();
        }
        if !self.buf.is_empty() || self.pending.is_some() {
            return Err(SseError::Truncated { pending_bytes: self.pending_bytes() });
        }
        Ok(event)
    }

    /// Bytes held for the unterminated line and the event being built.
    fn pending_bytes(&self) -> usize {
        let event = self.pending.as_ref().map_or(0, |e| e.event.as_ref().map_or(0, String::len) + e.data.as_ref().map_or(0, String::len));
        self.buf.len() + event
    }
}

/// Applies one line to the event being built; returns the event when the
/// line is blank and the event had a field.
fn process_line(line: &[u8], pending: &mut Option<Event>, line_no: u64) -> Result<Option<Event>, SseError> {
    if line.is_empty() {
        return Ok(pending.take());
    }
    let line = std::str::from_utf8(line).map_err(|source| SseError::InvalidUtf8 { line: line_no, source })?;
    if line.starts_with(':') {
        return Ok(None);
    }
    let (field, value) = match line.split_once(':') {
        Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
        None => (line, ""),
    };
    let event = pending.get_or_insert_with(Event::default);
    match field {
        "data" => match &mut event.data {
            Some(existing) => {
                existing.push('\n');
                existing.push_str(value);
            }
            None => event.data = Some(value.to_owned()),
        },
        "event" => event.event = Some(value.to_owned()),
        _ => {}
    }
    Ok(None)
}

/// Reads events from an HTTP body as its frames arrive.
#[derive(Debug)]
pub struct SseReader<B> {
    body: B,
    decoder: SseDecoder,
    ready: VecDeque<Event>,
    finished: bool,
}

impl<B> SseReader<B>
where
    B: Body + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    pub fn new(body: B) -> Self {
        SseReader { body, decoder: SseDecoder::new(), ready: VecDeque::new(), finished: false }
    }

    /// The next event, `Ok(None)` once the body has ended cleanly.
    /// After an error every further call returns `Ok(None)`. Cancel-safe:
    /// dropping the future loses no event.
    pub async fn next_event(&mut self) -> Result<Option<Event>, SseError> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Ok(Some(event));
            }
            if self.finished {
                return Ok(None);
            }
            match self.body.frame().await {
                None => {
                    self.finished = true;
                    return self.decoder.finish();
                }
                Some(Err(err)) => {
                    self.finished = true;
                    return Err(SseError::Body { source: err.into() });
                }
                Some(Ok(frame)) => {
                    // Trailers carry no events.
                    if let Ok(mut data) = frame.into_data() {
                        while data.has_remaining() {
                            let chunk = data.chunk();
                            let len = chunk.len();
                            match self.decoder.push(chunk) {
                                Ok(events) => self.ready.extend(events),
                                Err(err) => {
                                    self.finished = true;
                                    return Err(err);
                                }
                            }
                            data.advance(len);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap (style.md)
mod tests {
    use super::*;
    use bytes::Bytes;
    use hyper::body::Frame;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// A stream in the shape Dify sends, with the SSE features a server may use.
    const STREAM: &str = concat!(
        ": keep-alive comment\n",
        "event: message\n",
        "data: {\"answer\":\"Grüße 👋\"}\n",
        "\n",
        "event: ping\n",
        "\n",
        "data:{\"answer\":\"no space\"}\r\n",
        "\r\n",
        "data: first\n",
        "data: second\n",
        "id: 7\n",
        "\n",
        "data: lone cr\r\r",
        "data\n",
        "\n",
    );

    fn event(name: Option<&str>, data: Option<&str>) -> Event {
        Event { event: name.map(str::to_owned), data: data.map(str::to_owned) }
    }

    fn expected() -> Vec<Event> {
        vec![
            event(Some("message"), Some("{\"answer\":\"Grüße 👋\"}")),
            event(Some("ping"), None),
            event(None, Some("{\"answer\":\"no space\"}")),
            event(None, Some("first\nsecond")),
            event(None, Some("lone cr")),
            event(None, Some("")),
        ]
    }

    fn decode_in_chunks(bytes: &[u8], boundaries: &[usize]) -> Vec<Event> {
        let mut decoder = SseDecoder::new();
        let mut out = Vec::new();
        let mut last = 0;
        for &b in boundaries.iter().chain(std::iter::once(&bytes.len())) {
            out.extend(decoder.push(&bytes[last..b]).unwrap());
            last = b;
        }
        out.extend(decoder.finish().unwrap());
        out
    }

    #[test]
    fn whole_stream_in_one_chunk() {
        assert_eq!(decode_in_chunks(STREAM.as_bytes(), &[]), expected());
    }

    #[test]
    fn every_single_split_point_gives_the_same_events() {
        let bytes = STREAM.as_bytes();
        for split in 0..=bytes.len() {
            assert_eq!(decode_in_chunks(bytes, &[split]), expected(), "split at {split}");
        }
    }

    #[test]
    fn byte_by_byte_splits_mid_line_and_mid_utf8() {
        let bytes = STREAM.as_bytes();
        let boundaries: Vec<usize> = (1..bytes.len()).collect();
        // Make sure the test really cuts inside a multi-byte character.
        let emoji = STREAM.find('👋').unwrap();
        assert!(boundaries.contains(&(emoji + 2)));
        assert_eq!(decode_in_chunks(bytes, &boundaries), expected());
    }

    #[test]
    fn crlf_split_between_cr_and_lf_is_one_line_end() {
        let mut decoder = SseDecoder::new();
        assert!(decoder.push(b"data: a\r").unwrap().is_empty());
        assert!(decoder.push(b"\n\r").unwrap().is_empty());
        assert_eq!(decoder.push(b"\n").unwrap(), vec![event(None, Some("a"))]);
        assert_eq!(decoder.finish().unwrap(), None);
    }

    #[test]
    fn trailing_cr_at_end_of_body_ends_the_event() {
        let mut decoder = SseDecoder::new();
        assert!(decoder.push(b"data: a\r").unwrap().is_empty());
        assert!(decoder.push(b"\r").unwrap().is_empty());
        assert_eq!(decoder.finish().unwrap(), Some(event(None, Some("a"))));
    }

    #[test]
    fn event_without_blank_line_is_truncated() {
        let mut decoder = SseDecoder::new();
        assert!(decoder.push(b"data: abc\n").unwrap().is_empty());
        assert!(matches!(decoder.finish(), Err(SseError::Truncated { pending_bytes: 3 })));
        let mut decoder = SseDecoder::new();
        assert!(decoder.push(b"data: ab").unwrap().is_empty());
        assert!(matches!(decoder.finish(), Err(SseError::Truncated { pending_bytes: 8 })));
    }

    #[test]
    fn event_without_data_is_dispatched_without_data() {
        let mut decoder = SseDecoder::new();
        assert_eq!(decoder.push(b"event: ping\n\n\n").unwrap(), vec![event(Some("ping"), None)]);
        assert_eq!(decoder.finish().unwrap(), None);
    }

    #[test]
    fn comments_and_blank_lines_alone_dispatch_nothing() {
        let mut decoder = SseDecoder::new();
        assert!(decoder.push(b": keep-alive\n\n\n: again\r\n\r\n").unwrap().is_empty());
        assert_eq!(decoder.finish().unwrap(), None);
    }

    #[test]
    fn invalid_utf8_names_the_line() {
        let mut decoder = SseDecoder::new();
        let err = decoder.push(b": ok\ndata: \xff\xfe\n\n").unwrap_err();
        assert!(matches!(err, SseError::InvalidUtf8 { line: 2, .. }), "{err:?}");
    }

    #[test]
    fn endless_line_is_an_error_not_unbounded_memory() {
        let mut decoder = SseDecoder::new();
        let chunk = vec![b'x'; 1024 * 1024];
        let mut result = Ok(Vec::new());
        for _ in 0..=MAX_EVENT_BYTES / chunk.len() {
            result = decoder.push(&chunk);
            if result.is_err() {
                break;
            }
        }
        assert!(matches!(result, Err(SseError::EventTooLarge { .. })));
    }

    /// A body that yields the given chunks (or errors), one frame each.
    struct Chunks(VecDeque<Result<Bytes, std::io::Error>>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            Poll::Ready(self.0.pop_front().map(|r| r.map(Frame::data)))
        }
    }

    #[tokio::test]
    async fn reader_yields_payloads_across_frames() {
        let bytes = STREAM.as_bytes();
        let emoji = STREAM.find('👋').unwrap();
        let cuts = [0, 3, emoji + 1, emoji + 3, bytes.len() - 1, bytes.len()];
        let chunks = cuts.windows(2).map(|w| Ok(Bytes::copy_from_slice(&bytes[w[0]..w[1]]))).collect();
        let mut reader = SseReader::new(Chunks(chunks));
        let mut got = Vec::new();
        while let Some(event) = reader.next_event().await.unwrap() {
            got.push(event);
        }
        assert_eq!(got, expected());
        assert_eq!(reader.next_event().await.unwrap(), None);
    }

    #[tokio::test]
    async fn reader_reports_body_errors_after_earlier_events() {
        let chunks = VecDeque::from([
            Ok(Bytes::from_static(b"data: one\n\n")),
            Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset")),
        ]);
        let mut reader = SseReader::new(Chunks(chunks));
        assert_eq!(reader.next_event().await.unwrap(), Some(event(None, Some("one"))));
        assert!(matches!(reader.next_event().await, Err(SseError::Body { .. })));
        assert_eq!(reader.next_event().await.unwrap(), None);
    }

    #[tokio::test]
    async fn reader_reports_truncated_stream() {
        let chunks = VecDeque::from([Ok(Bytes::from_static(b"data: one\n\ndata: tw"))]);
        let mut reader = SseReader::new(Chunks(chunks));
        assert_eq!(reader.next_event().await.unwrap(), Some(event(None, Some("one"))));
        assert!(matches!(reader.next_event().await, Err(SseError::Truncated { .. })));
    }
}
