//! Unit tests of chunking: rule parsing with Dify's messages, cleaning,
//! segment sizes and overlap, CJK sentence cuts, custom separators, and
//! that counting stays linear on a large document.

use super::*;
use std::cell::Cell;

/// About four characters a token, rounded up: never counts a
/// concatenation as more than its parts.
fn quarter(s: &str) -> usize {
    s.chars().count().div_ceil(4)
}

/// One token per CJK character, a quarter per other character.
fn cjk_aware(s: &str) -> usize {
    let cjk = s.chars().filter(|c| ('\u{3000}'..='\u{9FFF}').contains(c)).count();
    cjk + (s.chars().count() - cjk).div_ceil(4)
}

fn custom(separator: &str, max_tokens: usize, chunk_overlap: usize) -> ProcessRule {
    ProcessRule::parse(Some(&json!({"mode": "custom", "rules": {
        "pre_processing_rules": [{"id": "remove_extra_spaces", "enabled": true}],
        "segmentation": {"separator": separator, "max_tokens": max_tokens, "chunk_overlap": chunk_overlap},
    }})))
    .expect("valid rule")
}

fn contents(chunks: &[Chunk]) -> Vec<&str> {
    chunks.iter().map(|c| c.content.as_str()).collect()
}

/// English paragraphs of numbered sentences, each sentence unique.
fn english(paragraphs: usize, sentences: usize) -> String {
    (0..paragraphs)
        .map(|p| {
            (0..sentences)
                .map(|s| format!("Paragraph {p} sentence {s} says to check the PLC alarm relay and the fuse."))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

#[test]
fn absent_or_automatic_rule_is_difys_automatic_rule() {
    let auto = ProcessRule::automatic();
    assert_eq!((auto.max_tokens, auto.chunk_overlap, auto.remove_extra_spaces, auto.remove_urls_emails), (500, 50, true, false));
    assert_eq!(ProcessRule::parse(None), Ok(auto.clone()));
    assert_eq!(ProcessRule::parse(Some(&Value::Null)), Ok(auto.clone()));
    // Dify ignores `rules` in automatic mode.
    let given = json!({"mode": "automatic", "rules": {"segmentation": {"max_tokens": 7}}});
    assert_eq!(ProcessRule::parse(Some(&given)), Ok(auto));
}

#[test]
fn custom_rule_is_parsed_with_escapes_decoded() {
    let rule = ProcessRule::parse(Some(&json!({"mode": "custom", "rules": {
        "pre_processing_rules": [
            {"id": "remove_extra_spaces", "enabled": false},
            {"id": "remove_urls_emails", "enabled": true},
            {"id": "remove_stopwords", "enabled": true},
        ],
        "segmentation": {"separator": "\\n\\n", "max_tokens": 1024, "chunk_overlap": 50},
    }})))
    .expect("valid");
    assert_eq!(
        rule,
        ProcessRule {
            mode: Mode::Custom,
            remove_extra_spaces: false,
            remove_urls_emails: true,
            separator: "\n\n".into(),
            max_tokens: 1024,
            chunk_overlap: 50
        }
    );
    assert_eq!(custom("\\u3002", 100, 0).separator, "。");
    assert_eq!(custom("。", 100, 0).separator, "。");
    assert_eq!(custom("\\t|\\\\", 100, 0).separator, "\t|\\");
    assert_eq!(custom("a\\qb\\", 100, 0).separator, "a\\qb\\", "unknown escapes stay");
    // Missing chunk_overlap is 0, as in Dify's Segmentation model.
    let no_overlap = json!({"mode": "custom", "rules": {"pre_processing_rules": [],
        "segmentation": {"separator": "\n", "max_tokens": 50}}});
    assert_eq!(ProcessRule::parse(Some(&no_overlap)).map(|r| r.chunk_overlap), Ok(0));
}

#[test]
fn rule_round_trips_through_its_json() {
    let rule = custom("###", 300, 20);
    assert_eq!(ProcessRule::parse(Some(&rule.to_value())), Ok(rule));
    let auto = ProcessRule::automatic().to_value();
    assert_eq!(auto["rules"]["segmentation"], json!({"delimiter": "\n", "max_tokens": 500, "chunk_overlap": 50}));
    assert_eq!(ProcessRule::parse(Some(&auto)), Ok(ProcessRule::automatic()));
}

#[test]
fn bad_rules_get_difys_messages() {
    let seg = |segmentation: Value| json!({"mode": "custom", "rules": {"pre_processing_rules": [], "segmentation": segmentation}});
    let cases: Vec<(Value, &str)> = vec![
        (json!("automatic"), "Process rule is invalid"),
        (json!({}), "Process rule mode is required"),
        (json!({"mode": ""}), "Process rule mode is required"),
        (json!({"mode": "fast"}), "Process rule mode is invalid"),
        (json!({"mode": 3}), "Process rule mode is invalid"),
        (json!({"mode": "custom"}), "Process rule rules is required"),
        (json!({"mode": "custom", "rules": {}}), "Process rule rules is required"),
        (json!({"mode": "custom", "rules": []}), "Process rule rules is invalid"),
        (json!({"mode": "custom", "rules": {"segmentation": {}}}), "Process rule pre_processing_rules is required"),
        (json!({"mode": "custom", "rules": {"pre_processing_rules": {}}}), "Process rule pre_processing_rules is invalid"),
        (
            json!({"mode": "custom", "rules": {"pre_processing_rules": [{"enabled": true}]}}),
            "Process rule pre_processing_rules id is required",
        ),
        (
            json!({"mode": "custom", "rules": {"pre_processing_rules": [{"id": "shout", "enabled": true}]}}),
            "Process rule pre_processing_rules id is invalid",
        ),
        (
            json!({"mode": "custom", "rules": {"pre_processing_rules": [{"id": "remove_urls_emails", "enabled": "yes"}]}}),
            "Process rule pre_processing_rules enabled is invalid",
        ),
        (json!({"mode": "custom", "rules": {"pre_processing_rules": []}}), "Process rule segmentation is required"),
        (seg(json!("\n")), "Process rule segmentation is invalid"),
        (seg(json!({"max_tokens": 100})), "Process rule segmentation separator is required"),
        (seg(json!({"separator": "", "max_tokens": 100})), "Process rule segmentation separator is required"),
        (seg(json!({"separator": 5, "max_tokens": 100})), "Process rule segmentation separator is invalid"),
        (seg(json!({"separator": "\n"})), "Process rule segmentation max_tokens is required"),
        (seg(json!({"separator": "\n", "max_tokens": 0})), "Process rule segmentation max_tokens is required"),
        (seg(json!({"separator": "\n", "max_tokens": "500"})), "Process rule segmentation max_tokens is invalid"),
        (seg(json!({"separator": "\n", "max_tokens": 500.5})), "Process rule segmentation max_tokens is invalid"),
        (seg(json!({"separator": "\n", "max_tokens": 49})), "Custom segment length should be between 50 and 4000."),
        (seg(json!({"separator": "\n", "max_tokens": 4001})), "Custom segment length should be between 50 and 4000."),
        (seg(json!({"separator": "\n", "max_tokens": -5})), "Custom segment length should be between 50 and 4000."),
        (seg(json!({"separator": "\n", "max_tokens": 100, "chunk_overlap": -1})), "Process rule segmentation chunk_overlap is invalid"),
        (seg(json!({"separator": "\n", "max_tokens": 100, "chunk_overlap": "5"})), "Process rule segmentation chunk_overlap is invalid"),
        (
            seg(json!({"separator": "\n", "max_tokens": 100, "chunk_overlap": 100})),
            "Got a larger chunk overlap (100) than chunk size (100), should be smaller.",
        ),
    ];
    for (given, message) in cases {
        match ProcessRule::parse(Some(&given)) {
            Err(ChunkError::InvalidRule(m)) => assert_eq!(m, message, "for {given}"),
            other => panic!("{given} gave {other:?}, expected {message:?}"),
        }
    }
    let hierarchical = json!({"mode": "hierarchical", "rules": {"parent_mode": "paragraph"}});
    assert_eq!(ProcessRule::parse(Some(&hierarchical)), Err(ChunkError::HierarchicalUnsupported));
}

#[test]
fn automatic_segments_fit_and_overlap() {
    let text = english(12, 30);
    let rule = ProcessRule::automatic();
    let chunks = chunk(&text, &rule, &quarter);
    assert!(chunks.len() > 12, "paragraphs larger than 500 tokens are cut: {}", chunks.len());
    for c in &chunks {
        assert!(c.tokens <= rule.max_tokens, "{} tokens: {:?}", c.tokens, c.content);
        assert_eq!(c.tokens, quarter(&c.content));
        assert_eq!(c.word_count, c.content.chars().count());
        assert_eq!(c.content, c.content.trim());
    }
    // Within a paragraph, the next segment starts with the last sentence(s)
    // of the previous one (overlap 50 tokens, about one sentence here).
    let mut overlapping = 0;
    for pair in chunks.windows(2) {
        let first_sentence = pair[1].content.split_inclusive(". ").next().unwrap_or_default().trim();
        if pair[0].content.contains(first_sentence) {
            overlapping += 1;
            assert!(quarter(first_sentence) <= rule.chunk_overlap, "overlap too long: {first_sentence:?}");
        }
    }
    assert!(overlapping >= chunks.len() / 3, "only {overlapping} of {} segments overlap", chunks.len());
    // Every sentence survives somewhere.
    for s in [0, 17, 29] {
        let sentence = format!("Paragraph 11 sentence {s} says");
        assert!(chunks.iter().any(|c| c.content.contains(&sentence)), "{sentence} lost");
    }
}

#[test]
fn small_paragraphs_are_merged_up_to_the_limit_in_automatic_mode() {
    let text = "Reset the breaker.\n\nCheck the fuse.\n\nCall service.";
    assert_eq!(contents(&chunk(text, &ProcessRule::automatic(), &quarter)), vec!["Reset the breaker.\n\nCheck the fuse.\n\nCall service."]);
}

#[test]
fn chinese_text_is_cut_after_full_stops() {
    let sentences: Vec<String> = (0..40).map(|i| format!("第{i}步：断开电源后检查可编程控制器的报警继电器和保险丝是否正常。")).collect();
    let text = sentences.concat();
    // Custom rule whose separator never occurs: the whole text is one
    // piece, cut by the fallback separators, which reach 。 before spaces.
    let rule = custom("###", 100, 0);
    let chunks = chunk(&text, &rule, &cjk_aware);
    assert!(chunks.len() >= 10, "{} segments", chunks.len());
    for c in &chunks {
        assert!(c.tokens <= 100, "{} tokens", c.tokens);
        assert!(c.content.ends_with('。'), "cut inside a sentence: {:?}", c.content);
        assert!(c.content.starts_with('第'), "starts mid-sentence: {:?}", c.content);
    }
    assert_eq!(chunks.iter().map(|c| c.content.as_str()).collect::<String>(), text, "no overlap asked, nothing lost");

    // Automatic: 500 tokens, overlap of whole sentences.
    let long: String = sentences.iter().cycle().take(200).cloned().collect();
    let chunks = chunk(&long, &ProcessRule::automatic(), &cjk_aware);
    assert!(chunks.len() > 10);
    for pair in chunks.windows(2) {
        assert!(pair[0].tokens <= 500 && pair[0].content.ends_with('。'));
        let first = pair[1].content.split_inclusive('。').next().unwrap_or_default();
        assert!(pair[0].content.ends_with(first), "no sentence carried over: {first:?}");
    }
}

#[test]
fn custom_separator_pieces_stay_whole_and_unmerged() {
    let rule = custom("***", 50, 0);
    let text = "Fault E01: low air pressure.***Fault E02: motor overheated.***\n\n***Fault E03: door open.";
    assert_eq!(
        contents(&chunk(text, &rule, &quarter)),
        vec!["Fault E01: low air pressure.", "Fault E02: motor overheated.", "Fault E03: door open."]
    );
    // The escaped newline Dify's UI sends.
    let lines = custom("\\n", 50, 0);
    assert_eq!(contents(&chunk("one\ntwo\n\n\nthree", &lines, &quarter)), vec!["one", "two", "three"]);
    // A piece over the limit is cut further, here at spaces, words whole.
    let words = "alpha beta gamma delta ".repeat(40);
    let chunks = chunk(&format!("short***{words}"), &custom("***", 50, 10), &quarter);
    assert_eq!(chunks[0].content, "short");
    assert!(chunks.len() > 3);
    for c in &chunks[1..] {
        assert!(c.tokens <= 50);
        assert!(c.content.split(' ').all(|w| ["alpha", "beta", "gamma", "delta"].contains(&w)), "word cut: {:?}", c.content);
    }
}

#[test]
fn text_without_any_separator_is_cut_between_characters() {
    let text = "x".repeat(2000);
    let chunks = chunk(&text, &custom("###", 50, 10), &quarter);
    assert!(chunks.iter().all(|c| c.tokens <= 50 && !c.content.is_empty()));
    let total: usize = chunks.iter().map(|c| c.word_count).sum();
    assert!(total > 2000, "overlap repeats characters: {total}");
}

#[test]
fn cleaning_follows_difys_rules() {
    let messy = "Intro   text\t\there.\n\n\n\n\nNext  part <|endoftext|> \u{1}ok\u{FFFE} naïve";
    let auto = chunk(messy, &ProcessRule::automatic(), &quarter);
    assert_eq!(contents(&auto), vec!["Intro text here.\n\nNext part <endoftext> ok naïve"]);

    let with_urls = "Mail ops@plant.example or see https://example.com/manual?id=3 and ![pump](https://img.example/p.png) now";
    let mut rule = custom("###", 100, 0);
    assert_eq!(contents(&chunk(with_urls, &rule, &quarter)), vec![with_urls], "remove_urls_emails is off");
    rule.remove_urls_emails = true;
    assert_eq!(contents(&chunk(with_urls, &rule, &quarter)), vec!["Mail or see and ![pump](https://img.example/p.png) now"]);
}

#[test]
fn empty_segments_and_leading_symbols_are_dropped() {
    assert!(chunk("", &ProcessRule::automatic(), &quarter).is_empty());
    assert!(chunk(" \n\n\n \t ", &ProcessRule::automatic(), &quarter).is_empty());
    let rule = custom("|", 50, 0);
    assert_eq!(contents(&chunk("a| |。，b|...|## Title", &rule, &quarter)), vec!["a", "，b", "Title"]);
}

#[test]
fn large_document_is_counted_linearly() {
    // About 1 MB: 90 paragraphs of 150 sentences, plus a 100 kB run of one
    // word with no separator that falls through to character cuts.
    let mut text = english(90, 150);
    text.push_str("\n\n");
    text.push_str(&"a".repeat(100_000));
    assert!(text.len() > 1_000_000);
    let counted = Cell::new(0usize);
    let counter = |s: &str| {
        counted.set(counted.get() + s.len());
        quarter(s)
    };
    let chunks = chunk(&text, &ProcessRule::automatic(), &counter);
    assert!(chunks.len() > 500);
    assert!(chunks.iter().all(|c| c.tokens <= 500));
    // Each level of cutting counts the text once, the final segments once
    // more (with their overlap): a bound, not a timing.
    assert!(counted.get() < 8 * text.len(), "counted {} bytes for a {}-byte text", counted.get(), text.len());
}
