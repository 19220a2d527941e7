use super::*;
use crate::engine::workflow::WorkflowMode;

fn fixture(name: &str) -> String {
    let path = format!("{}/../tests/fixtures/dsl/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Import options of a daemon that runs both code languages (with only
/// the `json` module).
fn opts() -> ImportOptions {
    ImportOptions { caps: code_caps(), ..ImportOptions::default() }
}

fn code_caps() -> Capabilities {
    use crate::engine::workflow::CodeSupport;
    let json = || CodeSupport::Available(std::sync::Arc::new(["json".to_owned()].into_iter().collect()));
    Capabilities { javascript: json(), python3: json() }
}

/// The problems of an import that must fail.
fn problems(yaml: &str) -> Vec<Problem> {
    match import(yaml, &opts()) {
        Ok(app) => panic!("imported {:?} but expected problems", app.id),
        Err(p) => p,
    }
}

/// `(field, message)` of each problem.
fn fields(p: &[Problem]) -> Vec<(&str, &str)> {
    p.iter().map(|p| (p.field.as_str(), p.message.as_str())).collect()
}

fn has(p: &[Problem], field: &str, needle: &str) -> bool {
    p.iter().any(|p| p.field == field && p.message.contains(needle))
}

/// A minimal chat DSL with `extra` lines added under `model_config`.
fn chat(extra: &str) -> String {
    format!(
        "app:\n  name: Mini\n  mode: chat\nkind: app\nversion: 0.3.1\nmodel_config:\n  pre_prompt: hi\n  model:\n    provider: openai\n    name: gpt-4o-mini\n    completion_params: {{}}\n{extra}"
    )
}

// ---------------------------------------------------------------- chat and completion

#[test]
fn chat_fixture_maps_every_field() {
    let a = import(&fixture("chat.yml"), &opts()).expect("chat.yml imports");
    assert_eq!((a.id.as_str(), a.name.as_str(), a.mode), ("plant-faq-bot", "Plant FAQ Bot!", AppMode::Chat));
    assert_eq!(a.pre_prompt, "You are a plant-care assistant for {{plant}} owners. Answer in {{language}}.");
    assert_eq!(a.opening_statement, "Hello! Which plant shall we talk about?");
    assert_eq!(a.suggested_questions.len(), 2);
    assert!(a.suggested_questions_after_answer.enabled);
    assert_eq!(a.dsl_model, Some(DslModel { provider: "langgenius/openai/openai".into(), name: "gpt-4o-mini".into() }));
    assert_eq!(a.model, None);
    let cp = &a.completion_params;
    assert_eq!((cp.temperature, cp.top_p, cp.max_tokens), (0.3, 0.9, 512));
    assert_eq!((cp.top_k, cp.seed), (CompletionParams::default().top_k, None), "absent keys take the defaults");
    let kinds: Vec<_> = a
        .user_input_form
        .iter()
        .map(|f| match f {
            FormField::TextInput(_) => "text-input",
            FormField::Paragraph(_) => "paragraph",
            FormField::Select(_) => "select",
            FormField::Number(_) => "number",
        })
        .collect();
    assert_eq!(kinds, ["text-input", "select", "paragraph", "number"]);
    let plant = a.user_input_form[0].spec();
    assert_eq!((plant.variable.as_str(), plant.required, plant.max_length), ("plant", true, Some(48)));
    assert_eq!(a.user_input_form[1].spec().options, ["English", "Deutsch"]);
    assert!(a.workflow.is_none());
    assert!(a.validate().is_empty());
}

#[test]
fn completion_fixture_imports() {
    let a = import(&fixture("completion.yml"), &opts()).expect("completion.yml imports");
    assert_eq!((a.id.as_str(), a.mode), ("summariser", AppMode::Completion));
    assert!(a.pre_prompt.contains("{{query}}"));
    assert_eq!(a.user_input_form[1].spec().default.as_deref(), Some("20"));
}

#[test]
fn chat_and_completion_round_trip() {
    for name in ["chat.yml", "completion.yml"] {
        let a = import(&fixture(name), &opts()).expect(name);
        let yaml = export(&a).expect("export");
        let back = import(&yaml, &ImportOptions { id: Some(a.id.clone()), ..opts() }).unwrap_or_else(|p| panic!("{name}: {p:?}"));
        assert_eq!(back, a, "{name}:\n{yaml}");
    }
}

#[test]
fn what_dify_has_no_place_for_round_trips_too() {
    let mut a = import(&fixture("chat.yml"), &opts()).expect("chat.yml");
    a.dsl_model = None;
    a.model = Some("qwen2.5-0.5b".into());
    a.history_turns = 3;
    a.enable_api = false;
    a.completion_params.seed = Some(7);
    a.completion_params.stop = vec!["###".into()];
    a.completion_params.temperature = 0.1;
    let yaml = export(&a).expect("export");
    assert!(yaml.contains("temperature: 0.1\n"), "floats are written as they were given:\n{yaml}");
    assert!(yaml.contains("provider: edgeai"), "{yaml}");
    let back = import(&yaml, &ImportOptions { id: Some(a.id.clone()), ..opts() }).expect("re-import");
    assert_eq!(back, a);
}

#[test]
fn options_name_the_app() {
    let o = ImportOptions { id: Some("plants".into()), name: Some("Plants".into()), ..opts() };
    let a = import(&fixture("chat.yml"), &o).expect("chat.yml");
    assert_eq!((a.id.as_str(), a.name.as_str()), ("plants", "Plants"));
    let p = import(&fixture("chat.yml"), &ImportOptions { id: Some("Not An Id".into()), ..opts() }).expect_err("bad id");
    assert!(has(&p, "id", "may contain only"), "{p:?}");
}

#[test]
fn slugs() {
    assert_eq!(slug("Plant FAQ Bot!"), "plant-faq-bot");
    assert_eq!(slug("  --Hello__World 2--"), "hello-world-2");
    assert_eq!(slug(&"x".repeat(100)).len(), MAX_APP_ID_LEN);
    assert_eq!(slug(&format!("{}-abc", "a".repeat(63))), "a".repeat(63), "no trailing dash after truncation");
    let cjk = slug("客服助手");
    assert!(cjk.starts_with("app-") && cjk.len() == 12, "{cjk}");
    assert_ne!(cjk, slug("翻译助手"), "different names get different ids");
}

#[test]
fn unknown_keys_are_ignored_and_number_defaults_are_text() {
    let a = import(
        &chat("  annotation_reply: {enabled: false}\n  user_input_form:\n  - number: {label: N, variable: n, default: 3, hide: false}\n"),
        &opts(),
    )
    .expect("imports");
    assert_eq!(a.user_input_form[0].spec().default.as_deref(), Some("3"));
}

// ---------------------------------------------------------------- problems

#[test]
fn yaml_syntax_errors_give_line_and_column() {
    let p = problems("app:\n  name: [unclosed\nkind: app\n");
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].field, "(document)");
    assert!(p[0].message.starts_with("invalid YAML: line "), "{}", p[0].message);
    assert!(p[0].message.contains("column"), "{}", p[0].message);
}

#[test]
fn a_document_must_be_a_mapping() {
    assert_eq!(fields(&problems("- a\n- b\n")), [("(document)", "a DSL document is a mapping with app, kind and version; found a list")]);
    assert!(has(&problems(""), "(document)", "found null"));
}

#[test]
fn oversized_documents_are_refused_before_parsing() {
    let big = format!("app: {{name: x}}\n#{}\n", "x".repeat(MAX_DSL_BYTES));
    let p = problems(&big);
    assert_eq!(p.len(), 1);
    assert!(p[0].message.contains("4 MiB"), "{}", p[0].message);
}

#[test]
fn alias_bombs_are_refused() {
    // Ten levels of ten aliases each: a few hundred bytes that stand for 10^10 strings.
    let mut y = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let prev = format!("*a{}", i - 1);
        y.push_str(&format!("a{i}: &a{i} [{}]\n", [prev.as_str(); 10].join(", ")));
    }
    let p = problems(&y);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].message.contains("expands to more than") || p[0].message.contains("repetition limit"), "{}", p[0].message);
    // One wide anchor repeated: few aliases, but a huge expansion.
    let wide = format!("a: &a [{}]\nb: [{}]\n", vec!["xxxxxxxx"; 20_000].join(", "), vec!["*a"; 100].join(", "));
    let p = problems(&wide);
    assert!(p[0].message.contains("expands to more than"), "{}", p[0].message);
}

#[test]
fn large_documents_within_the_bounds_are_read() {
    let items = vec!["ab"; MAX_DSL_VALUES - 10].join(", ");
    let v = parse(&format!("list: [{items}]\n")).expect("within the bounds");
    assert_eq!(v["list"].as_array().map(Vec::len), Some(MAX_DSL_VALUES - 10));
}

#[test]
fn deep_nesting_is_refused() {
    let deep = format!("{}x{}", "[".repeat(500), "]".repeat(500));
    let p = problems(&deep);
    assert_eq!(p.len(), 1);
    assert!(p[0].message.contains("recursion limit"), "{}", p[0].message);
}

#[test]
fn kind_and_version_are_checked() {
    let doc = |head: &str| format!("{head}app:\n  name: X\n  mode: chat\nmodel_config:\n  model: {{provider: p, name: n}}\n");
    let p = problems(&doc(""));
    assert!(has(&p, "kind", "missing"), "{p:?}");
    assert!(has(&p, "version", "missing"), "{p:?}");
    assert!(has(&problems(&doc("kind: plugin\nversion: 0.1.0\n")), "kind", "\"plugin\" is not an app DSL"));
    for (v, needle) in [
        ("0.6.0", "DSL version 0.6.0 is newer than this build supports (max 0.5.x)"),
        ("1.0.0", "DSL version 1.0.0 is newer"),
        ("0.0.9", "older than the oldest supported (0.1.0)"),
        ("latest", "is not a version"),
        ("0.1.x", "is not a version"),
    ] {
        assert!(has(&problems(&doc(&format!("kind: app\nversion: {v}\n"))), "version", needle), "{v}");
    }
    assert!(has(&problems(&doc("kind: app\nversion: 0.1\n")), "version", "expected a string"), "a float is not a version");
    for v in ["0.1.0", "0.1.5", "0.3.1", "0.5.0", "0.5.9"] {
        import(&doc(&format!("kind: app\nversion: '{v}'\n")), &opts()).unwrap_or_else(|p| panic!("{v}: {p:?}"));
    }
}

#[test]
fn app_section_and_mode_are_checked() {
    assert!(has(&problems("kind: app\nversion: 0.3.1\n"), "app", "missing"));
    assert!(has(&problems("kind: app\nversion: 0.3.1\napp: 5\n"), "app", "expected a mapping, found a number"));
    let p = problems("kind: app\nversion: 0.3.1\napp: {name: X}\n");
    assert!(has(&p, "app.mode", "missing"), "{p:?}");
    assert!(has(&problems("kind: app\nversion: 0.3.1\napp: {name: X, mode: chatbot}\n"), "app.mode", "\"chatbot\" is not one of"));
    let p = problems("kind: app\nversion: 0.3.1\napp: {mode: chat}\nmodel_config: {model: {provider: p, name: n}}\n");
    assert!(has(&p, "app.name", "missing"), "{p:?}");
}

#[test]
fn agent_apps_are_refused() {
    let p = problems(&fixture("agent-chat.yml"));
    assert_eq!(fields(&p), [("app.mode", "agent apps need Dify's cloud tools; not supported")]);
}

#[test]
fn each_mode_needs_its_section() {
    let p = problems("kind: app\nversion: 0.3.1\napp: {name: X, mode: chat}\n");
    assert_eq!(fields(&p), [("model_config", "missing: a chat app's DSL has a model_config section")]);
    let p = problems("kind: app\nversion: 0.3.1\napp: {name: X, mode: workflow}\nmodel_config: {}\n");
    assert_eq!(fields(&p), [("workflow", "missing: a workflow app's DSL has a workflow section")], "no second problem from validate");
    let p = problems("kind: app\nversion: 0.3.1\napp: {name: X, mode: advanced-chat}\nworkflow: []\n");
    assert_eq!(fields(&p), [("workflow", "expected a mapping, found a list")]);
    let p = problems(&chat("").replace("  model:\n    provider: openai\n    name: gpt-4o-mini\n    completion_params: {}\n", ""));
    assert!(has(&p, "model_config.model", "missing"), "{p:?}");
}

#[test]
fn unsupported_form_fields_are_named() {
    let p = problems(&chat(
        "  user_input_form:\n  - file: {label: F, variable: doc}\n  - external_data_tool: {label: E, variable: weather}\n  - 5\n  - {text-input: {label: a, variable: a}, paragraph: {label: b, variable: b}}\n",
    ));
    assert_eq!(
        fields(&p),
        [
            ("model_config.user_input_form[0]", "\"file\" field \"doc\" is not supported by chat and completion apps in this build"),
            (
                "model_config.user_input_form[1]",
                "\"external_data_tool\" field \"weather\" is not supported by chat and completion apps in this build"
            ),
            ("model_config.user_input_form[2]", "expected a mapping with one key (the field type), found 5"),
            ("model_config.user_input_form[3]", "expected a mapping with one key (the field type), found a mapping"),
        ]
    );
}

#[test]
fn form_problems_found_by_validate_point_into_the_dsl() {
    // The second DSL field is skipped (unsupported); validate's index 1 is the DSL's 2.
    let p = problems(&chat(
        "  user_input_form:\n  - text-input: {label: A, variable: a}\n  - file: {label: F, variable: f}\n  - select: {label: S, variable: 'bad name', options: []}\n",
    ));
    assert!(has(&p, "model_config.user_input_form[2].variable", "must be a non-empty identifier"), "{p:?}");
    assert!(has(&p, "model_config.user_input_form[2].options", "at least one option"), "{p:?}");
    let p = problems(&chat("  user_input_form:\n  - text-input: {label: A, variable: a, required: 'yes', max_length: -1}\n"));
    assert!(has(&p, "model_config.user_input_form[0].text-input.required", "expected true or false"), "{p:?}");
    assert!(has(&p, "model_config.user_input_form[0].text-input.max_length", "out of range"), "{p:?}");
}

#[test]
fn completion_params_are_typed_and_ranged() {
    let yaml = chat("").replace(
        "completion_params: {}",
        "completion_params: {temperature: 3, top_p: hot, max_tokens: 0, top_k: 99999999999, seed: -1, stop: [a, 5]}",
    );
    let p = problems(&yaml);
    let at = |k: &str| format!("model_config.model.completion_params.{k}");
    assert!(has(&p, &at("temperature"), "outside 0.0..=2.0"), "{p:?}");
    assert!(has(&p, &at("top_p"), "expected a number, found \"hot\""), "{p:?}");
    assert!(has(&p, &at("max_tokens"), "at least 1"), "{p:?}");
    assert!(has(&p, &at("top_k"), "out of range"), "{p:?}");
    assert!(has(&p, &at("seed"), "out of range"), "{p:?}");
    assert!(has(&p, &at("stop[1]"), "expected a string, found 5"), "{p:?}");
    let presence = chat("").replace("completion_params: {}", "completion_params: {presence_penalty: 0.5, frequency_penalty: 0}");
    import(&presence, &opts()).expect("parameters a local model has no use for are ignored");
}

#[test]
fn cloud_features_that_change_answers_are_refused() {
    let p = problems(&chat(concat!(
        "  prompt_type: advanced\n",
        "  dataset_configs: {datasets: {datasets: [{dataset: {enabled: true, id: 6f1c}}]}}\n",
        "  agent_mode: {enabled: true, tools: [{provider_id: time, tool_name: current_time}]}\n",
        "  external_data_tools: [{enabled: true, type: api, variable: w}]\n",
        "  sensitive_word_avoidance: {enabled: true, type: keywords}\n",
    )));
    assert_eq!(
        fields(&p),
        [
            ("model_config.prompt_type", "\"advanced\" (expert-mode prompts) is not supported: use the simple prompt, or a chatflow"),
            ("model_config.agent_mode.tools", "agent tools need Dify's cloud marketplace; not supported: time/current_time"),
            ("model_config.external_data_tools", "external data tools need Dify's cloud; not supported"),
            ("model_config.sensitive_word_avoidance", "content moderation is not in this build; disable it to import"),
            (
                "model_config.dataset_configs.datasets.datasets.0.dataset.id",
                "dataset 6f1c is not on this gateway: map it to a local dataset with `edgeaictl apps import --dataset 6f1c=LOCAL_ID_OR_NAME`"
            ),
        ]
    );
    let off = chat("  dataset_configs: {datasets: {datasets: []}}\n  agent_mode: {enabled: false, tools: []}\n");
    import(&off, &opts()).expect("features that are off or empty are fine");
}

#[test]
fn every_problem_is_reported_at_once() {
    let p = problems("kind: bundle\napp: {mode: chat, description: 5}\nmodel_config: {pre_prompt: [], model: {provider: p, name: n}}\n");
    let f: Vec<&str> = p.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(f, ["kind", "version", "app.name", "app.description", "model_config.pre_prompt"], "{p:?}");
}

#[test]
fn export_needs_the_graph_of_a_workflow_app() {
    let mut a = import(&fixture("chat.yml"), &opts()).expect("chat.yml");
    a.mode = AppMode::Workflow;
    let e = export(&a).expect_err("no graph");
    assert_eq!(e.to_string(), "app \"plant-faq-bot\" is a workflow app without a workflow graph");
}

// ---------------------------------------------------------------- workflow and advanced-chat

const WORKFLOW_FIXTURES: [(&str, WorkflowMode); 16] = [
    ("code-node.yml", WorkflowMode::Workflow),
    ("workflow-code.yml", WorkflowMode::Workflow),
    ("workflow-code-probe-py.yml", WorkflowMode::Workflow),
    ("workflow-code-probe-js.yml", WorkflowMode::Workflow),
    ("workflow-llm.yml", WorkflowMode::Workflow),
    ("workflow-six-nodes.yml", WorkflowMode::Workflow),
    ("workflow-branches.yml", WorkflowMode::Workflow),
    ("workflow-http.yml", WorkflowMode::Workflow),
    ("workflow-iteration.yml", WorkflowMode::Workflow),
    ("workflow-loop.yml", WorkflowMode::Workflow),
    ("workflow-classifier.yml", WorkflowMode::Workflow),
    ("workflow-extractor.yml", WorkflowMode::Workflow),
    ("workflow-list-operator.yml", WorkflowMode::Workflow),
    ("workflow-doc-extractor.yml", WorkflowMode::Workflow),
    ("workflow-error-strategy.yml", WorkflowMode::Workflow),
    ("chatflow.yml", WorkflowMode::AdvancedChat),
];

const REFUSED_BY_GRAPH: [&str; 4] = ["tool-node.yml", "cycle.yml", "dangling-edge.yml", "bad-selector.yml"];

fn section(yaml: &str) -> Value {
    parse(yaml).expect("fixture parses")["workflow"].clone()
}

/// Every fixture with a workflow section.
fn all_workflows() -> impl Iterator<Item = &'static str> {
    WORKFLOW_FIXTURES.iter().map(|(name, _)| *name).chain(REFUSED_BY_GRAPH)
}

#[test]
fn workflow_sections_round_trip_verbatim_through_yaml() {
    let meta = import(&fixture("chat.yml"), &opts()).expect("chat.yml");
    for name in all_workflows() {
        let raw = section(&fixture(name));
        assert!(raw["graph"]["nodes"].as_array().is_some_and(|n| n.len() >= 2), "{name}");
        let yaml = serde_norway::to_string(&document(&meta, ("workflow", raw.clone()))).expect("yaml");
        assert_eq!(section(&yaml), raw, "{name}: the section comes back verbatim");
    }
}

#[test]
fn workflow_imports_are_compiles_verdict() {
    // Import adds no problem of its own to a good workflow DSL and passes
    // compile's problems on unchanged; a compiled one round-trips.
    for (name, mode) in WORKFLOW_FIXTURES {
        let yaml = fixture(name);
        let raw = section(&yaml);
        match Workflow::compile(&raw, mode, &code_caps()) {
            Err(expected) => panic!("{name} does not compile: {expected:?}"),
            Ok(_) => {
                let a = import(&yaml, &opts()).unwrap_or_else(|p| panic!("{name}: {p:?}"));
                assert_eq!(a.workflow.as_ref().map(|w| w.raw()), Some(&raw), "{name}");
                let back = import(&export(&a).expect("export"), &ImportOptions { id: Some(a.id.clone()), ..opts() }).expect(name);
                assert_eq!(back, a, "{name}");
                let stored: AppDefinition = serde_json::from_value(serde_json::to_value(&a).expect("json")).expect(name);
                assert_eq!(stored, a, "{name}: the stored JSON compiles back to the same app");
            }
        }
    }
}

#[test]
fn refused_workflows_are_refused() {
    for name in REFUSED_BY_GRAPH {
        let yaml = fixture(name);
        let expected = Workflow::compile(&section(&yaml), WorkflowMode::Workflow, &code_caps()).expect_err(name);
        assert_eq!(import(&yaml, &opts()).expect_err(name), expected, "{name}");
    }
}

#[test]
fn a_chat_apps_datasets_are_mapped_read_and_exported() {
    let yaml = chat(concat!(
        "  dataset_configs:\n",
        "    retrieval_model: multiple\n    top_k: 3\n    score_threshold_enabled: true\n    score_threshold: 0.6\n",
        "    reranking_enable: true\n    reranking_mode: weighted_score\n",
        "    weights: {vector_setting: {vector_weight: 0.6}, keyword_setting: {keyword_weight: 0.4}}\n",
        "    datasets: {datasets: [{dataset: {enabled: true, id: dify-1}}, {dataset: {enabled: false, id: dify-2}}]}\n",
    ));
    let mut o = opts();
    o.datasets.insert("dify-1".into(), "local-1".into());
    let a = import(&yaml, &o).expect("mapped");
    let d = a.datasets.clone().expect("datasets");
    assert_eq!(d.dataset_ids, ["local-1"], "the disabled one is left out");
    assert_eq!((d.single, d.top_k, d.score_threshold, d.weights), (false, Some(3), Some(0.6), Some((0.6, 0.4))));
    o.datasets.insert("local-1".into(), "local-1".into());
    let back = import(&export(&a).expect("export"), &ImportOptions { id: Some(a.id.clone()), ..o }).expect("re-import");
    assert_eq!(back, a);
}

#[test]
fn knowledge_nodes_name_local_datasets_or_the_import_fails() {
    let yaml = fixture("knowledge.yml");
    let p = problems(&yaml);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].node_id.as_deref(), Some("1732000000141"));
    assert_eq!(p[0].field, "dataset_ids");
    assert!(p[0].message.contains("dataset 6f1c0a3e-0000-4000-8000-00000000aaaa is not on this gateway"), "{}", p[0].message);
    let mut o = opts();
    o.datasets.insert("6f1c0a3e-0000-4000-8000-00000000aaaa".into(), "local-manuals".into());
    let a = import(&yaml, &o).expect("mapped");
    let raw = a.workflow.as_ref().expect("workflow").raw();
    assert_eq!(raw["graph"]["nodes"][1]["data"]["dataset_ids"], serde_json::json!(["local-manuals"]), "stored with the local id");
}

#[test]
fn chatflow_features_fill_the_apps_parameters() {
    // Read before the graph is compiled, so checked on the problems' path too.
    let mut r = Reader::default();
    let mut a = import(&fixture("chat.yml"), &opts()).expect("chat.yml");
    let raw = section(&fixture("chatflow.yml"));
    r.features(raw.get("features"), &mut a);
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(a.opening_statement, "Hi! Ask me anything.");
    assert_eq!(a.suggested_questions, ["What can you do?"]);
    assert!(!a.suggested_questions_after_answer.enabled);
}

#[test]
fn every_fixture_is_a_dify_export() {
    // The shape Dify writes: app/kind/version, nodes with data.type/title,
    // position and type custom; edges with handles and data.
    for name in all_workflows() {
        let doc = parse(&fixture(name)).expect(name);
        assert_eq!((doc["kind"].as_str(), doc["version"].as_str()), (Some("app"), Some("0.3.1")), "{name}");
        for n in doc["workflow"]["graph"]["nodes"].as_array().expect("nodes") {
            assert!(n["id"].is_string() && n["data"]["type"].is_string() && n["data"]["title"].is_string(), "{name}: {n}");
            assert!(n["position"]["x"].is_number() && n["type"].as_str().is_some_and(|t| t.starts_with("custom")), "{name}: {n}");
        }
        for e in doc["workflow"]["graph"]["edges"].as_array().expect("edges") {
            for k in ["id", "source", "sourceHandle", "target", "targetHandle"] {
                assert!(e[k].is_string(), "{name}: edge {k}: {e}");
            }
            assert!(e["data"]["sourceType"].is_string() && e["data"]["isInIteration"].is_boolean(), "{name}: {e}");
        }
    }
}

#[test]
fn tags_carry_no_meaning() {
    // Python's object tags are plain data here: the list under the tag is
    // just a list where a mapping belongs.
    let p = problems("kind: app\nversion: 0.3.1\napp: !!python/object/apply:os.system [ls]\n");
    assert_eq!(fields(&p), [("app", "expected a mapping, found a list")]);
}

#[test]
fn export_blanks_secret_environment_values() {
    let yaml =
        fixture("chatflow.yml").replacen("    value: Hi\n    value_type: string", "    value: s3cret-token\n    value_type: secret", 1);
    assert!(yaml.contains("s3cret-token"), "the fixture's env variable was made secret");
    let app = import(&yaml, &opts()).expect("imports");
    let out = export(&app).expect("exports");
    assert!(!out.contains("s3cret-token"), "{out}");
    let back = import(&out, &opts()).expect("the export imports");
    let env = &back.workflow.as_ref().expect("graph").raw()["environment_variables"];
    assert_eq!(env[0]["value"], "", "{env}");
    assert_eq!(env[0]["value_type"], "secret");
}
