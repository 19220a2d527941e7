//! Chunking as Dify's `process_rule` does it: parse and validate the rule,
//! clean the text, split it into segments of at most `max_tokens` tokens
//! with `chunk_overlap` tokens carried over, drop empty segments.
//!
//! Follows Dify's `api/services/dataset_service.py`
//! (`DocumentService.process_rule_args_validate`: the checks and their
//! messages), `api/models/dataset.py` (`DatasetProcessRule.AUTOMATIC_RULES`),
//! `api/core/rag/index_processor/index_processor_base.py` (`_get_splitter`:
//! length range, `\n` escape, fallback separators),
//! `api/core/rag/splitter/{text_splitter,fixed_text_splitter}.py` (recursive
//! split, merge with overlap, fixed separator), `api/core/rag/cleaner/
//! clean_processor.py` (cleaning) and `paragraph_index_processor.py`
//! (leading symbols stripped, empty segments dropped).
//!
//! Owns: `ProcessRule` and its validation, cleaning, splitting.
//! Must not: know the tokenizer (the caller passes a counter), the store
//! or HTTP.

use std::collections::VecDeque;
use std::sync::LazyLock;

use regex::Regex;
use serde_json::{json, Value};

/// Largest custom `max_tokens` (Dify's `INDEXING_MAX_SEGMENTATION_TOKENS_LENGTH`
/// default).
pub const MAX_SEGMENTATION_TOKENS: usize = 4000;
/// Smallest custom `max_tokens` (Dify's `_get_splitter`).
pub const MIN_SEGMENTATION_TOKENS: usize = 50;
/// Dify's `AUTOMATIC_RULES` segmentation.
const AUTOMATIC_MAX_TOKENS: usize = 500;
const AUTOMATIC_CHUNK_OVERLAP: usize = 50;
/// Where a piece too long for one segment is cut, in order (Dify's
/// `separators` for both modes): paragraphs, Chinese full stops, sentence
/// ends, spaces, and finally anywhere between characters.
const FALLBACK_SEPARATORS: [&str; 5] = ["\n\n", "。", ". ", " ", ""];

/// `automatic` cuts recursively from paragraphs down and merges small
/// pieces; `custom` first cuts at its own separator and keeps each piece
/// that fits as one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Automatic,
    Custom,
}

/// A validated `process_rule`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessRule {
    pub mode: Mode,
    /// Runs of 3+ newlines become 2, runs of 2+ spaces become 1.
    pub remove_extra_spaces: bool,
    /// E-mail addresses and URLs are removed (Markdown image URLs stay).
    pub remove_urls_emails: bool,
    /// `custom`: the separator, escapes (`\n`, `\t`, `\u` and four hex digits) decoded.
    /// Empty for `automatic`.
    pub separator: String,
    pub max_tokens: usize,
    pub chunk_overlap: usize,
}

/// A `process_rule` Dify would refuse. Maps to 400 `invalid_param`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// Dify's own message for the fault (e.g. "Process rule mode is invalid").
    #[error("{0}")]
    InvalidRule(String),
    /// Dify's parent-child chunking (`hierarchical`) is not implemented.
    #[error("Process rule mode hierarchical (parent-child chunks) is not supported; use automatic or custom")]
    HierarchicalUnsupported,
}

/// One segment cut from a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub content: String,
    /// `count_tokens(content)`.
    pub tokens: usize,
    /// Characters, as Dify counts a segment's `word_count` (`len(content)`).
    pub word_count: usize,
}

impl ProcessRule {
    /// Dify's automatic rule: extra spaces removed, URLs kept, 500 tokens,
    /// overlap 50.
    pub fn automatic() -> ProcessRule {
        ProcessRule {
            mode: Mode::Automatic,
            remove_extra_spaces: true,
            remove_urls_emails: false,
            separator: String::new(),
            max_tokens: AUTOMATIC_MAX_TOKENS,
            chunk_overlap: AUTOMATIC_CHUNK_OVERLAP,
        }
    }

    /// A rule from the request's `process_rule` (absent: automatic),
    /// checked as Dify's `process_rule_args_validate` and `_get_splitter`
    /// check it, with their messages.
    pub fn parse(value: Option<&Value>) -> Result<ProcessRule, ChunkError> {
        let invalid = |m: &str| ChunkError::InvalidRule(m.to_string());
        let Some(value) = value.filter(|v| !v.is_null()) else { return Ok(ProcessRule::automatic()) };
        let rule = value.as_object().ok_or_else(|| invalid("Process rule is invalid"))?;
        match rule.get("mode") {
            None | Some(Value::Null) => return Err(invalid("Process rule mode is required")),
            Some(Value::String(m)) if m.is_empty() => return Err(invalid("Process rule mode is required")),
            Some(Value::String(m)) if m == "automatic" => return Ok(ProcessRule::automatic()),
            Some(Value::String(m)) if m == "hierarchical" => return Err(ChunkError::HierarchicalUnsupported),
            Some(Value::String(m)) if m == "custom" => {}
            Some(_) => return Err(invalid("Process rule mode is invalid")),
        }
        let rules = match rule.get("rules") {
            None | Some(Value::Null) => return Err(invalid("Process rule rules is required")),
            Some(Value::Object(r)) if r.is_empty() => return Err(invalid("Process rule rules is required")),
            Some(Value::Object(r)) => r,
            Some(_) => return Err(invalid("Process rule rules is invalid")),
        };
        let mut parsed =
            ProcessRule { mode: Mode::Custom, remove_extra_spaces: false, remove_urls_emails: false, ..ProcessRule::automatic() };
        let pre = match rules.get("pre_processing_rules") {
            None | Some(Value::Null) => return Err(invalid("Process rule pre_processing_rules is required")),
            Some(Value::Array(list)) => list,
            Some(_) => return Err(invalid("Process rule pre_processing_rules is invalid")),
        };
        for item in pre {
            let item = item.as_object().ok_or_else(|| invalid("Process rule pre_processing_rules is invalid"))?;
            let id = match item.get("id") {
                Some(Value::String(id)) if !id.is_empty() => id.as_str(),
                _ => return Err(invalid("Process rule pre_processing_rules id is required")),
            };
            let enabled = item.get("enabled").and_then(Value::as_bool);
            let enabled = enabled.ok_or_else(|| invalid("Process rule pre_processing_rules enabled is invalid"))?;
            match id {
                "remove_extra_spaces" => parsed.remove_extra_spaces = enabled,
                "remove_urls_emails" => parsed.remove_urls_emails = enabled,
                // Accepted by Dify's validation, applied by none of its cleaners.
                "remove_stopwords" => {}
                _ => return Err(invalid("Process rule pre_processing_rules id is invalid")),
            }
        }
        let segmentation = match rules.get("segmentation") {
            None | Some(Value::Null) => return Err(invalid("Process rule segmentation is required")),
            Some(Value::Object(s)) => s,
            Some(_) => return Err(invalid("Process rule segmentation is invalid")),
        };
        parsed.separator = match segmentation.get("separator") {
            None | Some(Value::Null) => return Err(invalid("Process rule segmentation separator is required")),
            Some(Value::String(s)) if s.is_empty() => return Err(invalid("Process rule segmentation separator is required")),
            Some(Value::String(s)) => unescape(s),
            Some(_) => return Err(invalid("Process rule segmentation separator is invalid")),
        };
        parsed.max_tokens = match segmentation.get("max_tokens") {
            None | Some(Value::Null) => return Err(invalid("Process rule segmentation max_tokens is required")),
            Some(Value::Number(n)) if n.as_i64() == Some(0) => return Err(invalid("Process rule segmentation max_tokens is required")),
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => match n.as_u64().and_then(|n| usize::try_from(n).ok()) {
                Some(n) if (MIN_SEGMENTATION_TOKENS..=MAX_SEGMENTATION_TOKENS).contains(&n) => n,
                _ => {
                    return Err(ChunkError::InvalidRule(format!(
                        "Custom segment length should be between {MIN_SEGMENTATION_TOKENS} and {MAX_SEGMENTATION_TOKENS}."
                    )))
                }
            },
            Some(_) => return Err(invalid("Process rule segmentation max_tokens is invalid")),
        };
        parsed.chunk_overlap = match segmentation.get("chunk_overlap") {
            None | Some(Value::Null) => 0,
            Some(Value::Number(n)) => n
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| invalid("Process rule segmentation chunk_overlap is invalid"))?,
            Some(_) => return Err(invalid("Process rule segmentation chunk_overlap is invalid")),
        };
        if parsed.chunk_overlap >= parsed.max_tokens {
            return Err(ChunkError::InvalidRule(format!(
                "Got a larger chunk overlap ({}) than chunk size ({}), should be smaller.",
                parsed.chunk_overlap, parsed.max_tokens
            )));
        }
        Ok(parsed)
    }

    /// The rule as Dify shows it (`automatic` with Dify's `AUTOMATIC_RULES`,
    /// whose separator key is `delimiter`, as Dify has it).
    pub fn to_value(&self) -> Value {
        let pre = json!([
            {"id": "remove_extra_spaces", "enabled": self.remove_extra_spaces},
            {"id": "remove_urls_emails", "enabled": self.remove_urls_emails},
        ]);
        match self.mode {
            Mode::Automatic => json!({"mode": "automatic", "rules": {
                "pre_processing_rules": pre,
                "segmentation": {"delimiter": "\n", "max_tokens": self.max_tokens, "chunk_overlap": self.chunk_overlap},
            }}),
            Mode::Custom => json!({"mode": "custom", "rules": {
                "pre_processing_rules": pre,
                "segmentation": {"separator": self.separator, "max_tokens": self.max_tokens, "chunk_overlap": self.chunk_overlap},
            }}),
        }
    }
}

/// Dify's separator escapes: `\n`, `\t`, `\r`, `\\` and `\u` with four hex digits decoded;
/// any other backslash is kept. (Dify's `unicode_escape` decoding also
/// garbles non-ASCII separators such as `。`; here they stay as given.)
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (decoded, used) = match after.chars().next() {
            Some('n') => (Some('\n'), 1),
            Some('t') => (Some('\t'), 1),
            Some('r') => (Some('\r'), 1),
            Some('\\') => (Some('\\'), 1),
            Some('u') => (after.get(1..5).and_then(|hex| u32::from_str_radix(hex, 16).ok()).and_then(char::from_u32), 5),
            _ => (None, 0),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &after[used..];
            }
            None => {
                out.push('\\');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Cuts `text` into segments by `rule`, counting tokens with
/// `count_tokens`. Each piece is counted once where it is cut (no
/// recounting of the whole text), a segment's size is the sum of its
/// pieces' counts, so the counter should not count a concatenation as more
/// than its parts (true of character counts and of tokenizers that add
/// special tokens per call); each segment's `tokens` is then counted on
/// its final text. No segment exceeds `rule.max_tokens` by that measure
/// unless one character alone does.
pub fn chunk(text: &str, rule: &ProcessRule, count_tokens: &dyn Fn(&str) -> usize) -> Vec<Chunk> {
    let text = clean(text, rule);
    let splitter = Splitter { max: rule.max_tokens, overlap: rule.chunk_overlap, count: count_tokens };
    let mut pieces = Vec::new();
    match rule.mode {
        Mode::Automatic => splitter.recursive(&text, &FALLBACK_SEPARATORS, &mut pieces),
        Mode::Custom => {
            for part in text.split(rule.separator.as_str()) {
                if count_tokens(part) > rule.max_tokens {
                    splitter.recursive(part, &FALLBACK_SEPARATORS, &mut pieces);
                } else {
                    pieces.push(part.to_string());
                }
            }
        }
    }
    pieces
        .iter()
        .filter_map(|piece| {
            let content = strip_leading_symbols(piece).trim();
            (!content.is_empty()).then(|| Chunk {
                tokens: count_tokens(content),
                word_count: content.chars().count(),
                content: content.to_string(),
            })
        })
        .collect()
}

/// Dify's `remove_leading_symbols`: general and CJK punctuation and ASCII
/// symbols at the start of a segment (left over from the cut) go.
fn strip_leading_symbols(s: &str) -> &str {
    s.trim_start_matches(|c: char| {
        matches!(c, '\u{2000}'..='\u{206F}' | '\u{2E00}'..='\u{2E7F}' | '\u{3000}'..='\u{303F}') || "\"#$%&'()*+,./:;<=>?@^_`~".contains(c)
    })
}

static NEWLINES: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\n{3,}").expect("valid regex"));
static SPACES: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[\t\x0C\r\x20\u00a0\u1680\u180e\u2000-\u200a\u202f\u205f\u3000]{2,}").expect("valid regex"));
static EMAILS: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"[a-zA-Z0-9_.+\-]+@[a-zA-Z0-9\-]+\.[a-zA-Z0-9.\-]+").expect("valid regex"));
/// A Markdown image (kept whole) or a URL (removed).
static URLS: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(!\[.*?\]\(https?://[^\s)]+\))|https?://[^\s)]+").expect("valid regex"));

/// Dify's `CleanProcessor.clean`: always `<|`/`|>` defused and control
/// characters and U+FFFE dropped; then the enabled pre-processing rules,
/// URLs and e-mails first so that the spaces they leave are collapsed too
/// (Dify runs them in the order the request lists them). Dify's pattern
/// also drops the letters ï ¿ ¾, a bug not copied.
fn clean(text: &str, rule: &ProcessRule) -> String {
    let mut text = text.replace("<|", "<").replace("|>", ">");
    text.retain(|c| !matches!(c, '\x00'..='\x08' | '\x0B' | '\x0C' | '\x0E'..='\x1F' | '\x7F' | '\u{FFFE}'));
    if rule.remove_urls_emails {
        text = EMAILS.replace_all(&text, "").into_owned();
        text = URLS
            .replace_all(&text, |c: &regex::Captures<'_>| c.get(1).map_or(String::new(), |image| image.as_str().to_string()))
            .into_owned();
    }
    if rule.remove_extra_spaces {
        text = NEWLINES.replace_all(&text, "\n\n").into_owned();
        text = SPACES.replace_all(&text, " ").into_owned();
    }
    text
}

/// Dify's `RecursiveCharacterTextSplitter` with `keep_separator` (the
/// separator stays at the end of the piece before it) and its
/// `_merge_splits`.
struct Splitter<'a> {
    max: usize,
    overlap: usize,
    count: &'a dyn Fn(&str) -> usize,
}

impl Splitter<'_> {
    /// Cuts `text` at the first of `separators` it contains, merges the
    /// pieces that fit into segments and cuts the others further with the
    /// separators after it.
    fn recursive(&self, text: &str, separators: &[&str], out: &mut Vec<String>) {
        let at = separators.iter().position(|s| s.is_empty() || text.contains(s)).unwrap_or(separators.len().saturating_sub(1));
        let separator = separators.get(at).copied().unwrap_or("");
        let rest = if separator.is_empty() { &[][..] } else { &separators[at + 1..] };
        let splits: Vec<&str> = if separator.is_empty() {
            text.char_indices().map(|(i, c)| &text[i..i + c.len_utf8()]).collect()
        } else {
            text.split_inclusive(separator).collect()
        };
        let mut fitting: Vec<(&str, usize)> = Vec::new();
        for piece in splits.into_iter().filter(|s| !s.is_empty() && *s != "\n") {
            let tokens = (self.count)(piece);
            if tokens < self.max {
                fitting.push((piece, tokens));
                continue;
            }
            self.merge(&fitting, out);
            fitting.clear();
            if rest.is_empty() {
                out.push(piece.to_string());
            } else {
                self.recursive(piece, rest, out);
            }
        }
        self.merge(&fitting, out);
    }

    /// Joins consecutive pieces while they fit in `max`; the next segment
    /// starts with the last pieces of the previous one totalling at most
    /// `overlap`.
    fn merge(&self, pieces: &[(&str, usize)], out: &mut Vec<String>) {
        let mut window: VecDeque<(&str, usize)> = VecDeque::new();
        let mut total = 0;
        for &(piece, tokens) in pieces {
            if total + tokens > self.max && !window.is_empty() {
                push_joined(&window, out);
                while total > self.overlap || (total + tokens > self.max && total > 0) {
                    let Some((_, dropped)) = window.pop_front() else { break };
                    total -= dropped;
                }
            }
            window.push_back((piece, tokens));
            total += tokens;
        }
        push_joined(&window, out);
    }
}

fn push_joined(window: &VecDeque<(&str, usize)>, out: &mut Vec<String>) {
    let joined: String = window.iter().map(|(piece, _)| *piece).collect();
    let trimmed = joined.trim();
    if !trimmed.is_empty() {
        out.push(trimmed.to_string());
    }
}

#[cfg(test)]
mod tests;
