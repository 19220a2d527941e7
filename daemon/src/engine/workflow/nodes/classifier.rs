//! question-classifier: asks the node's model which of the node's classes
//! the query belongs to, as Dify's classifier prompt does, with the answer
//! constrained by a JSON schema to the class ids (the local model turns the
//! schema into a grammar). The chosen class id is the source handle to
//! follow. An answer that names no class falls back to the first class, as
//! Dify does, and `process_data.fallback` says why.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::super::{BoxFuture, NodeCtx, NodeError, NodeKind, NodeOutput, Role, VarType};
use super::{as_text, check_selector, collect_llm, first_json, parse, prompts_for_saving, template_refs, ModelConfig, Problems};

const SYSTEM_PROMPT: &str = "### Job Description
You are a text classification engine that analyzes text data and assigns categories based on user input or automatically determined categories.
### Task
Your task is to assign one category ONLY to the input text, and only one category may be returned in the output.
### Format
The input text is in the variable input_text. Categories are given as a list of objects with the fields category_id and category_name in the variable categories. Classification instructions may be included to improve the classification accuracy.
### Constraint
DO NOT include anything other than the JSON object {\"category_id\": ..., \"category_name\": ...} in your response.";

#[derive(Debug, Deserialize)]
struct Data {
    query_variable_selector: Vec<String>,
    model: ModelConfig,
    classes: Vec<Class>,
    #[serde(default)]
    instruction: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct Class {
    id: String,
    #[serde(default)]
    name: String,
}

#[derive(Debug)]
pub struct QuestionClassifier {
    query: Vec<String>,
    model: ModelConfig,
    classes: Vec<Class>,
    instruction: String,
}

impl QuestionClassifier {
    pub fn build(data: &Value) -> Result<QuestionClassifier, Problems> {
        let d: Data = parse(data)?;
        let mut problems = Problems::new();
        check_selector("query_variable_selector", &d.query_variable_selector, &mut problems);
        if d.model.name.is_empty() {
            problems.push(("model.name".into(), "the model has no name".into()));
        }
        if d.classes.is_empty() {
            problems.push(("classes".into(), "a question classifier needs at least one class".into()));
        }
        for (i, c) in d.classes.iter().enumerate() {
            if c.id.is_empty() {
                problems.push((format!("classes.{i}.id"), "a class needs an id".into()));
            } else if d.classes[..i].iter().any(|o| o.id == c.id) {
                problems.push((format!("classes.{i}.id"), format!("two classes have the id {:?}", c.id)));
            }
        }
        if problems.is_empty() {
            Ok(QuestionClassifier {
                query: d.query_variable_selector,
                model: d.model,
                classes: d.classes,
                instruction: d.instruction.unwrap_or_default(),
            })
        } else {
            Err(problems)
        }
    }

    fn schema(&self) -> Value {
        let ids: Vec<&str> = self.classes.iter().map(|c| c.id.as_str()).collect();
        let mut names: Vec<&str> = Vec::new();
        for c in &self.classes {
            if !names.contains(&c.name.as_str()) {
                names.push(&c.name);
            }
        }
        json!({
            "type": "object",
            "properties": {
                "category_id": {"type": "string", "enum": ids},
                "category_name": {"type": "string", "enum": names}
            },
            "required": ["category_id", "category_name"]
        })
    }

    /// The class the model's answer names, or why none.
    fn choose(&self, text: &str) -> Result<&Class, String> {
        let Some(Value::Object(answer)) = first_json(text) else {
            return Err(format!("the model's answer holds no JSON object: {text:?}"));
        };
        if let Some(id) = answer.get("category_id").map(as_text) {
            if let Some(c) = self.classes.iter().find(|c| c.id == id) {
                return Ok(c);
            }
        }
        if let Some(name) = answer.get("category_name").and_then(Value::as_str) {
            if let Some(c) = self.classes.iter().find(|c| c.name == name) {
                return Ok(c);
            }
        }
        Err(format!("the model's answer names no known class: {}", Value::Object(answer)))
    }
}

impl NodeKind for QuestionClassifier {
    fn references(&self) -> Vec<(String, Vec<String>)> {
        let mut refs = vec![("query_variable_selector".to_owned(), self.query.clone())];
        template_refs("instruction", &self.instruction, &mut refs);
        refs
    }
    fn outputs(&self) -> Vec<(String, VarType)> {
        vec![("class_name".into(), VarType::String), ("class_id".into(), VarType::String), ("usage".into(), VarType::Object)]
    }
    fn handles(&self) -> Vec<String> {
        self.classes.iter().map(|c| c.id.clone()).collect()
    }
    fn run<'a>(&'a self, ctx: NodeCtx<'a>) -> BoxFuture<'a, Result<NodeOutput, NodeError>> {
        Box::pin(async move {
            let query = ctx.scope.get(&self.query).map(|v| as_text(&v)).unwrap_or_default();
            let instruction = ctx.scope.render(&self.instruction);
            let categories: Vec<Value> = self.classes.iter().map(|c| json!({"category_id": c.id, "category_name": c.name})).collect();
            let user = json!({
                "input_text": [query],
                "categories": categories,
                "classification_instructions": [instruction],
            });
            let messages = vec![(Role::System, SYSTEM_PROMPT.to_owned()), (Role::User, user.to_string())];
            let mut process_data = Map::new();
            process_data.insert("model_mode".into(), Value::String(self.model.mode.clone()));
            process_data.insert("prompts".into(), prompts_for_saving(&messages));
            let call = self.model.call(ctx.node_id, messages, Some(self.schema()));
            let rx = ctx.effects.llm(call).await.map_err(NodeError::Failed)?;
            let answer = collect_llm(rx).await.map_err(NodeError::Failed)?;
            process_data.insert("usage".into(), answer.usage());
            process_data.insert("finish_reason".into(), Value::String(answer.finish_reason.clone()));
            process_data.insert("model_provider".into(), Value::String(self.model.provider.clone()));
            process_data.insert("model_name".into(), Value::String(self.model.name.clone()));
            let class = match self.choose(&answer.text) {
                Ok(c) => c,
                Err(why) => {
                    tracing::warn!(node_id = ctx.node_id, reason = %why, "question-classifier falls back to its first class");
                    process_data.insert("fallback".into(), Value::String(format!("{why}; using the first class")));
                    // build() refuses a classifier without classes.
                    self.classes.first().ok_or_else(|| NodeError::Failed("the classifier has no classes".into()))?
                }
            };
            let mut inputs = Map::new();
            inputs.insert("query".into(), Value::String(query));
            let mut outputs = Map::new();
            outputs.insert("class_name".into(), Value::String(class.name.clone()));
            outputs.insert("class_id".into(), Value::String(class.id.clone()));
            outputs.insert("usage".into(), answer.usage());
            Ok(NodeOutput {
                inputs,
                process_data,
                outputs,
                handle: Some(class.id.clone()),
                tokens: answer.total_tokens(),
                ..NodeOutput::default()
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::LlmChunk;
    use super::super::testing::{ctx, limits, FakeEffects, MapScope};
    use super::*;

    fn node() -> QuestionClassifier {
        QuestionClassifier::build(&json!({
            "type": "question-classifier", "title": "Q",
            "query_variable_selector": ["sys", "query"],
            "model": {"provider": "openai", "name": "gpt-4o-mini", "mode": "chat", "completion_params": {"temperature": 0.1}},
            "classes": [{"id": "1", "name": "billing"}, {"id": "2", "name": "support"}],
            "instruction": "Customer is {{#start.tier#}}"
        }))
        .unwrap()
    }

    async fn classify(answer: &str) -> NodeOutput {
        let scope = MapScope::with(&[("sys.query", json!("my printer is on fire")), ("start.tier", json!("gold"))]);
        let fx = FakeEffects::llm_answers(&[answer]);
        let out = node().run(ctx(&scope, &fx, &limits())).await.unwrap();
        let call = &fx.llm_calls()[0];
        assert_eq!(call.json_schema.as_ref().unwrap()["properties"]["category_id"]["enum"], json!(["1", "2"]));
        assert!(call.messages[1].1.contains("my printer is on fire"));
        assert!(call.messages[1].1.contains("Customer is gold"));
        assert_eq!(call.temperature, Some(0.1));
        out
    }

    #[tokio::test]
    async fn picks_the_class_the_model_names() {
        let n = node();
        assert_eq!(n.handles(), vec!["1".to_owned(), "2".to_owned()]);
        assert_eq!(n.references()[1], ("instruction".to_owned(), vec!["start".to_owned(), "tier".to_owned()]));
        let out = classify(r#"{"category_id": "2", "category_name": "support"}"#).await;
        assert_eq!(out.handle.as_deref(), Some("2"));
        assert_eq!(out.outputs["class_name"], "support");
        assert_eq!(out.outputs["class_id"], "2");
        assert_eq!(out.tokens, 15);
        assert_eq!(out.process_data["usage"]["total_tokens"], 15);
        assert_eq!(out.outputs["usage"]["total_tokens"], 15);
        assert_eq!(out.process_data["model_name"], "gpt-4o-mini");
        assert_eq!(out.process_data["prompts"][0]["role"], "system");
        assert!(!out.process_data.contains_key("fallback"));
        // By name when the id is off, as small models sometimes answer.
        let out = classify(r#"Sure: {"category_id": 7, "category_name": "support"}"#).await;
        assert_eq!(out.handle.as_deref(), Some("2"));
    }

    #[tokio::test]
    async fn unparsable_answers_fall_back_to_the_first_class() {
        for answer in ["I think it is support", r#"{"category_id": "9", "category_name": "other"}"#] {
            let out = classify(answer).await;
            assert_eq!(out.handle.as_deref(), Some("1"), "{answer}");
            assert_eq!(out.outputs["class_name"], "billing");
            assert!(out.process_data["fallback"].as_str().unwrap().contains("using the first class"));
        }
    }

    #[tokio::test]
    async fn model_failures_fail_the_node() {
        let scope = MapScope::default();
        let fx = FakeEffects::default();
        fx.push_llm(Err("model queue is full".into()));
        let e = node().run(ctx(&scope, &fx, &limits())).await.unwrap_err();
        assert_eq!(e.to_string(), "model queue is full");
        fx.push_llm(Ok(vec![LlmChunk::Text("{".into())]));
        let e = node().run(ctx(&scope, &fx, &limits())).await.unwrap_err();
        assert!(e.to_string().contains("ended before"));
    }

    #[test]
    fn bad_data_names_each_field() {
        let e = QuestionClassifier::build(&json!({
            "query_variable_selector": [],
            "model": {"provider": "openai", "name": "", "mode": "chat"},
            "classes": [{"id": "a", "name": "x"}, {"id": "a", "name": "y"}, {"id": "", "name": "z"}]
        }))
        .unwrap_err();
        let fields: Vec<&str> = e.iter().map(|p| p.0.as_str()).collect();
        assert_eq!(fields, vec!["query_variable_selector", "model.name", "classes.1.id", "classes.2.id"]);
        let e = QuestionClassifier::build(
            &json!({"query_variable_selector": ["sys", "query"], "model": {"provider": "x", "name": "y"}, "classes": []}),
        )
        .unwrap_err();
        assert_eq!(e[0].0, "classes");
        let e = QuestionClassifier::build(&json!({"query_variable_selector": ["sys", "query"], "classes": []})).unwrap_err();
        assert_eq!(e[0].0, "model");
    }
}
