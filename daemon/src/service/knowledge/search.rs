//! Retrieval scoring: Dify's `retrieval_model` parsed into settings, and the
//! fusion of vector and full-text candidates into one ranked list.
//! Pure functions; the service fetches the candidates.

use std::collections::HashMap;

use serde_json::Value;

use super::KnowledgeError;
use crate::knowledge::{RetrievalSettings, SearchMethod, SegmentId};

/// Dify's defaults: top 4, hybrid weights 0.7 vector / 0.3 keyword.
pub const DEFAULT_TOP_K: usize = 4;
/// The most hits one search returns.
pub const MAX_TOP_K: usize = 100;
const DEFAULT_WEIGHTS: (f32, f32) = (0.7, 0.3);

impl Default for RetrievalSettings {
    fn default() -> Self {
        RetrievalSettings { method: SearchMethod::SemanticSearch, top_k: DEFAULT_TOP_K, score_threshold: None, weights: DEFAULT_WEIGHTS }
    }
}

fn invalid(field: &str, why: &str) -> KnowledgeError {
    KnowledgeError::InvalidParam(format!("retrieval_model.{field} {why}"))
}

/// Parses Dify's `retrieval_model` object: `search_method`, `top_k`,
/// `score_threshold_enabled` + `score_threshold`, `weights` (either
/// `{vector_setting: {vector_weight}, keyword_setting: {keyword_weight}}`
/// or plain numbers), `reranking_enable` (a rerank model is refused:
/// there is none on the gateway).
pub fn parse_retrieval_model(value: &Value) -> Result<RetrievalSettings, KnowledgeError> {
    let obj = value.as_object().ok_or_else(|| KnowledgeError::InvalidParam("retrieval_model must be an object".into()))?;
    let mut s = RetrievalSettings::default();
    if let Some(m) = obj.get("search_method").filter(|v| !v.is_null()) {
        s.method = serde_json::from_value(m.clone())
            .map_err(|_| invalid("search_method", "must be semantic_search, full_text_search, hybrid_search or keyword_search"))?;
    }
    if let Some(k) = obj.get("top_k").filter(|v| !v.is_null()) {
        let k = k.as_u64().ok_or_else(|| invalid("top_k", "must be a positive integer"))?;
        if k == 0 || k > MAX_TOP_K as u64 {
            return Err(invalid("top_k", &format!("must be between 1 and {MAX_TOP_K}")));
        }
        s.top_k = k as usize;
    }
    let threshold_enabled = match obj.get("score_threshold_enabled") {
        None | Some(Value::Null) => {
            obj.get("score_threshold").is_some_and(|v| !v.is_null()) && !obj.contains_key("score_threshold_enabled")
        }
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid("score_threshold_enabled", "must be a boolean")),
    };
    if threshold_enabled {
        let t = obj
            .get("score_threshold")
            .and_then(Value::as_f64)
            .ok_or_else(|| invalid("score_threshold", "must be a number when score_threshold_enabled is true"))?;
        if !(0.0..=1.0).contains(&t) {
            return Err(invalid("score_threshold", "must be between 0 and 1"));
        }
        s.score_threshold = Some(t as f32);
    }
    if obj.get("reranking_enable").and_then(Value::as_bool) == Some(true)
        && obj.get("reranking_mode").and_then(Value::as_str) != Some("weighted_score")
    {
        let has_model =
            obj.get("reranking_model").and_then(|m| m.get("reranking_model_name")).and_then(Value::as_str).is_some_and(|n| !n.is_empty());
        if has_model {
            return Err(invalid("reranking_model", "names a rerank model; none runs on this gateway (use hybrid_search with weights)"));
        }
    }
    if let Some(w) = obj.get("weights").filter(|v| !v.is_null()) {
        s.weights = parse_weights(w)?;
    }
    Ok(s)
}

fn parse_weights(w: &Value) -> Result<(f32, f32), KnowledgeError> {
    let vector = w
        .pointer("/vector_setting/vector_weight")
        .or_else(|| w.get("vector_weight"))
        .and_then(Value::as_f64)
        .ok_or_else(|| invalid("weights", "needs vector_setting.vector_weight"))?;
    let keyword = w
        .pointer("/keyword_setting/keyword_weight")
        .or_else(|| w.get("keyword_weight"))
        .and_then(Value::as_f64)
        .ok_or_else(|| invalid("weights", "needs keyword_setting.keyword_weight"))?;
    if !(0.0..=1.0).contains(&vector) || !(0.0..=1.0).contains(&keyword) || (vector + keyword - 1.0).abs() > 0.01 {
        return Err(invalid("weights", "must be two numbers in [0, 1] that sum to 1"));
    }
    Ok((vector as f32, keyword as f32))
}

/// Full-text scores normalised to [0, 1] by the best one (BM25 has no
/// upper bound; the best match of a search scores 1).
pub fn normalise(scores: &[(SegmentId, f32)]) -> Vec<(SegmentId, f32)> {
    let max = scores.iter().map(|(_, s)| *s).fold(0.0f32, f32::max);
    if max <= 0.0 {
        return scores.iter().map(|(id, _)| (*id, 0.0)).collect();
    }
    scores.iter().map(|(id, s)| (*id, (s / max).clamp(0.0, 1.0))).collect()
}

/// Combines candidates by the settings' method: semantic and full-text
/// scores as they are, hybrid as `w_v · vector + w_k · keyword` (a
/// candidate missing from one list scores 0 there). Sorted best first
/// (ties by id, so results are stable), thresholded, not yet cut to top_k.
pub fn fuse(settings: &RetrievalSettings, vector: &[(SegmentId, f32)], keyword: &[(SegmentId, f32)]) -> Vec<(SegmentId, f32)> {
    let mut out: Vec<(SegmentId, f32)> = match settings.method {
        SearchMethod::SemanticSearch => vector.to_vec(),
        SearchMethod::FullTextSearch | SearchMethod::KeywordSearch => normalise(keyword),
        SearchMethod::HybridSearch => {
            let (wv, wk) = settings.weights;
            let mut m: HashMap<SegmentId, f32> = HashMap::new();
            for (id, s) in vector {
                *m.entry(*id).or_default() += wv * s.max(0.0);
            }
            for (id, s) in normalise(keyword) {
                *m.entry(id).or_default() += wk * s;
            }
            m.into_iter().collect()
        }
    };
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    if let Some(t) = settings.score_threshold {
        out.retain(|(_, s)| *s >= t);
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn dify_retrieval_models_parse() {
        let s = parse_retrieval_model(&json!({
            "search_method": "hybrid_search", "reranking_enable": false, "top_k": 3,
            "score_threshold_enabled": true, "score_threshold": 0.5,
            "weights": {"weight_type": "customized", "vector_setting": {"vector_weight": 0.6, "embedding_provider_name": "", "embedding_model_name": ""}, "keyword_setting": {"keyword_weight": 0.4}}
        }))
        .expect("parse");
        assert_eq!(s.method, SearchMethod::HybridSearch);
        assert_eq!(s.top_k, 3);
        assert_eq!(s.score_threshold, Some(0.5));
        assert!((s.weights.0 - 0.6).abs() < 1e-6 && (s.weights.1 - 0.4).abs() < 1e-6);
        let d =
            parse_retrieval_model(&json!({"search_method": "semantic_search", "score_threshold_enabled": false, "score_threshold": 0.9}))
                .expect("parse");
        assert_eq!(d.score_threshold, None, "a threshold that is not enabled is ignored, as in Dify");
    }

    #[test]
    fn bad_retrieval_models_name_the_field() {
        for (v, field) in [
            (json!("x"), "retrieval_model must be an object"),
            (json!({"search_method": "magic"}), "retrieval_model.search_method"),
            (json!({"top_k": 0}), "retrieval_model.top_k"),
            (json!({"top_k": 1000}), "retrieval_model.top_k"),
            (json!({"top_k": "3"}), "retrieval_model.top_k"),
            (json!({"score_threshold_enabled": true}), "retrieval_model.score_threshold"),
            (json!({"score_threshold_enabled": true, "score_threshold": 2}), "retrieval_model.score_threshold"),
            (
                json!({"weights": {"vector_setting": {"vector_weight": 0.9}, "keyword_setting": {"keyword_weight": 0.9}}}),
                "retrieval_model.weights",
            ),
            (
                json!({"reranking_enable": true, "reranking_model": {"reranking_model_name": "bge-reranker"}}),
                "retrieval_model.reranking_model",
            ),
        ] {
            match parse_retrieval_model(&v) {
                Err(KnowledgeError::InvalidParam(m)) => assert!(m.starts_with(field), "{v}: {m}"),
                other => panic!("{v}: {other:?}"),
            }
        }
    }

    #[test]
    fn hybrid_adds_weighted_scores_and_thresholds() {
        let s = RetrievalSettings { method: SearchMethod::HybridSearch, top_k: 10, score_threshold: Some(0.3), weights: (0.5, 0.5) };
        let v = [(1, 0.9), (2, 0.2)];
        let k = [(2, 8.0), (3, 4.0)];
        let out = fuse(&s, &v, &k);
        // 1: 0.45; 2: 0.1 + 0.5 = 0.6; 3: 0.25 (under the threshold)
        assert_eq!(out.iter().map(|(id, _)| *id).collect::<Vec<_>>(), vec![2, 1]);
        assert!((out[0].1 - 0.6).abs() < 1e-6);
        let ft = fuse(&RetrievalSettings { method: SearchMethod::FullTextSearch, ..s }, &v, &k);
        assert_eq!(ft, vec![(2, 1.0), (3, 0.5)]);
    }
}
