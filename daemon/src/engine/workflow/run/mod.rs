//! The executor: runs a compiled [`Workflow`] as Dify does. A node runs once
//! every incoming edge from a node that can run has resolved, and at least
//! one of them was taken; a node whose incoming edges were all skipped is
//! skipped too, and so on downstream. Ready nodes run in parallel (bounded by
//! `Limits::max_parallel`); iteration and loop bodies run through the same
//! scheduler over a child frame of the variable pool.
//!
//! Owns the run's limits (steps, node and run timeouts, stop) and error
//! strategies (retry, fail-branch, default-value). Reports through
//! [`Event`]s and a [`RunOutcome`]; knows nothing of HTTP or storage.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Map, Value};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinSet;

use super::graph::{Kind, Strategy, Workflow};
use super::vars::{Globals, Pool};
use super::{
    BoxFuture, Effects, Event, Limits, NodeError, NodeExecution, NodeOutput, NodeStatus, RunInput, RunOutcome, RunStatus, WorkflowMode,
};

mod exec;
mod inputs;
mod stream;
#[cfg(test)]
mod tests;

pub use inputs::{check_inputs, InputError};

/// Why a graph stopped before its end.
#[derive(Debug, Clone, PartialEq)]
enum Halt {
    /// A node failed and had no error strategy.
    Failed { title: String, error: String },
    /// The run was stopped (or a sibling's failure cancelled this branch).
    Stopped,
    /// A run limit was hit (steps, run timeout); the message says which.
    Aborted(String),
}

/// How one node's attempt ended short of an output.
#[derive(Debug)]
enum Fail {
    /// The node failed: its error strategy applies.
    Node(NodeError),
    /// The run is ending: no strategy applies.
    Halt(Halt),
}

/// What a finished node lets through.
#[derive(Debug, Clone, PartialEq)]
enum Chosen {
    /// Edges leaving by this handle (`source` also takes `success-branch`).
    Handle(String),
    /// Only edges leaving by `fail-branch`.
    FailBranch,
}

impl Chosen {
    fn takes(&self, handle: &str) -> bool {
        match self {
            Chosen::Handle(h) => h == handle || (h == "source" && handle == "success-branch"),
            Chosen::FailBranch => handle == "fail-branch",
        }
    }
}

/// A cancellation signal that reaches every child made from it.
#[derive(Clone, Debug)]
struct Cancel(Arc<CancelInner>);

#[derive(Debug, Default)]
struct CancelInner {
    flag: AtomicBool,
    notify: Notify,
    children: Mutex<Vec<Weak<CancelInner>>>,
}

impl Cancel {
    fn new() -> Cancel {
        Cancel(Arc::new(CancelInner::default()))
    }

    fn child(&self) -> Cancel {
        let c = Cancel::new();
        let mut kids = self.0.children.lock().unwrap_or_else(|e| e.into_inner());
        kids.retain(|w| w.strong_count() > 0);
        kids.push(Arc::downgrade(&c.0));
        drop(kids);
        if self.is_cancelled() {
            c.cancel();
        }
        c
    }

    fn is_cancelled(&self) -> bool {
        self.0.flag.load(Ordering::Acquire)
    }

    fn cancel(&self) {
        self.0.flag.store(true, Ordering::Release);
        self.0.notify.notify_waiters();
        let kids: Vec<Arc<CancelInner>> =
            self.0.children.lock().unwrap_or_else(|e| e.into_inner()).iter().filter_map(Weak::upgrade).collect();
        for k in kids {
            Cancel(k).cancel();
        }
    }

    async fn cancelled(&self) {
        loop {
            let notified = self.0.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}

const WHY_RUNNING: u8 = 0;
const WHY_STOPPED: u8 = 1;
const WHY_TIMED_OUT: u8 = 2;

/// One run's shared state.
struct Run {
    wf: Arc<Workflow>,
    effects: Arc<dyn Effects>,
    limits: Limits,
    events: mpsc::Sender<Event>,
    globals: Arc<Globals>,
    /// Earlier turns for llm memory.
    history: Vec<(String, String)>,
    has_query: bool,
    steps: AtomicU32,
    index: AtomicU32,
    tokens: AtomicU64,
    exception: AtomicBool,
    why: AtomicU8,
    outputs: Mutex<Map<String, Value>>,
    answer: Mutex<String>,
    /// Knowledge segments llm nodes used as context (`retriever_resources`).
    resources: Mutex<Vec<Value>>,
    stream: Option<tokio::sync::Mutex<stream::Streamer>>,
}

impl Run {
    async fn emit(&self, ev: Event) {
        // A consumer that went away (client gone) does not stop the run.
        let _ = self.events.send(ev).await;
    }

    async fn emit_all(&self, evs: Vec<Event>) {
        for ev in evs {
            self.emit(ev).await;
        }
    }

    fn timeout_message(&self) -> String {
        format!("the run exceeded its time limit of {}s", self.limits.run_timeout.as_secs_f64())
    }

    /// The halt a cancellation means.
    fn cancelled_halt(&self) -> Halt {
        match self.why.load(Ordering::Acquire) {
            WHY_TIMED_OUT => Halt::Aborted(self.timeout_message()),
            _ => Halt::Stopped,
        }
    }
}

/// Resolves once `stop` turns true (never, if its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        if stop.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

fn sys_map(input: &RunInput, mode: WorkflowMode) -> Map<String, Value> {
    let s = &input.sys;
    let mut m = Map::new();
    if mode == WorkflowMode::AdvancedChat {
        m.insert("query".into(), Value::String(s.query.clone().unwrap_or_default()));
        m.insert("conversation_id".into(), s.conversation_id.clone().map(Value::String).unwrap_or(Value::Null));
        m.insert("dialogue_count".into(), Value::from(s.dialogue_count));
    }
    m.insert("user_id".into(), Value::String(s.user_id.clone()));
    m.insert("app_id".into(), Value::String(s.app_id.clone()));
    m.insert("workflow_id".into(), Value::String(s.workflow_id.clone()));
    m.insert("workflow_run_id".into(), Value::String(s.workflow_run_id.clone()));
    m.insert("files".into(), Value::Array(s.files.clone()));
    m
}

/// Runs `wf` to its end, reporting on `events`; `stop` turning true stops it.
pub async fn execute(
    wf: Arc<Workflow>,
    input: RunInput,
    effects: Arc<dyn Effects>,
    limits: Limits,
    events: mpsc::Sender<Event>,
    stop: watch::Receiver<bool>,
) -> RunOutcome {
    let mode = wf.mode();
    let sys = sys_map(&input, mode);
    let mut env = Map::new();
    let mut secrets = Vec::new();
    for v in wf.environment_variables() {
        env.insert(v.name.clone(), v.value.clone());
        if v.value_type == "secret" {
            if let Some(s) = v.value.as_str() {
                secrets.push(s.to_owned());
            }
        }
    }
    let mut conversation = input.conversation_variables.clone();
    for v in wf.conversation_variables() {
        conversation.entry(v.name.clone()).or_insert_with(|| v.value.clone());
    }
    let globals = Arc::new(Globals::new(sys, env, secrets, conversation));
    let pool = Pool::root(globals.clone());
    pool.set(&wf.nodes[wf.start].id, input.inputs.clone());
    let stream = (!wf.answers.is_empty()).then(|| tokio::sync::Mutex::new(stream::Streamer::new(wf.clone())));
    let run = Arc::new(Run {
        wf: wf.clone(),
        effects,
        limits: limits.clone(),
        events,
        globals: globals.clone(),
        history: input.history,
        has_query: input.sys.query.is_some(),
        steps: AtomicU32::new(0),
        index: AtomicU32::new(0),
        tokens: AtomicU64::new(0),
        exception: AtomicBool::new(false),
        why: AtomicU8::new(WHY_RUNNING),
        outputs: Mutex::new(Map::new()),
        answer: Mutex::new(String::new()),
        resources: Mutex::new(Vec::new()),
        stream,
    });
    let cancel = Cancel::new();
    let graph = run_graph(run.clone(), wf.start, pool, cancel.clone(), None);
    tokio::pin!(graph);
    let deadline = tokio::time::sleep(limits.run_timeout);
    tokio::pin!(deadline);
    let result = tokio::select! {
        r = &mut graph => r,
        () = &mut deadline => {
            run.why.store(WHY_TIMED_OUT, Ordering::Release);
            cancel.cancel();
            graph.await
        }
        () = stopped(stop) => {
            run.why.store(WHY_STOPPED, Ordering::Release);
            cancel.cancel();
            graph.await
        }
    };
    let (status, error) = match result {
        Ok(_) if run.exception.load(Ordering::Acquire) => (RunStatus::PartialSucceeded, None),
        Ok(_) => (RunStatus::Succeeded, None),
        Err(Halt::Stopped) => (RunStatus::Stopped, Some("the run was stopped".to_owned())),
        Err(Halt::Failed { title, error }) => (RunStatus::Failed, Some(format!("node {title} failed: {error}"))),
        Err(Halt::Aborted(msg)) => (RunStatus::Failed, Some(msg)),
    };
    let answer = std::mem::take(&mut *run.answer.lock().unwrap_or_else(|e| e.into_inner()));
    let outputs = match mode {
        WorkflowMode::Workflow => std::mem::take(&mut *run.outputs.lock().unwrap_or_else(|e| e.into_inner())),
        WorkflowMode::AdvancedChat => Map::from_iter([("answer".to_owned(), Value::String(answer.clone()))]),
    };
    let retriever_resources = std::mem::take(&mut *run.resources.lock().unwrap_or_else(|e| e.into_inner()));
    RunOutcome {
        status,
        outputs: globals.mask(outputs),
        error: error.map(|e| globals.mask_text(e)),
        answer,
        total_tokens: run.tokens.load(Ordering::Acquire),
        total_steps: run.steps.load(Ordering::Acquire).min(limits.max_steps),
        conversation_variables: globals.conversation(),
        retriever_resources,
    }
}

/// How a graph (the top level or one body pass) ended.
#[derive(Debug, Default)]
struct GraphEnd {
    /// A loop-end node ran (the loop exits).
    loop_end: bool,
}

/// Runs the graph that starts at `root` (the top level, or one pass of a
/// body, with `parent` = (container id, pass index)).
fn run_graph(
    run: Arc<Run>,
    root: usize,
    pool: Arc<Pool>,
    cancel: Cancel,
    parent: Option<(String, u32)>,
) -> BoxFuture<'static, Result<GraphEnd, Halt>> {
    Box::pin(async move {
        let wf = run.wf.clone();
        let n = wf.nodes.len();
        let top = parent.is_none();
        let mut remaining: Vec<usize> = wf.live_in.iter().map(Vec::len).collect();
        let mut taken = vec![false; n];
        let mut pred: Vec<Option<usize>> = vec![None; n];
        let mut ready: VecDeque<(usize, Option<usize>)> = VecDeque::from([(root, None)]);
        let mut set: JoinSet<(usize, Result<Chosen, Halt>)> = JoinSet::new();
        let mut halt: Option<Halt> = None;
        let mut end = GraphEnd::default();
        let graph_cancel = cancel.child();
        let max = run.limits.max_parallel.max(1);
        loop {
            let open = halt.is_none() && !end.loop_end && !graph_cancel.is_cancelled();
            let (i, res) = if open && set.is_empty() && ready.len() == 1 {
                // A lone ready node (a chain) runs in this task: no spawn, no wake-up.
                let Some((i, p)) = ready.pop_front() else { break };
                exec_node(run.clone(), i, pool.clone(), graph_cancel.clone(), parent.clone(), p).await
            } else {
                while open && set.len() < max {
                    let Some((i, p)) = ready.pop_front() else { break };
                    set.spawn(exec_node(run.clone(), i, pool.clone(), graph_cancel.clone(), parent.clone(), p));
                }
                let Some(joined) = set.join_next().await else { break };
                match joined {
                    Ok(x) => x,
                    Err(e) => {
                        halt.get_or_insert(Halt::Aborted(format!("a node's task ended abnormally: {e}")));
                        graph_cancel.cancel();
                        continue;
                    }
                }
            };
            let chosen = match res {
                Ok(c) => c,
                Err(h) => {
                    if halt.is_none() {
                        halt = Some(h);
                        graph_cancel.cancel();
                    }
                    continue;
                }
            };
            if halt.is_some() {
                continue;
            }
            if matches!(wf.nodes[i].kind, Kind::LoopEnd) {
                end.loop_end = true;
            }
            // Resolve the edges out of `i`, skipping whole branches not taken.
            let mut skipped_edges = Vec::new();
            let mut skipped_nodes = Vec::new();
            let mut stack: Vec<(usize, Option<&Chosen>)> = vec![(i, Some(&chosen))];
            while let Some((src, how)) = stack.pop() {
                for &k in &wf.out[src] {
                    let e = &wf.edges[k];
                    let t = e.target;
                    let take = how.is_some_and(|c| c.takes(&e.handle));
                    if !take {
                        skipped_edges.push(k);
                    }
                    remaining[t] = remaining[t].saturating_sub(1);
                    if take {
                        taken[t] = true;
                        pred[t].get_or_insert(src);
                    }
                    if remaining[t] == 0 {
                        if taken[t] {
                            ready.push_back((t, pred[t]));
                        } else {
                            skipped_nodes.push(t);
                            stack.push((t, None));
                        }
                    }
                }
            }
            if top {
                if let Some(s) = &run.stream {
                    let mut s = s.lock().await;
                    let evs = s.resolved(i, &skipped_edges, &skipped_nodes, &pool);
                    run.emit_all(evs).await;
                }
            }
        }
        match halt {
            Some(h) => Err(h),
            // Cancelled between nodes: nothing reported it, the graph did not finish.
            None if graph_cancel.is_cancelled() => Err(run.cancelled_halt()),
            None => Ok(end),
        }
    })
}

fn unix_millis() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn new_execution(run: &Run, i: usize, parent: Option<(String, u32)>, pred: Option<usize>) -> NodeExecution {
    let node = &run.wf.nodes[i];
    NodeExecution {
        // Time-ordered (UUIDv7: the store's inserts land at the end of its
        // index), random bits from the thread-local generator: no system
        // call per node.
        id: uuid::Builder::from_unix_timestamp_millis(unix_millis(), &rand::random()).into_uuid().to_string(),
        node_id: node.id.clone(),
        node_type: node.node_type.clone(),
        title: node.title.clone(),
        index: run.index.fetch_add(1, Ordering::AcqRel) + 1,
        predecessor_node_id: pred.map(|p| run.wf.nodes[p].id.clone()),
        parent,
        inputs: Map::new(),
        process_data: Map::new(),
        outputs: Map::new(),
        status: NodeStatus::Running,
        error: None,
        elapsed: Duration::ZERO,
        tokens: 0,
        created_at: SystemTime::now(),
        finished_at: None,
    }
}

/// One node, from `node_started` to `node_finished`: retries, timeout,
/// cancellation and error strategy.
async fn exec_node(
    run: Arc<Run>,
    i: usize,
    pool: Arc<Pool>,
    cancel: Cancel,
    parent: Option<(String, u32)>,
    pred: Option<usize>,
) -> (usize, Result<Chosen, Halt>) {
    let max_steps = run.limits.max_steps;
    if run.steps.fetch_add(1, Ordering::AcqRel) >= max_steps {
        return (i, Err(Halt::Aborted(format!("the run exceeded {max_steps} steps"))));
    }
    let node = &run.wf.nodes[i];
    if matches!(node.kind, Kind::IterationStart | Kind::LoopStart) {
        // A body's start marker: Dify reports no execution for it.
        return (i, Ok(Chosen::Handle("source".into())));
    }
    let mut exec = new_execution(&run, i, parent.clone(), pred);
    run.emit(Event::NodeStarted(exec.clone())).await;
    let started = Instant::now();
    let container = matches!(node.kind, Kind::Iteration(_) | Kind::Loop(_));
    let (retries, interval) = node.retry.unwrap_or((0, 0));
    let mut attempt = 0;
    let result = loop {
        let work = exec::run_kind(&run, i, &pool, &cancel, &parent);
        let timed = async {
            if container {
                work.await
            } else {
                match tokio::time::timeout(run.limits.node_timeout, work).await {
                    Ok(r) => r,
                    Err(_) => Err(Fail::Node(NodeError::Timeout(run.limits.node_timeout))),
                }
            }
        };
        // A container ends through its body's nodes, which see the cancellation.
        let r = if container {
            timed.await
        } else {
            tokio::select! {
                r = timed => r,
                () = cancel.cancelled() => Err(Fail::Halt(run.cancelled_halt())),
            }
        };
        match r {
            Err(Fail::Node(_)) if attempt < retries => {
                attempt += 1;
                tracing::debug!(node_id = %node.id, attempt, "retrying a failed node");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(interval)) => {}
                    () = cancel.cancelled() => break Err(Fail::Halt(run.cancelled_halt())),
                }
            }
            other => break other,
        }
    };
    // A loop-variable assignment outside its loop fails the node.
    let result = match result {
        Ok(out) => match misplaced_assignment(&run.wf, i, &pool, &out) {
            Some(key) => Err(Fail::Node(NodeError::Failed(format!(
                "{key} is neither a conversation variable nor a variable of a loop this node is in"
            )))),
            None => Ok(out),
        },
        other => other,
    };
    let chosen = match result {
        Ok(out) => {
            exec.status = NodeStatus::Succeeded;
            Ok(finish_ok(&run, &pool, i, out, &mut exec))
        }
        Err(Fail::Node(err)) => {
            let error = err.to_string();
            let error_type = match err {
                NodeError::Timeout(_) => "TimeoutError",
                NodeError::Failed(_) => "NodeError",
            };
            exec.error = Some(error.clone());
            let mut outputs = Map::new();
            match &node.strategy {
                Strategy::Fail => {
                    exec.status = NodeStatus::Failed;
                    Err(Halt::Failed { title: node.title.clone(), error })
                }
                Strategy::FailBranch | Strategy::DefaultValue(_) => {
                    if let Strategy::DefaultValue(defaults) = &node.strategy {
                        outputs.extend(defaults.clone());
                    }
                    outputs.insert("error_message".into(), Value::String(error));
                    outputs.insert("error_type".into(), Value::String(error_type.into()));
                    exec.status = NodeStatus::Exception;
                    run.exception.store(true, Ordering::Release);
                    pool.set(&node.id, outputs.clone());
                    exec.outputs = outputs;
                    Ok(if node.strategy == Strategy::FailBranch { Chosen::FailBranch } else { Chosen::Handle("source".into()) })
                }
            }
        }
        Err(Fail::Halt(h)) => {
            exec.status = if h == Halt::Stopped { NodeStatus::Stopped } else { NodeStatus::Failed };
            exec.error = Some(match &h {
                Halt::Stopped => "stopped".to_owned(),
                Halt::Failed { title, error } => format!("node {title} failed: {error}"),
                Halt::Aborted(m) => m.clone(),
            });
            Err(h)
        }
    };
    exec.elapsed = started.elapsed();
    exec.finished_at = Some(SystemTime::now());
    let g = &run.globals;
    exec.inputs = g.mask(std::mem::take(&mut exec.inputs));
    exec.process_data = g.mask(std::mem::take(&mut exec.process_data));
    exec.outputs = g.mask(std::mem::take(&mut exec.outputs));
    exec.error = exec.error.take().map(|e| g.mask_text(e));
    run.emit(Event::NodeFinished(exec)).await;
    (i, chosen)
}

/// Whether `owner` is a loop that node `i` is inside.
fn enclosing_loop(wf: &Workflow, mut i: usize, owner: &str) -> bool {
    while let Some(c) = wf.nodes[i].container {
        if wf.nodes[c].id == owner {
            return matches!(wf.nodes[c].kind, Kind::Loop(_));
        }
        i = c;
    }
    false
}

/// The first `loop_id.name` assignment of `out` that names no variable of
/// a loop node `i` is in.
fn misplaced_assignment(wf: &Workflow, i: usize, pool: &Pool, out: &NodeOutput) -> Option<String> {
    out.assigned
        .keys()
        .find(|k| k.split_once('.').is_some_and(|(owner, var)| !(enclosing_loop(wf, i, owner) && pool.has_var(owner, var))))
        .cloned()
}

/// A succeeded node's output into the pool, the run and its record.
fn finish_ok(run: &Run, pool: &Pool, i: usize, out: NodeOutput, exec: &mut NodeExecution) -> Chosen {
    let node = &run.wf.nodes[i];
    // `loop_id.label` names a variable of an enclosing loop; any other name a
    // conversation variable.
    let mut conversation = BTreeMap::new();
    for (k, v) in out.assigned {
        // `misplaced_assignment` let only enclosing loops' variables through.
        match k.split_once('.') {
            Some((owner, var)) => {
                pool.assign(owner, var, v);
            }
            None => {
                conversation.insert(k, v);
            }
        }
    }
    run.globals.assign(&conversation);
    run.tokens.fetch_add(out.tokens, Ordering::AcqRel);
    pool.set(&node.id, out.outputs.clone());
    exec.tokens = out.tokens;
    exec.inputs = out.inputs;
    exec.process_data = out.process_data;
    exec.outputs = out.outputs;
    Chosen::Handle(out.handle.unwrap_or_else(|| "source".into()))
}
