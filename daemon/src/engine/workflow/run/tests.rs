//! The executor against an in-memory fake of [`Effects`] that plays scripted
//! model answers (the service's real effects are tested end to end).

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde_json::json;
use tokio::sync::Barrier;

use super::super::graph::fixtures::*;
use super::super::graph::Kind;
use super::super::{Capabilities, HttpCall, HttpReply, KnowledgeCall, KnowledgeHit, LlmCall, Role, SysVars};
use super::*;

/// What the fake model does for one call.
#[derive(Clone)]
enum Play {
    /// Streams these chunks, then Done.
    Say(Vec<&'static str>),
    /// Answers the call's last message, upper-cased.
    Echo,
    /// Waits for the barrier, then echoes.
    AfterBarrier(Arc<Barrier>),
    /// Fails mid-stream.
    Fail(&'static str),
    /// Streams some text, then fails.
    PartFail(&'static str, &'static str),
    /// Never answers.
    Hang,
}

type Script = Box<dyn Fn(&LlmCall, usize) -> Play + Send + Sync>;

struct Fake {
    script: Script,
    calls: Mutex<Vec<LlmCall>>,
    /// Senders of hanging calls, kept so their streams stay open.
    hung: Mutex<Vec<mpsc::Sender<LlmChunk>>>,
}

use super::super::LlmChunk;

impl Fake {
    fn new(script: impl Fn(&LlmCall, usize) -> Play + Send + Sync + 'static) -> Arc<Fake> {
        Arc::new(Fake { script: Box::new(script), calls: Mutex::new(Vec::new()), hung: Mutex::new(Vec::new()) })
    }

    fn calls(&self) -> Vec<LlmCall> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

fn last_message(call: &LlmCall) -> String {
    call.messages.last().map(|(_, t)| t.to_uppercase()).unwrap_or_default()
}

impl Effects for Fake {
    fn llm(&self, call: LlmCall) -> BoxFuture<'static, Result<mpsc::Receiver<LlmChunk>, String>> {
        let n = {
            let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
            calls.push(call.clone());
            calls.iter().filter(|c| c.node_id == call.node_id).count() - 1
        };
        let play = (self.script)(&call, n);
        let (tx, rx) = mpsc::channel(16);
        if let Play::Hang = play {
            self.hung.lock().unwrap_or_else(|e| e.into_inner()).push(tx);
            return Box::pin(async move { Ok(rx) });
        }
        tokio::spawn(async move {
            let chunks: Vec<String> = match play {
                Play::Say(c) => c.into_iter().map(str::to_owned).collect(),
                Play::Echo => vec![last_message(&call)],
                Play::AfterBarrier(b) => {
                    b.wait().await;
                    vec![last_message(&call)]
                }
                Play::Fail(e) => {
                    let _ = tx.send(LlmChunk::Failed(e.into())).await;
                    return;
                }
                Play::PartFail(text, e) => {
                    let _ = tx.send(LlmChunk::Text(text.into())).await;
                    let _ = tx.send(LlmChunk::Failed(e.into())).await;
                    return;
                }
                Play::Hang => return,
            };
            for c in chunks {
                let _ = tx.send(LlmChunk::Text(c)).await;
            }
            let _ = tx.send(LlmChunk::Done { prompt_tokens: 10, completion_tokens: 5, finish_reason: "stop".into() }).await;
        });
        Box::pin(async move { Ok(rx) })
    }

    fn http(&self, _call: HttpCall) -> BoxFuture<'static, Result<HttpReply, String>> {
        Box::pin(async { Err("no http in these tests".to_owned()) })
    }

    fn file(&self, _id: String) -> BoxFuture<'static, Result<crate::engine::workflow::UploadedFile, String>> {
        Box::pin(async { Err("no files in these tests".to_owned()) })
    }

    fn code(&self, _call: crate::engine::workflow::CodeCall) -> BoxFuture<'static, Result<Map<String, Value>, String>> {
        Box::pin(async { Err("no code in these tests".to_owned()) })
    }

    /// Two segments of dataset `d1`, for any query.
    fn knowledge(&self, call: KnowledgeCall) -> BoxFuture<'static, Result<Vec<KnowledgeHit>, String>> {
        let hit = |n: i64, content: &str, score: f32| KnowledgeHit {
            dataset_id: call.dataset_ids[0].clone(),
            dataset_name: "Manuals".into(),
            document_id: "doc1".into(),
            document_name: "plc.md".into(),
            data_source_type: "upload_file".into(),
            segment_id: format!("seg{n}"),
            segment_position: n,
            index_node_hash: format!("hash{n}"),
            content: content.into(),
            score,
            hit_count: 0,
            word_count: content.len() as i64,
        };
        let hits = vec![hit(1, "Press ACK, then RESET.", 0.9), hit(2, "Alarm 4711 is the safety door.", 0.7)];
        Box::pin(async move { Ok(hits) })
    }
}

fn limits() -> Limits {
    Limits {
        max_steps: 500,
        node_timeout: Duration::from_secs(10),
        run_timeout: Duration::from_secs(20),
        max_parallel: 4,
        max_iterations: 100,
        http_max_response_bytes: 1 << 20,
    }
}

fn compiled(raw: &Value, mode: WorkflowMode) -> Arc<Workflow> {
    match Workflow::compile(raw, mode, &Capabilities::default()) {
        Ok(wf) => Arc::new(wf),
        Err(p) => panic!("the test graph does not compile: {p:#?}"),
    }
}

fn input(inputs: Value) -> RunInput {
    RunInput {
        inputs: inputs.as_object().cloned().unwrap_or_default(),
        sys: SysVars { query: Some("what now".into()), user_id: "alice".into(), app_id: "app1".into(), ..SysVars::default() },
        ..RunInput::default()
    }
}

struct Ran {
    outcome: RunOutcome,
    events: Vec<Event>,
}

impl Ran {
    fn finished(&self, node: &str) -> Option<&NodeExecution> {
        self.events.iter().find_map(|e| match e {
            Event::NodeFinished(x) if x.node_id == node => Some(x),
            _ => None,
        })
    }

    fn started(&self) -> Vec<&str> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::NodeStarted(x) => Some(x.node_id.as_str()),
                _ => None,
            })
            .collect()
    }

    fn text(&self) -> String {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::TextChunk { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    /// Position of the first event matching `f`.
    fn pos(&self, f: impl Fn(&Event) -> bool) -> usize {
        self.events.iter().position(f).unwrap_or(usize::MAX)
    }
}

async fn run_with(wf: Arc<Workflow>, input: RunInput, fake: Arc<Fake>, limits: Limits, stop: watch::Receiver<bool>) -> Ran {
    let (tx, mut rx) = mpsc::channel(8);
    let collector = tokio::spawn(async move {
        let mut events = Vec::new();
        while let Some(e) = rx.recv().await {
            events.push(e);
        }
        events
    });
    let outcome = execute(wf, input, fake, limits, tx, stop).await;
    let events = collector.await.unwrap_or_default();
    Ran { outcome, events }
}

async fn run(raw: Value, mode: WorkflowMode, input: RunInput, fake: Arc<Fake>, limits: Limits) -> Ran {
    let (_keep, stop) = watch::channel(false);
    run_with(compiled(&raw, mode), input, fake, limits, stop).await
}

fn linear() -> Value {
    workflow(
        vec![
            start(json!([text_input("q", true)])),
            llm("llm", "Say {{#start.q#}}"),
            end(&[("out", &["llm", "text"]), ("q", &["start", "q"])]),
        ],
        vec![edge("start", "llm", "source"), edge("llm", "end", "source")],
    )
}

#[tokio::test]
async fn a_linear_workflow_runs_and_reports_in_order() {
    let fake = Fake::new(|_, _| Play::Say(vec!["Hel", "lo"]));
    let r = run(linear(), WorkflowMode::Workflow, input(json!({"q": "hi"})), fake.clone(), limits()).await;
    assert_eq!(r.outcome.status, RunStatus::Succeeded, "{:?}", r.outcome.error);
    assert_eq!(Value::Object(r.outcome.outputs.clone()), json!({"out": "Hello", "q": "hi"}));
    assert_eq!(r.outcome.total_tokens, 15);
    assert_eq!(r.outcome.total_steps, 3);
    assert_eq!(r.started(), vec!["start", "llm", "end"]);
    let kinds: Vec<(bool, &str)> = r
        .events
        .iter()
        .filter_map(|e| match e {
            Event::NodeStarted(x) => Some((true, x.node_id.as_str())),
            Event::NodeFinished(x) => Some((false, x.node_id.as_str())),
            Event::TextChunk { .. } => None,
        })
        .collect();
    assert_eq!(kinds, vec![(true, "start"), (false, "start"), (true, "llm"), (false, "llm"), (true, "end"), (false, "end")]);
    let llm = r.finished("llm").cloned().unwrap_or_else(|| panic!("no llm"));
    assert_eq!((llm.index, llm.predecessor_node_id.as_deref(), llm.status), (2, Some("start"), NodeStatus::Succeeded));
    assert_eq!(llm.outputs["usage"]["total_tokens"], json!(15));
    assert_eq!(llm.tokens, 15);
    let call = &fake.calls()[0];
    assert_eq!(call.messages, vec![(Role::System, "You help.".into()), (Role::User, "Say hi".into())]);
    assert_eq!((call.provider.as_str(), call.model.as_str(), call.temperature), ("openai", "gpt-4o-mini", Some(0.7)));
    assert_eq!(r.finished("start").map(|s| s.outputs["sys.user_id"].clone()), Some(json!("alice")));
    // The end node's llm text streams as Dify's end stream processor does.
    assert_eq!(r.text(), "Hello");
    let first_chunk = r.pos(|e| matches!(e, Event::TextChunk { text, .. } if text == "Hel"));
    assert!(first_chunk < r.pos(|e| matches!(e, Event::NodeFinished(x) if x.node_id == "llm")), "{:#?}", r.events);
}

#[tokio::test]
async fn parallel_branches_overlap_and_join() {
    // Both llm calls wait on one barrier of two: they finish only if they run at once.
    let barrier = Arc::new(Barrier::new(2));
    let fake = Fake::new(move |_, _| Play::AfterBarrier(barrier.clone()));
    let raw = workflow(
        vec![start(json!([])), llm("a", "left"), llm("b", "right"), end(&[("a", &["a", "text"]), ("b", &["b", "text"])])],
        vec![edge("start", "a", "source"), edge("start", "b", "source"), edge("a", "end", "source"), edge("b", "end", "source")],
    );
    let mut l = limits();
    l.node_timeout = Duration::from_secs(5);
    let r = run(raw, WorkflowMode::Workflow, input(json!({})), fake, l).await;
    assert_eq!(r.outcome.status, RunStatus::Succeeded, "{:?}", r.outcome.error);
    assert_eq!(Value::Object(r.outcome.outputs.clone()), json!({"a": "LEFT", "b": "RIGHT"}));
    assert_eq!(r.started().iter().filter(|n| **n == "end").count(), 1);
}

fn branching() -> Value {
    workflow(
        vec![
            start(json!([text_input("q", true)])),
            if_else("if", json!([{"case_id": "yes", "logical_operator": "and", "conditions": [condition(&["start", "q"], "is", "a")]}])),
            llm("y", "yes"),
            llm("n", "no"),
            llm("after_n", "after no"),
            end(&[("y", &["y", "text"]), ("n", &["n", "text"]), ("after", &["after_n", "text"])]),
        ],
        vec![
            edge("start", "if", "source"),
            edge("if", "y", "yes"),
            edge("if", "n", "false"),
            edge("n", "after_n", "source"),
            edge("y", "end", "source"),
            edge("after_n", "end", "source"),
        ],
    )
}

#[tokio::test]
async fn if_else_takes_one_branch_skips_the_other_and_joins() {
    let fake = Fake::new(|_, _| Play::Echo);
    let r = run(branching(), WorkflowMode::Workflow, input(json!({"q": "a"})), fake.clone(), limits()).await;
    assert_eq!(r.outcome.status, RunStatus::Succeeded, "{:?}", r.outcome.error);
    assert_eq!(r.started(), vec!["start", "if", "y", "end"]);
    assert_eq!(Value::Object(r.outcome.outputs.clone()), json!({"y": "YES", "n": null, "after": null}));
    assert_eq!(r.finished("if").map(|x| x.outputs["selected_case_id"].clone()), Some(json!("yes")));

    let r = run(branching(), WorkflowMode::Workflow, input(json!({"q": "b"})), fake, limits()).await;
    assert_eq!(r.started(), vec!["start", "if", "n", "after_n", "end"]);
    assert_eq!(Value::Object(r.outcome.outputs.clone()), json!({"y": null, "n": "NO", "after": "AFTER NO"}));
}

fn chat_answer() -> Value {
    workflow(
        vec![start(json!([])), llm("llm", "{{#sys.query#}}"), answer("ans", "Say: {{#llm.text#}}!")],
        vec![edge("start", "llm", "source"), edge("llm", "ans", "source")],
    )
}

#[tokio::test]
async fn answer_text_streams_while_the_llm_runs() {
    let fake = Fake::new(|_, _| Play::Say(vec!["Hel", "lo"]));
    let r = run(chat_answer(), WorkflowMode::AdvancedChat, input(json!({})), fake, limits()).await;
    assert_eq!(r.outcome.status, RunStatus::Succeeded, "{:?}", r.outcome.error);
    assert_eq!(r.outcome.answer, "Say: Hello!");
    assert_eq!(Value::Object(r.outcome.outputs.clone()), json!({"answer": "Say: Hello!"}));
    assert_eq!(r.text(), "Say: Hello!");
    let first_chunk = r.pos(|e| matches!(e, Event::TextChunk { text, .. } if text == "Hel"));
    let llm_done = r.pos(|e| matches!(e, Event::NodeFinished(x) if x.node_id == "llm"));
    let prefix = r.pos(|e| matches!(e, Event::TextChunk { text, .. } if text == "Say: "));
    assert!(prefix < first_chunk && first_chunk < llm_done, "{:#?}", r.events);
    assert!(
        matches!(&r.events[first_chunk], Event::TextChunk { from_variable_selector, .. } if from_variable_selector == &["llm", "text"])
    );
}

#[tokio::test]
async fn answers_on_a_branch_not_taken_show_nothing() {
    let raw = workflow(
        vec![
            start(json!([])),
            if_else("if", json!([{"case_id": "yes", "logical_operator": "and", "conditions": [condition(&["sys", "query"], "is", "hi")]}])),
            answer("a1", "greeting"),
            llm("llm", "x"),
            answer("a2", "[{{#llm.text#}}]"),
        ],
        vec![edge("start", "if", "source"), edge("if", "a1", "yes"), edge("if", "llm", "false"), edge("llm", "a2", "source")],
    );
    let fake = Fake::new(|_, _| Play::Say(vec!["m", "odel"]));
    let r = run(raw.clone(), WorkflowMode::AdvancedChat, input(json!({})), fake.clone(), limits()).await;
    assert_eq!((r.text(), r.outcome.answer.as_str()), ("[model]".to_owned(), "[model]"));
    let mut i = input(json!({}));
    i.sys.query = Some("hi".into());
    let r = run(raw, WorkflowMode::AdvancedChat, i, fake, limits()).await;
    assert_eq!((r.text(), r.outcome.answer.as_str()), ("greeting".to_owned(), "greeting"));
}

fn chat_iteration(parallel: bool, mode: &str) -> Value {
    let mut raw = workflow(
        vec![
            start(json!([])),
            node(
                "it",
                "iteration",
                json!({"iterator_selector": ["conversation", "list"], "output_selector": ["body", "text"], "output_type": "array[string]",
                       "start_node_id": "its", "is_parallel": parallel, "parallel_nums": 3, "error_handle_mode": mode}),
            ),
            inner("its", "iteration-start", "it", false, json!({})),
            inner("body", "llm", "it", false, llm_data("{{#it.item#}} at {{#it.index#}}")),
            answer("ans", "{{#it.output#}}"),
        ],
        vec![edge("start", "it", "source"), edge("its", "body", "source"), edge("it", "ans", "source")],
    );
    raw["conversation_variables"] =
        json!([{"id": "c", "name": "list", "value_type": "array[string]", "value": ["a", "b", "c"], "description": ""}]);
    raw
}

#[tokio::test]
async fn iteration_runs_each_item_in_order() {
    let fake = Fake::new(|_, _| Play::Echo);
    let r = run(chat_iteration(false, "terminated"), WorkflowMode::AdvancedChat, input(json!({})), fake, limits()).await;
    assert_eq!(r.outcome.status, RunStatus::Succeeded, "{:?}", r.outcome.error);
    assert_eq!(r.outcome.answer, r#"["A AT 0","B AT 1","C AT 2"]"#);
    let parents: Vec<Option<(String, u32)>> = r
        .events
        .iter()
        .filter_map(|e| match e {
            Event::NodeFinished(x) if x.node_id == "body" => Some(x.parent.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(parents, vec![Some(("it".into(), 0)), Some(("it".into(), 1)), Some(("it".into(), 2))]);
}

#[tokio::test]
async fn parallel_iteration_overlaps_and_keeps_item_order() {
    let barrier = Arc::new(Barrier::new(3));
    let fake = Fake::new(move |_, _| Play::AfterBarrier(barrier.clone()));
    let r = run(chat_iteration(true, "terminated"), WorkflowMode::AdvancedChat, input(json!({})), fake, limits()).await;
    assert_eq!(r.outcome.status, RunStatus::Succeeded, "{:?}", r.outcome.error);
    assert_eq!(r.outcome.answer, r#"["A AT 0","B AT 1","C AT 2"]"#);
}

fn fail_on_b(call: &LlmCall, _: usize) -> Play {
    if call.messages.last().is_some_and(|(_, t)| t.starts_with('b')) {
        Play::Fail("b is bad")
    } else {
        Play::Echo
    }
}

#[tokio::test]
async fn iteration_error_modes() {
    for parallel in [false, true] {
        let r = run(
            chat_iteration(parallel, "continue-on-error"),
            WorkflowMode::AdvancedChat,
            input(json!({})),
            Fake::new(fail_on_b),
            limits(),
        )
        .await;
        assert_eq!(r.outcome.answer, r#"["A AT 0",null,"C AT 2"]"#, "parallel {parallel}");
        let r = run(
            chat_iteration(parallel, "remove-abnormal-output"),
            WorkflowMode::AdvancedChat,
            input(json!({})),
            Fake::new(fail_on_b),
            limits(),
        )
        .await;
        assert_eq!(r.outcome.answer, r#"["A AT 0","C AT 2"]"#, "parallel {parallel}");
        let r =
            run(chat_iteration(parallel, "terminated"), WorkflowMode::AdvancedChat, input(json!({})), Fake::new(fail_on_b), limits()).await;
        assert_eq!(r.outcome.status, RunStatus::Failed);
        let err = r.outcome.error.unwrap_or_default();
        assert!(err.starts_with("node iteration it failed: item 1: node llm body failed: b is bad"), "{err}");
    }
}

#[tokio::test]
async fn iteration_over_too_many_items_fails() {
    let mut l = limits();
    l.max_iterations = 2;
    let r = run(chat_iteration(false, "terminated"), WorkflowMode::AdvancedChat, input(json!({})), Fake::new(|_, _| Play::Echo), l).await;
    assert_eq!(r.outcome.status, RunStatus::Failed);
    assert!(r.outcome.error.unwrap_or_default().contains("the iteration has 3 items; at most 2 are allowed"));
}

fn loop_graph(count: u32, break_on: Option<&str>, with_end: bool) -> Value {
    let breaks: Vec<Value> = break_on.iter().map(|v| condition(&["body", "text"], "is", v)).collect();
    let mut nodes = vec![
        start(json!([])),
        node(
            "lp",
            "loop",
            json!({"loop_count": count, "break_conditions": breaks, "logical_operator": "and", "start_node_id": "lps",
                   "loop_variables": [{"id": "v1", "label": "greeting", "var_type": "string", "value_type": "constant", "value": "hello"}]}),
        ),
        inner("lps", "loop-start", "lp", true, json!({})),
        inner("body", "llm", "lp", true, llm_data("pass {{#lp.index#}} {{#lp.greeting#}}")),
        end(&[("rounds", &["lp", "loop_round"]), ("greeting", &["lp", "greeting"])]),
    ];
    let mut edges = vec![edge("start", "lp", "source"), edge("lps", "body", "source"), edge("lp", "end", "source")];
    if with_end {
        nodes.push(inner("le", "loop-end", "lp", true, json!({})));
        edges.push(edge("body", "le", "source"));
    }
    workflow(nodes, edges)
}

#[tokio::test]
async fn loops_stop_at_their_count_a_break_condition_or_loop_end() {
    let fake = Fake::new(|_, _| Play::Echo);
    let r = run(loop_graph(2, None, false), WorkflowMode::Workflow, input(json!({})), fake.clone(), limits()).await;
    assert_eq!(r.outcome.status, RunStatus::Succeeded, "{:?}", r.outcome.error);
    assert_eq!(Value::Object(r.outcome.outputs.clone()), json!({"rounds": 2, "greeting": "hello"}));
    let prompts: Vec<String> = fake.calls().iter().map(|c| c.messages[1].1.clone()).collect();
    assert_eq!(prompts, vec!["pass 0 hello", "pass 1 hello"]);

    let fake = Fake::new(|_, _| Play::Echo);
    let r = run(loop_graph(10, Some("PASS 2 HELLO"), false), WorkflowMode::Workflow, input(json!({})), fake.clone(), limits()).await;
    assert_eq!(r.outcome.outputs["rounds"], json!(3));
    assert_eq!(fake.calls().len(), 3);

    let fake = Fake::new(|_, _| Play::Echo);
    let r = run(loop_graph(10, None, true), WorkflowMode::Workflow, input(json!({})), fake.clone(), limits()).await;
    assert_eq!(r.outcome.outputs["rounds"], json!(1));
    assert_eq!(fake.calls().len(), 1);
}

fn with_strategy(strategy: Value) -> Value {
    let mut l = llm("llm", "x");
    if let (Some(d), Value::Object(s)) = (l["data"].as_object_mut(), strategy) {
        d.extend(s);
    }
    workflow(
        vec![start(json!([])), l, answer("ok", "ok: {{#llm.text#}}"), answer("bad", "bad: {{#llm.error_message#}}")],
        vec![edge("start", "llm", "source"), edge("llm", "ok", "source"), edge("llm", "bad", "fail-branch")],
    )
}

#[tokio::test]
async fn fail_branch_follows_the_failure_edge() {
    let raw = with_strategy(json!({"error_strategy": "fail-branch"}));
    let r = run(raw.clone(), WorkflowMode::AdvancedChat, input(json!({})), Fake::new(|_, _| Play::Fail("boom")), limits()).await;
    assert_eq!(r.outcome.status, RunStatus::PartialSucceeded);
    assert_eq!(r.outcome.answer, "bad: boom");
    let llm = r.finished("llm").cloned().unwrap_or_else(|| panic!("no llm"));
    assert_eq!((llm.status, llm.error.as_deref()), (NodeStatus::Exception, Some("boom")));
    assert_eq!(llm.outputs["error_type"], json!("NodeError"));
    let r = run(raw, WorkflowMode::AdvancedChat, input(json!({})), Fake::new(|_, _| Play::Say(vec!["fine"])), limits()).await;
    assert_eq!((r.outcome.status, r.outcome.answer.as_str()), (RunStatus::Succeeded, "ok: fine"));
}

#[tokio::test]
async fn default_value_and_retry_strategies() {
    let dv = json!({"error_strategy": "default-value", "default_value": [{"key": "text", "type": "string", "value": "fallback"}]});
    let raw = workflow(
        vec![
            start(json!([])),
            {
                let mut l = llm("llm", "x");
                if let (Some(d), Value::Object(s)) = (l["data"].as_object_mut(), dv) {
                    d.extend(s);
                }
                l
            },
            answer("ok", "{{#llm.text#}}"),
        ],
        vec![edge("start", "llm", "source"), edge("llm", "ok", "source")],
    );
    let r = run(raw, WorkflowMode::AdvancedChat, input(json!({})), Fake::new(|_, _| Play::Fail("boom")), limits()).await;
    assert_eq!((r.outcome.status, r.outcome.answer.as_str()), (RunStatus::PartialSucceeded, "fallback"));

    let retry = json!({"retry_config": {"enabled": true, "max_retries": 2, "retry_interval": 1}});
    let fake = Fake::new(|_, n| if n < 2 { Play::Fail("flaky") } else { Play::Say(vec!["third time"]) });
    let mut with_retry = retry.clone();
    with_retry["error_strategy"] = json!("fail-branch");
    let r = run(with_strategy(with_retry), WorkflowMode::AdvancedChat, input(json!({})), fake.clone(), limits()).await;
    assert_eq!((r.outcome.status, r.outcome.answer.as_str()), (RunStatus::Succeeded, "ok: third time"));
    assert_eq!(fake.calls().len(), 3);

    // Text streamed by a failed attempt is not shown: a retrying node's text waits for its end.
    let retry_only = workflow(
        vec![
            start(json!([])),
            {
                let mut l = llm("llm", "x");
                l["data"]["retry_config"] = retry["retry_config"].clone();
                l
            },
            answer("ok", "{{#llm.text#}}"),
        ],
        vec![edge("start", "llm", "source"), edge("llm", "ok", "source")],
    );
    let fake = Fake::new(|_, n| if n < 1 { Play::PartFail("half an ans", "cut") } else { Play::Say(vec!["whole"]) });
    let r = run(retry_only, WorkflowMode::AdvancedChat, input(json!({})), fake, limits()).await;
    assert_eq!((r.text(), r.outcome.answer.as_str()), ("whole".to_owned(), "whole"));

    // Retries exhausted, no strategy: the run fails naming the node.
    let raw = workflow(
        vec![
            start(json!([])),
            {
                let mut l = llm("llm", "x");
                l["data"]["retry_config"] = retry["retry_config"].clone();
                l
            },
            answer("ok", "{{#llm.text#}}"),
        ],
        vec![edge("start", "llm", "source"), edge("llm", "ok", "source")],
    );
    let fake = Fake::new(|_, _| Play::Fail("always"));
    let r = run(raw, WorkflowMode::AdvancedChat, input(json!({})), fake.clone(), limits()).await;
    assert_eq!((r.outcome.status, r.outcome.error.as_deref()), (RunStatus::Failed, Some("node llm llm failed: always")));
    assert_eq!(fake.calls().len(), 3);
    assert_eq!(r.finished("llm").map(|x| x.status), Some(NodeStatus::Failed));
    assert!(r.finished("ok").is_none());
}

#[tokio::test]
async fn a_hung_node_times_out() {
    let mut l = limits();
    l.node_timeout = Duration::from_millis(50);
    let r = run(linear(), WorkflowMode::Workflow, input(json!({"q": "x"})), Fake::new(|_, _| Play::Hang), l).await;
    assert_eq!(r.outcome.status, RunStatus::Failed);
    assert_eq!(r.outcome.error.as_deref(), Some("node llm llm failed: timed out after 50ms"));
    assert_eq!(r.finished("llm").map(|x| x.status), Some(NodeStatus::Failed));
}

#[tokio::test]
async fn a_run_past_its_time_limit_fails() {
    let mut l = limits();
    l.run_timeout = Duration::from_millis(50);
    let r = run(linear(), WorkflowMode::Workflow, input(json!({"q": "x"})), Fake::new(|_, _| Play::Hang), l).await;
    assert_eq!(r.outcome.status, RunStatus::Failed);
    assert_eq!(r.outcome.error.as_deref(), Some("the run exceeded its time limit of 0.05s"));
    assert_eq!(r.finished("llm").map(|x| x.status), Some(NodeStatus::Failed));
}

#[tokio::test]
async fn stop_cancels_running_nodes() {
    let (stop_tx, stop) = watch::channel(false);
    let wf = compiled(&linear(), WorkflowMode::Workflow);
    let task = tokio::spawn(run_with(wf, input(json!({"q": "x"})), Fake::new(|_, _| Play::Hang), limits(), stop));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let _ = stop_tx.send(true);
    let r = match tokio::time::timeout(Duration::from_secs(5), task).await {
        Ok(Ok(r)) => r,
        other => panic!("the stopped run did not end: {:?}", other.is_ok()),
    };
    assert_eq!(r.outcome.status, RunStatus::Stopped);
    assert_eq!(r.finished("llm").map(|x| x.status), Some(NodeStatus::Stopped));
    assert!(r.finished("end").is_none());
}

#[tokio::test]
async fn max_steps_ends_the_run() {
    let mut l = limits();
    l.max_steps = 2;
    let r = run(linear(), WorkflowMode::Workflow, input(json!({"q": "x"})), Fake::new(|_, _| Play::Echo), l).await;
    assert_eq!((r.outcome.status, r.outcome.error.as_deref()), (RunStatus::Failed, Some("the run exceeded 2 steps")));
    assert!(r.finished("end").is_none());
}

#[tokio::test]
async fn sys_env_and_conversation_variables_are_readable_and_secrets_masked() {
    let mut raw = workflow(
        vec![
            start(json!([])),
            llm("llm", "key {{#env.key#}}"),
            answer("ans", "{{#sys.query#}}|{{#sys.user_id#}}|{{#env.region#}}|{{#conversation.topic#}}|{{#sys.dialogue_count#}}"),
        ],
        vec![edge("start", "llm", "source"), edge("llm", "ans", "source")],
    );
    raw["environment_variables"] = json!([
        {"id": "e1", "name": "key", "value_type": "secret", "value": "s3cret", "description": ""},
        {"id": "e2", "name": "region", "value_type": "string", "value": "eu", "description": ""}
    ]);
    raw["conversation_variables"] = json!([{"id": "c1", "name": "topic", "value_type": "string", "value": "default", "description": ""}]);
    let fake = Fake::new(|_, _| Play::Say(vec!["ok"]));
    let mut i = input(json!({}));
    i.conversation_variables = BTreeMap::from([("topic".to_owned(), json!("rust"))]);
    i.sys.dialogue_count = 4;
    let r = run(raw, WorkflowMode::AdvancedChat, i, fake.clone(), limits()).await;
    assert_eq!(r.outcome.answer, "what now|alice|eu|rust|4");
    assert_eq!(fake.calls()[0].messages[1].1, "key s3cret");
    let llm = r.finished("llm").cloned().unwrap_or_else(|| panic!("no llm"));
    assert_eq!(llm.process_data["prompts"][1]["text"], json!("key ******"));
    assert!(!format!("{:?}", r.events).contains("s3cret"));
    assert_eq!(r.outcome.conversation_variables, BTreeMap::from([("topic".to_owned(), json!("rust"))]));
}

#[tokio::test]
async fn llm_memory_context_and_structured_output() {
    let mut data = llm_data("Use {{#context#}}");
    data["context"] = json!({"enabled": true, "variable_selector": ["first", "text"]});
    data["memory"] = json!({"window": {"enabled": true, "size": 1}, "query_prompt_template": "Q: {{#sys.query#}}", "role_prefix": {"user": "", "assistant": ""}});
    let mut so = llm_data("json please");
    so["structured_output_enabled"] = json!(true);
    so["structured_output"] = json!({"schema": {"type": "object", "properties": {"n": {"type": "number"}}}});
    let raw = workflow(
        vec![
            start(json!([])),
            llm("first", "facts"),
            node("mem", "llm", data),
            node("so", "llm", so),
            answer("ans", "{{#so.structured_output.n#}}"),
        ],
        vec![edge("start", "first", "source"), edge("first", "mem", "source"), edge("mem", "so", "source"), edge("so", "ans", "source")],
    );
    let script = |c: &LlmCall, _: usize| match c.node_id.as_str() {
        "first" => Play::Say(vec!["the sky is blue"]),
        "so" => Play::Say(vec!["{\"n\": ", "42}"]),
        _ => Play::Echo,
    };
    let mut i = input(json!({}));
    i.history = vec![("old q".into(), "old a".into()), ("recent q".into(), "recent a".into())];
    let fake = Fake::new(script);
    let r = run(raw.clone(), WorkflowMode::AdvancedChat, i, fake.clone(), limits()).await;
    assert_eq!(r.outcome.status, RunStatus::Succeeded, "{:?}", r.outcome.error);
    let mem = fake.calls().into_iter().find(|c| c.node_id == "mem").map(|c| c.messages).unwrap_or_default();
    assert_eq!(
        mem,
        vec![
            (Role::System, "You help.".into()),
            (Role::User, "Use the sky is blue".into()),
            (Role::User, "recent q".into()),
            (Role::Assistant, "recent a".into()),
            (Role::User, "Q: what now".into()),
        ]
    );
    assert_eq!(r.outcome.answer, "42");
    assert!(fake.calls().iter().any(|c| c.node_id == "so" && c.json_schema.is_some()));

    let fake = Fake::new(|c: &LlmCall, _| if c.node_id == "so" { Play::Say(vec!["not json"]) } else { Play::Echo });
    let r = run(raw, WorkflowMode::AdvancedChat, input(json!({})), fake, limits()).await;
    assert_eq!(r.outcome.status, RunStatus::Failed);
    assert!(r.outcome.error.unwrap_or_default().starts_with("node llm so failed: the structured output is not valid JSON"));
}

#[tokio::test]
async fn knowledge_results_become_an_llms_context_and_the_runs_retriever_resources() {
    let mut data = llm_data("Answer from: {{#context#}}");
    data["context"] = json!({"enabled": true, "variable_selector": ["kr", "result"]});
    let raw = workflow(
        vec![
            start(json!([])),
            node(
                "kr",
                "knowledge-retrieval",
                json!({"dataset_ids": ["d1"], "query_variable_selector": ["sys", "query"], "retrieval_mode": "multiple"}),
            ),
            node("mem", "llm", data),
            answer("ans", "{{#mem.text#}}"),
        ],
        vec![edge("start", "kr", "source"), edge("kr", "mem", "source"), edge("mem", "ans", "source")],
    );
    let fake = Fake::new(|_: &LlmCall, _| Play::Say(vec!["Press ACK."]));
    let r = run(raw, WorkflowMode::AdvancedChat, input(json!({})), fake.clone(), limits()).await;
    assert_eq!(r.outcome.status, RunStatus::Succeeded, "{:?}", r.outcome.error);
    let msgs = fake.calls().into_iter().find(|c| c.node_id == "mem").map(|c| c.messages).unwrap_or_default();
    assert_eq!(msgs[1], (Role::User, "Answer from: Press ACK, then RESET.\nAlarm 4711 is the safety door.\n".into()));
    let rr = &r.outcome.retriever_resources;
    assert_eq!(rr.len(), 2, "{rr:?}");
    assert_eq!(rr[0]["segment_id"], "seg1");
    assert_eq!(rr[0]["position"], 1);
    assert_eq!(rr[0]["dataset_name"], "Manuals");
    assert_eq!(rr[0]["content"], "Press ACK, then RESET.");
    assert_eq!(rr[1]["index_node_hash"], "hash2");
    assert_eq!(r.outcome.answer, "Press ACK.");
}

#[test]
fn inputs_are_checked_with_difys_messages() {
    let raw = workflow(
        vec![
            start(json!([
                text_input("name", true),
                {"variable": "size", "label": "Size", "type": "select", "required": false, "options": ["S", "M"], "default": "M"},
                {"variable": "n", "label": "N", "type": "number", "required": false},
                {"variable": "long", "label": "L", "type": "paragraph", "required": false, "max_length": 5}
            ])),
            end(&[]),
        ],
        vec![edge("start", "end", "source")],
    );
    let wf = compiled(&raw, WorkflowMode::Workflow);
    let check = |v: Value| check_inputs(&wf, v.as_object().unwrap_or(&Map::new())).map(Value::Object).map_err(|e| e.0);
    assert_eq!(check(json!({})), Err("name is required in input form".into()));
    assert_eq!(check(json!({"name": ""})), Err("name is required in input form".into()));
    assert_eq!(check(json!({"name": "x", "size": "XL"})), Err("size in input form must be one of the following: ['S', 'M']".into()));
    assert_eq!(check(json!({"name": "x", "n": "abc"})), Err("n in input form must be a valid number".into()));
    assert_eq!(check(json!({"name": "x", "long": "123456"})), Err("long in input form must be less than 5 characters".into()));
    assert_eq!(check(json!({"name": "x", "n": "7", "extra": 1})), Ok(json!({"name": "x", "size": "M", "n": 7})));
    assert_eq!(check(json!({"name": "a\0b", "size": "S"})), Ok(json!({"name": "ab", "size": "S"})));
    assert_eq!(check(json!({"name": 5})), Err("name in input form must be a string".into()));
    assert_eq!(check(json!({"name": "x", "n": 2.5, "long": "12345"})), Ok(json!({"name": "x", "size": "M", "n": 2.5, "long": "12345"})));
}

/// A stand-in for the assigner node (another module's): adds one to the
/// number at `from` and assigns it to `to`.
#[derive(Debug)]
struct Increment {
    from: Vec<String>,
    to: String,
}

impl super::super::NodeKind for Increment {
    fn references(&self) -> Vec<(String, Vec<String>)> {
        vec![("from".into(), self.from.clone())]
    }

    fn outputs(&self) -> Vec<(String, super::super::VarType)> {
        Vec::new()
    }

    fn run<'a>(&'a self, ctx: super::super::NodeCtx<'a>) -> BoxFuture<'a, Result<NodeOutput, NodeError>> {
        Box::pin(async move {
            let n = ctx.scope.get(&self.from).and_then(|v| v.as_i64()).unwrap_or(0);
            Ok(NodeOutput { assigned: BTreeMap::from([(self.to.clone(), json!(n + 1))]), ..NodeOutput::default() })
        })
    }
}

/// `raw` compiled, with node `id` (any of ours, as a placeholder) replaced by `kind`.
fn with_kind(raw: &Value, mode: WorkflowMode, id: &str, kind: Increment) -> Arc<Workflow> {
    let mut wf = match Workflow::compile(raw, mode, &Capabilities::default()) {
        Ok(wf) => wf,
        Err(p) => panic!("{p:#?}"),
    };
    if let Some(n) = wf.nodes.iter_mut().find(|n| n.id == id) {
        n.kind = Kind::Other(Box::new(kind));
    }
    Arc::new(wf)
}

#[tokio::test]
async fn assigned_conversation_variables_are_seen_downstream_and_returned() {
    let mut raw = workflow(
        vec![start(json!([])), answer("set", ""), answer("ans", "count {{#conversation.count#}}")],
        vec![edge("start", "set", "source"), edge("set", "ans", "source")],
    );
    raw["conversation_variables"] = json!([{"id": "c1", "name": "count", "value_type": "number", "value": 0, "description": ""}]);
    let wf = with_kind(
        &raw,
        WorkflowMode::AdvancedChat,
        "set",
        Increment { from: vec!["conversation".into(), "count".into()], to: "count".into() },
    );
    let mut i = input(json!({}));
    i.conversation_variables = BTreeMap::from([("count".to_owned(), json!(41))]);
    let (_keep, stop) = watch::channel(false);
    let r = run_with(wf, i, Fake::new(|_, _| Play::Echo), limits(), stop).await;
    assert_eq!(r.outcome.answer, "count 42");
    assert_eq!(r.text(), "count 42");
    assert_eq!(r.outcome.conversation_variables, BTreeMap::from([("count".to_owned(), json!(42))]));
}

#[tokio::test]
async fn loop_variables_assigned_in_the_body_carry_over_and_break_the_loop() {
    let raw = workflow(
        vec![
            start(json!([])),
            node(
                "lp",
                "loop",
                json!({"loop_count": 10, "logical_operator": "and", "start_node_id": "lps",
                       "break_conditions": [{"id": "b", "varType": "number", "variable_selector": ["lp", "n"], "comparison_operator": "=", "value": 3}],
                       "loop_variables": [{"id": "v", "label": "n", "var_type": "number", "value_type": "constant", "value": 0}]}),
            ),
            inner("lps", "loop-start", "lp", true, json!({})),
            inner("inc", "loop-end", "lp", true, json!({})),
            end(&[("n", &["lp", "n"]), ("rounds", &["lp", "loop_round"])]),
        ],
        vec![edge("start", "lp", "source"), edge("lps", "inc", "source"), edge("lp", "end", "source")],
    );
    let wf = with_kind(&raw, WorkflowMode::Workflow, "inc", Increment { from: vec!["lp".into(), "n".into()], to: "lp.n".into() });
    let (_keep, stop) = watch::channel(false);
    let r = run_with(wf, input(json!({})), Fake::new(|_, _| Play::Echo), limits(), stop).await;
    assert_eq!(r.outcome.status, RunStatus::Succeeded, "{:?}", r.outcome.error);
    assert_eq!(Value::Object(r.outcome.outputs.clone()), json!({"n": 3, "rounds": 3}));
    assert!(r.outcome.conversation_variables.is_empty());
}

#[tokio::test]
async fn stop_reaches_the_nodes_inside_an_iteration() {
    for parallel in [false, true] {
        let (stop_tx, stop) = watch::channel(false);
        let wf = compiled(&chat_iteration(parallel, "continue-on-error"), WorkflowMode::AdvancedChat);
        let task = tokio::spawn(run_with(wf, input(json!({})), Fake::new(|_, _| Play::Hang), limits(), stop));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = stop_tx.send(true);
        let r = match tokio::time::timeout(Duration::from_secs(5), task).await {
            Ok(Ok(r)) => r,
            other => panic!("the stopped run did not end: {:?}", other.is_ok()),
        };
        assert_eq!(r.outcome.status, RunStatus::Stopped, "parallel {parallel}");
        assert_eq!(r.finished("body").map(|x| x.status), Some(NodeStatus::Stopped));
        assert_eq!(r.finished("it").map(|x| x.status), Some(NodeStatus::Stopped));
        assert!(r.finished("ans").is_none());
    }
}

#[tokio::test]
async fn iteration_outputs_of_lists_flatten_unless_told_not_to_and_nothing_iterates_to_nothing() {
    let mut raw = chat_iteration(false, "terminated");
    raw["graph"]["nodes"][1]["data"]["output_selector"] = json!(["body", "structured_output", "l"]);
    raw["graph"]["nodes"][3]["data"]["structured_output_enabled"] = json!(true);
    raw["graph"]["nodes"][3]["data"]["structured_output"] = json!({"schema": {"type": "object"}});
    let fake = || Fake::new(|_, _| Play::Say(vec![r#"{"l": [1, 2]}"#]));
    let r = run(raw.clone(), WorkflowMode::AdvancedChat, input(json!({})), fake(), limits()).await;
    assert_eq!(r.outcome.answer, "[1,2,1,2,1,2]");
    raw["graph"]["nodes"][1]["data"]["flatten_output"] = json!(false);
    let r = run(raw.clone(), WorkflowMode::AdvancedChat, input(json!({})), fake(), limits()).await;
    assert_eq!(r.outcome.answer, "[[1,2],[1,2],[1,2]]");
    let mut i = input(json!({}));
    i.conversation_variables = BTreeMap::from([("list".to_owned(), json!([]))]);
    let r = run(raw, WorkflowMode::AdvancedChat, i, fake(), limits()).await;
    assert_eq!((r.outcome.status, r.outcome.answer.as_str()), (RunStatus::Succeeded, "[]"));
}
