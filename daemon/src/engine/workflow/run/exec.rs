//! What each of the executor's own node types does: start, end, answer,
//! llm, if-else, iteration and loop (the bodies through the scheduler);
//! every other type runs through its [`NodeKind`](crate::engine::workflow::NodeKind).

use std::sync::Arc;

use serde_json::{json, Map, Value};
use tokio::task::JoinSet;

use super::super::graph::{Case, Condition, ErrorMode, IterationSpec, Kind, LlmSpec, LoopInit, LoopSpec};
use super::super::nodes::compare::compare;
use super::super::vars::{render_value, Pool};
use super::super::{Event, LlmCall, LlmChunk, NodeCtx, NodeError, NodeOutput, Role, Scope};
use super::{run_graph, Cancel, Fail, Halt, Run};

fn failed(msg: impl Into<String>) -> Fail {
    Fail::Node(NodeError::Failed(msg.into()))
}

/// Runs node `i`'s own work once (no retries, timeout or strategy here).
pub(super) async fn run_kind(
    run: &Arc<Run>,
    i: usize,
    pool: &Arc<Pool>,
    cancel: &Cancel,
    parent: &Option<(String, u32)>,
) -> Result<NodeOutput, Fail> {
    let node = &run.wf.nodes[i];
    match &node.kind {
        Kind::Start(_) => {
            let mut outputs = pool.node(&node.id).map(|m| (*m).clone()).unwrap_or_default();
            for (k, v) in run.globals.sys() {
                outputs.insert(format!("sys.{k}"), v.clone());
            }
            Ok(NodeOutput { inputs: outputs.clone(), outputs, ..NodeOutput::default() })
        }
        Kind::End(outs) => {
            let outputs: Map<String, Value> = outs.iter().map(|(name, sel)| (name.clone(), pool.get(sel).unwrap_or(Value::Null))).collect();
            run.outputs.lock().unwrap_or_else(|e| e.into_inner()).extend(outputs.clone());
            if let (Some(s), None) = (&run.stream, parent) {
                let mut s = s.lock().await;
                let evs = s.flush(i, pool);
                run.emit_all(evs).await;
            }
            Ok(NodeOutput { inputs: outputs.clone(), outputs, ..NodeOutput::default() })
        }
        Kind::Answer(t) => {
            let text = t.render(pool.as_ref(), None);
            match (&run.stream, parent) {
                (Some(s), None) => {
                    let mut s = s.lock().await;
                    let evs = s.flush(i, pool);
                    run.emit_all(evs).await;
                }
                _ if !text.is_empty() => {
                    run.emit(Event::TextChunk { text: text.clone(), from_variable_selector: vec![node.id.clone(), "answer".into()] }).await;
                }
                _ => {}
            }
            run.answer.lock().unwrap_or_else(|e| e.into_inner()).push_str(&text);
            Ok(NodeOutput { outputs: Map::from_iter([("answer".to_owned(), Value::String(text))]), ..NodeOutput::default() })
        }
        Kind::Llm(spec) => llm(run, i, spec, pool, parent.is_none()).await,
        Kind::IfElse(cases) => if_else(cases, pool.as_ref()),
        Kind::Iteration(spec) => iteration(run, i, spec, pool, cancel).await,
        Kind::Loop(spec) => run_loop(run, i, spec, pool, cancel).await,
        Kind::IterationStart | Kind::LoopStart | Kind::LoopEnd => Ok(NodeOutput::default()),
        Kind::Other(k) => {
            let ctx = NodeCtx { node_id: &node.id, scope: pool.as_ref(), effects: run.effects.as_ref(), limits: &run.limits };
            k.run(ctx).await.map_err(Fail::Node)
        }
    }
}

/// Whether the conditions hold (`all`: and, else or).
fn check(conditions: &[Condition], all: bool, scope: &dyn Scope) -> Result<bool, Fail> {
    for c in conditions {
        let actual = scope.get(&c.selector);
        let expected = match &c.template {
            Some(t) => Value::String(t.render(scope, None)),
            None => c.literal.clone(),
        };
        let hit = compare(&c.operator, actual.as_ref(), &expected).map_err(failed)?;
        if hit != all {
            return Ok(hit);
        }
    }
    Ok(all)
}

fn if_else(cases: &[Case], scope: &dyn Scope) -> Result<NodeOutput, Fail> {
    let mut selected = None;
    for case in cases {
        if check(&case.conditions, case.all, scope)? {
            selected = Some(case.id.clone());
            break;
        }
    }
    let handle = selected.clone().unwrap_or_else(|| "false".into());
    let outputs = Map::from_iter([
        ("result".to_owned(), Value::Bool(selected.is_some())),
        ("selected_case_id".to_owned(), Value::String(handle.clone())),
    ]);
    Ok(NodeOutput { outputs, handle: Some(handle), ..NodeOutput::default() })
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
    }
}

/// An llm node's context as Dify's llm node builds it: a string as it is;
/// a knowledge-retrieval result as its segments' contents, one per line,
/// each recorded as a retriever resource of the run.
fn context_text(run: &Run, v: &Value) -> String {
    let Value::Array(items) = v else { return render_value(v) };
    let mut text = String::new();
    let mut resources = Vec::new();
    for item in items {
        match item {
            Value::String(s) => text.push_str(s),
            Value::Object(o) => {
                let Some(content) = o.get("content").and_then(Value::as_str) else { continue };
                text.push_str(content);
                if let Some(Value::Object(meta)) = o.get("metadata") {
                    if meta.get("_source").and_then(Value::as_str) == Some("knowledge") {
                        resources.push(super::super::nodes::knowledge::retriever_resource(meta, content));
                    }
                }
            }
            other => text.push_str(&render_value(other)),
        }
        text.push('\n');
    }
    if !resources.is_empty() {
        run.resources.lock().unwrap_or_else(|e| e.into_inner()).extend(resources);
    }
    text
}

/// The model messages of an llm node, as Dify builds them: the prompt
/// template, then (with memory) the newest history turns and the query.
fn messages(run: &Run, spec: &LlmSpec, pool: &Pool) -> Vec<(Role, String)> {
    let context = spec.context.as_ref().map(|sel| pool.get(sel).map(|v| context_text(run, &v)).unwrap_or_default());
    let rendered: Vec<(Role, String)> = spec.prompt.iter().map(|(r, t)| (*r, t.render(pool, context.as_deref()))).collect();
    if !spec.chat {
        let text = rendered.into_iter().map(|(_, t)| t).collect::<Vec<_>>().join("\n");
        return vec![(Role::User, text)];
    }
    let Some((window, query)) = &spec.memory else { return rendered };
    let take = window.map(|w| w as usize).unwrap_or(run.history.len()).min(run.history.len());
    let history = run.history[run.history.len() - take..].iter().flat_map(|(q, a)| [(Role::User, q.clone()), (Role::Assistant, a.clone())]);
    // A prompt that places the query itself gets the history before that message.
    let query_at = spec.prompt.iter().position(|(_, t)| t.mentions(&["sys", "query"]));
    let mut out = Vec::with_capacity(rendered.len() + take * 2 + 1);
    match query_at {
        Some(at) => {
            let mut rendered = rendered.into_iter();
            out.extend(rendered.by_ref().take(at));
            out.extend(history);
            out.extend(rendered);
        }
        None => {
            out.extend(rendered);
            out.extend(history);
            if run.has_query {
                out.push((Role::User, query.render(pool, None)));
            }
        }
    }
    out
}

async fn llm(run: &Arc<Run>, i: usize, spec: &LlmSpec, pool: &Arc<Pool>, top: bool) -> Result<NodeOutput, Fail> {
    let node = &run.wf.nodes[i];
    let msgs = messages(run, spec, pool);
    let prompts: Vec<Value> = msgs.iter().map(|(r, t)| json!({"role": role_name(*r), "text": t})).collect();
    let call = LlmCall {
        node_id: node.id.clone(),
        provider: spec.provider.clone(),
        model: spec.model.clone(),
        messages: msgs,
        temperature: spec.temperature,
        top_p: spec.top_p,
        max_tokens: spec.max_tokens,
        seed: spec.seed,
        stop: spec.stop.clone(),
        json_schema: spec.json_schema.clone(),
    };
    let mut rx = run.effects.llm(call).await.map_err(failed)?;
    let mut text = String::new();
    let done = loop {
        match rx.recv().await {
            Some(LlmChunk::Text(t)) => {
                text.push_str(&t);
                if let (true, Some(s)) = (top, &run.stream) {
                    let mut s = s.lock().await;
                    let evs = s.chunk(i, &t, pool);
                    run.emit_all(evs).await;
                }
            }
            Some(LlmChunk::Done { prompt_tokens, completion_tokens, finish_reason }) => {
                break (prompt_tokens, completion_tokens, finish_reason)
            }
            Some(LlmChunk::Failed(e)) => return Err(failed(e)),
            None => return Err(failed("the model's answer ended before it was complete")),
        }
    };
    let (prompt_tokens, completion_tokens, finish_reason) = done;
    let total = u64::from(prompt_tokens) + u64::from(completion_tokens);
    let mut outputs = Map::new();
    if spec.json_schema.is_some() {
        let parsed: Value =
            serde_json::from_str(text.trim()).map_err(|e| failed(format!("the structured output is not valid JSON: {e}")))?;
        outputs.insert("structured_output".into(), parsed);
    }
    outputs.insert("text".into(), Value::String(text));
    outputs.insert("usage".into(), json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": total}));
    outputs.insert("finish_reason".into(), Value::String(finish_reason));
    let process_data = Map::from_iter([
        ("model_mode".to_owned(), Value::String(if spec.chat { "chat" } else { "completion" }.into())),
        ("model_provider".to_owned(), Value::String(spec.provider.clone())),
        ("model_name".to_owned(), Value::String(spec.model.clone())),
        ("prompts".to_owned(), Value::Array(prompts)),
    ]);
    Ok(NodeOutput { process_data, outputs, tokens: total, ..NodeOutput::default() })
}

async fn iteration(run: &Arc<Run>, i: usize, spec: &IterationSpec, pool: &Arc<Pool>, cancel: &Cancel) -> Result<NodeOutput, Fail> {
    let node = &run.wf.nodes[i];
    let items = match pool.get(&spec.iterator) {
        Some(Value::Array(a)) => a,
        // As Dify: nothing to iterate over is an empty output.
        Some(Value::Null) | None => Vec::new(),
        Some(_) => return Err(failed(format!("the iterator variable {} is not an array", spec.iterator.join(".")))),
    };
    let max = run.limits.max_iterations as usize;
    if items.len() > max {
        return Err(failed(format!("the iteration has {} items; at most {max} are allowed", items.len())));
    }
    let inputs = Map::from_iter([("iterator_selector".to_owned(), Value::Array(items.clone()))]);
    let width = spec.parallel.map_or(1, |p| p.min(run.limits.max_parallel.max(1)));
    let passes = cancel.child();
    let mut results: Vec<Option<Value>> = vec![None; items.len()];
    let mut set: JoinSet<(usize, Arc<Pool>, Result<super::GraphEnd, Halt>)> = JoinSet::new();
    let mut next = 0;
    let mut end: Option<Fail> = None;
    loop {
        while end.is_none() && !passes.is_cancelled() && set.len() < width && next < items.len() {
            let frame = Pool::child(pool);
            frame.set(&node.id, Map::from_iter([("item".to_owned(), items[next].clone()), ("index".to_owned(), Value::from(next))]));
            let fut = run_graph(run.clone(), spec.start, frame.clone(), passes.clone(), Some((node.id.clone(), next as u32)));
            let k = next;
            set.spawn(async move { (k, frame, fut.await) });
            next += 1;
        }
        let Some(joined) = set.join_next().await else { break };
        let (k, frame, res) = match joined {
            Ok(x) => x,
            Err(e) => {
                end.get_or_insert(Fail::Halt(Halt::Aborted(format!("an iteration pass ended abnormally: {e}"))));
                passes.cancel();
                continue;
            }
        };
        if end.is_some() {
            continue;
        }
        match res {
            Ok(_) => results[k] = Some(frame.get(&spec.output).unwrap_or(Value::Null)),
            Err(Halt::Failed { title, error }) => match spec.error_mode {
                ErrorMode::Terminated => {
                    end = Some(failed(format!("item {k}: node {title} failed: {error}")));
                    passes.cancel();
                }
                ErrorMode::ContinueOnError => results[k] = Some(Value::Null),
                ErrorMode::RemoveAbnormal => {}
            },
            Err(h) => {
                end = Some(Fail::Halt(h));
                passes.cancel();
            }
        }
    }
    if let Some(f) = end {
        return Err(f);
    }
    if passes.is_cancelled() {
        return Err(Fail::Halt(run.cancelled_halt()));
    }
    let mut output: Vec<Value> = results.into_iter().flatten().collect();
    if spec.flatten && !output.is_empty() && output.iter().all(Value::is_array) {
        output = output.into_iter().flat_map(|v| if let Value::Array(a) = v { a } else { Vec::new() }).collect();
    }
    Ok(NodeOutput { inputs, outputs: Map::from_iter([("output".to_owned(), Value::Array(output))]), ..NodeOutput::default() })
}

async fn run_loop(run: &Arc<Run>, i: usize, spec: &LoopSpec, pool: &Arc<Pool>, cancel: &Cancel) -> Result<NodeOutput, Fail> {
    let node = &run.wf.nodes[i];
    let max = run.limits.max_iterations;
    if spec.count > max {
        return Err(failed(format!("the loop may make {} passes; at most {max} are allowed", spec.count)));
    }
    let mut vars = Map::new();
    for (name, _, init) in &spec.variables {
        let v = match init {
            LoopInit::Constant(v) => v.clone(),
            LoopInit::Selector(sel) => pool.get(sel).unwrap_or(Value::Null),
        };
        vars.insert(name.clone(), v);
    }
    let inputs = vars.clone();
    let breaks = |scope: &dyn Scope| -> Result<bool, Fail> {
        Ok(!spec.break_conditions.is_empty() && check(&spec.break_conditions, spec.break_all, scope)?)
    };
    let mut rounds = 0u32;
    // As Dify: a break condition that cannot be evaluated yet does not hold.
    if !breaks(pool.as_ref()).unwrap_or(false) {
        for pass in 0..spec.count {
            if cancel.is_cancelled() {
                return Err(Fail::Halt(run.cancelled_halt()));
            }
            let frame = Pool::child(pool);
            let mut own = vars.clone();
            own.insert("index".into(), Value::from(pass));
            frame.set(&node.id, own);
            let end = match run_graph(run.clone(), spec.start, frame.clone(), cancel.clone(), Some((node.id.clone(), pass))).await {
                Ok(e) => e,
                Err(Halt::Failed { title, error }) => return Err(failed(format!("pass {pass}: node {title} failed: {error}"))),
                Err(h) => return Err(Fail::Halt(h)),
            };
            rounds = pass + 1;
            // Body nodes may have assigned loop variables in the pass's frame.
            if let Some(after) = frame.node(&node.id) {
                for (name, value) in vars.iter_mut() {
                    if let Some(v) = after.get(name) {
                        *value = v.clone();
                    }
                }
            }
            if end.loop_end || breaks(frame.as_ref())? {
                break;
            }
        }
    }
    let mut outputs = vars;
    outputs.insert("loop_round".into(), Value::from(rounds));
    Ok(NodeOutput { inputs, outputs, ..NodeOutput::default() })
}
