//! Dify DSL workflows (`workflow` and `advanced-chat` apps): the DSL's graph
//! compiled and validated (`graph`), the variable pool, selectors and
//! `{{#node.var#}}` templates (`vars`), the nodes (`nodes`), the executor
//! (`run`) and DSL YAML import/export (`dsl`).
//!
//! Owns no I/O: a node that needs the world (a model, an HTTP request) asks
//! through [`Effects`], which the service implements. The executor reports
//! what happens as [`Event`]s, in Dify's order, and ends with a
//! [`RunOutcome`]; the service persists and the api encodes them.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};
use tokio::sync::mpsc;

pub mod dsl;
pub mod graph;
pub mod nodes;
pub mod run;
pub mod vars;

/// A boxed future, for the object-safe traits below.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One problem found while importing or compiling a DSL: where (node id and
/// title when it is about a node; the field, as a dotted path) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub node_id: Option<String>,
    pub node_title: Option<String>,
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.node_id, &self.node_title) {
            (Some(id), Some(title)) => write!(f, "node {id} ({title:?}): {}: {}", self.field, self.message),
            (Some(id), None) => write!(f, "node {id}: {}: {}", self.field, self.message),
            _ => write!(f, "{}: {}", self.field, self.message),
        }
    }
}

/// Limits of compiling and running a workflow (config `[workflow]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Most node executions in one run (iterations count every pass).
    pub max_steps: u32,
    /// Longest one node may run (a hung node fails with a timeout).
    pub node_timeout: Duration,
    /// Longest a whole run may take.
    pub run_timeout: Duration,
    /// Most branches or parallel iteration items running at once.
    pub max_parallel: usize,
    /// Most items an iteration accepts / passes a loop may make.
    pub max_iterations: u32,
    /// Largest HTTP response body an http-request node keeps.
    pub http_max_response_bytes: usize,
}

/// Whether code nodes of one language can run here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeSupport {
    /// They run; a node's `dependencies` may name these top-level modules.
    Available(Arc<BTreeSet<String>>),
    /// Accepted without checks: apps loaded from the store were checked at
    /// import, and a run whose runtime has gone fails with a clear error.
    Unchecked,
    /// Refused at import, for this reason.
    Unavailable(String),
}

/// What this daemon can run; a DSL needing more is refused at import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    pub javascript: CodeSupport,
    pub python3: CodeSupport,
}

impl Default for Capabilities {
    /// No code nodes (a build without the sandbox, the engine's own tests).
    fn default() -> Capabilities {
        let none = || CodeSupport::Unavailable("this build runs no code nodes".into());
        Capabilities { javascript: none(), python3: none() }
    }
}

impl Capabilities {
    /// For apps already imported (loaded from the store).
    pub fn unchecked() -> Capabilities {
        Capabilities { javascript: CodeSupport::Unchecked, python3: CodeSupport::Unchecked }
    }
}

/// Which kind of DSL app a graph belongs to: chatflows answer through
/// `answer` nodes and have `sys.query`; workflows end in `end` nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkflowMode {
    Workflow,
    AdvancedChat,
}

/// Dify's variable types (start-node inputs, node outputs, conversation and
/// environment variables), used to check references at import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarType {
    String,
    Number,
    Boolean,
    Object,
    File,
    ArrayString,
    ArrayNumber,
    ArrayBoolean,
    ArrayObject,
    ArrayFile,
    /// Unknown until run time (e.g. an http body parsed later); matches anything.
    Any,
}

/// A cloud model named by a node (`model.provider` / `model.name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRef {
    pub node_id: String,
    pub node_title: String,
    pub provider: String,
    pub name: String,
}

// ---------------------------------------------------------------- effects

/// A chat message role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
}

/// One model call of a node.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmCall {
    pub node_id: String,
    /// The DSL's model, which config maps to a local or upstream model.
    pub provider: String,
    pub model: String,
    pub messages: Vec<(Role, String)>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub max_tokens: Option<u32>,
    pub seed: Option<u32>,
    pub stop: Vec<String>,
    /// Constrain the answer to JSON of this schema (structured output,
    /// parameter-extractor); the local model turns it into a grammar.
    pub json_schema: Option<Value>,
}

/// What a model call streams back: any number of `Text`, then one `Done`
/// (or the channel closes early, which is a failure).
#[derive(Debug, Clone, PartialEq)]
pub enum LlmChunk {
    Text(String),
    Done { prompt_tokens: u32, completion_tokens: u32, finish_reason: String },
    Failed(String),
}

/// One HTTP request of an http-request node, already templated and
/// authorised; the service checks the destination against its allowlist.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpCall {
    pub node_id: String,
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub max_response_bytes: usize,
}

/// An HTTP answer (any status; a transport failure is an `Err`).
#[derive(Debug, Clone, PartialEq)]
pub struct HttpReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// One search of a knowledge-retrieval node, with its settings.
#[derive(Debug, Clone, PartialEq)]
pub struct KnowledgeCall {
    pub node_id: String,
    /// Local dataset ids (import mapped the DSL's ids to them).
    pub dataset_ids: Vec<String>,
    pub query: String,
    /// `single`: the one dataset whose best segment scores highest answers;
    /// `multiple`: all datasets, merged by score.
    pub single: bool,
    pub top_k: Option<usize>,
    pub score_threshold: Option<f32>,
    /// Hybrid weights (vector, keyword) when the node gives them.
    pub weights: Option<(f32, f32)>,
}

/// One segment a knowledge-retrieval node found.
#[derive(Debug, Clone, PartialEq)]
pub struct KnowledgeHit {
    pub dataset_id: String,
    pub dataset_name: String,
    pub document_id: String,
    pub document_name: String,
    /// `upload_file` or `text`... as Dify's `data_source_type`.
    pub data_source_type: String,
    pub segment_id: String,
    pub segment_position: i64,
    pub index_node_hash: String,
    pub content: String,
    pub score: f32,
    pub hit_count: i64,
    pub word_count: i64,
}

/// One run of a code node's program.
#[derive(Debug, Clone, PartialEq)]
pub struct CodeCall {
    pub node_id: String,
    pub language: CodeLanguage,
    pub code: String,
    /// The node's variables by name: `main`'s arguments.
    pub inputs: Map<String, Value>,
    /// The node's own limits (`timeout` seconds, `memory_limit_mb`), which
    /// the service caps by its config; `None`: the config's defaults.
    pub timeout: Option<Duration>,
    pub memory_mb: Option<u64>,
}

/// A code node's language (`code_language`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeLanguage {
    JavaScript,
    Python3,
}

/// An uploaded file: (name, mime type, bytes).
pub type UploadedFile = (String, String, Vec<u8>);

/// The world as a workflow sees it; implemented by the service (and by
/// in-memory fakes in the engine's own unit tests).
pub trait Effects: Send + Sync + 'static {
    /// Starts a model call; the model's queue may refuse it (`Err`).
    fn llm(&self, call: LlmCall) -> BoxFuture<'static, Result<mpsc::Receiver<LlmChunk>, String>>;
    /// One HTTP exchange; `Err` names a refused destination, a timeout or a
    /// transport failure.
    fn http(&self, call: HttpCall) -> BoxFuture<'static, Result<HttpReply, String>>;
    /// A file uploaded through the Service API (`upload_file_id`), as
    /// (name, mime type, bytes), for document-extractor.
    fn file(&self, upload_file_id: String) -> BoxFuture<'static, Result<UploadedFile, String>>;
    /// A knowledge search; `Err` names an unknown dataset or a failed search.
    fn knowledge(&self, call: KnowledgeCall) -> BoxFuture<'static, Result<Vec<KnowledgeHit>, String>>;
    /// Runs a code node's program in the sandbox; `Ok` is the object its
    /// `main` returned, `Err` why there is none (the node's error).
    fn code(&self, call: CodeCall) -> BoxFuture<'static, Result<Map<String, Value>, String>>;
}

// ---------------------------------------------------------------- nodes

/// How a node reads variables: by selector (`["node_id", "var", ...]`,
/// `["sys", "query"]`, `["env", "x"]`, `["conversation", "x"]`) and by
/// rendering a `{{#node_id.var#}}` template.
pub trait Scope: Send + Sync {
    fn get(&self, selector: &[String]) -> Option<Value>;
    fn render(&self, template: &str) -> String;
}

/// What a node produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeOutput {
    /// Shown in `node_started`/`node_finished` as `inputs`.
    pub inputs: Map<String, Value>,
    pub process_data: Map<String, Value>,
    pub outputs: Map<String, Value>,
    /// The source handle to follow (if-else case id, question-classifier
    /// class id); `None` follows `source`.
    pub handle: Option<String>,
    pub tokens: u64,
    /// Conversation variables this node assigned (assigner), by name.
    pub assigned: BTreeMap<String, Value>,
}

/// Why a node failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    #[error("{0}")]
    Failed(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

/// What a node sees while it runs.
pub struct NodeCtx<'a> {
    pub node_id: &'a str,
    pub scope: &'a dyn Scope,
    pub effects: &'a dyn Effects,
    pub limits: &'a Limits,
}

/// A node type's compiled data and behaviour. Container nodes (iteration,
/// loop) and the nodes the executor handles itself (start, end, answer,
/// llm) live in `run`; every other type implements this.
pub trait NodeKind: Send + Sync + std::fmt::Debug {
    /// Every selector the node reads, with the field it comes from, so
    /// import can check each names an upstream variable.
    fn references(&self) -> Vec<(String, Vec<String>)>;
    /// The variables it produces.
    fn outputs(&self) -> Vec<(String, VarType)>;
    /// The source handles it may choose (besides `source`), for edge checks.
    fn handles(&self) -> Vec<String> {
        Vec::new()
    }
    fn run<'a>(&'a self, ctx: NodeCtx<'a>) -> BoxFuture<'a, Result<NodeOutput, NodeError>>;
}

// ---------------------------------------------------------------- events

/// A node execution's status, as Dify names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeStatus {
    Running,
    Succeeded,
    Failed,
    /// Failed, but its error strategy handled it (fail-branch, default-value).
    Exception,
    Stopped,
}

/// One node execution's record, in `node_started` (outputs empty) and
/// `node_finished`.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeExecution {
    /// Unique per execution (UUID).
    pub id: String,
    pub node_id: String,
    pub node_type: String,
    pub title: String,
    /// 1-based order of starting within the run.
    pub index: u32,
    pub predecessor_node_id: Option<String>,
    /// Set inside an iteration or loop: (container node id, pass index).
    pub parent: Option<(String, u32)>,
    pub inputs: Map<String, Value>,
    pub process_data: Map<String, Value>,
    pub outputs: Map<String, Value>,
    pub status: NodeStatus,
    pub error: Option<String>,
    pub elapsed: Duration,
    pub tokens: u64,
    pub created_at: SystemTime,
    pub finished_at: Option<SystemTime>,
}

/// What a run reports while it runs, in Dify's order.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    NodeStarted(NodeExecution),
    NodeFinished(NodeExecution),
    /// Answer text (chatflow `answer` nodes, workflow `end` streaming) as it
    /// is produced, with the selector it came from.
    TextChunk {
        text: String,
        from_variable_selector: Vec<String>,
    },
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    Succeeded,
    Failed,
    PartialSucceeded,
    Stopped,
}

/// The end of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOutcome {
    pub status: RunStatus,
    /// Workflow: the end node's outputs; chatflow: `{"answer": ..}`.
    pub outputs: Map<String, Value>,
    pub error: Option<String>,
    /// Chatflow: the whole answer text.
    pub answer: String,
    pub total_tokens: u64,
    pub total_steps: u32,
    /// Conversation variables after the run (chatflow), by name.
    pub conversation_variables: BTreeMap<String, Value>,
    /// Segments that llm nodes used as context (Dify's
    /// `retriever_resources`), in the order they were used.
    pub retriever_resources: Vec<Value>,
}

/// The system variables of one run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SysVars {
    pub query: Option<String>,
    pub user_id: String,
    pub conversation_id: Option<String>,
    pub dialogue_count: u32,
    pub app_id: String,
    pub workflow_id: String,
    pub workflow_run_id: String,
    pub files: Vec<Value>,
}

/// Everything one run starts from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunInput {
    /// Already checked against the start node's form by [`run::check_inputs`].
    pub inputs: Map<String, Value>,
    pub sys: SysVars,
    /// Current values of conversation variables (DSL defaults for a new conversation).
    pub conversation_variables: BTreeMap<String, Value>,
    /// Earlier turns (query, answer), oldest first, for llm nodes' memory.
    pub history: Vec<(String, String)>,
}
