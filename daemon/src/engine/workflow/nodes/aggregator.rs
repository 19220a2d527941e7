//! variable-aggregator (`variable-assigner` in older DSLs): the first of its
//! variables that is set becomes `output`; with groups, each group does the
//! same into `<group_name>.output`.

use serde::Deserialize;
use serde_json::{json, Value};

use super::super::{BoxFuture, NodeCtx, NodeError, NodeKind, NodeOutput, Scope, VarType};
use super::{check_selector, parse, var_type, Problems};

#[derive(Debug, Deserialize)]
struct Data {
    #[serde(default)]
    output_type: Option<String>,
    #[serde(default)]
    variables: Vec<Vec<String>>,
    #[serde(default)]
    advanced_settings: Option<Advanced>,
}

#[derive(Debug, Deserialize)]
struct Advanced {
    #[serde(default)]
    group_enabled: bool,
    #[serde(default)]
    groups: Vec<Group>,
}

#[derive(Debug, Deserialize)]
struct Group {
    group_name: String,
    #[serde(default, rename = "groupId")]
    _group_id: Option<String>,
    #[serde(default)]
    output_type: Option<String>,
    #[serde(default)]
    variables: Vec<Vec<String>>,
}

/// One output: its name (`output`, or the group's), type and candidates.
#[derive(Debug)]
struct Slot {
    name: String,
    /// The field the candidates come from, e.g. `advanced_settings.groups.0.variables`.
    field: String,
    ty: VarType,
    variables: Vec<Vec<String>>,
}

#[derive(Debug)]
pub struct Aggregator {
    grouped: bool,
    slots: Vec<Slot>,
}

fn output_type(field: String, name: Option<&str>, problems: &mut Problems) -> VarType {
    match name {
        None | Some("") => VarType::Any,
        Some(n) => var_type(n).unwrap_or_else(|| {
            problems.push((field, format!("unknown output type {n:?}")));
            VarType::Any
        }),
    }
}

impl Aggregator {
    pub fn build(data: &Value) -> Result<Aggregator, Problems> {
        let data: Data = parse(data)?;
        let mut problems = Problems::new();
        let (grouped, slots) = match data.advanced_settings {
            Some(Advanced { group_enabled: true, groups }) => {
                let mut slots = Vec::new();
                for (i, g) in groups.into_iter().enumerate() {
                    if g.group_name.is_empty() {
                        problems.push((format!("advanced_settings.groups.{i}.group_name"), "a group needs a name".into()));
                    } else if slots.iter().any(|s: &Slot| s.name == g.group_name) {
                        problems
                            .push((format!("advanced_settings.groups.{i}.group_name"), format!("two groups are named {:?}", g.group_name)));
                    }
                    let ty = output_type(format!("advanced_settings.groups.{i}.output_type"), g.output_type.as_deref(), &mut problems);
                    slots.push(Slot {
                        name: g.group_name,
                        field: format!("advanced_settings.groups.{i}.variables"),
                        ty,
                        variables: g.variables,
                    });
                }
                if slots.is_empty() {
                    problems.push(("advanced_settings.groups".into(), "groups are enabled but there are none".into()));
                }
                (true, slots)
            }
            _ => {
                let ty = output_type("output_type".into(), data.output_type.as_deref(), &mut problems);
                (false, vec![Slot { name: "output".into(), field: "variables".into(), ty, variables: data.variables }])
            }
        };
        for slot in &slots {
            for (j, sel) in slot.variables.iter().enumerate() {
                check_selector(&format!("{}.{j}", slot.field), sel, &mut problems);
            }
        }
        if problems.is_empty() {
            Ok(Aggregator { grouped, slots })
        } else {
            Err(problems)
        }
    }
}

/// The first candidate that is set, and the input record Dify shows for it.
fn first_set(scope: &dyn Scope, variables: &[Vec<String>]) -> Option<(String, Value)> {
    variables.iter().find_map(|sel| scope.get(sel).filter(|v| !v.is_null()).map(|v| (sel[1..].join("."), v)))
}

impl NodeKind for Aggregator {
    fn references(&self) -> Vec<(String, Vec<String>)> {
        self.slots
            .iter()
            .flat_map(|s| s.variables.iter().enumerate().map(move |(j, sel)| (format!("{}.{j}", s.field), sel.clone())))
            .collect()
    }
    fn outputs(&self) -> Vec<(String, VarType)> {
        // A group's value is `{"output": ..}`, read as `[node, group, "output"]`.
        self.slots.iter().map(|s| (s.name.clone(), if self.grouped { VarType::Object } else { s.ty })).collect()
    }
    fn run<'a>(&'a self, ctx: NodeCtx<'a>) -> BoxFuture<'a, Result<NodeOutput, NodeError>> {
        Box::pin(async move {
            let mut out = NodeOutput::default();
            for slot in &self.slots {
                let Some((name, value)) = first_set(ctx.scope, &slot.variables) else { continue };
                if self.grouped {
                    out.inputs.insert(format!("{}.{name}", slot.name), value.clone());
                    out.outputs.insert(slot.name.clone(), json!({ "output": value }));
                } else {
                    out.inputs.insert(name, value.clone());
                    out.outputs.insert("output".into(), value);
                }
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{ctx, limits, FakeEffects, MapScope};
    use super::*;

    #[tokio::test]
    async fn first_set_variable_wins() {
        let n = Aggregator::build(&json!({
            "type": "variable-aggregator", "output_type": "string",
            "variables": [["llm_a", "text"], ["llm_b", "text"], ["llm_c", "text"]]
        }))
        .unwrap();
        assert_eq!(n.outputs(), vec![("output".to_owned(), VarType::String)]);
        assert_eq!(n.references().len(), 3);
        assert_eq!(n.references()[2].0, "variables.2");
        let scope = MapScope::with(&[("llm_a.text", Value::Null), ("llm_b.text", json!("from b")), ("llm_c.text", json!("from c"))]);
        let fx = FakeEffects::default();
        let out = n.run(ctx(&scope, &fx, &limits())).await.unwrap();
        assert_eq!(out.outputs["output"], "from b");
        assert_eq!(out.inputs["text"], "from b");
        let out = n.run(ctx(&MapScope::default(), &fx, &limits())).await.unwrap();
        assert!(out.outputs.is_empty());
    }

    #[tokio::test]
    async fn groups_each_pick_their_own() {
        let n = Aggregator::build(&json!({
            "output_type": "string", "variables": [],
            "advanced_settings": {"group_enabled": true, "groups": [
                {"group_name": "Group1", "groupId": "g1", "output_type": "string", "variables": [["a", "x"], ["b", "x"]]},
                {"group_name": "Group2", "groupId": "g2", "output_type": "number", "variables": [["c", "n"]]},
                {"group_name": "Group3", "groupId": "g3", "output_type": "number", "variables": [["d", "n"]]}
            ]}
        }))
        .unwrap();
        assert_eq!(n.outputs()[1], ("Group2".to_owned(), VarType::Object));
        assert_eq!(n.references()[2].0, "advanced_settings.groups.1.variables.0");
        let scope = MapScope::with(&[("b.x", json!("bx")), ("c.n", json!(4))]);
        let fx = FakeEffects::default();
        let out = n.run(ctx(&scope, &fx, &limits())).await.unwrap();
        assert_eq!(out.outputs["Group1"], json!({"output": "bx"}));
        assert_eq!(out.outputs["Group2"], json!({"output": 4}));
        assert!(!out.outputs.contains_key("Group3"));
    }

    #[test]
    fn bad_data_names_each_field() {
        let e = Aggregator::build(&json!({
            "output_type": "strin", "variables": [["a"]]
        }))
        .unwrap_err();
        assert_eq!(e.iter().map(|p| p.0.as_str()).collect::<Vec<_>>(), vec!["output_type", "variables.0"]);
        let e = Aggregator::build(&json!({
            "advanced_settings": {"group_enabled": true, "groups": [
                {"group_name": "", "output_type": "string", "variables": []},
                {"group_name": "G", "output_type": "wat", "variables": [[]]},
                {"group_name": "G", "output_type": "string", "variables": []}
            ]}
        }))
        .unwrap_err();
        let fields: Vec<&str> = e.iter().map(|p| p.0.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "advanced_settings.groups.0.group_name",
                "advanced_settings.groups.1.output_type",
                "advanced_settings.groups.2.group_name",
                "advanced_settings.groups.1.variables.0"
            ]
        );
        let e = Aggregator::build(&json!({"variables": "x"})).unwrap_err();
        assert_eq!(e[0].0, "variables");
    }
}
