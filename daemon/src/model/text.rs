//! Turning a token stream into text for clients: a streaming UTF-8 decoder
//! that never splits a character across events, and a stop-sequence matcher
//! that holds back text which might still become a stop sequence.
//! Pure functions over bytes and strings; knows nothing of llama.cpp.

/// Accumulates raw token bytes and releases only complete UTF-8 characters.
#[derive(Debug, Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// Feeds the bytes of one token; returns the text that is complete now.
    /// Invalid sequences become U+FFFD instead of being dropped silently.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // The prefix was just validated, so this cannot fail.
                    out.push_str(std::str::from_utf8(&self.pending[..valid]).unwrap_or_default());
                    match e.error_len() {
                        // Incomplete trailing character: keep it for the next token.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        Some(bad) => {
                            out.push('\u{FFFD}');
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// Ends the stream: what is left is the start of a character the
    /// generation was cut before finishing (by `max_tokens` or the context),
    /// not text, so it is dropped rather than sent as U+FFFD. Returns how
    /// many bytes were dropped.
    pub fn discard_incomplete(&mut self) -> usize {
        let n = self.pending.len();
        self.pending.clear();
        n
    }
}

/// Outcome of feeding text to a [`StopMatcher`].
#[derive(Debug, PartialEq, Eq)]
pub struct StopStep {
    /// Text safe to send to the client now.
    pub emit: String,
    /// A stop sequence was found: generation ends after `emit`.
    pub stopped: bool,
}

/// Finds stop sequences across token boundaries. Text that could be the
/// beginning of a stop sequence is held back until it is decided.
#[derive(Debug)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

impl StopMatcher {
    pub fn new(stops: &[String]) -> Self {
        StopMatcher { stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(), held: String::new() }
    }

    pub fn push(&mut self, text: &str) -> StopStep {
        self.held.push_str(text);
        if self.stops.is_empty() {
            return StopStep { emit: std::mem::take(&mut self.held), stopped: false };
        }
        if let Some(at) = self.stops.iter().filter_map(|s| self.held.find(s.as_str())).min() {
            let emit = self.held[..at].to_owned();
            self.held.clear();
            return StopStep { emit, stopped: true };
        }
        // Hold back the longest suffix that is a proper prefix of a stop.
        let keep = self.stops.iter().map(|s| longest_suffix_prefix(&self.held, s)).max().unwrap_or(0);
        let cut = self.held.len() - keep;
        let emit = self.held[..cut].to_owned();
        self.held.drain(..cut);
        StopStep { emit, stopped: false }
    }

    /// Releases held text at the end of generation (it did not become a stop).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

/// The text of one generation: token bytes through [`Utf8Stream`] and
/// [`StopMatcher`]. Once a stop sequence matched, nothing more comes out:
/// not later tokens, not the bytes of a character left incomplete.
#[derive(Debug)]
pub struct TokenText {
    utf8: Utf8Stream,
    stop: StopMatcher,
    stopped: bool,
}

impl TokenText {
    pub fn new(stops: &[String]) -> Self {
        TokenText { utf8: Utf8Stream::default(), stop: StopMatcher::new(stops), stopped: false }
    }

    /// Feeds the bytes of one token.
    pub fn push(&mut self, bytes: &[u8]) -> StopStep {
        if self.stopped {
            return StopStep { emit: String::new(), stopped: true };
        }
        let text = self.utf8.push(bytes);
        let step = self.stop.push(&text);
        self.stopped = step.stopped;
        step
    }

    /// The rest at the end of generation: text held back for a possible
    /// stop sequence; nothing after a stop. An incomplete last character
    /// is dropped (see [`Utf8Stream::discard_incomplete`]).
    pub fn finish(&mut self) -> String {
        self.utf8.discard_incomplete();
        if self.stopped {
            return String::new();
        }
        self.stop.finish()
    }
}

/// Length in bytes of the longest suffix of `text` that is a proper prefix of
/// `stop`, measured on character boundaries.
fn longest_suffix_prefix(text: &str, stop: &str) -> usize {
    let max = text.len().min(stop.len().saturating_sub(1));
    (1..=max).rev().find(|&n| text.is_char_boundary(text.len() - n) && stop.is_char_boundary(n) && text.ends_with(&stop[..n])).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_character_split_across_tokens_is_held() {
        let mut d = Utf8Stream::default();
        let euro = "€".as_bytes(); // 3 bytes
        assert_eq!(d.push(&euro[..1]), "");
        assert_eq!(d.push(&euro[1..2]), "");
        assert_eq!(d.push(&[euro[2], b'!']), "€!");
        assert_eq!(d.discard_incomplete(), 0);
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let mut d = Utf8Stream::default();
        assert_eq!(d.push(&[b'a', 0xff, b'b']), "a\u{FFFD}b");
        assert_eq!(d.push(&[0xe2, 0x82]), "");
        assert_eq!(d.discard_incomplete(), 2, "a character cut at the end is dropped, not replaced");
    }

    #[test]
    fn stop_sequence_across_pieces_is_cut_and_never_emitted() {
        let mut m = StopMatcher::new(&["\nUser:".to_owned()]);
        let a = m.push("Hello\nUs");
        assert_eq!(a, StopStep { emit: "Hello".into(), stopped: false });
        let b = m.push("er: more");
        assert_eq!(b, StopStep { emit: String::new(), stopped: true });
    }

    #[test]
    fn held_text_is_released_when_it_does_not_match() {
        let mut m = StopMatcher::new(&["STOP".to_owned()]);
        assert_eq!(m.push("a ST").emit, "a ");
        assert_eq!(m.push("ART").emit, "START");
        assert_eq!(m.push("ST").emit, "");
        assert_eq!(m.finish(), "ST");
    }

    #[test]
    fn earliest_of_several_stops_wins_and_no_stops_passes_through() {
        let mut m = StopMatcher::new(&["b".to_owned(), "a".to_owned()]);
        assert_eq!(m.push("xxab"), StopStep { emit: "xx".into(), stopped: true });
        let mut none = StopMatcher::new(&[]);
        assert_eq!(none.push("abc"), StopStep { emit: "abc".into(), stopped: false });
    }

    #[test]
    fn nothing_follows_a_stop_sequence_not_even_an_incomplete_character() {
        let euro = "€".as_bytes();
        // The stop and the first byte of a character arrive in one token.
        let mut t = TokenText::new(&["User:".to_owned()]);
        let mut bytes = b"Hi User:".to_vec();
        bytes.push(euro[0]);
        assert_eq!(t.push(&bytes), StopStep { emit: "Hi ".into(), stopped: true });
        assert_eq!(t.push(&euro[1..]), StopStep { emit: String::new(), stopped: true });
        assert_eq!(t.finish(), "");
    }

    #[test]
    fn without_a_stop_the_end_releases_held_text_and_the_tail() {
        let mut t = TokenText::new(&["User:".to_owned()]);
        let mut bytes = b"Hi Us".to_vec();
        bytes.push("€".as_bytes()[0]);
        assert_eq!(t.push(&bytes), StopStep { emit: "Hi ".into(), stopped: false });
        assert_eq!(t.finish(), "Us", "held text is released; the cut character is dropped, not sent as U+FFFD");
    }

    #[test]
    fn multibyte_stop_prefix_respects_char_boundaries() {
        let mut m = StopMatcher::new(&["終わり".to_owned()]);
        assert_eq!(m.push("こんにちは終").emit, "こんにちは");
        assert_eq!(m.push("点").emit, "終点");
    }
}
