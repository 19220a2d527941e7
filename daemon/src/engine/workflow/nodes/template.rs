//! template-transform: a Jinja2 template, compiled once with minijinja when
//! the graph is built, rendered with the node's variables into `output`.
//! Python's string and dict methods work (minijinja-contrib's pycompat), as
//! do `tojson` and `urlencode`; a render is bounded by fuel and its output
//! by Dify's 400,000-character limit.

use minijinja::Environment;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::super::{BoxFuture, NodeCtx, NodeError, NodeKind, NodeOutput, VarType};
use super::{check_selector, parse, Problems};

/// Dify's TEMPLATE_TRANSFORM_MAX_LENGTH: the longest output, in characters.
pub const MAX_OUTPUT_CHARS: usize = 400_000;
/// The most bytes a render may write: enough for MAX_OUTPUT_CHARS of any
/// UTF-8 text, so the character check after the render stays exact.
const MAX_OUTPUT_BYTES: usize = MAX_OUTPUT_CHARS * 4;

/// A writer that refuses to grow past [`MAX_OUTPUT_BYTES`].
struct Capped(Vec<u8>);

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > MAX_OUTPUT_BYTES {
            self.0.resize(MAX_OUTPUT_BYTES, 0);
            return Err(std::io::Error::other("template output too large"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Most template instructions one render may run (minijinja fuel), so a
/// runaway loop fails the node instead of holding a core.
pub const MAX_FUEL: u64 = 20_000_000;

const NAME: &str = "template";

#[derive(Debug, Deserialize)]
struct Data {
    template: String,
    #[serde(default)]
    variables: Vec<Variable>,
}

#[derive(Debug, Deserialize)]
struct Variable {
    variable: String,
    value_selector: Vec<String>,
}

#[derive(Debug)]
pub struct TemplateTransform {
    env: Environment<'static>,
    variables: Vec<Variable>,
}

impl TemplateTransform {
    pub fn build(data: &Value) -> Result<TemplateTransform, Problems> {
        let data: Data = parse(data)?;
        let mut problems = Problems::new();
        for (i, v) in data.variables.iter().enumerate() {
            if v.variable.is_empty() {
                problems.push((format!("variables.{i}.variable"), "a template variable needs a name".into()));
            }
            check_selector(&format!("variables.{i}.value_selector"), &v.value_selector, &mut problems);
        }
        let mut env = Environment::new();
        // Dify renders with Python's Jinja2: str.split(), dict.items() and
        // the like work there, so they do here.
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.set_fuel(Some(MAX_FUEL));
        if let Err(e) = env.add_template_owned(NAME, data.template) {
            problems.push(("template".into(), format!("the Jinja2 template does not compile: {e}")));
        }
        if problems.is_empty() {
            Ok(TemplateTransform { env, variables: data.variables })
        } else {
            Err(problems)
        }
    }
}

impl NodeKind for TemplateTransform {
    fn references(&self) -> Vec<(String, Vec<String>)> {
        self.variables.iter().enumerate().map(|(i, v)| (format!("variables.{i}.value_selector"), v.value_selector.clone())).collect()
    }
    fn outputs(&self) -> Vec<(String, VarType)> {
        vec![("output".into(), VarType::String)]
    }
    fn run<'a>(&'a self, ctx: NodeCtx<'a>) -> BoxFuture<'a, Result<NodeOutput, NodeError>> {
        Box::pin(async move {
            let inputs: Map<String, Value> =
                self.variables.iter().map(|v| (v.variable.clone(), ctx.scope.get(&v.value_selector).unwrap_or(Value::Null))).collect();
            let template = self.env.get_template(NAME).map_err(|e| NodeError::Failed(format!("template: {e}")))?;
            // Rendered into a bounded buffer: a template that expands a large
            // variable in nested loops fails when the buffer is full, instead
            // of building gigabytes before the length check.
            let mut out = Capped(Vec::new());
            if let Err(e) = template.render_captured_to(&inputs, &mut out) {
                if out.0.len() >= MAX_OUTPUT_BYTES {
                    return Err(NodeError::Failed(format!("Output length exceeds {MAX_OUTPUT_CHARS} characters")));
                }
                return Err(NodeError::Failed(format!("the template failed to render: {e}")));
            }
            let text = String::from_utf8(out.0).map_err(|e| NodeError::Failed(format!("the template rendered invalid UTF-8: {e}")))?;
            let chars = text.chars().count();
            if chars > MAX_OUTPUT_CHARS {
                return Err(NodeError::Failed(format!("Output length exceeds {MAX_OUTPUT_CHARS} characters ({chars})")));
            }
            let mut outputs = Map::new();
            outputs.insert("output".into(), Value::String(text));
            Ok(NodeOutput { inputs, outputs, ..NodeOutput::default() })
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::testing::{ctx, limits, FakeEffects, MapScope};
    use super::*;

    fn node(data: Value) -> TemplateTransform {
        TemplateTransform::build(&data).expect("builds")
    }

    #[tokio::test]
    async fn renders_variables_with_jinja() {
        let n = node(json!({
            "title": "T", "type": "template-transform",
            "template": "{{ name | upper }}: {% for i in items %}{{ i.k }}{% if not loop.last %}, {% endif %}{% endfor %}{{ missing }}",
            "variables": [
                {"variable": "name", "value_selector": ["start", "name"]},
                {"variable": "items", "value_selector": ["http", "list"]},
                {"variable": "missing", "value_selector": ["start", "nope"]}
            ]
        }));
        assert_eq!(n.references()[1], ("variables.1.value_selector".to_owned(), vec!["http".to_owned(), "list".to_owned()]));
        assert_eq!(n.outputs(), vec![("output".to_owned(), VarType::String)]);
        let scope = MapScope::with(&[("start.name", json!("ada")), ("http.list", json!([{"k": 1}, {"k": "two"}]))]);
        let fx = FakeEffects::default();
        let out = n.run(ctx(&scope, &fx, &limits())).await.unwrap();
        // An unset variable is None, which Jinja2 (and so Dify) prints as "None".
        assert_eq!(out.outputs["output"], "ADA: 1, twoNone");
        assert_eq!(out.inputs["name"], "ada");
        assert_eq!(out.inputs["missing"], Value::Null);
    }

    #[tokio::test]
    async fn python_methods_and_json_filters_work_as_in_dify() {
        let n = node(json!({
            "template": "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}{{ s.split(',') | length }} {{ s.upper().strip() }} {{ d | tojson }} {{ q | urlencode }}",
            "variables": [
                {"variable": "d", "value_selector": ["start", "d"]},
                {"variable": "s", "value_selector": ["start", "s"]},
                {"variable": "q", "value_selector": ["start", "q"]}
            ]
        }));
        let scope = MapScope::with(&[("start.d", json!({"a": 1, "b": "x"})), ("start.s", json!(" a,b,c ")), ("start.q", json!("a b&c"))]);
        let fx = FakeEffects::default();
        let out = n.run(ctx(&scope, &fx, &limits())).await.unwrap();
        // minijinja's tojson is compact where Jinja2 puts a space after ':' and ','.
        assert_eq!(out.outputs["output"], "a=1;b=x;3 A,B,C {\"a\":1,\"b\":\"x\"} a%20b%26c");
    }

    #[tokio::test]
    async fn an_expanding_template_stops_at_the_output_cap() {
        let n = node(json!({"template": "{% for i in range(200) %}{{ big }}{% endfor %}",
                            "variables": [{"variable": "big", "value_selector": ["start", "big"]}]}));
        let scope = MapScope::with(&[("start.big", json!("x".repeat(100_000)))]);
        let fx = FakeEffects::default();
        let e = n.run(ctx(&scope, &fx, &limits())).await.unwrap_err();
        assert!(e.to_string().contains("exceeds 400000 characters"), "{e}");
    }

    #[tokio::test]
    async fn runaway_templates_run_out_of_fuel() {
        let n =
            node(json!({"template": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "variables": []}));
        let scope = MapScope::default();
        let fx = FakeEffects::default();
        let e = n.run(ctx(&scope, &fx, &limits())).await.unwrap_err();
        assert!(e.to_string().contains("fuel"), "{e}");
    }

    #[test]
    fn bad_data_names_each_field() {
        let e = TemplateTransform::build(&json!({"template": "{% for x in %}", "variables": [{"variable": "", "value_selector": ["x"]}]}))
            .unwrap_err();
        let fields: Vec<&str> = e.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, vec!["variables.0.variable", "variables.0.value_selector", "template"]);
        assert!(e[2].1.contains("does not compile"));
        let e = TemplateTransform::build(&json!({"variables": []})).unwrap_err();
        assert_eq!(e[0].0, "template");
        let e =
            TemplateTransform::build(&json!({"template": "x", "variables": [{"variable": "a", "value_selector": "start.a"}]})).unwrap_err();
        assert_eq!(e[0].0, "variables.0.value_selector");
    }

    #[tokio::test]
    async fn render_errors_and_huge_outputs_fail_the_node() {
        let scope = MapScope::with(&[("start.n", json!(5))]);
        let fx = FakeEffects::default();
        let n = node(json!({"template": "{{ n + 'x' }}", "variables": [{"variable": "n", "value_selector": ["start", "n"]}]}));
        let e = n.run(ctx(&scope, &fx, &limits())).await.unwrap_err();
        assert!(e.to_string().contains("failed to render"), "{e}");
        let n = node(json!({"template": "{% for i in range(100000) %}abcde{% endfor %}", "variables": []}));
        let e = n.run(ctx(&scope, &fx, &limits())).await.unwrap_err();
        assert!(e.to_string().contains("exceeds 400000 characters"), "{e}");
    }
}
