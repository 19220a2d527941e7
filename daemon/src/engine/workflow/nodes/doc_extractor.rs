//! document-extractor: the text of uploaded files, read through
//! [`Effects::file`](super::super::Effects::file). Text formats only in this
//! build: plain text, markdown, CSV (as a markdown table, as Dify renders
//! it), JSON (pretty-printed), HTML (tags stripped) and YAML; any other file
//! (PDF, Word, images) fails the node, naming its type. Bytes are read as
//! UTF-8, UTF-16 with a BOM, or else Latin-1.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::super::{BoxFuture, NodeCtx, NodeError, NodeKind, NodeOutput, VarType};
use super::{check_selector, parse, upload_id, Problems};

#[derive(Debug, Deserialize)]
struct Data {
    variable_selector: Vec<String>,
    #[serde(default)]
    is_array_file: bool,
}

#[derive(Debug)]
pub struct DocumentExtractor {
    selector: Vec<String>,
    is_array_file: bool,
}

impl DocumentExtractor {
    pub fn build(data: &Value) -> Result<DocumentExtractor, Problems> {
        let d: Data = parse(data)?;
        let mut problems = Problems::new();
        check_selector("variable_selector", &d.variable_selector, &mut problems);
        if problems.is_empty() {
            Ok(DocumentExtractor { selector: d.variable_selector, is_array_file: d.is_array_file })
        } else {
            Err(problems)
        }
    }
}

/// The text formats this build reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Text,
    Csv,
    Json,
    Html,
}

fn format_of(mime: &str, name: &str) -> Option<Format> {
    let mime = mime.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let by_mime = match mime.as_str() {
        "text/plain" | "text/markdown" | "text/x-markdown" | "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml" => {
            Some(Format::Text)
        }
        "text/csv" => Some(Format::Csv),
        "application/json" => Some(Format::Json),
        "text/html" => Some(Format::Html),
        _ => None,
    };
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    let by_ext = match ext.as_str() {
        "txt" | "md" | "markdown" | "mdx" | "yaml" | "yml" => Some(Format::Text),
        "csv" => Some(Format::Csv),
        "json" => Some(Format::Json),
        "html" | "htm" => Some(Format::Html),
        _ => None,
    };
    // An upload's mime type is often generic (octet-stream); its name decides then.
    by_mime.or(if mime.is_empty() || mime == "application/octet-stream" { by_ext } else { None })
}

fn extract(name: &str, mime: &str, bytes: &[u8]) -> Result<String, String> {
    let Some(format) = format_of(mime, name) else {
        let shown = if mime.is_empty() { name } else { mime };
        return Err(format!("document-extractor cannot read {shown} files in this build"));
    };
    let text = decode(bytes);
    match format {
        Format::Text => Ok(text),
        Format::Json => {
            let v: Value = serde_json::from_str(&text).map_err(|e| format!("Failed to decode JSON file {name:?}: {e}"))?;
            serde_json::to_string_pretty(&v).map_err(|e| format!("{name:?}: {e}"))
        }
        Format::Html => Ok(html_text(&text)),
        Format::Csv => Ok(csv_markdown(&text)),
    }
}

/// A text file's bytes as text: UTF-8 (BOM dropped), UTF-16 with a BOM,
/// else Latin-1, which is what a spreadsheet export on Windows usually is
/// close enough to, rather than replacement characters.
fn decode(bytes: &[u8]) -> String {
    if let Some(rest) = bytes.strip_prefix(b"\xEF\xBB\xBF") {
        return String::from_utf8_lossy(rest).into_owned();
    }
    let utf16 = |rest: &[u8], le: bool| {
        let units = rest.chunks_exact(2).map(|p| if le { u16::from_le_bytes([p[0], p[1]]) } else { u16::from_be_bytes([p[0], p[1]]) });
        char::decode_utf16(units).map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER)).collect()
    };
    if let Some(rest) = bytes.strip_prefix(b"\xFF\xFE") {
        return utf16(rest, true);
    }
    if let Some(rest) = bytes.strip_prefix(b"\xFE\xFF") {
        return utf16(rest, false);
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => bytes.iter().map(|&b| char::from(b)).collect(),
    }
}

/// HTML's text: tags, scripts, styles and comments dropped, the common
/// entities decoded, blank lines removed.
fn html_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(i) = rest.find('<') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let lower = rest.get(..9).unwrap_or(rest).to_ascii_lowercase();
        let skip_to = if rest.starts_with("<!--") {
            Some("-->")
        } else if lower.starts_with("<script") {
            Some("</script>")
        } else if lower.starts_with("<style") {
            Some("</style>")
        } else {
            None
        };
        let end = match skip_to {
            Some(close) => find_ci(rest, close).map(|j| j + close.len()),
            None => rest.find('>').map(|j| j + 1),
        };
        let Some(end) = end else { return tidy(&out) };
        // Block-level tags end a line.
        if skip_to.is_none() && ["<br", "<p", "</p", "<div", "</div", "<li", "<tr", "<h", "</h"].iter().any(|t| lower.starts_with(t)) {
            out.push('\n');
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    tidy(&out)
}

fn find_ci(haystack: &str, needle: &str) -> Option<usize> {
    haystack.to_ascii_lowercase().find(needle)
}

fn tidy(text: &str) -> String {
    let decoded = text
        .replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&");
    decoded.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("\n")
}

/// CSV as a markdown table (first row the header), quotes understood.
fn csv_markdown(text: &str) -> String {
    let rows = csv_rows(text);
    let Some(header) = rows.first() else { return String::new() };
    let width = rows.iter().map(Vec::len).max().unwrap_or(0);
    let line = |cells: &[String]| {
        let mut l = String::from("|");
        for i in 0..width {
            let c = cells.get(i).map(String::as_str).unwrap_or("");
            l.push_str(&format!(" {} |", c.replace('|', "\\|").replace('\n', " ")));
        }
        l
    };
    let mut out = vec![line(header), format!("|{}", " --- |".repeat(width))];
    out.extend(rows[1..].iter().map(|r| line(r)));
    out.join("\n")
}

fn csv_rows(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut cell = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                cell.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (true, c) => cell.push(c),
            (false, '"') if cell.is_empty() => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut cell)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut cell));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => cell.push(c),
        }
    }
    if !cell.is_empty() || !row.is_empty() {
        row.push(cell);
        rows.push(row);
    }
    rows
}

impl NodeKind for DocumentExtractor {
    fn references(&self) -> Vec<(String, Vec<String>)> {
        vec![("variable_selector".into(), self.selector.clone())]
    }
    fn outputs(&self) -> Vec<(String, VarType)> {
        vec![("text".into(), if self.is_array_file { VarType::ArrayString } else { VarType::String })]
    }
    fn run<'a>(&'a self, ctx: NodeCtx<'a>) -> BoxFuture<'a, Result<NodeOutput, NodeError>> {
        Box::pin(async move {
            let value = ctx
                .scope
                .get(&self.selector)
                .ok_or_else(|| NodeError::Failed(format!("File variable not found for selector: {:?}", self.selector)))?;
            let files = match &value {
                Value::Array(files) => files.clone(),
                Value::Null => Vec::new(),
                one => vec![one.clone()],
            };
            let mut texts = Vec::with_capacity(files.len());
            for f in &files {
                let id = upload_id(f).map_err(NodeError::Failed)?;
                let (name, mime, bytes) = ctx.effects.file(id).await.map_err(NodeError::Failed)?;
                texts.push(Value::String(extract(&name, &mime, &bytes).map_err(NodeError::Failed)?));
            }
            let text = if self.is_array_file {
                Value::Array(texts)
            } else {
                match texts.len() {
                    0 => Value::String(String::new()),
                    1 => texts.remove(0),
                    // One file variable holding several files: their texts, joined.
                    _ => Value::String(texts.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("\n\n")),
                }
            };
            let mut inputs = Map::new();
            inputs.insert("variable_selector".into(), Value::Array(self.selector.iter().cloned().map(Value::String).collect()));
            let mut outputs = Map::new();
            outputs.insert("text".into(), text);
            Ok(NodeOutput { inputs, outputs, ..NodeOutput::default() })
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::testing::{ctx, limits, FakeEffects, MapScope};
    use super::*;

    fn fx() -> FakeEffects {
        let mut fx = FakeEffects::default();
        let add = |fx: &mut FakeEffects, id: &str, name: &str, mime: &str, body: &[u8]| {
            fx.files.insert(id.into(), (name.into(), mime.into(), body.to_vec()));
        };
        add(&mut fx, "txt", "notes.txt", "text/plain", b"\xEF\xBB\xBFhello\nworld");
        add(&mut fx, "md", "a.md", "application/octet-stream", b"# Title");
        add(&mut fx, "csv", "t.csv", "text/csv", b"name,qty\n\"Smith, J\",3\nx|y,\"say \"\"hi\"\"\"\n");
        add(&mut fx, "json", "d.json", "application/json", b"{\"a\":[1,2]}");
        add(&mut fx, "html", "p.html", "text/html; charset=utf-8", b"<html><head><style>p{}</style><script>var x = '<p>';</script></head><body><h1>Hi &amp; bye</h1><p>one<br>two</p><!-- c --></body></html>");
        add(&mut fx, "yaml", "c.yaml", "application/x-yaml", b"a: 1\n");
        add(&mut fx, "pdf", "r.pdf", "application/pdf", b"%PDF-1.4");
        add(&mut fx, "badjson", "b.json", "application/json", b"{nope");
        fx
    }

    fn file(id: &str) -> Value {
        json!({"dify_model_identity": "__dify__file__", "type": "document", "transfer_method": "local_file", "related_id": id, "filename": id})
    }

    async fn run(is_array_file: bool, value: Value) -> Result<Value, String> {
        let n = DocumentExtractor::build(
            &json!({"type": "document-extractor", "variable_selector": ["start", "doc"], "is_array_file": is_array_file}),
        )
        .unwrap();
        let scope = MapScope::with(&[("start.doc", value)]);
        let fx = fx();
        n.run(ctx(&scope, &fx, &limits())).await.map(|o| o.outputs["text"].clone()).map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn text_formats() {
        assert_eq!(run(false, file("txt")).await.unwrap(), "hello\nworld");
        assert_eq!(run(false, file("md")).await.unwrap(), "# Title");
        assert_eq!(run(false, file("yaml")).await.unwrap(), "a: 1\n");
        assert_eq!(run(false, file("json")).await.unwrap(), "{\n  \"a\": [\n    1,\n    2\n  ]\n}");
        assert_eq!(run(false, file("html")).await.unwrap(), "Hi & bye\none\ntwo");
        assert_eq!(run(false, file("csv")).await.unwrap(), "| name | qty |\n| --- | --- |\n| Smith, J | 3 |\n| x\\|y | say \"hi\" |");
        // The Service API's shape: upload_file_id.
        let upload = json!({"type": "document", "transfer_method": "local_file", "upload_file_id": "txt"});
        assert_eq!(run(false, upload).await.unwrap(), "hello\nworld");
    }

    #[tokio::test]
    async fn arrays_of_files() {
        let n = DocumentExtractor::build(&json!({"variable_selector": ["start", "doc"], "is_array_file": true})).unwrap();
        assert_eq!(n.outputs(), vec![("text".to_owned(), VarType::ArrayString)]);
        assert_eq!(run(true, json!([file("txt"), file("md")])).await.unwrap(), json!(["hello\nworld", "# Title"]));
        assert_eq!(run(true, json!([])).await.unwrap(), json!([]));
    }

    #[tokio::test]
    async fn unreadable_files_fail_clearly() {
        let e = run(false, file("pdf")).await.unwrap_err();
        assert_eq!(e, "document-extractor cannot read application/pdf files in this build");
        let e = run(true, json!([file("txt"), file("pdf")])).await.unwrap_err();
        assert!(e.contains("application/pdf"), "{e}");
        let e = run(false, file("badjson")).await.unwrap_err();
        assert!(e.contains("Failed to decode JSON"), "{e}");
        let e = run(false, file("gone")).await.unwrap_err();
        assert!(e.contains("not found"), "{e}");
        let e = run(false, json!({"transfer_method": "remote_url", "remote_url": "http://x/y.txt"})).await.unwrap_err();
        assert!(e.contains("remote URL"), "{e}");
        let e = run(false, json!("just text")).await.unwrap_err();
        assert!(e.contains("expected a file"), "{e}");
    }

    #[test]
    fn encodings() {
        assert_eq!(decode(b"\xEF\xBB\xBFcaf\xC3\xA9"), "café");
        assert_eq!(decode(b"caf\xE9"), "café");
        assert_eq!(decode(b"\xFF\xFEc\x00a\x00f\x00\xE9\x00"), "café");
        assert_eq!(decode(b"\xFE\xFF\x00c\x00a\x00f\x00\xE9"), "café");
    }

    #[test]
    fn bad_data_names_its_field() {
        let e = DocumentExtractor::build(&json!({"variable_selector": ["start"]})).unwrap_err();
        assert_eq!(e[0].0, "variable_selector");
        let e = DocumentExtractor::build(&json!({"is_array_file": "yes", "variable_selector": ["a", "b"]})).unwrap_err();
        assert_eq!(e[0].0, "is_array_file");
    }
}
