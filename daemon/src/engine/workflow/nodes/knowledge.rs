//! knowledge-retrieval: searches local datasets with the node's query and
//! returns Dify's `result` list (`content`, `title`, `metadata` with
//! `_source: knowledge`), which an llm node takes as its context. The
//! search itself is the service's, through
//! [`Effects::knowledge`](super::super::Effects::knowledge).
//!
//! `multiple` mode merges all datasets by score (with the node's top_k,
//! score threshold and hybrid weights); `single` mode, which Dify routes
//! with a model call over the datasets' descriptions, here takes the
//! dataset whose best segment scores highest (no model call).

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::super::{BoxFuture, KnowledgeCall, KnowledgeHit, NodeCtx, NodeError, NodeKind, NodeOutput, VarType};
use super::{check_selector, nullable, parse, Problems};

#[derive(Debug, Deserialize)]
struct Data {
    query_variable_selector: Vec<String>,
    dataset_ids: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    retrieval_mode: String,
    #[serde(default)]
    multiple_retrieval_config: Option<Multiple>,
}

#[derive(Debug, Default, Deserialize)]
struct Multiple {
    #[serde(default)]
    top_k: Option<u32>,
    #[serde(default)]
    score_threshold: Option<f64>,
    #[serde(default)]
    reranking_enable: Option<bool>,
    #[serde(default)]
    reranking_mode: Option<String>,
    #[serde(default)]
    weights: Option<Value>,
}

/// The most segments one node returns.
const MAX_TOP_K: u32 = 100;

#[derive(Debug)]
pub struct KnowledgeRetrieval {
    query: Vec<String>,
    dataset_ids: Vec<String>,
    single: bool,
    top_k: Option<usize>,
    score_threshold: Option<f32>,
    weights: Option<(f32, f32)>,
}

fn weights(v: &Value) -> Option<(f32, f32)> {
    let vector = v.pointer("/vector_setting/vector_weight")?.as_f64()?;
    let keyword = v.pointer("/keyword_setting/keyword_weight")?.as_f64()?;
    Some((vector as f32, keyword as f32))
}

impl KnowledgeRetrieval {
    pub fn build(data: &Value) -> Result<KnowledgeRetrieval, Problems> {
        let d: Data = parse(data)?;
        let mut problems = Problems::new();
        check_selector("query_variable_selector", &d.query_variable_selector, &mut problems);
        if d.dataset_ids.is_empty() {
            problems.push(("dataset_ids".into(), "the node searches no dataset".into()));
        }
        let single = match d.retrieval_mode.as_str() {
            "single" => true,
            "" | "multiple" => false,
            other => {
                problems.push(("retrieval_mode".into(), format!("must be single or multiple, got {other:?}")));
                false
            }
        };
        let m = d.multiple_retrieval_config.unwrap_or_default();
        if let Some(k) = m.top_k {
            if k == 0 || k > MAX_TOP_K {
                problems.push(("multiple_retrieval_config.top_k".into(), format!("must be between 1 and {MAX_TOP_K}")));
            }
        }
        if let Some(t) = m.score_threshold {
            if !(0.0..=1.0).contains(&t) {
                problems.push(("multiple_retrieval_config.score_threshold".into(), "must be between 0 and 1".into()));
            }
        }
        let rerank_model = m.reranking_enable == Some(true) && m.reranking_mode.as_deref() == Some("reranking_model");
        if rerank_model {
            problems.push((
                "multiple_retrieval_config.reranking_mode".into(),
                "reranking_model needs a rerank model, none runs offline; use weighted_score".into(),
            ));
        }
        let w = match m.weights.as_ref().filter(|v| !v.is_null()) {
            None => None,
            Some(v) => match weights(v) {
                Some((a, b)) if (0.0..=1.0).contains(&a) && (0.0..=1.0).contains(&b) && (a + b - 1.0).abs() <= 0.01 => Some((a, b)),
                _ => {
                    problems.push((
                        "multiple_retrieval_config.weights".into(),
                        "needs vector_setting.vector_weight and keyword_setting.keyword_weight in [0, 1] summing to 1".into(),
                    ));
                    None
                }
            },
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(KnowledgeRetrieval {
            query: d.query_variable_selector,
            dataset_ids: d.dataset_ids,
            single,
            top_k: m.top_k.map(|k| k as usize),
            score_threshold: m.score_threshold.map(|t| t as f32),
            weights: w,
        })
    }

    /// The DSL's dataset ids (import maps them to local ones).
    pub fn dataset_ids(&self) -> &[String] {
        &self.dataset_ids
    }
}

/// One hit as Dify's knowledge-retrieval node returns it.
pub fn result_item(position: usize, h: &KnowledgeHit) -> Value {
    json!({
        "metadata": {
            "_source": "knowledge",
            "position": position,
            "dataset_id": h.dataset_id,
            "dataset_name": h.dataset_name,
            "document_id": h.document_id,
            "document_name": h.document_name,
            "data_source_type": h.data_source_type,
            "segment_id": h.segment_id,
            "retriever_from": "workflow",
            "score": h.score,
            "segment_hit_count": h.hit_count,
            "segment_word_count": h.word_count,
            "segment_position": h.segment_position,
            "segment_index_node_hash": h.index_node_hash,
            "doc_metadata": null,
        },
        "title": h.document_name,
        "content": h.content,
    })
}

/// A `retriever_resources` entry (Dify's message metadata) from a result
/// item's metadata.
pub fn retriever_resource(meta: &Map<String, Value>, content: &str) -> Value {
    let get = |k: &str| meta.get(k).cloned().unwrap_or(Value::Null);
    json!({
        "position": get("position"),
        "dataset_id": get("dataset_id"),
        "dataset_name": get("dataset_name"),
        "document_id": get("document_id"),
        "document_name": get("document_name"),
        "data_source_type": get("data_source_type"),
        "segment_id": get("segment_id"),
        "retriever_from": get("retriever_from"),
        "score": get("score"),
        "hit_count": get("segment_hit_count"),
        "word_count": get("segment_word_count"),
        "segment_position": get("segment_position"),
        "index_node_hash": get("segment_index_node_hash"),
        "content": content,
        "page": null,
        "doc_metadata": get("doc_metadata"),
    })
}

impl NodeKind for KnowledgeRetrieval {
    fn references(&self) -> Vec<(String, Vec<String>)> {
        vec![("query_variable_selector".into(), self.query.clone())]
    }

    fn outputs(&self) -> Vec<(String, VarType)> {
        vec![("result".into(), VarType::ArrayObject)]
    }

    fn run<'a>(&'a self, ctx: NodeCtx<'a>) -> BoxFuture<'a, Result<NodeOutput, NodeError>> {
        Box::pin(async move {
            let query = match ctx.scope.get(&self.query) {
                Some(Value::String(s)) => s,
                Some(Value::Null) | None => String::new(),
                Some(other) => {
                    return Err(NodeError::Failed(format!(
                        "Query variable is not string type, got {}",
                        super::super::vars::type_name_of(&other)
                    )))
                }
            };
            let mut inputs = Map::new();
            inputs.insert("query".into(), Value::String(query.clone()));
            // Dify answers an empty query with an empty result.
            let hits = if query.trim().is_empty() {
                Vec::new()
            } else {
                let call = KnowledgeCall {
                    node_id: ctx.node_id.to_owned(),
                    dataset_ids: self.dataset_ids.clone(),
                    query,
                    single: self.single,
                    top_k: self.top_k,
                    score_threshold: self.score_threshold,
                    weights: self.weights,
                };
                ctx.effects.knowledge(call).await.map_err(NodeError::Failed)?
            };
            let result: Vec<Value> = hits.iter().enumerate().map(|(i, h)| result_item(i + 1, h)).collect();
            let mut outputs = Map::new();
            outputs.insert("result".into(), Value::Array(result));
            Ok(NodeOutput { inputs, outputs, ..NodeOutput::default() })
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::testing::{limits, FakeEffects, MapScope};
    use super::*;

    fn hit(n: i64, score: f32) -> KnowledgeHit {
        KnowledgeHit {
            dataset_id: "d1".into(),
            dataset_name: "Manuals".into(),
            document_id: "doc1".into(),
            document_name: "plc.md".into(),
            data_source_type: "upload_file".into(),
            segment_id: format!("s{n}"),
            segment_position: n,
            index_node_hash: "h".into(),
            content: format!("segment {n}"),
            score,
            hit_count: 0,
            word_count: 9,
        }
    }

    #[tokio::test]
    async fn searches_with_the_nodes_settings_and_returns_difys_result() {
        let node = KnowledgeRetrieval::build(&json!({
            "query_variable_selector": ["start", "q"], "dataset_ids": ["d1"], "retrieval_mode": "multiple",
            "multiple_retrieval_config": {"top_k": 2, "score_threshold": 0.2, "reranking_enable": true, "reranking_mode": "weighted_score",
                "weights": {"vector_setting": {"vector_weight": 0.6}, "keyword_setting": {"keyword_weight": 0.4}}}
        }))
        .expect("build");
        let fx = FakeEffects::default();
        fx.knowledge_hits.lock().expect("lock").push_back(Ok(vec![hit(1, 0.9), hit(2, 0.5)]));
        let scope = MapScope::with(&[("start.q", json!("how to clear the alarm"))]);
        let l = limits();
        let out = node.run(NodeCtx { node_id: "kr", scope: &scope, effects: &fx, limits: &l }).await.expect("run");
        let calls = fx.knowledge_calls();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].query, "how to clear the alarm");
        assert_eq!(calls[0].top_k, Some(2));
        assert_eq!(calls[0].weights, Some((0.6, 0.4)));
        assert!(!calls[0].single);
        let result = out.outputs["result"].as_array().expect("array");
        assert_eq!(result.len(), 2);
        assert_eq!(result[0]["content"], "segment 1");
        assert_eq!(result[0]["title"], "plc.md");
        assert_eq!(result[0]["metadata"]["_source"], "knowledge");
        assert_eq!(result[0]["metadata"]["position"], 1);
        assert_eq!(result[1]["metadata"]["segment_id"], "s2");
    }

    #[tokio::test]
    async fn an_empty_query_finds_nothing_without_searching() {
        let node = KnowledgeRetrieval::build(&json!({"query_variable_selector": ["start", "q"], "dataset_ids": ["d1"]})).expect("build");
        let fx = FakeEffects::default();
        let scope = MapScope::with(&[("start.q", json!("  "))]);
        let l = limits();
        let out = node.run(NodeCtx { node_id: "kr", scope: &scope, effects: &fx, limits: &l }).await.expect("run");
        assert_eq!(out.outputs["result"], json!([]));
        assert!(fx.knowledge_calls().is_empty());
    }

    #[test]
    fn bad_settings_are_named() {
        let p = KnowledgeRetrieval::build(&json!({
            "query_variable_selector": ["q"], "dataset_ids": [], "retrieval_mode": "both",
            "multiple_retrieval_config": {"top_k": 0, "score_threshold": 3, "reranking_enable": true, "reranking_mode": "reranking_model",
                "weights": {"vector_setting": {"vector_weight": 0.9}, "keyword_setting": {"keyword_weight": 0.9}}}
        }))
        .expect_err("refused");
        let fields: Vec<&str> = p.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "query_variable_selector",
                "dataset_ids",
                "retrieval_mode",
                "multiple_retrieval_config.top_k",
                "multiple_retrieval_config.score_threshold",
                "multiple_retrieval_config.reranking_mode",
                "multiple_retrieval_config.weights"
            ]
        );
    }
}
