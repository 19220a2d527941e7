//! A tiny PDF writer for test fixtures: real, valid PDF files (header,
//! objects, cross-reference table, trailer) made in memory, so the tests
//! need no binary fixtures in the repository.
//!
//! - [`text_pdf`]: one page per string, Latin text in Helvetica
//!   (WinAnsiEncoding), one text line per line of the string.
//! - [`cjk_pdf`]: one page of any BMP text (Chinese above all) in a Type0
//!   font with Identity-H encoding and a ToUnicode CMap, the way PDF makers
//!   write CJK text; its glyphs are not embedded (extraction needs none).
//! - [`flate_pdf`]: a page whose content stream is Flate-compressed, as
//!   real PDFs store pages (and deflate bombs are made).
//! - [`image_only_pdf`]: a page with a filled rectangle and no text, as a
//!   scanned page looks to a text extractor.
//!
//! Must not: depend on the daemon; it only writes bytes.

const HELVETICA: &[u8] = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>";

/// A PDF with one page per entry of `pages`; each line of an entry is a
/// line of text. Characters outside Latin-1 become `?`.
pub fn text_pdf(pages: &[&str]) -> Vec<u8> {
    let mut pdf = Writer::default();
    let font = pdf.add(HELVETICA.to_vec());
    let contents = pages.iter().map(|text| {
        let mut ops = b"BT /F1 12 Tf 14 TL 72 720 Td\n".to_vec();
        for line in text.lines() {
            ops.push(b'(');
            for c in line.chars() {
                let byte = u8::try_from(u32::from(c)).unwrap_or(b'?');
                if matches!(byte, b'(' | b')' | b'\\') {
                    ops.push(b'\\');
                }
                ops.push(byte);
            }
            ops.extend_from_slice(b") Tj T*\n");
        }
        ops.extend_from_slice(b"ET");
        ops
    });
    let contents: Vec<Vec<u8>> = contents.collect();
    pdf.finish(&format!("<< /Font << /F1 {font} 0 R >> >>"), contents)
}

/// A one-page PDF whose content stream is `deflated` (zlib data the
/// caller compressed, e.g. `BT /F1 12 Tf 72 720 Td (text) Tj ET`) with
/// `/Filter /FlateDecode`, as real PDFs store pages; font `/F1` is
/// Helvetica. Also makes deflate bombs.
pub fn flate_pdf(deflated: &[u8]) -> Vec<u8> {
    let mut pdf = Writer { content_filter: " /Filter /FlateDecode", ..Writer::default() };
    let font = pdf.add(HELVETICA.to_vec());
    pdf.finish(&format!("<< /Font << /F1 {font} 0 R >> >>"), vec![deflated.to_vec()])
}

/// A one-page PDF showing `text` (one line per line) in a Type0 font:
/// each distinct character gets a CID, the content stream shows CIDs as
/// 2-byte codes (Identity-H) and the ToUnicode CMap maps them back.
pub fn cjk_pdf(text: &str) -> Vec<u8> {
    let mut chars: Vec<char> = text.chars().filter(|c| *c != '\n').collect();
    chars.sort_unstable();
    chars.dedup();
    let cid = |c: char| chars.binary_search(&c).map(|i| i + 1).unwrap_or(0);

    let mut cmap = String::from(
        "/CIDInit /ProcSet findresource begin\n12 dict begin\nbegincmap\n\
         /CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def\n\
         /CMapName /Adobe-Identity-UCS def\n/CMapType 2 def\n\
         1 begincodespacerange\n<0000> <FFFF>\nendcodespacerange\n",
    );
    for block in chars.chunks(100) {
        cmap.push_str(&format!("{} beginbfchar\n", block.len()));
        for &c in block {
            let utf16: String = c.encode_utf16(&mut [0; 2]).iter().map(|u| format!("{u:04X}")).collect();
            cmap.push_str(&format!("<{:04X}> <{utf16}>\n", cid(c)));
        }
        cmap.push_str("endbfchar\n");
    }
    cmap.push_str("endcmap\nCMapName currentdict /CMap defineresource pop\nend\nend");

    let mut ops = String::from("BT /F1 12 Tf 16 TL 72 720 Td\n");
    for line in text.lines() {
        let codes: String = line.chars().map(|c| format!("{:04X}", cid(c))).collect();
        ops.push_str(&format!("<{codes}> Tj T*\n"));
    }
    ops.push_str("ET");

    let mut pdf = Writer::default();
    let to_unicode = pdf.add_stream(cmap.as_bytes(), "");
    let descriptor = pdf.add(
        b"<< /Type /FontDescriptor /FontName /TestCJK /Flags 4 /FontBBox [0 -120 1000 880] \
          /ItalicAngle 0 /Ascent 880 /Descent -120 /CapHeight 700 /StemV 80 >>"
            .to_vec(),
    );
    let cid_font = pdf.add(
        format!(
            "<< /Type /Font /Subtype /CIDFontType2 /BaseFont /TestCJK \
             /CIDSystemInfo << /Registry (Adobe) /Ordering (Identity) /Supplement 0 >> \
             /FontDescriptor {descriptor} 0 R /DW 1000 /CIDToGIDMap /Identity >>"
        )
        .into_bytes(),
    );
    let font = pdf.add(
        format!(
            "<< /Type /Font /Subtype /Type0 /BaseFont /TestCJK /Encoding /Identity-H \
             /DescendantFonts [{cid_font} 0 R] /ToUnicode {to_unicode} 0 R >>"
        )
        .into_bytes(),
    );
    pdf.finish(&format!("<< /Font << /F1 {font} 0 R >> >>"), vec![ops.into_bytes()])
}

/// A one-page PDF whose only content is a grey filled rectangle: no text
/// operators, no fonts.
pub fn image_only_pdf() -> Vec<u8> {
    Writer::default().finish("<< >>", vec![b"0.5 g 72 72 468 648 re f".to_vec()])
}

/// Objects numbered from 1 in the order added; `finish` adds the pages,
/// the page tree and the catalog, then the xref table and trailer.
#[derive(Default)]
struct Writer {
    objects: Vec<Vec<u8>>,
    /// Added to the dictionary of the pages' content streams.
    content_filter: &'static str,
}

impl Writer {
    /// Adds an object; returns its number.
    fn add(&mut self, body: Vec<u8>) -> usize {
        self.objects.push(body);
        self.objects.len()
    }

    fn add_stream(&mut self, data: &[u8], filter: &str) -> usize {
        let mut body = format!("<< /Length {}{filter} >>\nstream\n", data.len()).into_bytes();
        body.extend_from_slice(data);
        body.extend_from_slice(b"\nendstream");
        self.add(body)
    }

    /// One page per content stream, each with `resources`; the PDF bytes.
    fn finish(mut self, resources: &str, contents: Vec<Vec<u8>>) -> Vec<u8> {
        // Page objects point at the page tree, numbered after all pages.
        let first_page = self.objects.len() + 1 + contents.len();
        let tree = first_page + contents.len();
        let content_ids: Vec<usize> = contents.iter().map(|c| self.add_stream(c, self.content_filter)).collect();
        let page_ids: Vec<usize> = content_ids
            .iter()
            .map(|content| {
                self.add(
                    format!(
                        "<< /Type /Page /Parent {tree} 0 R /MediaBox [0 0 612 792] \
                         /Resources {resources} /Contents {content} 0 R >>"
                    )
                    .into_bytes(),
                )
            })
            .collect();
        debug_assert_eq!(page_ids.first().copied().unwrap_or(first_page), first_page);
        let kids: Vec<String> = page_ids.iter().map(|id| format!("{id} 0 R")).collect();
        let tree_id = self.add(format!("<< /Type /Pages /Kids [{}] /Count {} >>", kids.join(" "), kids.len()).into_bytes());
        debug_assert_eq!(tree_id, tree);
        let catalog = self.add(format!("<< /Type /Catalog /Pages {tree} 0 R >>").into_bytes());

        let mut out = b"%PDF-1.4\n%\xE2\xE3\xCF\xD3\n".to_vec();
        let mut offsets = Vec::with_capacity(self.objects.len());
        for (i, body) in self.objects.iter().enumerate() {
            offsets.push(out.len());
            out.extend_from_slice(format!("{} 0 obj\n", i + 1).as_bytes());
            out.extend_from_slice(body);
            out.extend_from_slice(b"\nendobj\n");
        }
        let xref = out.len();
        out.extend_from_slice(format!("xref\n0 {}\n0000000000 65535 f \n", self.objects.len() + 1).as_bytes());
        for offset in offsets {
            out.extend_from_slice(format!("{offset:010} 00000 n \n").as_bytes());
        }
        out.extend_from_slice(
            format!("trailer\n<< /Size {} /Root {catalog} 0 R >>\nstartxref\n{xref}\n%%EOF\n", self.objects.len() + 1).as_bytes(),
        );
        out
    }
}
