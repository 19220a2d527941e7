//! Text rendering of admin answers: aligned tables and key/value blocks.
//!
//! Owns: pure `answer -> String` functions. Must not: print or fetch.

use crate::time::{format_uptime, format_utc};
use edgeai_common::admin::{AppList, AppVersionList, AuditList, CacheStats, KeyList, ModelList, StatusResponse};
use edgeai_common::datasets::{Dataset, Document, RetrieveRecord};
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

pub fn status(s: &StatusResponse) -> String {
    let m = &s.model;
    let mut rows: Vec<(&str, String)> = vec![
        ("state", s.state.clone()),
        ("version", s.version.clone()),
        ("uptime", format_uptime(s.uptime_secs)),
        ("listen", s.listen.clone().unwrap_or_else(|| "-".into())),
        ("socket", s.socket.clone().unwrap_or_else(|| "-".into())),
        ("in flight", s.in_flight.to_string()),
        ("model", format!("{} ({})", m.name, m.state)),
        ("model path", m.path.clone()),
    ];
    if let Some(error) = &m.error {
        rows.push(("model error", error.clone()));
    }
    rows.extend([
        ("threads", m.threads.to_string()),
        ("slots", m.slots.to_string()),
        ("context size", m.context_size.to_string()),
        ("cpu features", m.cpu_features.clone()),
    ]);
    if let Some(c) = &s.code {
        rows.push(("code: javascript", c.javascript.clone()));
        let python = match (&c.python, &c.python_unavailable) {
            (Some(p), _) => p.clone(),
            (None, Some(why)) => format!("unavailable: {why}"),
            (None, None) => "unavailable".into(),
        };
        rows.push(("code: python3", python));
    }
    if let Some(mem) = &s.memory {
        let b = &mem.budget;
        let mib = |v: u64| format!("{:.1} MiB", v as f64 / 1048576.0);
        let opt = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), mib);
        rows.push(("memory pressure", mem.pressure.clone()));
        rows.push(("memory limit", format!("{} (high {})", opt(mem.limit_bytes), opt(mem.high_bytes))));
        rows.push(("memory working set", opt(mem.working_set_bytes)));
        rows.push((
            "memory budget",
            format!(
                "{} = model {} + KV {} + buffers {}{}",
                mib(b.total_bytes),
                mib(b.model_file_bytes),
                b.kv_cache_bytes.map_or_else(|| "(not loaded)".to_owned(), mib),
                mib(b.request_buffer_bytes),
                b.response_cache_bytes.map_or_else(String::new, |c| format!(" + response cache {}", mib(c)))
            ),
        ));
    }
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    rows.iter().map(|(k, v)| format!("{k:<width$}  {v}\n")).collect()
}

pub fn cache(s: &CacheStats) -> String {
    let rows: Vec<(&str, String)> = vec![
        ("enabled", s.enabled.to_string()),
        ("hits", s.hits.to_string()),
        ("misses", s.misses.to_string()),
        ("hit rate", format!("{:.1}%", s.hit_rate * 100.0)),
        ("entries", s.entries.to_string()),
        ("bytes", format!("{} of {}", s.bytes, s.max_bytes)),
        ("evictions", s.evictions.to_string()),
    ];
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    rows.iter().map(|(k, v)| format!("{k:<width$}  {v}\n")).collect()
}

pub fn apps(list: &AppList) -> String {
    let rows = list
        .data
        .iter()
        .map(|a| {
            vec![a.id.clone(), a.name.clone(), a.mode.clone(), a.version.to_string(), a.active_keys.to_string(), format_utc(a.updated_at)]
        })
        .collect::<Vec<_>>();
    table(&["ID", "NAME", "MODE", "VERSION", "KEYS", "UPDATED"], &rows)
}

pub fn models(list: &ModelList) -> String {
    let rows = list
        .data
        .iter()
        .map(|m| {
            let state = match &m.error {
                Some(e) => format!("{} ({e})", m.state),
                None => m.state.clone(),
            };
            // A daemon that does not say the kind lists only its chat model.
            let kind = m.kind.clone().unwrap_or_else(|| "chat".into());
            vec![m.name.clone(), kind, state, m.threads.to_string(), m.slots.to_string(), m.context_size.to_string(), m.path.clone()]
        })
        .collect::<Vec<_>>();
    table(&["NAME", "KIND", "STATE", "THREADS", "SLOTS", "CONTEXT", "PATH"], &rows)
}

pub fn versions(list: &AppVersionList) -> String {
    let rows = list
        .data
        .iter()
        .map(|v| {
            let active = if v.active { "*" } else { "" };
            vec![v.version.to_string(), active.to_owned(), v.source.clone(), format_utc(v.created_at), v.workflow_id.clone()]
        })
        .collect::<Vec<_>>();
    table(&["VERSION", "ACTIVE", "SOURCE", "CREATED", "WORKFLOW ID"], &rows)
}

pub fn keys(list: &KeyList) -> String {
    let time = |t: Option<i64>| t.map_or_else(|| "-".to_owned(), format_utc);
    let rows = list
        .data
        .iter()
        .map(|k| {
            let app = if k.app_id.is_empty() { "-".to_owned() } else { k.app_id.clone() };
            let cells = [k.id.clone(), k.kind.as_str().to_owned(), app, k.prefix.clone(), format_utc(k.created_at)];
            cells.into_iter().chain([time(k.revoked_at), time(k.last_used_at)]).collect()
        })
        .collect::<Vec<_>>();
    table(&["ID", "KIND", "APP", "PREFIX", "CREATED", "REVOKED", "LAST USED"], &rows)
}

pub fn audit(list: &AuditList) -> String {
    let rows = list
        .data
        .iter()
        .map(|e| {
            let cells = [format_utc(e.at_ms.div_euclid(1000)), e.kind.clone(), e.channel.clone(), e.actor.clone(), e.action.clone()];
            cells.into_iter().chain([e.outcome.clone(), e.detail.clone()]).collect()
        })
        .collect::<Vec<_>>();
    let mut out = table(&["TIME", "KIND", "CHANNEL", "ACTOR", "ACTION", "OUTCOME", "DETAIL"], &rows);
    if list.has_more {
        out.push_str("(more entries: raise --limit or narrow with --since/--kind)\n");
    }
    out
}

pub fn datasets(list: &[Dataset]) -> String {
    let rows = list
        .iter()
        .map(|d| {
            let technique = d.indexing_technique.clone().unwrap_or_else(|| "-".into());
            vec![d.id.clone(), d.name.clone(), technique, d.document_count.to_string(), d.word_count.to_string(), format_utc(d.created_at)]
        })
        .collect::<Vec<_>>();
    table(&["ID", "NAME", "INDEXING", "DOCS", "WORDS", "CREATED"], &rows)
}

pub fn dataset(d: &Dataset) -> String {
    let setting = |key: &str| {
        d.retrieval_model_dict.as_ref().and_then(|m| m.get(key)).filter(|v| !v.is_null()).map_or_else(
            || "-".to_owned(),
            |v| match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            },
        )
    };
    let rows: Vec<(&str, String)> = vec![
        ("id", d.id.clone()),
        ("name", d.name.clone()),
        ("description", d.description.clone().filter(|s| !s.is_empty()).unwrap_or_else(|| "-".into())),
        ("indexing", d.indexing_technique.clone().unwrap_or_else(|| "-".into())),
        ("documents", d.document_count.to_string()),
        ("words", d.word_count.to_string()),
        ("embedding model", d.embedding_model.clone().unwrap_or_else(|| "- (none yet)".into())),
        ("search method", setting("search_method")),
        ("top k", setting("top_k")),
        ("created", format_utc(d.created_at)),
    ];
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    rows.iter().map(|(k, v)| format!("{k:<width$}  {v}\n")).collect()
}

/// Documents with their segment counts (from each document's detail).
pub fn documents(docs: &[(Document, u64)]) -> String {
    let rows = docs
        .iter()
        .map(|(d, segments)| {
            let error = d.error.as_deref().map_or_else(|| "-".to_owned(), one_line);
            vec![d.id.clone(), d.name.clone(), d.display_status.clone(), segments.to_string(), d.word_count.to_string(), error]
        })
        .collect::<Vec<_>>();
    table(&["ID", "NAME", "STATUS", "SEGMENTS", "WORDS", "ERROR"], &rows)
}

/// Widest excerpt of a hit, in terminal columns (a CJK character takes two).
const EXCERPT_COLUMNS: usize = 100;

pub fn hits(records: &[RetrieveRecord]) -> String {
    let rows = records
        .iter()
        .map(|r| {
            let score = r.score.map_or_else(|| "-".to_owned(), |s| format!("{s:.3}"));
            vec![score, r.segment.document.name.clone(), excerpt(&r.segment.content, EXCERPT_COLUMNS)]
        })
        .collect::<Vec<_>>();
    table(&["SCORE", "DOCUMENT", "EXCERPT"], &rows)
}

/// Whitespace (newlines included) collapsed to single spaces.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// [`one_line`], cut to at most `max` terminal columns with an ellipsis.
fn excerpt(text: &str, max: usize) -> String {
    let line = one_line(text);
    if UnicodeWidthStr::width(line.as_str()) <= max {
        return line;
    }
    let mut cut = String::new();
    let mut used = 0;
    for c in line.chars() {
        let w = UnicodeWidthChar::width(c).unwrap_or(0);
        // One column is kept for the ellipsis.
        if used + w > max.saturating_sub(1) {
            break;
        }
        used += w;
        cut.push(c);
    }
    format!("{}…", cut.trim_end())
}

/// Columns padded to their widest cell (in characters), two spaces apart.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap (style.md)
mod tests {
    use super::*;
    use edgeai_common::admin::{AppInfo, KeyInfo, KeyKind, ModelStatus};

    #[test]
    fn keys_table_aligns_and_formats_times() {
        let list = KeyList {
            data: vec![
                KeyInfo {
                    id: "k1".into(),
                    kind: KeyKind::App,
                    app_id: "demo".into(),
                    prefix: "app-Ab3".into(),
                    created_at: 1_700_000_000,
                    revoked_at: None,
                    last_used_at: Some(1_700_000_060),
                },
                KeyInfo {
                    id: "k22".into(),
                    kind: KeyKind::App,
                    app_id: "télé".into(),
                    prefix: "app-Zz9".into(),
                    created_at: 0,
                    revoked_at: Some(86_400),
                    last_used_at: None,
                },
                KeyInfo {
                    id: "k3".into(),
                    kind: KeyKind::Dataset,
                    app_id: String::new(),
                    prefix: "Qw8".into(),
                    created_at: 0,
                    revoked_at: None,
                    last_used_at: None,
                },
            ],
        };
        let expected = "\
ID   KIND     APP   PREFIX   CREATED               REVOKED               LAST USED
k1   app      demo  app-Ab3  2023-11-14T22:13:20Z  -                     2023-11-14T22:14:20Z
k22  app      télé  app-Zz9  1970-01-01T00:00:00Z  1970-01-02T00:00:00Z  -
k3   dataset  -     Qw8      1970-01-01T00:00:00Z  -                     -
";
        assert_eq!(keys(&list), expected);
    }

    #[test]
    fn excerpts_are_one_line_and_cut_by_columns() {
        assert_eq!(excerpt("Alarm E17:\n\n  reset   the PLC", 100), "Alarm E17: reset the PLC");
        assert_eq!(excerpt(&"a".repeat(20), 10), format!("{}…", "a".repeat(9)));
        // Each CJK character takes two columns: four of them and the ellipsis fill 9 of 10.
        assert_eq!(excerpt(&"复位".repeat(80), 10), "复位复位…");
    }

    #[test]
    fn hits_table_shows_score_document_excerpt() {
        let record: RetrieveRecord = serde_json::from_value(serde_json::json!({
            "segment": {"id": "s", "position": 1, "content": "To clear alarm\nE17, press RESET.",
                        "document": {"id": "d", "name": "plc-alarms.md"}},
            "score": 0.8312
        }))
        .unwrap();
        assert_eq!(hits(&[record]), "SCORE  DOCUMENT       EXCERPT\n0.831  plc-alarms.md  To clear alarm E17, press RESET.\n");
    }

    #[test]
    fn empty_apps_table_is_just_the_header() {
        assert_eq!(apps(&AppList { data: vec![] }), "ID  NAME  MODE  VERSION  KEYS  UPDATED\n");
        let list = AppList {
            data: vec![AppInfo {
                id: "demo".into(),
                name: "Demo chat".into(),
                mode: "chat".into(),
                version: 3,
                created_at: 0,
                updated_at: 0,
                active_keys: 1,
            }],
        };
        assert!(apps(&list).ends_with("demo  Demo chat  chat  3        1     1970-01-01T00:00:00Z\n"), "{}", apps(&list));
    }

    #[test]
    fn status_shows_model_error_only_when_present() {
        let mut s = StatusResponse {
            version: "0.1.0".into(),
            state: "degraded".into(),
            uptime_secs: 3723,
            listen: Some("127.0.0.1:5001".into()),
            socket: None,
            in_flight: 2,
            model: ModelStatus {
                name: "smollm2".into(),
                path: "/m.gguf".into(),
                state: "failed".into(),
                error: Some("bad magic".into()),
                threads: 2,
                slots: 1,
                context_size: 2048,
                cpu_features: "avx2 fma".into(),
                kind: None,
                model_id: None,
            },
            code: None,
            memory: None,
        };
        let text = status(&s);
        assert!(text.starts_with("state         degraded\n"), "{text}");
        assert!(text.contains("uptime        1h 2m 3s\n") && text.contains("socket        -\n"), "{text}");
        assert!(text.contains("model         smollm2 (failed)\n") && text.contains("model error   bad magic\n"), "{text}");
        s.model.error = None;
        assert!(!status(&s).contains("model error"));
        s.code = Some(edgeai_common::admin::CodeStatus {
            javascript: "QuickJS".into(),
            python: None,
            python_unavailable: Some("no python3 on PATH".into()),
            max_concurrent: 2,
        });
        let text = status(&s);
        assert!(text.contains("code: python3     unavailable: no python3 on PATH\n"), "{text}");
        assert!(text.contains("code: javascript  QuickJS\n"), "{text}");
        assert!(!text.contains("memory"), "an older daemon reports no memory: {text}");
        s.memory = Some(edgeai_common::admin::MemoryStatus {
            pressure: "normal".into(),
            limit_bytes: Some(512 << 20),
            high_bytes: None,
            working_set_bytes: Some(200 << 20),
            budget: edgeai_common::admin::MemoryBudget {
                model_file_bytes: 90 << 20,
                kv_cache_bytes: None,
                request_buffer_bytes: 2 << 20,
                response_cache_bytes: None,
                total_bytes: 92 << 20,
            },
        });
        let text = status(&s);
        assert!(text.contains("memory limit        512.0 MiB (high -)\n"), "{text}");
        assert!(text.contains("memory budget       92.0 MiB = model 90.0 MiB + KV (not loaded) + buffers 2.0 MiB\n"), "{text}");
    }
}
