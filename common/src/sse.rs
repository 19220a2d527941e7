//! Incremental Server-Sent Events decoding: bytes in, `data:` payloads out.
//!
//! Owns: line splitting (LF, CRLF and lone CR, even when a chunk boundary falls
//! between CR and LF or inside a UTF-8 sequence), field parsing and event
//! dispatch on a blank line, following the WHATWG rules for the `data` field.
//! Must not: interpret payloads (that is [`crate::dify`]) or open connections.
//! `event:`, `id:` and `retry:` fields and `:` comments are accepted and ignored.

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

/// Push bytes in with [`SseDecoder::push`], call [`SseDecoder::finish`] at the
/// end of the body. After an error the decoder must not be used again.
#[derive(Debug, Default)]
pub struct SseDecoder {
    /// Bytes of the line not yet terminated.
    buf: Vec<u8>,
    /// `data` lines of the current event, joined by `\n`; `None` until one arrives.
    data: Option<String>,
    /// Lines consumed so far, for error messages.
    lines: u64,
}

impl SseDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one chunk; returns the payloads of the events it completed, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<String>, SseError> {
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
            if let Some(payload) = process_line(&self.buf[start..end], &mut self.data, self.lines)? {
                out.push(payload);
            }
            start = end + terminator_len;
        }
        self.buf.drain(..start);
        let pending = self.buf.len() + self.data.as_ref().map_or(0, String::len);
        if pending > MAX_EVENT_BYTES {
            return Err(SseError::EventTooLarge { limit: MAX_EVENT_BYTES });
        }
        Ok(out)
    }

    /// Ends the stream: a trailing CR still ends its line; a partial line or an
    /// event without its closing blank line is [`SseError::Truncated`].
    pub fn finish(&mut self) -> Result<Option<String>, SseError> {
        let mut payload = None;
        if self.buf.last() == Some(&b'\r') {
            self.lines += 1;
            let end = self.buf.len() - 1;
            payload = process_line(&self.buf[..end], &mut self.data, self.lines)?;
            self.buf.clear();
        }
        let pending_bytes = self.buf.len() + self.data.as_ref().map_or(0, String::len);
        if !self.buf.is_empty() || self.data.is_some() {
            return Err(SseError::Truncated { pending_bytes });
        }
        Ok(payload)
    }
}

/// Applies one line to the event being built; returns its payload when the
/// line is blank and the event has data.
fn process_line(line: &[u8], data: &mut Option<String>, line_no: u64) -> Result<Option<String>, SseError> {
    if line.is_empty() {
        return Ok(data.take());
    }
    let line = std::str::from_utf8(line).map_err(|source| SseError::InvalidUtf8 { line: line_no, source })?;
    if line.starts_with(':') {
        return Ok(None);
    }
    let (field, value) = match line.split_once(':') {
        Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
        None => (line, ""),
    };
    if field == "data" {
        match data {
            Some(existing) => {
                existing.push('\n');
                existing.push_str(value);
            }
            None => *data = Some(value.to_owned()),
        }
    }
    Ok(None)
}

/// Reads `data:` payloads from an HTTP body as its frames arrive.
#[derive(Debug)]
pub struct SseReader<B> {
    body: B,
    decoder: SseDecoder,
    ready: VecDeque<String>,
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

    /// The next payload, `Ok(None)` once the body has ended cleanly.
    /// After an error every further call returns `Ok(None)`.
    pub async fn next_data(&mut self) -> Result<Option<String>, SseError> {
        loop {
            if let Some(payload) = self.ready.pop_front() {
                return Ok(Some(payload));
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
                                Ok(payloads) => self.ready.extend(payloads),
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

    fn expected() -> Vec<String> {
        vec![
            "{\"answer\":\"Grüße 👋\"}".to_owned(),
            "{\"answer\":\"no space\"}".to_owned(),
            "first\nsecond".to_owned(),
            "lone cr".to_owned(),
            String::new(),
        ]
    }

    fn decode_in_chunks(bytes: &[u8], boundaries: &[usize]) -> Vec<String> {
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
        assert_eq!(decoder.push(b"\n").unwrap(), vec!["a".to_owned()]);
        assert_eq!(decoder.finish().unwrap(), None);
    }

    #[test]
    fn trailing_cr_at_end_of_body_ends_the_event() {
        let mut decoder = SseDecoder::new();
        assert!(decoder.push(b"data: a\r").unwrap().is_empty());
        assert!(decoder.push(b"\r").unwrap().is_empty());
        assert_eq!(decoder.finish().unwrap(), Some("a".to_owned()));
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
    fn event_field_without_data_is_not_dispatched() {
        let mut decoder = SseDecoder::new();
        assert!(decoder.push(b"event: ping\n\n\n").unwrap().is_empty());
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
        while let Some(payload) = reader.next_data().await.unwrap() {
            got.push(payload);
        }
        assert_eq!(got, expected());
        assert_eq!(reader.next_data().await.unwrap(), None);
    }

    #[tokio::test]
    async fn reader_reports_body_errors_after_earlier_events() {
        let chunks = VecDeque::from([
            Ok(Bytes::from_static(b"data: one\n\n")),
            Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset")),
        ]);
        let mut reader = SseReader::new(Chunks(chunks));
        assert_eq!(reader.next_data().await.unwrap(), Some("one".to_owned()));
        assert!(matches!(reader.next_data().await, Err(SseError::Body { .. })));
        assert_eq!(reader.next_data().await.unwrap(), None);
    }

    #[tokio::test]
    async fn reader_reports_truncated_stream() {
        let chunks = VecDeque::from([Ok(Bytes::from_static(b"data: one\n\ndata: tw"))]);
        let mut reader = SseReader::new(Chunks(chunks));
        assert_eq!(reader.next_data().await.unwrap(), Some("one".to_owned()));
        assert!(matches!(reader.next_data().await, Err(SseError::Truncated { .. })));
    }
}
