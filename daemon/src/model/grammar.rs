//! JSON schema → GBNF: the grammars that constrain the local model to JSON
//! (Dify's structured output, question-classifier, parameter-extractor).
//! Owns: translating the schema subset Dify users write into llama.cpp's
//! grammar language, and refusing the rest with the schema's JSON pointer.
//! Does not touch: sampling (local.rs builds the sampler from the text).
//!
//! The grammars bound what a small model can loop on: between two JSON
//! tokens at most one space or newline, numbers at most 16 digits per part.
//! Strings follow JSON's escape rules as llama.cpp's json.gbnf has them.
//! Object properties come in the schema's key order (serde_json's map order)
//! and every object is closed: no properties beyond the declared ones.

use serde_json::{Map, Value};

/// Why a schema cannot become a grammar; `pointer` is the JSON pointer of
/// the offending schema (`#` is the root).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrammarError {
    #[error("JSON schema at {pointer}: $ref is not supported; write the referenced schema inline")]
    Ref { pointer: String },
    #[error("JSON schema at {pointer}: the keyword {keyword:?} is not supported")]
    Unsupported { pointer: String, keyword: String },
    #[error("JSON schema at {pointer}: {reason}")]
    Invalid { pointer: String, reason: String },
}

/// Keywords that only describe a schema: accepted and ignored.
const ANNOTATIONS: &[&str] =
    &["title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated", "readOnly", "writeOnly"];

/// Keywords the converter understands.
const HANDLED: &[&str] = &[
    "type",
    "enum",
    "const",
    "anyOf",
    "oneOf",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
];

/// Rules every grammar may use, with the rules each one needs.
const PRIMITIVES: &[(&str, &str, &[&str])] = &[
    // At most one space or newline between tokens: never a run of blanks.
    ("ws", r#"| " " | "\n""#, &[]),
    ("char", r#"[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})"#, &[]),
    ("string", r#""\"" char* "\"" ws"#, &["char", "ws"]),
    ("integral-part", r#"[0] | [1-9] [0-9]{0,15}"#, &[]),
    ("number", r#""-"? integral-part ("." [0-9]{1,16})? ([eE] [-+]? [0-9]{1,16})? ws"#, &["integral-part", "ws"]),
    ("integer", r#""-"? integral-part ws"#, &["integral-part", "ws"]),
    ("boolean", r#"("true" | "false") ws"#, &["ws"]),
    ("null", r#""null" ws"#, &["ws"]),
    ("value", "object | array | string | number | boolean | null", &["object", "array", "string", "number", "boolean", "null"]),
    ("object", r#""{" ws (string ":" ws value ("," ws string ":" ws value)*)? "}" ws"#, &["ws", "string", "value"]),
    ("array", r#""[" ws (value ("," ws value)*)? "]" ws"#, &["ws", "value"]),
];

/// GBNF for JSON that matches `schema`; its start rule is `root`.
pub fn json_schema_to_gbnf(schema: &Value) -> Result<String, GrammarError> {
    let mut g = Generator::default();
    let root = g.visit(schema, "#", "root")?;
    // An object, array or bounded string at the top is already `root`.
    if root != "root" {
        g.define("root", root);
    }
    Ok(g.finish())
}

/// GBNF for any JSON object (`root`), for "answer in JSON" without a schema.
pub fn any_json_object_gbnf() -> String {
    let mut g = Generator::default();
    let object = g.primitive("object");
    g.define("root", object);
    g.finish()
}

#[derive(Default)]
struct Generator {
    /// Rules in definition order, `root` last.
    rules: Vec<(String, String)>,
    primitives: Vec<&'static str>,
}

impl Generator {
    fn finish(self) -> String {
        let mut out = String::new();
        let primitives = PRIMITIVES.iter().filter(|(name, _, _)| self.primitives.contains(name));
        // root first: easier to read; GBNF does not care about order.
        for (name, body) in self.rules.iter().rev().map(|(n, b)| (n.as_str(), b.as_str())).chain(primitives.map(|(n, b, _)| (*n, *b))) {
            out.push_str(name);
            out.push_str(" ::= ");
            out.push_str(body);
            out.push('\n');
        }
        out
    }

    /// Uses a primitive rule (and those it needs); returns its name.
    fn primitive(&mut self, name: &'static str) -> String {
        if !self.primitives.contains(&name) {
            self.primitives.push(name);
            if let Some((_, _, deps)) = PRIMITIVES.iter().find(|(n, _, _)| *n == name) {
                for dep in *deps {
                    self.primitive(dep);
                }
            }
        }
        name.to_owned()
    }

    /// Defines a rule under a name not used yet (derived from `hint`).
    fn define(&mut self, hint: &str, body: String) -> String {
        let mut name = hint.to_owned();
        let mut n = 1;
        while self.rules.iter().any(|(r, _)| *r == name) || PRIMITIVES.iter().any(|(p, _, _)| *p == name) {
            n += 1;
            name = format!("{hint}-{n}");
        }
        self.rules.push((name.clone(), body));
        name
    }

    /// A GBNF expression for the values `schema` allows, each followed by `ws`.
    fn visit(&mut self, schema: &Value, ptr: &str, hint: &str) -> Result<String, GrammarError> {
        let s = match schema {
            Value::Bool(true) => return Ok(self.primitive("value")),
            Value::Object(s) => s,
            _ => return Err(invalid(ptr, "a schema must be an object (or true)")),
        };
        if s.contains_key("$ref") {
            return Err(GrammarError::Ref { pointer: ptr.to_owned() });
        }
        if let Some(k) = s.keys().find(|k| !ANNOTATIONS.contains(&k.as_str()) && !HANDLED.contains(&k.as_str())) {
            return Err(GrammarError::Unsupported { pointer: ptr.to_owned(), keyword: k.clone() });
        }
        if let Some(v) = s.get("const") {
            return self.literals(std::slice::from_ref(v), &format!("{ptr}/const"));
        }
        if let Some(v) = s.get("enum") {
            let values = v.as_array().filter(|a| !a.is_empty()).ok_or_else(|| invalid(ptr, "enum must be a non-empty array"))?;
            return self.literals(values, &format!("{ptr}/enum"));
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(v) = s.get(key) {
                let alts =
                    v.as_array().filter(|a| !a.is_empty()).ok_or_else(|| invalid(ptr, &format!("{key} must be a non-empty array")))?;
                let exprs = alts
                    .iter()
                    .enumerate()
                    .map(|(i, a)| self.visit(a, &format!("{ptr}/{key}/{i}"), &format!("{hint}-{i}")))
                    .collect::<Result<Vec<_>, _>>()?;
                return Ok(format!("({})", exprs.join(" | ")));
            }
        }
        match s.get("type") {
            None if s.contains_key("properties") => self.typed("object", s, ptr, hint),
            None if s.contains_key("items") => self.typed("array", s, ptr, hint),
            None => Ok(self.primitive("value")),
            Some(Value::String(t)) => self.typed(t, s, ptr, hint),
            Some(Value::Array(ts)) if !ts.is_empty() => {
                let exprs = ts
                    .iter()
                    .map(|t| match t {
                        Value::String(t) => self.typed(t, s, ptr, hint),
                        _ => Err(invalid(&format!("{ptr}/type"), "type names must be strings")),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(format!("({})", exprs.join(" | ")))
            }
            Some(_) => Err(invalid(&format!("{ptr}/type"), "type must be a string or a non-empty array of strings")),
        }
    }

    fn typed(&mut self, t: &str, s: &Map<String, Value>, ptr: &str, hint: &str) -> Result<String, GrammarError> {
        match t {
            "string" => self.string(s, ptr, hint),
            "number" => Ok(self.primitive("number")),
            "integer" => Ok(self.primitive("integer")),
            "boolean" => Ok(self.primitive("boolean")),
            "null" => Ok(self.primitive("null")),
            "object" => self.object(s, ptr, hint),
            "array" => self.array(s, ptr, hint),
            other => Err(invalid(&format!("{ptr}/type"), &format!("unknown type {other:?}"))),
        }
    }

    /// The JSON texts of scalar values, as alternatives.
    fn literals(&mut self, values: &[Value], ptr: &str) -> Result<String, GrammarError> {
        let mut alts = Vec::with_capacity(values.len());
        for (i, v) in values.iter().enumerate() {
            if v.is_object() || v.is_array() {
                return Err(invalid(&format!("{ptr}/{i}"), "only strings, numbers, booleans and null are supported here"));
            }
            alts.push(gbnf_literal(&v.to_string()));
        }
        Ok(format!("({}) {}", alts.join(" | "), self.primitive("ws")))
    }

    fn string(&mut self, s: &Map<String, Value>, ptr: &str, hint: &str) -> Result<String, GrammarError> {
        let min = count(s, "minLength", ptr)?;
        let max = count(s, "maxLength", ptr)?;
        if min.is_none() && max.is_none() {
            return Ok(self.primitive("string"));
        }
        let (min, ws, ch) = (min.unwrap_or(0), self.primitive("ws"), self.primitive("char"));
        let reps = match max {
            Some(max) if max < min => return Err(invalid(ptr, "maxLength is less than minLength")),
            Some(max) => format!("{{{min},{max}}}"),
            None => format!("{{{min},}}"),
        };
        Ok(self.define(hint, format!(r#""\"" {ch}{reps} "\"" {ws}"#)))
    }

    fn array(&mut self, s: &Map<String, Value>, ptr: &str, hint: &str) -> Result<String, GrammarError> {
        let item = match s.get("items") {
            Some(items) => self.visit(items, &format!("{ptr}/items"), &format!("{hint}-item"))?,
            None => self.primitive("value"),
        };
        let min = count(s, "minItems", ptr)?.unwrap_or(0);
        let max = count(s, "maxItems", ptr)?;
        let ws = self.primitive("ws");
        let more = match max {
            Some(max) if max < min => return Err(invalid(ptr, "maxItems is less than minItems")),
            Some(0) => return Ok(self.define(hint, format!(r#""[" {ws} "]" {ws}"#))),
            Some(max) => format!("{{{},{}}}", min.saturating_sub(1), max - 1),
            None if min <= 1 => "*".to_owned(),
            None => format!("{{{},}}", min - 1),
        };
        let items = format!(r#"{item} ("," {ws} {item}){more}"#);
        let items = if min == 0 { format!("({items})?") } else { items };
        Ok(self.define(hint, format!(r#""[" {ws} {items} "]" {ws}"#)))
    }

    fn object(&mut self, s: &Map<String, Value>, ptr: &str, hint: &str) -> Result<String, GrammarError> {
        let ws = self.primitive("ws");
        let Some(props) = s.get("properties") else {
            // Required names without properties cannot be honoured closed.
            if s.get("required").and_then(Value::as_array).is_some_and(|r| !r.is_empty()) {
                return Err(invalid(&format!("{ptr}/required"), "required names a property the schema does not define"));
            }
            return Ok(self.primitive("object"));
        };
        let props = props.as_object().ok_or_else(|| invalid(&format!("{ptr}/properties"), "properties must be an object"))?;
        let required: Vec<&str> = match s.get("required") {
            None => Vec::new(),
            Some(Value::Array(r)) => r
                .iter()
                .enumerate()
                .map(|(i, n)| match n.as_str() {
                    Some(n) if props.contains_key(n) => Ok(n),
                    Some(n) => Err(invalid(&format!("{ptr}/required/{i}"), &format!("required property {n:?} is not in properties"))),
                    None => Err(invalid(&format!("{ptr}/required/{i}"), "required names must be strings")),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(invalid(&format!("{ptr}/required"), "required must be an array of property names")),
        };
        // Each "key": value pair, in declared order, with whether it may be left out.
        let mut pairs = Vec::with_capacity(props.len());
        for (name, sub) in props {
            let sub_ptr = format!("{ptr}/properties/{}", pointer_escape(name));
            let value = self.visit(sub, &sub_ptr, &format!("{hint}-{}", rule_name(name)))?;
            let pair = format!(r#"{} ":" {ws} {value}"#, gbnf_literal(&Value::String(name.clone()).to_string()));
            pairs.push((rule_name(name), pair, !required.contains(&name.as_str())));
        }
        // Two rules per pair, built from the end: `-tail` (the pairs from
        // here on after one was written: each with its comma) and `-head`
        // (from here on, none written yet); a head is only needed while
        // every pair before it is optional.
        let (mut tail, mut head): (Option<String>, Option<String>) = (None, None);
        for (i, (name, pair, optional)) in pairs.iter().enumerate().rev() {
            let rest = tail.as_deref().map(|t| format!(" {t}")).unwrap_or_default();
            if pairs[..i].iter().all(|(_, _, optional)| *optional) {
                let body = match (optional, &head) {
                    (false, _) => format!("{pair}{rest}"),
                    (true, None) => format!("({pair}{rest})?"),
                    (true, Some(h)) => format!("({pair}{rest} | {h})"),
                };
                head = Some(self.define(&format!("{hint}-{name}-head"), body));
            }
            if i > 0 {
                let with_comma = format!(r#""," {ws} {pair}"#);
                let body = if *optional { format!("({with_comma})?{rest}") } else { format!("{with_comma}{rest}") };
                tail = Some(self.define(&format!("{hint}-{name}-tail"), body));
            }
        }
        let first = head.map(|h| format!(" {h}")).unwrap_or_default();
        Ok(self.define(hint, format!(r#""{{" {ws}{first} "}}" {ws}"#)))
    }
}

fn invalid(ptr: &str, reason: &str) -> GrammarError {
    GrammarError::Invalid { pointer: ptr.to_owned(), reason: reason.to_owned() }
}

/// A non-negative integer keyword (`minLength`, `maxItems`, ...).
fn count(s: &Map<String, Value>, key: &str, ptr: &str) -> Result<Option<u64>, GrammarError> {
    match s.get(key) {
        None => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| invalid(&format!("{ptr}/{key}"), &format!("{key} must be a non-negative integer"))),
    }
}

/// `text` as a GBNF string literal.
fn gbnf_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\x{:02X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A property name as GBNF rule-name characters (`[a-zA-Z0-9-]`).
fn rule_name(name: &str) -> String {
    let s: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    if s.is_empty() {
        "prop".to_owned()
    } else {
        s
    }
}

/// One JSON pointer segment (RFC 6901).
fn pointer_escape(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::{any_json_object_gbnf, json_schema_to_gbnf, GrammarError};
    use serde_json::json;

    fn gbnf(schema: serde_json::Value) -> String {
        json_schema_to_gbnf(&schema).expect("a supported schema")
    }

    /// The body of rule `name` in `g`.
    fn rule<'a>(g: &'a str, name: &str) -> &'a str {
        let head = format!("{name} ::= ");
        g.lines().find_map(|l| l.strip_prefix(head.as_str())).unwrap_or_else(|| panic!("no rule {name} in\n{g}"))
    }

    #[test]
    fn scalars_use_the_bounded_json_primitives() {
        for (t, expected) in [("string", "string"), ("number", "number"), ("integer", "integer"), ("boolean", "boolean"), ("null", "null")]
        {
            let g = gbnf(json!({"type": t}));
            assert_eq!(rule(&g, "root"), expected, "{t}");
            assert_eq!(g.lines().next(), Some(format!("root ::= {expected}").as_str()), "root comes first");
            assert_eq!(rule(&g, "ws"), r#"| " " | "\n""#, "at most one blank between tokens");
        }
        let g = gbnf(json!({"type": "integer"}));
        assert_eq!(rule(&g, "integral-part"), "[0] | [1-9] [0-9]{0,15}");
        assert!(!g.contains("number ::="), "only the rules used are emitted:\n{g}");
        let g = gbnf(json!({"type": "string"}));
        assert_eq!(rule(&g, "char"), r#"[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})"#);
    }

    #[test]
    fn enum_and_const_are_literal_json_alternatives() {
        let g = gbnf(json!({"enum": ["a", "say \"hi\"", 3, true, null]}));
        assert_eq!(rule(&g, "root"), r#"("\"a\"" | "\"say \\\"hi\\\"\"" | "3" | "true" | "null") ws"#);
        let g = gbnf(json!({"const": "x\ny"}));
        assert_eq!(rule(&g, "root"), r#"("\"x\\ny\"") ws"#);
    }

    #[test]
    fn string_lengths_bound_the_characters() {
        let g = gbnf(json!({"type": "string", "minLength": 2, "maxLength": 5}));
        assert_eq!(rule(&g, "root"), r#""\"" char{2,5} "\"" ws"#);
        let g = gbnf(json!({"type": "string", "minLength": 1}));
        assert_eq!(rule(&g, "root"), r#""\"" char{1,} "\"" ws"#);
    }

    #[test]
    fn arrays_follow_items_and_counts() {
        let g = gbnf(json!({"type": "array", "items": {"type": "integer"}}));
        assert_eq!(rule(&g, "root"), r#""[" ws (integer ("," ws integer)*)? "]" ws"#);
        let g = gbnf(json!({"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 3}));
        assert_eq!(rule(&g, "root"), r#""[" ws string ("," ws string){0,2} "]" ws"#);
        let g = gbnf(json!({"type": "array", "minItems": 2}));
        assert_eq!(rule(&g, "root"), r#""[" ws value ("," ws value){1,} "]" ws"#);
        let g = gbnf(json!({"type": "array", "maxItems": 0}));
        assert_eq!(rule(&g, "root"), r#""[" ws "]" ws"#);
    }

    #[test]
    fn required_properties_are_mandatory_and_optional_ones_may_be_left_out() {
        let g = gbnf(json!({
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "string"}, "c": {"type": "boolean"}},
            "required": ["b"],
        }));
        // a? b c? — a comma only between pairs that are written.
        assert_eq!(rule(&g, "root"), r#""{" ws root-a-head "}" ws"#, "{g}");
        assert_eq!(rule(&g, "root-a-head"), r#"("\"a\"" ":" ws integer root-b-tail | root-b-head)"#);
        assert_eq!(rule(&g, "root-b-head"), r#""\"b\"" ":" ws string root-c-tail"#);
        assert_eq!(rule(&g, "root-b-tail"), r#""," ws "\"b\"" ":" ws string root-c-tail"#);
        assert_eq!(rule(&g, "root-c-tail"), r#"("," ws "\"c\"" ":" ws boolean)?"#);
        assert!(!g.contains("root-c-head") && !g.contains("root-a-tail"), "no rule nothing uses:\n{g}");
        assert!(!g.contains("additional"), "objects are closed");
    }

    #[test]
    fn nested_objects_and_unions_get_their_own_rules() {
        let g = gbnf(json!({
            "type": "object",
            "properties": {
                "user name": {"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]},
                "tag": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                "either": {"type": ["integer", "null"]},
            },
            "required": ["user name", "tag", "either"],
        }));
        assert_eq!(rule(&g, "root-user-name"), r#""{" ws root-user-name-id-head "}" ws"#);
        assert_eq!(rule(&g, "root-user-name-id-head"), r#""\"id\"" ":" ws integer"#);
        assert!(g.contains(r#""\"tag\"" ":" ws (string | null)"#), "{g}");
        assert!(g.contains(r#""\"either\"" ":" ws (integer | null)"#), "{g}");
    }

    #[test]
    fn an_object_without_properties_is_any_object() {
        let g = gbnf(json!({"type": "object"}));
        assert_eq!(rule(&g, "root"), "object");
        assert_eq!(rule(&g, "object"), rule(&any_json_object_gbnf(), "object"));
        assert_eq!(rule(&any_json_object_gbnf(), "root"), "object");
        let g = gbnf(json!({"type": "object", "properties": {}}));
        assert_eq!(rule(&g, "root"), r#""{" ws "}" ws"#);
    }

    #[test]
    fn unsupported_schemas_name_their_json_pointer() {
        let err = |s: serde_json::Value| json_schema_to_gbnf(&s).expect_err("unsupported");
        assert_eq!(
            err(json!({"type": "object", "properties": {"a/b": {"$ref": "#/$defs/x"}}})),
            GrammarError::Ref { pointer: "#/properties/a~1b".into() }
        );
        assert_eq!(
            err(json!({"type": "array", "items": {"type": "string", "pattern": "^a"}})),
            GrammarError::Unsupported { pointer: "#/items".into(), keyword: "pattern".into() }
        );
        assert_eq!(
            err(json!({"type": "object", "properties": {"x": {"type": "date"}}})),
            GrammarError::Invalid { pointer: "#/properties/x/type".into(), reason: "unknown type \"date\"".into() }
        );
        assert_eq!(
            err(json!({"type": "object", "properties": {"a": {}}, "required": ["a", "b"]})),
            GrammarError::Invalid { pointer: "#/required/1".into(), reason: "required property \"b\" is not in properties".into() }
        );
        assert_eq!(
            err(json!({"enum": ["a", {"b": 1}]})),
            GrammarError::Invalid {
                pointer: "#/enum/1".into(),
                reason: "only strings, numbers, booleans and null are supported here".into()
            }
        );
        assert!(
            matches!(err(json!({"anyOf": [{"type": "string"}, {"format": "date"}]})), GrammarError::Unsupported { pointer, .. } if pointer == "#/anyOf/1")
        );
        assert!(matches!(err(json!({"enum": []})), GrammarError::Invalid { pointer, .. } if pointer == "#"));
        assert!(
            matches!(err(json!({"type": "string", "maxLength": -1})), GrammarError::Invalid { pointer, .. } if pointer == "#/maxLength")
        );
        assert!(
            matches!(err(json!({"type": "array", "minItems": 3, "maxItems": 2})), GrammarError::Invalid { pointer, .. } if pointer == "#")
        );
        assert!(matches!(err(json!(false)), GrammarError::Invalid { pointer, .. } if pointer == "#"));
        let msg = err(json!({"properties": {"p": {"$ref": "#/x"}}})).to_string();
        assert!(msg.contains("#/properties/p") && msg.contains("$ref"), "{msg}");
    }

    #[test]
    fn annotations_are_ignored() {
        let g = gbnf(json!({"type": "integer", "title": "n", "description": "how many", "default": 1, "$schema": "x"}));
        assert_eq!(rule(&g, "root"), "integer");
    }
}
