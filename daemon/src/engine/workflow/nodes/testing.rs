//! In-memory fakes for the nodes' unit tests: a [`Scope`] over a map of
//! selectors and [`Effects`] that answer from scripts and record the calls.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::mpsc;

use super::super::{
    BoxFuture, CodeCall, Effects, HttpCall, HttpReply, KnowledgeCall, KnowledgeHit, Limits, LlmCall, LlmChunk, NodeCtx, Scope,
};

/// Variables by dotted selector (`"start.q"`, `"conversation.n"`).
#[derive(Default)]
pub struct MapScope(pub HashMap<String, Value>);

impl MapScope {
    pub fn with(pairs: &[(&str, Value)]) -> MapScope {
        MapScope(pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect())
    }
}

impl Scope for MapScope {
    fn get(&self, selector: &[String]) -> Option<Value> {
        // Whole variables first, then a path into an object.
        for n in (2..=selector.len()).rev() {
            if let Some(v) = self.0.get(&selector[..n].join(".")) {
                let mut v = v.clone();
                for key in &selector[n..] {
                    v = v.get(key)?.clone();
                }
                return Some(v);
            }
        }
        None
    }
    fn render(&self, template: &str) -> String {
        let mut out = template.to_owned();
        for sel in super::template_selectors(template) {
            let text = self.get(&sel).map(|v| super::as_text(&v)).unwrap_or_default();
            out = out.replace(&format!("{{{{#{}#}}}}", sel.join(".")), &text);
        }
        out
    }
}

/// Scripted effects: each llm call takes the next script, each http call
/// the next reply; files come from a map. Every call is recorded.
#[derive(Default)]
pub struct FakeEffects {
    pub llm_scripts: Mutex<VecDeque<Result<Vec<LlmChunk>, String>>>,
    pub llm_calls: Mutex<Vec<LlmCall>>,
    pub http_replies: Mutex<VecDeque<Result<HttpReply, String>>>,
    pub http_calls: Mutex<Vec<HttpCall>>,
    pub files: HashMap<String, (String, String, Vec<u8>)>,
    pub knowledge_hits: Mutex<VecDeque<Result<Vec<KnowledgeHit>, String>>>,
    pub knowledge_calls: Mutex<Vec<KnowledgeCall>>,
    pub code_results: Mutex<VecDeque<Result<Map<String, Value>, String>>>,
    pub code_calls: Mutex<Vec<CodeCall>>,
}

impl FakeEffects {
    pub fn llm_answers(answers: &[&str]) -> FakeEffects {
        let fx = FakeEffects::default();
        for a in answers {
            fx.push_llm(Ok(vec![
                LlmChunk::Text((*a).to_owned()),
                LlmChunk::Done { prompt_tokens: 10, completion_tokens: 5, finish_reason: "stop".into() },
            ]));
        }
        fx
    }
    pub fn push_llm(&self, script: Result<Vec<LlmChunk>, String>) {
        self.llm_scripts.lock().expect("lock").push_back(script);
    }
    pub fn push_http(&self, reply: Result<HttpReply, String>) {
        self.http_replies.lock().expect("lock").push_back(reply);
    }
    pub fn llm_calls(&self) -> Vec<LlmCall> {
        self.llm_calls.lock().expect("lock").clone()
    }
    pub fn http_calls(&self) -> Vec<HttpCall> {
        self.http_calls.lock().expect("lock").clone()
    }
    pub fn knowledge_calls(&self) -> Vec<KnowledgeCall> {
        self.knowledge_calls.lock().expect("lock").clone()
    }
    pub fn push_code(&self, result: Result<Map<String, Value>, String>) {
        self.code_results.lock().expect("lock").push_back(result);
    }
    pub fn code_calls(&self) -> Vec<CodeCall> {
        self.code_calls.lock().expect("lock").clone()
    }
}

impl Effects for FakeEffects {
    fn llm(&self, call: LlmCall) -> BoxFuture<'static, Result<mpsc::Receiver<LlmChunk>, String>> {
        self.llm_calls.lock().expect("lock").push(call);
        let script = self.llm_scripts.lock().expect("lock").pop_front().unwrap_or_else(|| Err("no scripted answer".into()));
        Box::pin(async move {
            let chunks = script?;
            let (tx, rx) = mpsc::channel(chunks.len().max(1));
            for c in chunks {
                let _ = tx.send(c).await;
            }
            Ok(rx)
        })
    }
    fn http(&self, call: HttpCall) -> BoxFuture<'static, Result<HttpReply, String>> {
        self.http_calls.lock().expect("lock").push(call);
        let reply = self.http_replies.lock().expect("lock").pop_front().unwrap_or_else(|| Err("no scripted reply".into()));
        Box::pin(async move { reply })
    }
    fn file(&self, upload_file_id: String) -> BoxFuture<'static, Result<crate::engine::workflow::UploadedFile, String>> {
        let f = self.files.get(&upload_file_id).cloned().ok_or_else(|| format!("file {upload_file_id} not found"));
        Box::pin(async move { f })
    }
    fn knowledge(&self, call: KnowledgeCall) -> BoxFuture<'static, Result<Vec<KnowledgeHit>, String>> {
        self.knowledge_calls.lock().expect("lock").push(call);
        let hits = self.knowledge_hits.lock().expect("lock").pop_front().unwrap_or_else(|| Err("no scripted hits".into()));
        Box::pin(async move { hits })
    }
    fn code(&self, call: CodeCall) -> BoxFuture<'static, Result<Map<String, Value>, String>> {
        self.code_calls.lock().expect("lock").push(call);
        let result = self.code_results.lock().expect("lock").pop_front().unwrap_or_else(|| Err("no scripted result".into()));
        Box::pin(async move { result })
    }
}

pub fn limits() -> Limits {
    Limits {
        max_steps: 100,
        node_timeout: Duration::from_secs(10),
        run_timeout: Duration::from_secs(60),
        max_parallel: 2,
        max_iterations: 100,
        http_max_response_bytes: 1024,
    }
}

pub fn ctx<'a>(scope: &'a MapScope, effects: &'a FakeEffects, limits: &'a Limits) -> NodeCtx<'a> {
    NodeCtx { node_id: "n1", scope, effects, limits }
}
