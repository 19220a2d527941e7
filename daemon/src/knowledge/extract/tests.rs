//! Unit tests of extraction: every kind, every refusal, PDFs made by the
//! test fixture writer (Latin, CJK with a ToUnicode CMap, image-only,
//! truncated), and limits.

use super::*;
use edgeai_tests::pdf::{cjk_pdf, flate_pdf, image_only_pdf, text_pdf};
use std::io::Write;

const MAX: usize = 1_000_000;

fn extract_file(name: &str, bytes: &[u8]) -> Result<String, ExtractError> {
    extract(detect(name, bytes)?, bytes, MAX)
}

fn invalid_reason(result: Result<impl std::fmt::Debug, ExtractError>, kind: Kind) -> String {
    match result {
        Err(ExtractError::Invalid { kind: k, reason }) if k == kind => reason,
        other => panic!("expected Invalid {kind}, got {other:?}"),
    }
}

#[test]
fn kinds_come_from_the_extension_whatever_its_case() {
    for (name, kind) in [
        ("a.txt", Kind::Txt),
        ("MANUAL.TXT", Kind::Txt),
        ("notes.md", Kind::Markdown),
        ("notes.Markdown", Kind::Markdown),
        ("page.mdx", Kind::Markdown),
        ("page.HTML", Kind::Html),
        ("page.htm", Kind::Html),
        ("faults.csv", Kind::Csv),
        ("dir/sub\\faults.v2.csv", Kind::Csv),
    ] {
        assert_eq!(detect(name, b"text").map_err(|e| e.to_string()), Ok(kind), "{name}");
    }
    assert_eq!(detect("Manual.PDF", &text_pdf(&["x"])).map_err(|e| e.to_string()), Ok(Kind::Pdf));
    assert_eq!(Kind::Markdown.as_str(), "markdown");
}

#[test]
fn other_extensions_are_unsupported() {
    for (name, ext) in [("a.docx", "docx"), ("a.exe", "exe"), ("README", ""), (".txt", ""), ("dir.txt/file", ""), ("a.", "")] {
        match detect(name, b"text") {
            Err(ExtractError::Unsupported(e)) => assert_eq!(e, ext, "{name}"),
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn empty_files_are_refused() {
    assert!(matches!(detect("a.txt", b""), Err(ExtractError::Empty)));
    assert!(matches!(detect("a.pdf", b""), Err(ExtractError::Empty)));
    assert!(matches!(extract(Kind::Csv, b"", MAX), Err(ExtractError::Empty)));
    for (name, bytes) in [("a.txt", &b" \n\t\n"[..]), ("a.html", b"<html><script>x()</script></html>"), ("a.csv", b"code,meaning\n")] {
        let kind = detect(name, bytes).expect("valid");
        assert!(matches!(extract(kind, bytes, MAX), Err(ExtractError::NoText(k)) if k == kind), "{name}");
    }
}

#[test]
fn binary_garbage_is_not_text() {
    let garbage: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    for name in ["a.txt", "a.md", "a.html", "a.csv"] {
        let kind = Kind::from_extension(name.rsplit('.').next().unwrap_or_default()).expect("kind");
        assert!(invalid_reason(detect(name, &garbage), kind).contains("binary data"), "{name}");
    }
    // Valid UTF-8 holding a NUL is binary too.
    assert!(invalid_reason(detect("a.txt", b"abc\0def"), Kind::Txt).contains("NUL"));
    assert!(invalid_reason(extract(Kind::Txt, b"abc\0def", MAX), Kind::Txt).contains("NUL"));
    // A PNG named .txt.
    assert!(matches!(detect("photo.txt", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"), Err(ExtractError::Invalid { .. })));
}

#[test]
fn a_pdf_must_be_a_pdf() {
    let reason = invalid_reason(detect("a.pdf", b"Just some text pretending"), Kind::Pdf);
    assert!(reason.contains("%PDF-"), "{reason}");
    assert!(matches!(extract(Kind::Pdf, b"<html>", MAX), Err(ExtractError::Invalid { kind: Kind::Pdf, .. })));
    // A PDF header on garbage.
    let mut fake = b"%PDF-1.7\n".to_vec();
    fake.extend((0..=255u8).cycle().take(2000));
    assert!(matches!(extract_file("a.pdf", &fake), Err(ExtractError::Invalid { kind: Kind::Pdf, .. })));
}

#[test]
fn text_encodings_and_line_ends() {
    assert_eq!(
        extract_file("a.txt", "\u{FEFF}Reset the PLC.\r\nThen wait.\rDone.".as_bytes()).ok().as_deref(),
        Some("Reset the PLC.\nThen wait.\nDone.")
    );
    let le: Vec<u8> = b"\xFF\xFE".iter().copied().chain("复位 PLC".encode_utf16().flat_map(u16::to_le_bytes)).collect();
    let be: Vec<u8> = b"\xFE\xFF".iter().copied().chain("复位 PLC".encode_utf16().flat_map(u16::to_be_bytes)).collect();
    assert_eq!(extract_file("a.txt", &le).ok().as_deref(), Some("复位 PLC"));
    assert_eq!(extract_file("a.md", &be).ok().as_deref(), Some("复位 PLC"));
    assert!(invalid_reason(detect("a.txt", b"\xFF\xFEa"), Kind::Txt).contains("odd"));
    assert!(invalid_reason(detect("a.txt", b"\xFF\xFE\x00\xD8"), Kind::Txt).contains("surrogate"));
    // GBK, as Chinese Windows saves text and CSV files.
    let (gbk, _, _) = encoding_rs::GBK.encode("报警代码,处理\r\nE12,更换保险丝\r\n");
    assert_eq!(extract_file("a.csv", &gbk).ok().as_deref(), Some("报警代码: E12;处理: 更换保险丝"));
    assert!(invalid_reason(detect("a.txt", b"caf\xE9 au lait"), Kind::Txt).contains("not UTF-8 or GB18030"));
    // Markdown is kept as it is.
    let md = "# Alarm E12\n\n- check **fuse** F3\n- [manual](https://example.com)";
    assert_eq!(extract_file("a.md", md.as_bytes()).ok().as_deref(), Some(md));
}

#[test]
fn html_becomes_its_visible_text() {
    let html = "<!doctype html><html><head><title>T</title><style>p { color: red }</style>\
                <script>var secret = 1;</script></head><body>\
                <h1>Alarm E12</h1><p>Check the fuse &amp; the relay&nbsp;K1.</p>\
                <p>Line one<br>line two</p><ul><li>Step 1</li><li>Step 2</li></ul>\
                <table><tr><td>E12</td><td>fuse</td></tr></table><a href=\"/m\">manual</a> <img src=p.png alt=pump></body></html>";
    let text = extract_file("a.html", html.as_bytes()).expect("text");
    for part in ["Alarm E12", "Check the fuse & the relay\u{a0}K1.", "Line one\nline two", "Step 1", "Step 2", "E12", "fuse"] {
        assert!(text.contains(part), "{part:?} missing from {text:?}");
    }
    assert!(text.ends_with("manual pump"), "links and images as their text: {text:?}");
    for hidden in ["secret", "color", "<p>", "&amp;", "[", "#", "*"] {
        assert!(!text.contains(hidden), "{hidden:?} in {text:?}");
    }
    assert!(text.find("Alarm E12").unwrap_or(0) < text.find("Check").unwrap_or(0));
    assert!(text.contains("K1.\n"), "paragraphs end lines: {text:?}");
}

#[test]
fn deeply_nested_html_does_not_crash() {
    let html = format!("{}deep text{}", "<div>".repeat(20_000), "</div>".repeat(20_000));
    // Any answer but a crash (a stack overflow would abort the process).
    let result = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || extract(Kind::Html, html.as_bytes(), MAX).map_err(|e| e.to_string()))
        .expect("spawn")
        .join();
    assert!(result.is_ok(), "panicked");
}

#[test]
fn csv_rows_are_written_as_dify_does() {
    let csv = "code , meaning,action\nE01, low air pressure ,\"check valve, then compressor\"\n\
               E02,motor hot\nE03,a,b,extra field\n,,\nE04,door open,close it\n";
    assert_eq!(
        extract_file("faults.csv", csv.as_bytes()).ok().as_deref(),
        Some(
            "code: E01;meaning: low air pressure;action: check valve, then compressor\n\n\
             code: E02;meaning: motor hot;action: \n\n\
             code: E04;meaning: door open;action: close it"
        )
    );
    assert_eq!(extract_file("a.csv", "\u{FEFF}名称,说明\r\n报警,复位\r\n".as_bytes()).ok().as_deref(), Some("名称: 报警;说明: 复位"));
}

#[test]
fn pdf_text_layer_is_extracted_page_by_page() {
    let pdf = text_pdf(&["Maintenance manual\nAlarm E12: check fuse F3.", "Page two (spare parts) \\ list"]);
    let text = extract_file("manual.pdf", &pdf).expect("text");
    for part in ["Maintenance manual", "Alarm E12: check fuse F3.", "Page two (spare parts) \\ list"] {
        assert!(text.contains(part), "{part:?} missing from {text:?}");
    }
    let first = text.find("F3.").unwrap_or(usize::MAX);
    let second = text.find("Page two").unwrap_or(0);
    assert!(first < second && text[first..second].contains("\n\n"), "pages apart: {text:?}");
    assert!(text.find("manual").unwrap_or(usize::MAX) < text.find("Alarm").unwrap_or(0));
}

#[test]
fn cjk_pdf_text_comes_through_its_tounicode_cmap() {
    let sentence = "断开电源后检查报警继电器。";
    let text = extract_file("手册.pdf", &cjk_pdf(&format!("{sentence}\n故障代码 E12：保险丝熔断。"))).expect("text");
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    assert!(compact.contains(sentence), "{text:?}");
    assert!(compact.contains("故障代码E12：保险丝熔断。"), "{text:?}");
}

#[test]
fn image_only_pdf_has_no_text_layer() {
    assert!(matches!(extract_file("scan.pdf", &image_only_pdf()), Err(ExtractError::NoTextLayer)));
}

#[test]
fn truncated_or_damaged_pdfs_are_errors_not_panics() {
    let pdf = text_pdf(&["Alarm E12: check fuse F3.", "Second page"]);
    for len in (8..pdf.len()).step_by(13) {
        // Ok is possible (lopdf may recover a file without its xref); a
        // panic fails the test.
        if let Err(e) = extract(Kind::Pdf, &pdf[..len], MAX) {
            assert!(matches!(e, ExtractError::Invalid { .. } | ExtractError::NoTextLayer), "{len}: {e:?}");
        }
    }
    // Every 97th byte flipped.
    let mut damaged = pdf.clone();
    for i in (20..damaged.len()).step_by(97) {
        damaged[i] ^= 0x5A;
    }
    let _ = extract(Kind::Pdf, &damaged, MAX);
}

#[test]
fn text_beyond_the_limit_is_refused() {
    assert!(matches!(extract(Kind::Txt, "é".repeat(11).as_bytes(), 10), Err(ExtractError::TooLong { max_chars: 10 })));
    assert_eq!(extract(Kind::Txt, "é".repeat(10).as_bytes(), 10).ok(), Some("é".repeat(10)));
    let pdf = text_pdf(&[&"Check the fuse. ".repeat(20), &"Second page. ".repeat(20)]);
    assert!(matches!(extract(Kind::Pdf, &pdf, 100), Err(ExtractError::TooLong { max_chars: 100 })));
    assert!(extract(Kind::Pdf, &pdf, 10_000).is_ok());
}

#[test]
fn a_parser_panic_is_an_invalid_file() {
    // pdf-extract panics on a page without a MediaBox (an `expect`); the
    // same bytes blanked keep the xref offsets valid.
    let mut pdf = text_pdf(&["Alarm E12"]);
    let needle = b"/MediaBox [0 0 612 792]";
    let at = pdf.windows(needle.len()).position(|w| w == needle).expect("fixture has a MediaBox");
    pdf[at..at + needle.len()].fill(b' ');
    let reason = invalid_reason(extract(Kind::Pdf, &pdf, MAX), Kind::Pdf);
    assert!(reason.contains("parser failed"), "{reason}");
}

fn deflate(chunks: impl Iterator<Item = Vec<u8>>) -> Vec<u8> {
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    for chunk in chunks {
        encoder.write_all(&chunk).expect("deflate");
    }
    encoder.finish().expect("deflate")
}

#[test]
fn compressed_pages_are_read_and_deflate_bombs_refused() {
    let page = deflate(std::iter::once(b"BT /F1 12 Tf 72 720 Td (Compressed page text) Tj ET".to_vec()));
    assert_eq!(extract_file("a.pdf", &flate_pdf(&page)).ok().as_deref(), Some("Compressed page text"));
    // 300 MiB of spaces after the text: about 300 kB compressed.
    let text = std::iter::once(b"BT /F1 12 Tf 72 720 Td (Boom) Tj ET".to_vec());
    let bomb = deflate(text.chain(std::iter::repeat_n(vec![b' '; 1 << 20], 300)));
    assert!(bomb.len() < 2 << 20, "{} bytes", bomb.len());
    let reason = invalid_reason(extract_file("bomb.pdf", &flate_pdf(&bomb)), Kind::Pdf);
    assert!(reason.contains("inflate to more than"), "{reason}");
}
