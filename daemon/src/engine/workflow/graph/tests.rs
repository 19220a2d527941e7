use serde_json::{json, Value};

use super::fixtures::*;
use super::*;

fn compile(raw: &Value, mode: WorkflowMode) -> Result<Workflow, Vec<Problem>> {
    Workflow::compile(raw, mode, &Capabilities::default())
}

fn problems(raw: &Value, mode: WorkflowMode) -> Vec<Problem> {
    match compile(raw, mode) {
        Ok(_) => panic!("expected problems"),
        Err(p) => p,
    }
}

/// The problem about `node` whose message contains `needle`.
fn has(problems: &[Problem], node: Option<&str>, field: &str, needle: &str) -> bool {
    problems.iter().any(|p| p.node_id.as_deref() == node && p.field == field && p.message.contains(needle))
}

fn linear() -> Value {
    workflow(
        vec![start(json!([text_input("q", true)])), llm("llm", "Say {{#start.q#}}"), end(&[("out", &["llm", "text"])])],
        vec![edge("start", "llm", "source"), edge("llm", "end", "source")],
    )
}

#[test]
fn a_valid_graph_compiles_with_its_form_and_models() {
    let mut raw = linear();
    if let Some(n) = raw["graph"]["nodes"].as_array_mut() {
        n.push(json!({"id": "note1", "type": "custom-note", "data": {"type": "", "text": "hi"}}));
    }
    let wf = match compile(&raw, WorkflowMode::Workflow) {
        Ok(wf) => wf,
        Err(p) => panic!("{p:?}"),
    };
    assert_eq!(wf.start_variables().len(), 1);
    assert_eq!(wf.start_variables()[0].variable, "q");
    assert_eq!(wf.models()[0].name, "gpt-4o-mini");
    assert_eq!(wf.raw(), &raw);
}

#[test]
fn unsupported_nodes_are_refused_naming_node_and_tool() {
    let raw = workflow(
        vec![
            start(json!([])),
            node("code1", "code", json!({"code": "def main(): pass", "code_language": "python3", "variables": [], "outputs": {}})),
            node("tool1", "tool", json!({"provider_id": "google", "tool_name": "google_search", "tool_parameters": {}})),
            node("agent1", "agent", json!({"agent_strategy_provider_name": "langgenius/agent", "agent_strategy_name": "react"})),
            node("weird", "my-plugin-node", json!({})),
            end(&[]),
        ],
        vec![
            edge("start", "code1", "source"),
            edge("code1", "tool1", "source"),
            edge("tool1", "agent1", "source"),
            edge("agent1", "weird", "source"),
            edge("weird", "end", "source"),
        ],
    );
    let p = problems(&raw, WorkflowMode::Workflow);
    assert!(has(&p, Some("code1"), "code_language", "python3 code nodes cannot run here: this build runs no code nodes"), "{p:?}");
    assert!(
        has(&p, Some("tool1"), "type", "tool nodes need Dify's cloud marketplace; not supported offline: tool google/google_search"),
        "{p:?}"
    );
    assert!(has(&p, Some("agent1"), "type", "not supported offline: agent langgenius/agent/react"), "{p:?}");
    assert!(has(&p, Some("weird"), "type", "\"my-plugin-node\" is not supported offline"), "{p:?}");
    assert_eq!(p.iter().find(|x| x.node_id.as_deref() == Some("tool1")).map(|x| x.node_title.clone()), Some(Some("tool tool1".into())));
}

#[test]
fn missing_required_fields_name_their_path() {
    let mut raw = linear();
    raw["graph"]["nodes"][1]["data"]["model"] = json!({"provider": "openai"});
    raw["graph"]["nodes"][2]["data"]["outputs"] = json!([{"variable": "out"}]);
    let p = problems(&raw, WorkflowMode::Workflow);
    assert!(has(&p, Some("llm"), "data.model", "missing field `name`"), "{p:?}");
    assert!(has(&p, Some("end"), "data.outputs[0]", "missing field `value_selector`"), "{p:?}");
}

#[test]
fn dangling_edges_and_impossible_handles_are_problems() {
    let raw = workflow(
        vec![
            start(json!([text_input("q", true)])),
            if_else("if", json!([{"case_id": "yes", "logical_operator": "and", "conditions": [condition(&["start", "q"], "is", "a")]}])),
            llm("llm", "x"),
            end(&[]),
        ],
        vec![
            edge("start", "if", "source"),
            edge("if", "llm", "no-such-case"),
            edge("if", "end", "false"),
            edge("llm", "ghost", "source"),
            edge("llm", "end", "fail-branch"),
        ],
    );
    let p = problems(&raw, WorkflowMode::Workflow);
    assert!(has(&p, Some("if"), "graph.edges[1]", "handle \"no-such-case\""), "{p:?}");
    assert!(has(&p, None, "graph.edges[3]", "dangling edge llm-source-ghost-target: node \"ghost\" does not exist"), "{p:?}");
    assert!(has(&p, Some("llm"), "graph.edges[4]", "handle \"fail-branch\""), "{p:?}");
}

#[test]
fn cycles_outside_bodies_are_problems() {
    let raw = workflow(
        vec![start(json!([])), llm("a", "x"), llm("b", "y"), end(&[])],
        vec![edge("start", "a", "source"), edge("a", "b", "source"), edge("b", "a", "source"), edge("b", "end", "source")],
    );
    let p = problems(&raw, WorkflowMode::Workflow);
    assert!(has(&p, Some("a"), "graph.edges", "part of a cycle"), "{p:?}");
    assert!(has(&p, Some("b"), "graph.edges", "part of a cycle"), "{p:?}");
    assert!(!p.iter().any(|x| x.node_id.as_deref() == Some("end") && x.message.contains("cycle")), "{p:?}");
}

#[test]
fn start_and_end_rules_follow_the_mode() {
    let none = workflow(vec![end(&[])], vec![]);
    assert!(has(&problems(&none, WorkflowMode::Workflow), None, "graph.nodes", "no start node"));
    let mut two = linear();
    if let Some(n) = two["graph"]["nodes"].as_array_mut() {
        n.push(node("start2", "start", json!({"variables": []})));
    }
    assert!(has(&problems(&two, WorkflowMode::Workflow), Some("start2"), "type", "more than one start node"));
    let no_end = workflow(vec![start(json!([])), llm("llm", "x"), end(&[])], vec![edge("start", "llm", "source")]);
    assert!(has(&problems(&no_end, WorkflowMode::Workflow), Some("start"), "graph", "end node reachable"));
    assert!(has(&problems(&linear(), WorkflowMode::AdvancedChat), Some("start"), "graph", "answer node reachable"));
}

#[test]
fn references_must_name_upstream_variables() {
    let mut raw = workflow(
        vec![
            start(json!([text_input("q", true)])),
            if_else("if", json!([{"case_id": "yes", "logical_operator": "and", "conditions": [condition(&["start", "q"], "is", "a")]}])),
            llm("a", "{{#start.q#}} {{#start.nope#}} {{#ghost.text#}}"),
            llm("b", "{{#a.text#}} {{#sys.query#}} {{#env.missing#}} {{#conversation.missing#}} {{#sys.user_id#}}"),
            end(&[("x", &["b", "text"]), ("y", &["end", "x"]), ("z", &["a"])]),
        ],
        vec![
            edge("start", "if", "source"),
            edge("if", "a", "yes"),
            edge("if", "b", "false"),
            edge("a", "end", "source"),
            edge("b", "end", "source"),
        ],
    );
    let p = problems(&raw, WorkflowMode::Workflow);
    let f = "data.prompt_template[1].text";
    assert!(has(&p, Some("a"), f, "node start has no output \"nope\""), "{p:?}");
    assert!(has(&p, Some("a"), f, "references node ghost, which does not exist"), "{p:?}");
    assert!(has(&p, Some("b"), f, "references node a, which is not upstream of this node"), "{p:?}");
    assert!(has(&p, Some("b"), f, "sys.query does not exist in this kind of app"), "{p:?}");
    assert!(has(&p, Some("b"), f, "env.missing is not an environment variable"), "{p:?}");
    assert!(has(&p, Some("b"), f, "conversation.missing is not a conversation variable"), "{p:?}");
    assert!(!p.iter().any(|x| x.message.contains("sys.user_id")), "{p:?}");
    assert!(has(&p, Some("end"), "data.outputs[1].value_selector", "references node end, which is not upstream"), "{p:?}");
    assert!(has(&p, Some("end"), "data.outputs[2].value_selector", "must name a node and a variable"), "{p:?}");

    // Declared variables and chatflow's sys.query are fine.
    raw["environment_variables"] = json!([{"id": "e1", "name": "missing", "value_type": "string", "value": "v", "description": ""}]);
    raw["conversation_variables"] = json!([{"id": "c1", "name": "missing", "value_type": "string", "value": "", "description": ""}]);
    let p = compile(&raw, WorkflowMode::Workflow).err().unwrap_or_default();
    assert!(!p.iter().any(|x| x.message.contains("env.") || x.message.contains("conversation.")), "{p:?}");
}

#[test]
fn iteration_needs_an_array_and_an_inner_output() {
    let raw = workflow(
        vec![
            start(json!([text_input("q", true)])),
            node(
                "it",
                "iteration",
                json!({"iterator_selector": ["start", "q"], "output_selector": ["start", "q"], "output_type": "array[string]", "start_node_id": "its", "is_parallel": false, "error_handle_mode": "terminated"}),
            ),
            inner("its", "iteration-start", "it", false, json!({})),
            end(&[("o", &["it", "output"])]),
        ],
        vec![edge("start", "it", "source"), edge("it", "end", "source")],
    );
    let p = problems(&raw, WorkflowMode::Workflow);
    assert!(has(&p, Some("it"), "data.iterator_selector", "is a String, not an array"), "{p:?}");
    assert!(has(&p, Some("it"), "data.output_selector", "is not a variable of a node inside the iteration"), "{p:?}");
}

#[test]
fn huge_graphs_are_refused_with_the_cap() {
    let nodes: Vec<Value> = (0..=MAX_NODES).map(|i| llm(&format!("n{i}"), "x")).collect();
    let p = problems(&workflow(nodes, vec![]), WorkflowMode::Workflow);
    assert_eq!(p.len(), 1);
    assert!(p[0].message.contains("at most 1000"), "{p:?}");
}

#[test]
fn jinja2_prompts_are_refused() {
    let mut raw = linear();
    raw["graph"]["nodes"][1]["data"]["prompt_template"][1]["edition_type"] = json!("jinja2");
    let p = problems(&raw, WorkflowMode::Workflow);
    assert!(has(&p, Some("llm"), "data.prompt_template[1].edition_type", "Jinja2"), "{p:?}");
}

#[test]
fn problems_come_sorted_and_complete() {
    let raw = workflow(
        vec![start(json!([])), node("z", "tool", json!({})), node("a", "agent", json!({})), llm("m", "{{#nobody.text#}}"), end(&[])],
        vec![
            edge("start", "z", "source"),
            edge("z", "a", "source"),
            edge("a", "m", "source"),
            edge("m", "end", "source"),
            edge("m", "gone", "source"),
        ],
    );
    let p = problems(&raw, WorkflowMode::Workflow);
    let mut sorted = p.clone();
    sorted.sort_by(|a, b| (&a.node_id, &a.field, &a.message).cmp(&(&b.node_id, &b.field, &b.message)));
    assert_eq!(p, sorted);
    assert_eq!(p.len(), 4, "{p:?}");
    assert_eq!(p[0].node_id, None);
}

#[test]
fn old_if_else_format_becomes_one_true_case() {
    let raw = workflow(
        vec![
            start(json!([text_input("q", true)])),
            node("if", "if-else", json!({"logical_operator": "and", "conditions": [condition(&["start", "q"], "is", "a")]})),
            end(&[]),
        ],
        vec![edge("start", "if", "source"), edge("if", "end", "true"), edge("if", "end", "false")],
    );
    assert!(compile(&raw, WorkflowMode::Workflow).is_ok());
}

#[test]
fn duplicate_ids_and_edges_across_a_body_boundary_are_problems() {
    let raw = workflow(
        vec![
            start(json!([])),
            llm("dup", "x"),
            llm("dup", "y"),
            node(
                "lp",
                "loop",
                json!({"loop_count": 2, "break_conditions": [], "logical_operator": "and", "start_node_id": "elsewhere", "loop_variables": []}),
            ),
            node("elsewhere", "loop-start", json!({})),
            inner("lps", "loop-start", "lp", true, json!({})),
            end(&[]),
        ],
        vec![edge("start", "dup", "source"), edge("dup", "lp", "source"), edge("lp", "end", "source"), edge("lps", "end", "source")],
    );
    let p = problems(&raw, WorkflowMode::Workflow);
    assert!(has(&p, Some("dup"), "id", "another node has the id dup"), "{p:?}");
    assert!(has(&p, Some("end"), "graph.edges[3]", "crosses an iteration or loop boundary"), "{p:?}");
    assert!(has(&p, Some("lp"), "data.start_node_id", "is not inside this node"), "{p:?}");
}

#[test]
fn unquoted_numeric_ids_from_yaml_still_connect() {
    let mut raw = workflow(
        vec![start(json!([])), llm("1717222650545", "x"), end(&[("out", &["1717222650545", "text"])])],
        vec![edge("start", "1717222650545", "source"), edge("1717222650545", "end", "source")],
    );
    raw["graph"]["nodes"][1]["id"] = json!(1717222650545u64);
    raw["graph"]["edges"][0]["target"] = json!(1717222650545u64);
    raw["graph"]["edges"][1]["source"] = json!(1717222650545u64);
    assert!(compile(&raw, WorkflowMode::Workflow).is_ok());
}
