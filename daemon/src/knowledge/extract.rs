//! Text extraction from uploaded files: which kind a file is (by its
//! extension, checked against its bytes) and its plain text.
//!
//! Owns: the supported kinds (txt, markdown, html, csv, pdf), text
//! decoding (UTF-8 with or without BOM, UTF-16 with BOM, GB18030), HTML to visible
//! text, CSV rows to `header: value` lines as Dify's CSV extractor writes
//! them, the PDF text layer, and the limits on what comes out.
//! Must not: chunk or clean text (`chunk` does, by the process rule), know
//! file size limits (the API refuses a large body before it gets here), or
//! touch the store.
//!
//! The PDF parser (`pdf-extract` over `lopdf`) can panic on malformed
//! files; it runs under `catch_unwind`, and a panic is an `Invalid` file.

use std::cell::RefCell;
use std::io::Read;
use std::panic::{self, AssertUnwindSafe};

use html5ever::tendril::StrTendril;
use html5ever::tokenizer::states::RawKind;
use html5ever::tokenizer::{BufferQueue, Tag, TagKind, Token, TokenSink, TokenSinkResult, Tokenizer, TokenizerOpts};
use pdf_extract::{MediaBox, OutputDev, OutputError, Transform};

/// A supported file kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Txt,
    Markdown,
    Html,
    Csv,
    Pdf,
}

impl Kind {
    /// The name stored with a document (`DocumentSource::File::kind`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Txt => "txt",
            Kind::Markdown => "markdown",
            Kind::Html => "html",
            Kind::Csv => "csv",
            Kind::Pdf => "pdf",
        }
    }

    fn from_extension(ext: &str) -> Option<Kind> {
        match ext.to_ascii_lowercase().as_str() {
            "txt" => Some(Kind::Txt),
            "md" | "markdown" | "mdx" => Some(Kind::Markdown),
            "html" | "htm" => Some(Kind::Html),
            "csv" => Some(Kind::Csv),
            "pdf" => Some(Kind::Pdf),
            _ => None,
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a file gave no text.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// Zero bytes.
    #[error("File is empty.")]
    Empty,
    /// The extension is not one of the supported kinds (the extension as
    /// given, empty when the name has none).
    #[error("File type not allowed: {0:?} (supported: txt, md, markdown, mdx, html, htm, csv, pdf)")]
    Unsupported(String),
    /// The bytes are not what the extension says.
    #[error("not a valid {kind} file: {reason}")]
    Invalid { kind: Kind, reason: String },
    /// The file is well formed but holds no text (only markup, only a CSV
    /// header, only whitespace).
    #[error("the {0} file contains no text")]
    NoText(Kind),
    /// A PDF whose pages hold no text (scanned or image-only); OCR is not
    /// done.
    #[error("the PDF has no text layer (scanned or image-only pages); OCR is not supported")]
    NoTextLayer,
    /// The text is longer than the caller's limit.
    #[error("the extracted text is longer than {max_chars} characters")]
    TooLong { max_chars: usize },
}

/// The kind of `file_name` (its last path component's extension,
/// case-insensitive), checked against `bytes`: a PDF must start with
/// `%PDF-`, a text kind must be UTF-8 (BOM allowed), UTF-16 with a BOM or
/// GB18030, without NUL characters.
pub fn detect(file_name: &str, bytes: &[u8]) -> Result<Kind, ExtractError> {
    let base = file_name.rsplit(['/', '\\']).next().unwrap_or(file_name);
    let ext = match base.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => ext,
        _ => "",
    };
    let kind = Kind::from_extension(ext).ok_or_else(|| ExtractError::Unsupported(ext.to_string()))?;
    if bytes.is_empty() {
        return Err(ExtractError::Empty);
    }
    match kind {
        Kind::Pdf if !bytes.starts_with(b"%PDF-") => Err(ExtractError::Invalid { kind, reason: "it does not start with %PDF-".into() }),
        Kind::Pdf => Ok(kind),
        _ => decode_text(kind, bytes).map(|_| kind),
    }
}

/// The plain text of a file of `kind`, at most `max_chars` characters.
/// Text and markdown are returned as they are (line ends made `\n`); HTML
/// as its visible text; CSV as one `header: value;header: value` line per
/// row, rows separated by a blank line; PDF as its text layer, pages
/// separated by a blank line.
pub fn extract(kind: Kind, bytes: &[u8], max_chars: usize) -> Result<String, ExtractError> {
    if bytes.is_empty() {
        return Err(ExtractError::Empty);
    }
    let text = match kind {
        Kind::Txt | Kind::Markdown => decode_text(kind, bytes)?,
        Kind::Html => html_text(&decode_text(kind, bytes)?),
        Kind::Csv => csv_text(&decode_text(kind, bytes)?)?,
        Kind::Pdf => pdf_text(bytes, max_chars)?,
    };
    if text.chars().count() > max_chars {
        return Err(ExtractError::TooLong { max_chars });
    }
    if text.trim().is_empty() {
        return Err(if kind == Kind::Pdf { ExtractError::NoTextLayer } else { ExtractError::NoText(kind) });
    }
    Ok(text)
}

/// Text from UTF-8 (optional BOM), UTF-16 (BOM required) or GB18030 (a
/// superset of GBK), with CR LF and lone CR made LF (as Python's universal
/// newlines, which Dify reads with).
fn decode_text(kind: Kind, bytes: &[u8]) -> Result<String, ExtractError> {
    let invalid = |reason: String| ExtractError::Invalid { kind, reason };
    let text = if let Some(rest) = bytes.strip_prefix(b"\xEF\xBB\xBF") {
        std::str::from_utf8(rest).map_err(|e| invalid(format!("not UTF-8 text (bad byte at offset {})", e.valid_up_to() + 3)))?.to_string()
    } else if let Some((rest, little)) =
        bytes.strip_prefix(b"\xFF\xFE").map(|r| (r, true)).or_else(|| bytes.strip_prefix(b"\xFE\xFF").map(|r| (r, false)))
    {
        if rest.len() % 2 != 0 {
            return Err(invalid("UTF-16 text with an odd number of bytes".into()));
        }
        let units = rest.chunks_exact(2).map(|p| if little { u16::from_le_bytes([p[0], p[1]]) } else { u16::from_be_bytes([p[0], p[1]]) });
        char::decode_utf16(units).collect::<Result<String, _>>().map_err(|_| invalid("UTF-16 text with an unpaired surrogate".into()))?
    } else {
        match std::str::from_utf8(bytes) {
            Ok(text) => text.to_string(),
            // Chinese Windows saves text as GBK/GB18030 by default; Dify
            // detects the encoding too. Binary data rarely passes: NUL
            // bytes, or 0x80 or 0xFF outside a two-byte character.
            Err(e) => (!bytes.contains(&0))
                .then(|| encoding_rs::GB18030.decode_without_bom_handling_and_without_replacement(bytes))
                .flatten()
                .map(|text| text.into_owned())
                .ok_or_else(|| invalid(format!("binary data, not UTF-8 or GB18030 text (bad byte at offset {})", e.valid_up_to())))?,
        }
    };
    if let Some(at) = text.find('\0') {
        return Err(invalid(format!("binary data (NUL character at offset {at})")));
    }
    Ok(if text.contains('\r') { text.replace("\r\n", "\n").replace('\r', "\n") } else { text })
}

/// Visible text of an HTML document in one pass over html5ever's
/// tokenizer (no DOM tree: linear in the input, where the tree builder,
/// and so html2text, take quadratic time on deeply nested markup).
/// Scripts, styles, templates and the title are dropped, entities decoded,
/// white space collapsed outside `<pre>`, block elements put on their own
/// lines (paragraph-like ones apart by a blank line), table cells apart by
/// a space, images by their `alt` text.
fn html_text(html: &str) -> String {
    let input = BufferQueue::default();
    input.push_back(StrTendril::from_slice(html));
    let tokenizer = Tokenizer::new(HtmlText::default(), TokenizerOpts::default());
    // Only a sink answering `Script` makes `feed` stop early; this one never does.
    let _ = tokenizer.feed(&input);
    tokenizer.end();
    tokenizer.sink.0.into_inner().out
}

/// The text collected so far; `RefCell` because html5ever's sink API takes
/// `&self`.
#[derive(Default)]
struct HtmlText(RefCell<HtmlState>);

#[derive(Default)]
struct HtmlState {
    out: String,
    /// Line break owed before the next text: 0 none, 1 new line, 2 blank line.
    pending_break: u8,
    pending_space: bool,
    /// Inside this many hidden elements (script, style...).
    hidden: usize,
    /// Inside this many `<pre>`.
    pre: usize,
}

impl TokenSink for HtmlText {
    type Handle = ();

    fn process_token(&self, token: Token, _line: u64) -> TokenSinkResult<()> {
        let mut state = self.0.borrow_mut();
        match token {
            Token::CharacterTokens(text) => state.text(&text),
            Token::TagToken(tag) => return state.tag(&tag),
            _ => {}
        }
        TokenSinkResult::Continue
    }
}

impl HtmlState {
    fn tag(&mut self, tag: &Tag) -> TokenSinkResult<()> {
        let start = tag.kind == TagKind::StartTag;
        let name: &str = &tag.name;
        let raw = match name {
            "script" => Some(RawKind::ScriptData),
            "style" | "xmp" | "iframe" | "noembed" | "noframes" => Some(RawKind::Rawtext),
            "title" => Some(RawKind::Rcdata),
            "template" | "noscript" => None,
            _ => {
                match name {
                    "p" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6" | "ul" | "ol" | "dl" | "table" | "blockquote" | "section" | "article"
                    | "header" | "footer" | "nav" | "aside" | "main" | "figure" | "form" | "fieldset" | "address" | "details" | "hr" => {
                        self.line_break(2)
                    }
                    "pre" => {
                        self.line_break(2);
                        self.pre = if start { self.pre + 1 } else { self.pre.saturating_sub(1) };
                    }
                    "br" | "div" | "li" | "tr" | "dt" | "dd" | "caption" | "figcaption" | "summary" | "option" | "legend" => {
                        self.line_break(1)
                    }
                    "td" | "th" => self.pending_space = true,
                    "img" if start => {
                        if let Some(alt) = tag.attrs.iter().find(|a| &*a.name.local == "alt") {
                            self.pending_space = true;
                            self.text(&alt.value);
                            self.pending_space = true;
                        }
                    }
                    _ => {}
                }
                return TokenSinkResult::Continue;
            }
        };
        if !start {
            self.hidden = self.hidden.saturating_sub(1);
            return TokenSinkResult::Continue;
        }
        if tag.self_closing {
            return TokenSinkResult::Continue;
        }
        self.hidden += 1;
        raw.map_or(TokenSinkResult::Continue, TokenSinkResult::RawData)
    }

    fn line_break(&mut self, level: u8) {
        self.pending_break = self.pending_break.max(level);
        self.pending_space = false;
    }

    fn text(&mut self, text: &str) {
        if self.hidden > 0 {
            return;
        }
        for c in text.chars() {
            if self.pre == 0 && c.is_ascii_whitespace() {
                self.pending_space = true;
                continue;
            }
            if !self.out.is_empty() {
                match self.pending_break {
                    0 if self.pending_space && !self.out.ends_with('\n') => self.out.push(' '),
                    0 => {}
                    1 => self.out.push('\n'),
                    _ => self.out.push_str("\n\n"),
                }
            }
            self.pending_break = 0;
            self.pending_space = false;
            self.out.push(c);
        }
    }
}

/// Rows as Dify's CSV extractor writes them (`api/core/rag/extractor/
/// csv_extractor.py`): `header: value` pairs joined by `;`, names and
/// values trimmed; a row with more fields than the header is skipped
/// (pandas' `on_bad_lines="skip"`), missing fields are empty. Dify makes a
/// document per row; here rows are paragraphs, so no chunk cuts a row.
fn csv_text(text: &str) -> Result<String, ExtractError> {
    let invalid = |e: csv::Error| ExtractError::Invalid { kind: Kind::Csv, reason: e.to_string() };
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(text.as_bytes());
    let headers: Vec<String> = reader.headers().map_err(invalid)?.iter().map(|h| h.trim().to_string()).collect();
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(invalid)?;
        if record.len() > headers.len() || record.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        let row: Vec<String> = headers.iter().enumerate().map(|(i, h)| format!("{h}: {}", record.get(i).unwrap_or("").trim())).collect();
        rows.push(row.join(";"));
    }
    Ok(rows.join("\n\n"))
}

/// The text layer of a PDF, stopping once it passes `max_chars`.
fn pdf_text(bytes: &[u8], max_chars: usize) -> Result<String, ExtractError> {
    let invalid = |reason: String| ExtractError::Invalid { kind: Kind::Pdf, reason };
    if !bytes.starts_with(b"%PDF-") {
        return Err(invalid("it does not start with %PDF-".into()));
    }
    let mut out =
        PdfText { text: String::new(), chars: 0, max_chars, pages: 0, last_end: 0.0, last_y: 0.0, first_char: false, page_height: 0.0 };
    let parsed = panic::catch_unwind(AssertUnwindSafe(|| -> Result<(), String> {
        let mut doc = pdf_extract::Document::load_mem(bytes).map_err(|e| format!("cannot be parsed: {e}"))?;
        if doc.is_encrypted() {
            // Most "encrypted" PDFs only restrict permissions, with an empty user password.
            doc.decrypt("").map_err(|_| "it is password-protected".to_string())?;
        }
        check_inflated_size(&doc)?;
        pdf_extract::output_doc(&doc, &mut out).map_err(|e| format!("cannot be read: {e}"))
    }));
    match parsed {
        Err(_) => {
            tracing::warn!(bytes = bytes.len(), "the PDF parser panicked on a malformed file");
            Err(invalid("malformed (the PDF parser failed on it)".into()))
        }
        Ok(_) if out.chars > max_chars => Err(ExtractError::TooLong { max_chars }),
        Ok(Err(reason)) => Err(invalid(reason)),
        Ok(Ok(())) if out.text.trim().is_empty() => Err(ExtractError::NoTextLayer),
        Ok(Ok(())) => Ok(out.text.trim().to_string()),
    }
}

/// Most bytes a PDF's compressed streams other than images may inflate
/// to: the parser inflates each page's content in memory, and a deflate
/// bomb (1000:1) must not take the daemon's memory.
const PDF_MAX_INFLATED_BYTES: u64 = 256 << 20;

/// Inflates every Flate-compressed stream that is not an image into a sink,
/// counting, and refuses the file past `PDF_MAX_INFLATED_BYTES`.
fn check_inflated_size(doc: &pdf_extract::Document) -> Result<(), String> {
    let mut budget = PDF_MAX_INFLATED_BYTES;
    for object in doc.objects.values() {
        let Ok(stream) = object.as_stream() else { continue };
        let image = stream.dict.get(b"Subtype").and_then(|s| s.as_name()).is_ok_and(|n| n == b"Image");
        if image || !stream.filters().unwrap_or_default().contains(&&b"FlateDecode"[..]) {
            continue;
        }
        let mut inflater = flate2::read::ZlibDecoder::new(stream.content.as_slice()).take(budget + 1);
        let (mut buffer, mut inflated) = ([0u8; 16 << 10], 0u64);
        // A broken stream counts what inflated before the fault.
        while let Ok(n @ 1..) = inflater.read(&mut buffer) {
            inflated += n as u64;
        }
        budget = budget
            .checked_sub(inflated)
            .ok_or_else(|| format!("its compressed streams inflate to more than {PDF_MAX_INFLATED_BYTES} bytes"))?;
    }
    Ok(())
}

/// Collects the characters `pdf-extract` places, as its `PlainTextOutput`
/// does (a space where glyphs are apart, a line break where the baseline
/// moves), plus a blank line between pages and a stop at the limit.
struct PdfText {
    text: String,
    chars: usize,
    max_chars: usize,
    pages: u32,
    last_end: f64,
    last_y: f64,
    first_char: bool,
    page_height: f64,
}

impl OutputDev for PdfText {
    fn begin_page(&mut self, _page: u32, media_box: &MediaBox, _art_box: Option<(f64, f64, f64, f64)>) -> Result<(), OutputError> {
        if self.pages > 0 {
            self.text.push_str("\n\n");
        }
        self.pages += 1;
        self.page_height = media_box.ury - media_box.lly;
        self.last_end = f64::MAX;
        Ok(())
    }

    fn end_page(&mut self) -> Result<(), OutputError> {
        Ok(())
    }

    fn output_character(&mut self, trm: &Transform, width: f64, _spacing: f64, font_size: f64, char: &str) -> Result<(), OutputError> {
        // Device position with y flipped to grow downwards, and the font
        // size as scaled by the text matrix.
        let (x, y) = (trm.m31, self.page_height - trm.m32);
        let size = ((font_size * trm.m11 + font_size * trm.m21) * (font_size * trm.m12 + font_size * trm.m22)).abs().sqrt();
        if self.first_char {
            let dy = (y - self.last_y).abs();
            if dy > size * 1.5 {
                self.text.push('\n');
            }
            if x < self.last_end && dy > size * 0.5 {
                self.text.push('\n');
            }
            if x > self.last_end + size * 0.1 {
                self.text.push(' ');
            }
        }
        self.text.push_str(char);
        self.chars += char.chars().count();
        self.first_char = false;
        self.last_y = y;
        self.last_end = x + width * size;
        if self.chars > self.max_chars {
            // Stops the parser; `pdf_text` reports the limit.
            return Err(OutputError::FormatError(std::fmt::Error));
        }
        Ok(())
    }

    fn begin_word(&mut self) -> Result<(), OutputError> {
        self.first_char = true;
        Ok(())
    }

    fn end_word(&mut self) -> Result<(), OutputError> {
        Ok(())
    }

    fn end_line(&mut self) -> Result<(), OutputError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
