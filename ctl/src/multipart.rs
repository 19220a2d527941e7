//! A `multipart/form-data` body (RFC 7578) for Dify's `create-by-file`: a
//! `data` part with the JSON options and a `file` part with the bytes.
//!
//! Owns: the encoding and the choice of a boundary the content cannot
//! contain. Must not: read files or send requests.

use std::time::{SystemTime, UNIX_EPOCH};

/// A form ready to send: its `Content-Type` (with the boundary) and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Form {
    pub content_type: String,
    pub body: Vec<u8>,
}

/// Why a file cannot go into a form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MultipartError {
    /// A CR, LF or other control character would break the part's header.
    #[error("the file name {0:?} contains control characters")]
    ControlInName(String),
}

/// The form of one upload: `data` (JSON text) then `file` named `file_name`.
pub fn file_form(data: &str, file_name: &str, bytes: &[u8]) -> Result<Form, MultipartError> {
    let seed = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    encode(data, file_name, bytes, seed)
}

/// [`file_form`] with the boundary's seed given (tests).
fn encode(data: &str, file_name: &str, bytes: &[u8], seed: u128) -> Result<Form, MultipartError> {
    if file_name.chars().any(char::is_control) {
        return Err(MultipartError::ControlInName(file_name.to_owned()));
    }
    let boundary = boundary(seed, &[data.as_bytes(), bytes]);
    // Inside the quoted name only `"` and `\` need escaping (multer and
    // Werkzeug both undo `\"`); UTF-8 goes as it is, as browsers send it.
    let quoted = file_name.replace('\\', "\\\\").replace('"', "\\\"");
    let mut body = Vec::with_capacity(bytes.len() + data.len() + 256);
    body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"data\"\r\n\r\n").as_bytes());
    body.extend_from_slice(data.as_bytes());
    body.extend_from_slice(
        format!(
            "\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{quoted}\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    Ok(Form { content_type: format!("multipart/form-data; boundary={boundary}"), body })
}

/// A boundary that occurs in none of `contents` (the first of a sequence
/// that starts at `seed`).
fn boundary(seed: u128, contents: &[&[u8]]) -> String {
    (0u32..)
        .map(|n| format!("edgeaictl-{:032x}", seed.wrapping_add(u128::from(n))))
        .find(|b| !contents.iter().any(|c| contains(c, b.as_bytes())))
        .unwrap_or_default()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap (style.md)
mod tests {
    use super::*;

    #[test]
    fn encodes_data_then_file_with_crlf_framing() {
        let form = encode(r#"{"process_rule":{"mode":"automatic"}}"#, "plc-alarms.md", b"# Alarms\n", 1).unwrap();
        let b = "edgeaictl-00000000000000000000000000000001";
        assert_eq!(form.content_type, format!("multipart/form-data; boundary={b}"));
        let expected = format!(
            "--{b}\r\nContent-Disposition: form-data; name=\"data\"\r\n\r\n{{\"process_rule\":{{\"mode\":\"automatic\"}}}}\r\n\
             --{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"plc-alarms.md\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n# Alarms\n\r\n--{b}--\r\n"
        );
        assert_eq!(String::from_utf8(form.body).unwrap(), expected);
    }

    #[test]
    fn boundary_never_occurs_in_the_content() {
        // The file holds the first two candidates; the third is chosen.
        let file = b"--edgeaictl-00000000000000000000000000000007 and edgeaictl-00000000000000000000000000000008";
        let form = encode("{}", "a.txt", file, 7).unwrap();
        assert!(form.content_type.ends_with("boundary=edgeaictl-00000000000000000000000000000009"), "{}", form.content_type);
        let text = String::from_utf8(form.body).unwrap();
        assert_eq!(text.matches("edgeaictl-00000000000000000000000000000009").count(), 3);
    }

    #[test]
    fn names_are_quoted_and_keep_utf8_but_control_characters_are_refused() {
        let form = encode("{}", "空压机 \"v2\".md", b"x", 0).unwrap();
        let text = String::from_utf8(form.body).unwrap();
        assert!(text.contains("filename=\"空压机 \\\"v2\\\".md\""), "{text}");
        assert_eq!(encode("{}", "a\r\nb.md", b"x", 0), Err(MultipartError::ControlInName("a\r\nb.md".into())));
    }

    #[test]
    fn binary_content_is_sent_byte_for_byte() {
        let pdf = [0x25, 0x50, 0x44, 0x46, 0x00, 0xff, 0x0d, 0x0a];
        let form = encode("{}", "m.pdf", &pdf, 3).unwrap();
        assert!(contains(&form.body, &pdf));
    }
}
