//! DSL graphs for the engine's unit tests, in the exact shape Dify exports.

use serde_json::{json, Value};

/// A top-level node.
pub fn node(id: &str, ty: &str, data: Value) -> Value {
    let mut d = json!({"type": ty, "title": format!("{ty} {id}"), "desc": "", "selected": false});
    if let (Some(m), Value::Object(extra)) = (d.as_object_mut(), data) {
        m.extend(extra);
    }
    json!({"id": id, "type": "custom", "position": {"x": 0, "y": 0}, "width": 244, "height": 90, "data": d})
}

/// A node inside iteration (or loop) `parent`.
pub fn inner(id: &str, ty: &str, parent: &str, is_loop: bool, data: Value) -> Value {
    let mut n = node(id, ty, data);
    n["parentId"] = json!(parent);
    if ty == "iteration-start" || ty == "loop-start" {
        n["type"] = json!(format!("custom-{ty}"));
    }
    if is_loop {
        n["data"]["isInLoop"] = json!(true);
        n["data"]["loop_id"] = json!(parent);
    } else {
        n["data"]["isInIteration"] = json!(true);
        n["data"]["iteration_id"] = json!(parent);
    }
    n
}

pub fn edge(source: &str, target: &str, handle: &str) -> Value {
    json!({
        "id": format!("{source}-{handle}-{target}-target"),
        "source": source, "target": target,
        "sourceHandle": handle, "targetHandle": "target", "type": "custom",
        "data": {"sourceType": "", "targetType": "", "isInIteration": false}
    })
}

pub fn workflow(nodes: Vec<Value>, edges: Vec<Value>) -> Value {
    json!({
        "conversation_variables": [],
        "environment_variables": [],
        "features": {},
        "graph": {"nodes": nodes, "edges": edges, "viewport": {"x": 0, "y": 0, "zoom": 1}}
    })
}

pub fn start(vars: Value) -> Value {
    node("start", "start", json!({"variables": vars}))
}

pub fn text_input(name: &str, required: bool) -> Value {
    json!({"variable": name, "label": name, "type": "text-input", "required": required, "max_length": 48, "options": []})
}

pub fn llm_data(prompt: &str) -> Value {
    json!({
        "model": {"provider": "openai", "name": "gpt-4o-mini", "mode": "chat", "completion_params": {"temperature": 0.7}},
        "prompt_template": [{"id": "p1", "role": "system", "text": "You help."}, {"id": "p2", "role": "user", "text": prompt}],
        "context": {"enabled": false, "variable_selector": []},
        "vision": {"enabled": false}
    })
}

pub fn llm(id: &str, prompt: &str) -> Value {
    node(id, "llm", llm_data(prompt))
}

pub fn end(outputs: &[(&str, &[&str])]) -> Value {
    let outs: Vec<Value> = outputs.iter().map(|(v, sel)| json!({"variable": v, "value_selector": sel})).collect();
    node("end", "end", json!({"outputs": outs}))
}

pub fn answer(id: &str, text: &str) -> Value {
    node(id, "answer", json!({"answer": text, "variables": []}))
}

pub fn if_else(id: &str, cases: Value) -> Value {
    node(id, "if-else", json!({"cases": cases}))
}

pub fn condition(sel: &[&str], op: &str, value: &str) -> Value {
    json!({"id": "c1", "varType": "string", "variable_selector": sel, "comparison_operator": op, "value": value})
}
