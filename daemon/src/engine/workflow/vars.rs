//! The variable pool of one run and Dify's `{{#node.var#}}` templates.
//!
//! Templates are parsed once, at compile time, into segments; rendering is a
//! walk over them. The pool is layered: a run's root frame holds the node
//! outputs of the top-level graph and the globals (`sys`, `env`,
//! `conversation`); each iteration or loop pass reads through a child frame
//! that adds the container's `item`/`index` and the pass's own node outputs.
//! Parallel branches read concurrently (an `RwLock` per frame, values behind
//! `Arc`s so a read clones only the leaf it returns).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use serde_json::{Map, Value};

use super::Scope;

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Text(String),
    /// `{{#node.var.sub#}}`: a selector.
    Var(Vec<String>),
    /// `{{#context#}}`: the llm node's context variable.
    Context,
}

/// A template parsed into segments.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Template {
    pub segments: Vec<Segment>,
}

/// Whether `inner` (between `{{#` and `#}}`) is a selector as Dify's
/// pattern has it: a node id of `[A-Za-z0-9_]{1,50}` then 1 to 10
/// `.name` parts, each starting with a letter or `_`.
fn selector_of(inner: &str) -> Option<Vec<String>> {
    let parts: Vec<&str> = inner.split('.').collect();
    if parts.len() < 2 || parts.len() > 11 {
        return None;
    }
    let head = parts[0];
    if head.is_empty() || head.len() > 50 || !head.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return None;
    }
    for p in &parts[1..] {
        let mut bytes = p.bytes();
        match bytes.next() {
            Some(b) if b.is_ascii_alphabetic() || b == b'_' => {}
            _ => return None,
        }
        if p.len() > 30 || !bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return None;
        }
    }
    Some(parts.into_iter().map(str::to_owned).collect())
}

impl Template {
    /// Parses `text`; anything that is not a well-formed reference stays text.
    pub fn parse(text: &str) -> Template {
        let mut segments = Vec::new();
        let mut buf = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{#") {
            buf.push_str(&rest[..start]);
            let after = &rest[start + 3..];
            let found = after.find("#}}").and_then(|end| {
                let inner = &after[..end];
                let seg = if inner == "context" { Some(Segment::Context) } else { selector_of(inner).map(Segment::Var) };
                seg.map(|s| (s, end))
            });
            match found {
                Some((seg, end)) => {
                    if !buf.is_empty() {
                        segments.push(Segment::Text(std::mem::take(&mut buf)));
                    }
                    segments.push(seg);
                    rest = &after[end + 3..];
                }
                None => {
                    buf.push_str("{{#");
                    rest = after;
                }
            }
        }
        buf.push_str(rest);
        if !buf.is_empty() {
            segments.push(Segment::Text(buf));
        }
        Template { segments }
    }

    /// The selectors it references.
    pub fn selectors(&self) -> impl Iterator<Item = &Vec<String>> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Var(sel) => Some(sel),
            _ => None,
        })
    }

    /// Whether it contains `{{#sel#}}`.
    pub fn mentions(&self, sel: &[&str]) -> bool {
        self.selectors().any(|s| s.iter().map(String::as_str).eq(sel.iter().copied()))
    }

    /// Renders it: values as Dify shows them, missing ones empty; the
    /// `{{#context#}}` segment becomes `context` (or stays literal without one).
    pub fn render(&self, scope: &dyn Scope, context: Option<&str>) -> String {
        let mut out = String::new();
        for seg in &self.segments {
            match seg {
                Segment::Text(t) => out.push_str(t),
                Segment::Var(sel) => {
                    if let Some(v) = scope.get(sel) {
                        push_value(&mut out, &v);
                    }
                }
                Segment::Context => out.push_str(context.unwrap_or("{{#context#}}")),
            }
        }
        out
    }
}

/// A value as text, as Dify renders it in templates: strings raw, numbers
/// plain, null empty, objects and arrays as JSON.
pub fn render_value(v: &Value) -> String {
    let mut s = String::new();
    push_value(&mut s, v);
    s
}

fn push_value(out: &mut String, v: &Value) {
    match v {
        Value::String(s) => out.push_str(s),
        Value::Null => {}
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        other => out.push_str(&other.to_string()),
    }
}

/// Follows `path` into objects (by key) and arrays (by index).
fn descend<'v>(mut v: &'v Value, path: &[String]) -> Option<&'v Value> {
    for key in path {
        v = match v {
            Value::Object(m) => m.get(key)?,
            Value::Array(a) => a.get(key.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

/// What every frame of a run shares: system, environment and conversation
/// variables.
#[derive(Debug)]
pub struct Globals {
    sys: Map<String, Value>,
    env: Map<String, Value>,
    conversation: RwLock<BTreeMap<String, Value>>,
    /// Values of secret environment variables, masked in events.
    secrets: Vec<String>,
}

impl Globals {
    pub fn new(sys: Map<String, Value>, env: Map<String, Value>, secrets: Vec<String>, conversation: BTreeMap<String, Value>) -> Globals {
        let secrets = secrets.into_iter().filter(|s| !s.is_empty()).collect();
        Globals { sys, env, conversation: RwLock::new(conversation), secrets }
    }

    /// Assigns conversation variables (assigner nodes); later reads see them.
    pub fn assign(&self, assigned: &BTreeMap<String, Value>) {
        if assigned.is_empty() {
            return;
        }
        let mut conv = self.conversation.write().unwrap_or_else(|e| e.into_inner());
        for (k, v) in assigned {
            conv.insert(k.clone(), v.clone());
        }
    }

    /// The system variables, by name.
    pub fn sys(&self) -> &Map<String, Value> {
        &self.sys
    }

    pub fn conversation(&self) -> BTreeMap<String, Value> {
        self.conversation.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// `map` with every secret value inside its strings replaced by `******`.
    pub fn mask(&self, map: Map<String, Value>) -> Map<String, Value> {
        if self.secrets.is_empty() {
            return map;
        }
        map.into_iter().map(|(k, v)| (k, self.mask_value(v))).collect()
    }

    /// `s` with every secret environment value replaced by `******`.
    pub fn mask_text(&self, mut s: String) -> String {
        for secret in &self.secrets {
            if s.contains(secret.as_str()) {
                s = s.replace(secret.as_str(), "******");
            }
        }
        s
    }

    fn mask_value(&self, v: Value) -> Value {
        match v {
            Value::String(s) => Value::String(self.mask_text(s)),
            Value::Array(a) => Value::Array(a.into_iter().map(|x| self.mask_value(x)).collect()),
            Value::Object(m) => Value::Object(self.mask(m)),
            other => other,
        }
    }
}

/// One frame of a run's variables (see the module header).
#[derive(Debug)]
pub struct Pool {
    globals: Arc<Globals>,
    parent: Option<Arc<Pool>>,
    nodes: RwLock<HashMap<String, Arc<Map<String, Value>>>>,
}

impl Pool {
    /// A run's root frame.
    pub fn root(globals: Arc<Globals>) -> Arc<Pool> {
        Arc::new(Pool { globals, parent: None, nodes: RwLock::new(HashMap::new()) })
    }

    /// A frame over `parent` (one iteration or loop pass).
    pub fn child(parent: &Arc<Pool>) -> Arc<Pool> {
        Arc::new(Pool { globals: parent.globals.clone(), parent: Some(parent.clone()), nodes: RwLock::new(HashMap::new()) })
    }

    pub fn globals(&self) -> &Arc<Globals> {
        &self.globals
    }

    /// Sets a node's outputs in this frame.
    pub fn set(&self, node_id: &str, outputs: Map<String, Value>) {
        self.nodes.write().unwrap_or_else(|e| e.into_inner()).insert(node_id.to_owned(), Arc::new(outputs));
    }

    /// Sets `key` in the outputs of `node_id` in the nearest frame that has
    /// them (a loop variable, assigned from inside the loop's body); false
    /// when no frame has that node.
    pub fn assign(&self, node_id: &str, key: &str, value: Value) -> bool {
        let mut nodes = self.nodes.write().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = nodes.get_mut(node_id) {
            Arc::make_mut(m).insert(key.to_owned(), value);
            return true;
        }
        drop(nodes);
        self.parent.as_ref().is_some_and(|p| p.assign(node_id, key, value))
    }

    /// Whether a node's outputs (a loop's variables) hold `key`.
    pub fn has_var(&self, node_id: &str, key: &str) -> bool {
        self.node(node_id).is_some_and(|m| m.contains_key(key))
    }

    /// A node's outputs, from this frame or the nearest parent that has them.
    pub fn node(&self, node_id: &str) -> Option<Arc<Map<String, Value>>> {
        let own = self.nodes.read().unwrap_or_else(|e| e.into_inner()).get(node_id).cloned();
        match (own, &self.parent) {
            (Some(m), _) => Some(m),
            (None, Some(p)) => p.node(node_id),
            (None, None) => None,
        }
    }
}

impl Scope for Pool {
    fn get(&self, selector: &[String]) -> Option<Value> {
        let (head, rest) = selector.split_first()?;
        let (name, path) = rest.split_first()?;
        let g = &self.globals;
        match head.as_str() {
            "sys" => descend(g.sys.get(name)?, path).cloned(),
            "env" => descend(g.env.get(name)?, path).cloned(),
            "conversation" => {
                let conv = g.conversation.read().unwrap_or_else(|e| e.into_inner());
                descend(conv.get(name)?, path).cloned()
            }
            node => {
                let outputs = self.node(node)?;
                descend(outputs.get(name)?, path).cloned()
            }
        }
    }

    fn render(&self, template: &str) -> String {
        Template::parse(template).render(self, None)
    }
}

/// Dify's name of a value's type (`string`, `number`, `object`, `array[string]`, …).
pub fn type_name_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "none",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Object(_) => "object",
        Value::Array(items) => match items.first() {
            None => "array[any]",
            Some(Value::String(_)) => "array[string]",
            Some(Value::Number(_)) => "array[number]",
            Some(Value::Object(_)) => "array[object]",
            Some(Value::Bool(_)) => "array[boolean]",
            Some(_) => "array[any]",
        },
    }
}

/// Whether `v` fits a declared Dify type (conversation and environment
/// variables); `secret` is a string, an unknown type accepts anything.
pub fn value_has_type(v: &Value, declared: &str) -> bool {
    let all = |f: fn(&Value) -> bool| v.as_array().is_some_and(|a| a.iter().all(f));
    match declared {
        "string" | "secret" => v.is_string(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "object" => v.is_object(),
        "array[string]" => all(Value::is_string),
        "array[number]" => all(Value::is_number),
        "array[object]" => all(Value::is_object),
        "array[boolean]" => all(Value::is_boolean),
        "array" | "array[any]" => v.is_array(),
        _ => true,
    }
}

/// A declared value as its declared type: Dify's exports write numbers as
/// strings (`'0'`) and arrays/objects as JSON text; a value that does not
/// convert is kept as written.
pub fn coerce(v: Value, declared: &str) -> Value {
    let Value::String(s) = &v else { return v };
    match declared {
        "number" => {
            let t = s.trim();
            if let Ok(i) = t.parse::<i64>() {
                return Value::from(i);
            }
            t.parse::<f64>().ok().and_then(serde_json::Number::from_f64).map_or(v, Value::Number)
        }
        "boolean" => match s.trim() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => v,
        },
        d if d == "object" || d.starts_with("array") => match serde_json::from_str::<Value>(s) {
            Ok(parsed) if value_has_type(&parsed, d) => parsed,
            _ => v,
        },
        _ => v,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pool() -> Arc<Pool> {
        let sys = json!({"query": "hi", "user_id": "u"}).as_object().cloned().unwrap_or_default();
        let env = json!({"key": "s3cret", "n": 3}).as_object().cloned().unwrap_or_default();
        let conv = BTreeMap::from([("topic".to_owned(), json!("rust"))]);
        Pool::root(Arc::new(Globals::new(sys, env, vec!["s3cret".into()], conv)))
    }

    #[test]
    fn templates_parse_into_segments_and_leave_malformed_text_alone() {
        let t = Template::parse("a {{#1.text#}} b {{#sys.query#}}{{#context#}} {{#bad#}} {{#x.1y#}} {{#n.a.b#}}");
        assert_eq!(
            t.segments,
            vec![
                Segment::Text("a ".into()),
                Segment::Var(vec!["1".into(), "text".into()]),
                Segment::Text(" b ".into()),
                Segment::Var(vec!["sys".into(), "query".into()]),
                Segment::Context,
                Segment::Text(" {{#bad#}} {{#x.1y#}} ".into()),
                Segment::Var(vec!["n".into(), "a".into(), "b".into()]),
            ]
        );
    }

    #[test]
    fn values_render_as_dify_shows_them() {
        let p = pool();
        p.set("n", json!({"s": "x", "num": 1.5, "obj": {"a": [1, 2]}, "nul": null, "b": true}).as_object().cloned().unwrap_or_default());
        let t = Template::parse("{{#n.s#}}|{{#n.num#}}|{{#n.obj#}}|{{#n.obj.a#}}|{{#n.nul#}}|{{#n.missing#}}|{{#n.b#}}|{{#env.n#}}|{{#conversation.topic#}}|{{#sys.query#}}");
        assert_eq!(t.render(p.as_ref(), None), "x|1.5|{\"a\":[1,2]}|[1,2]|||true|3|rust|hi");
        assert_eq!(p.get(&["n".into(), "obj".into(), "a".into(), "1".into()]), Some(json!(2)));
    }

    #[test]
    fn child_frames_read_through_and_shadow() {
        let p = pool();
        p.set("a", json!({"v": 1}).as_object().cloned().unwrap_or_default());
        let c = Pool::child(&p);
        c.set("it", json!({"item": "x"}).as_object().cloned().unwrap_or_default());
        assert_eq!(c.get(&["a".into(), "v".into()]), Some(json!(1)));
        assert_eq!(c.get(&["it".into(), "item".into()]), Some(json!("x")));
        assert_eq!(p.get(&["it".into(), "item".into()]), None);
        p.globals().assign(&BTreeMap::from([("topic".to_owned(), json!("go"))]));
        assert_eq!(c.render("{{#conversation.topic#}}"), "go");
    }

    #[test]
    fn secrets_are_masked() {
        let p = pool();
        let m = json!({"url": "https://x/?k=s3cret", "list": ["s3cret"]}).as_object().cloned().unwrap_or_default();
        assert_eq!(Value::Object(p.globals().mask(m)), json!({"url": "https://x/?k=******", "list": ["******"]}));
    }
}
