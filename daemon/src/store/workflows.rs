//! Workflow runs and their node executions (Dify's `workflow_runs` and
//! `workflow_node_executions`).
//!
//! Owns: both tables. A run is inserted `running` when it starts and
//! finished atomically (one writer job, rolled back whole on failure) with
//! every node execution, so a run is either running with no nodes or
//! finished with all of them; begins and finishes share their group's commit
//! with every other write waiting (store/writer.rs). [`Store::open`] marks runs still `running` (the daemon died
//! mid-run) as `failed`. Inputs, outputs and process data are opaque JSON
//! text here. Must not touch: apps, conversations, messages (a run names its
//! conversation and message but does not own them).

use rusqlite::{params, Connection, ErrorCode, OptionalExtension, Row};

use super::apps::require_app;
use super::error::{sql, StoreError};
use super::{now, now_ms, require_json, require_limit, require_non_empty, Store};

/// The error recorded on runs that were still running when the daemon stopped.
pub const INTERRUPTED_RUN_ERROR: &str = "interrupted: the daemon stopped before the run finished";

/// Where a workflow run is in its life (Dify's spelling).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkflowRunStatus {
    /// Started and not finished (or the daemon died while it ran, until the next open).
    Running,
    /// Every node on the taken path succeeded.
    Succeeded,
    /// A node failed (or the run timed out); see the run's `error`.
    Failed,
    /// Stopped by the client (`/workflows/tasks/{task_id}/stop`).
    Stopped,
    /// Finished, but some nodes failed and were handled by their error strategy.
    PartialSucceeded,
}

stored_as_text!(
    WorkflowRunStatus,
    "workflow run status",
    Running => "running",
    Succeeded => "succeeded",
    Failed => "failed",
    Stopped => "stopped",
    PartialSucceeded => "partial-succeeded",
);

impl WorkflowRunStatus {
    /// Parses Dify's spelling (`GET /workflows/logs?status=`).
    pub fn parse(s: &str) -> Result<Self, StoreError> {
        Self::from_text(s).ok_or_else(|| StoreError::InvalidArgument {
            field: "status",
            reason: format!("{s:?} is not one of running, succeeded, failed, stopped, partial-succeeded"),
        })
    }
}

/// How one node execution ended (Dify's spelling).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeExecutionStatus {
    /// The node produced its outputs.
    Succeeded,
    /// The node failed and the run failed with it.
    Failed,
    /// The run was stopped while the node ran.
    Stopped,
    /// The node failed and its error strategy (default value or fail branch) handled it.
    Exception,
}

stored_as_text!(NodeExecutionStatus, "node execution status", Succeeded => "succeeded", Failed => "failed", Stopped => "stopped", Exception => "exception");

/// A workflow run as it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWorkflowRun {
    /// Run id (UUID, chosen by the caller: it is streamed in `workflow_started`).
    pub id: String,
    /// The app.
    pub app_id: String,
    /// The app version the run executes (it finishes on it even if another is activated).
    pub app_version: u32,
    /// That version's workflow id; must match `app_version`.
    pub workflow_id: String,
    /// The task id the client can stop.
    pub task_id: String,
    /// The end user.
    pub user: String,
    /// The conversation, for advanced-chat runs.
    pub conversation_id: Option<String>,
    /// The message, for advanced-chat runs.
    pub message_id: Option<String>,
    /// The run's inputs (JSON text).
    pub inputs_json: String,
    /// Dify's `triggered_from` (e.g. `app-run`); stored as given.
    pub triggered_from: String,
}

/// How a workflow run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowRunOutcome {
    /// Anything but `Running`.
    pub status: WorkflowRunStatus,
    /// The run's outputs (JSON text; `null` or `{}` when there are none).
    pub outputs_json: String,
    /// What went wrong, for `Failed` (and the stop reason, if any).
    pub error: Option<String>,
    /// Wall time of the run in seconds.
    pub elapsed_secs: f64,
    /// Tokens used by every node.
    pub total_tokens: u64,
    /// Nodes executed.
    pub total_steps: u32,
    /// Unix seconds.
    pub finished_at: i64,
}

/// One executed node of a run, as written by `finish_workflow_run` and read back.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeExecutionRecord {
    /// Execution id (UUID; unique across all runs). Dify's node `id` in `node_started`.
    pub id: String,
    /// Execution order within the run (1-based in Dify's events; stored as given).
    pub index: u32,
    /// The graph node's id.
    pub node_id: String,
    /// The node type (`llm`, `if-else`, ...).
    pub node_type: String,
    /// The node's title.
    pub title: String,
    /// The node that ran before it on its path, if any.
    pub predecessor_node_id: Option<String>,
    /// The iteration or loop node this execution ran inside, if any.
    pub iteration_id: Option<String>,
    /// The index of that iteration, if any.
    pub iteration_index: Option<u32>,
    /// Inputs (JSON text).
    pub inputs_json: String,
    /// Process data, e.g. the rendered prompt (JSON text; `null` when none).
    pub process_data_json: String,
    /// Outputs (JSON text).
    pub outputs_json: String,
    /// How it ended.
    pub status: NodeExecutionStatus,
    /// What went wrong, for `Failed` and `Exception`.
    pub error: Option<String>,
    /// Wall time in seconds.
    pub elapsed_secs: f64,
    /// Tokens used.
    pub total_tokens: u64,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub finished_at: i64,
}

/// A stored workflow run.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowRunRecord {
    /// Run id.
    pub id: String,
    /// The app.
    pub app_id: String,
    /// The app version it ran.
    pub app_version: u32,
    /// That version's workflow id.
    pub workflow_id: String,
    /// The task id.
    pub task_id: String,
    /// The end user.
    pub user: String,
    /// The conversation, for advanced-chat runs.
    pub conversation_id: Option<String>,
    /// The message, for advanced-chat runs.
    pub message_id: Option<String>,
    /// Dify's `triggered_from`.
    pub triggered_from: String,
    /// Inputs (JSON text).
    pub inputs_json: String,
    /// Outputs (JSON text); `None` until finished.
    pub outputs_json: Option<String>,
    /// Status.
    pub status: WorkflowRunStatus,
    /// Error text.
    pub error: Option<String>,
    /// Wall time in seconds (0 until finished).
    pub elapsed_secs: f64,
    /// Tokens used (0 until finished).
    pub total_tokens: u64,
    /// Nodes executed (0 until finished).
    pub total_steps: u32,
    /// Node executions with status `exception` (Dify's `exceptions_count`).
    pub exceptions_count: u32,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix milliseconds (ordering within a second).
    pub created_at_ms: i64,
    /// Unix seconds; `None` until finished.
    pub finished_at: Option<i64>,
}

/// Dify's `GET /workflows/logs` filters and paging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowLogFilter {
    /// Only runs with this status.
    pub status: Option<WorkflowRunStatus>,
    /// As Dify: only runs whose inputs, outputs or user contains the first
    /// 30 characters of this (case-insensitive for ASCII; `%` and `_` match
    /// literally), or whose id it is. Empty means no filter.
    pub keyword: Option<String>,
    /// Only runs of this end user.
    pub user: Option<String>,
    /// Only runs created at or after this unix second.
    pub created_after: Option<i64>,
    /// Only runs created at or before this unix second.
    pub created_before: Option<i64>,
    /// 1-based page.
    pub page: u32,
    /// Page size, 1..=100.
    pub limit: u32,
}

const RUN_COLUMNS: &str = "id, app_id, app_version, workflow_id, task_id, user, conversation_id, message_id, triggered_from,
        inputs, outputs, status, error, elapsed_secs, total_tokens, total_steps, exceptions_count, created_at, created_at_ms,
        finished_at";

fn run_from_row(row: &Row<'_>) -> rusqlite::Result<WorkflowRunRecord> {
    Ok(WorkflowRunRecord {
        id: row.get(0)?,
        app_id: row.get(1)?,
        app_version: row.get(2)?,
        workflow_id: row.get(3)?,
        task_id: row.get(4)?,
        user: row.get(5)?,
        conversation_id: row.get(6)?,
        message_id: row.get(7)?,
        triggered_from: row.get(8)?,
        inputs_json: row.get(9)?,
        outputs_json: row.get(10)?,
        status: row.get(11)?,
        error: row.get(12)?,
        elapsed_secs: row.get(13)?,
        total_tokens: row.get(14)?,
        total_steps: row.get(15)?,
        exceptions_count: row.get(16)?,
        created_at: row.get(17)?,
        created_at_ms: row.get(18)?,
        finished_at: row.get(19)?,
    })
}

const NODE_COLUMNS: &str = "id, idx, node_id, node_type, title, predecessor_node_id, iteration_id, iteration_index,
        inputs, process_data, outputs, status, error, elapsed_secs, total_tokens, created_at, finished_at";

fn node_from_row(row: &Row<'_>) -> rusqlite::Result<NodeExecutionRecord> {
    Ok(NodeExecutionRecord {
        id: row.get(0)?,
        index: row.get(1)?,
        node_id: row.get(2)?,
        node_type: row.get(3)?,
        title: row.get(4)?,
        predecessor_node_id: row.get(5)?,
        iteration_id: row.get(6)?,
        iteration_index: row.get(7)?,
        inputs_json: row.get(8)?,
        process_data_json: row.get(9)?,
        outputs_json: row.get(10)?,
        status: row.get(11)?,
        error: row.get(12)?,
        elapsed_secs: row.get(13)?,
        total_tokens: row.get(14)?,
        created_at: row.get(15)?,
        finished_at: row.get(16)?,
    })
}

fn not_found(id: &str) -> StoreError {
    StoreError::NotFound { what: "workflow run", id: id.to_owned() }
}

/// Turns a primary-key violation into `AlreadyExists`, anything else into `Sqlite`.
fn insert_error<'a>(op: &'static str, what: &'static str, id: &'a str) -> impl FnOnce(rusqlite::Error) -> StoreError + 'a {
    move |source| match &source {
        rusqlite::Error::SqliteFailure(e, _)
            if e.code == ErrorCode::ConstraintViolation && e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
        {
            StoreError::AlreadyExists { what, id: id.to_owned() }
        }
        _ => StoreError::Sqlite { op, source },
    }
}

/// A count that SQLite's signed 64-bit integers can hold.
fn to_i64(field: &'static str, value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::InvalidArgument { field, reason: format!("{value} does not fit in 63 bits") })
}

/// A finite, non-negative duration in seconds.
fn require_elapsed(field: &'static str, value: f64) -> Result<(), StoreError> {
    if value.is_finite() && value >= 0.0 {
        return Ok(());
    }
    Err(StoreError::InvalidArgument { field, reason: format!("{value} is not a finite, non-negative number of seconds") })
}

/// Dify matches only the first 30 characters of a log search keyword.
const KEYWORD_CHARS: usize = 30;

/// Escapes `%`, `_` and `\` for `LIKE ... ESCAPE '\'` and wraps in `%...%`.
pub(crate) fn like_pattern(keyword: &str) -> String {
    let mut pattern = String::with_capacity(keyword.len() + 2);
    pattern.push('%');
    for c in keyword.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// Marks runs a previous daemon left `running` as `failed`.
pub(crate) fn recover_running(conn: &Connection) -> Result<u64, StoreError> {
    let fixed = conn
        .execute(
            "UPDATE workflow_runs SET status = 'failed', error = ?1, finished_at = ?2 WHERE status = 'running'",
            params![INTERRUPTED_RUN_ERROR, now()],
        )
        .map_err(sql("recover running workflow runs"))?;
    Ok(fixed as u64)
}

/// A workflow run's write, or a message answered without generation (a
/// response-cache hit); each is one writer job, committed with its group.
pub(super) enum RunWrite {
    Begin {
        run: NewWorkflowRun,
        /// An advanced-chat run's message, and the name of the conversation
        /// it starts, if it starts one: written with the run.
        chat: Option<(super::NewMessage, Option<String>)>,
    },
    Finish {
        id: String,
        outcome: WorkflowRunOutcome,
        /// `outcome.total_tokens`, checked to fit SQLite's integers.
        total_tokens: i64,
        /// Each node with its checked `total_tokens`.
        nodes: Vec<(NodeExecutionRecord, i64)>,
    },
    Answered {
        message: super::NewMessage,
        /// The name of the conversation it starts, if it starts one.
        new_conversation: Option<String>,
        outcome: super::MessageOutcome,
        /// `outcome.latency_ms`, checked to fit SQLite's integers.
        latency_ms: i64,
    },
}

impl RunWrite {
    fn apply(self, conn: &Connection) -> Result<(), StoreError> {
        match self {
            RunWrite::Begin { run, chat: None } => begin_in(conn, run),
            RunWrite::Begin { run, chat: Some((message, new_conversation)) } => {
                if let Some(name) = &new_conversation {
                    require_app(conn, &message.app_id)?;
                    super::messages::insert_started_conversation(conn, &message, name, now())?;
                }
                begin_in(conn, run)?;
                super::messages::begin_message_in(conn, message)
            }
            RunWrite::Finish { id, outcome, total_tokens, nodes } => finish_in(conn, id, outcome, total_tokens, nodes),
            RunWrite::Answered { message, new_conversation, outcome, latency_ms } => {
                super::messages::answered_in(conn, message, new_conversation, outcome, latency_ms)
            }
        }
    }
}

/// The checks of a new run that need no SQL.
fn check_new_run(run: &NewWorkflowRun) -> Result<(), StoreError> {
    require_non_empty("workflow run id", &run.id)?;
    require_non_empty("user", &run.user)?;
    require_non_empty("triggered_from", &run.triggered_from)?;
    require_json("inputs", &run.inputs_json)
}

fn begin_in(conn: &Connection, run: NewWorkflowRun) -> Result<(), StoreError> {
    let op = "begin workflow run";
    let workflow_id: Option<String> = conn
        .prepare_cached("SELECT workflow_id FROM app_versions WHERE app_id = ?1 AND version = ?2")
        .and_then(|mut stmt| stmt.query_row(params![run.app_id, run.app_version], |row| row.get(0)).optional())
        .map_err(sql(op))?;
    match workflow_id {
        None => {
            require_app(conn, &run.app_id)?;
            return Err(StoreError::NotFound { what: "app version", id: format!("{}@{}", run.app_id, run.app_version) });
        }
        Some(found) if found != run.workflow_id => {
            return Err(StoreError::InvalidArgument {
                field: "workflow_id",
                reason: format!("{} is not the workflow id of version {} (that is {found})", run.workflow_id, run.app_version),
            });
        }
        Some(_) => {}
    }
    let created_at_ms = now_ms();
    conn.prepare_cached(
        "INSERT INTO workflow_runs (id, app_id, app_version, workflow_id, task_id, user, conversation_id, message_id,
                                    triggered_from, inputs, status, created_at, created_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            run.id,
            run.app_id,
            run.app_version,
            run.workflow_id,
            run.task_id,
            run.user,
            run.conversation_id,
            run.message_id,
            run.triggered_from,
            run.inputs_json,
            WorkflowRunStatus::Running,
            created_at_ms.div_euclid(1000),
            created_at_ms
        ])
    })
    .map_err(insert_error(op, "workflow run", &run.id))?;
    Ok(())
}

fn finish_in(
    conn: &Connection,
    id: String,
    o: WorkflowRunOutcome,
    total_tokens: i64,
    nodes: Vec<(NodeExecutionRecord, i64)>,
) -> Result<(), StoreError> {
    let op = "finish workflow run";
    let changed = conn
        .prepare_cached(
            "UPDATE workflow_runs SET status = ?2, outputs = ?3, error = ?4, elapsed_secs = ?5, total_tokens = ?6,
                    total_steps = ?7, finished_at = ?8, exceptions_count = ?9
              WHERE id = ?1 AND status = 'running'",
        )
        .and_then(|mut stmt| {
            let exceptions = nodes.iter().filter(|(n, _)| n.status == NodeExecutionStatus::Exception).count();
            stmt.execute(params![
                id,
                o.status,
                o.outputs_json,
                o.error,
                o.elapsed_secs,
                total_tokens,
                o.total_steps,
                o.finished_at,
                exceptions
            ])
        })
        .map_err(sql(op))?;
    if changed != 1 {
        let status: Option<WorkflowRunStatus> =
            conn.query_row("SELECT status FROM workflow_runs WHERE id = ?1", [&id], |row| row.get(0)).optional().map_err(sql(op))?;
        return Err(match status {
            Some(status) => StoreError::NotPending { what: "workflow run", id, status: status.to_string() },
            None => not_found(&id),
        });
    }
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO workflow_node_executions (id, workflow_run_id, idx, node_id, node_type, title,
                    predecessor_node_id, iteration_id, iteration_index, inputs, process_data, outputs, status,
                    error, elapsed_secs, total_tokens, created_at, finished_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
        )
        .map_err(sql(op))?;
    for (n, tokens) in &nodes {
        insert
            .execute(params![
                n.id,
                id,
                n.index,
                n.node_id,
                n.node_type,
                n.title,
                n.predecessor_node_id,
                n.iteration_id,
                n.iteration_index,
                n.inputs_json,
                n.process_data_json,
                n.outputs_json,
                n.status,
                n.error,
                n.elapsed_secs,
                tokens,
                n.created_at,
                n.finished_at
            ])
            .map_err(insert_error(op, "node execution", &n.id))?;
    }
    Ok(())
}

impl Store {
    /// Runs a workflow-run write on the writer (its statements are atomic:
    /// a failure rolls back its savepoint) and waits for its group's commit.
    pub(super) async fn write_run(&self, write: RunWrite) -> Result<(), StoreError> {
        self.write("workflow run write", move |conn| write.apply(conn)).await
    }

    /// Records a workflow run as `running` when it starts. The app version
    /// must exist and `workflow_id` must be its workflow id. Scoping the
    /// conversation to the app and user is the caller's (see
    /// [`Store::get_conversation`]).
    pub async fn begin_workflow_run(&self, run: NewWorkflowRun) -> Result<(), StoreError> {
        check_new_run(&run)?;
        self.write_run(RunWrite::Begin { run, chat: None }).await
    }

    /// Records an advanced-chat run as it starts, in one write that lands
    /// whole or not at all: the conversation it starts (`new_conversation`:
    /// its name; the id is the run's `conversation_id`), the run `running`
    /// and its message `pending` (whose conversation must belong to the
    /// app and user). The run and the message must name each other.
    pub async fn begin_chatflow_run(
        &self,
        run: NewWorkflowRun,
        message: super::NewMessage,
        new_conversation: Option<String>,
    ) -> Result<(), StoreError> {
        check_new_run(&run)?;
        super::messages::check_new_message(&message)?;
        if run.message_id.as_deref() != Some(message.id.as_str()) || run.conversation_id != message.conversation_id {
            return Err(StoreError::InvalidArgument {
                field: "message_id",
                reason: format!("run {} and message {} do not name each other and one conversation", run.id, message.id),
            });
        }
        self.write_run(RunWrite::Begin { run, chat: Some((message, new_conversation)) }).await
    }

    /// Finishes a running workflow run: updating the run and inserting every
    /// node execution is atomic, so a failure (e.g. a duplicate node
    /// execution id) leaves the run `running` with no nodes. `NotFound` if
    /// the run is unknown, `NotPending` if it is no longer running (finished
    /// twice, or recovered after a crash).
    pub async fn finish_workflow_run(&self, id: &str, o: WorkflowRunOutcome, nodes: Vec<NodeExecutionRecord>) -> Result<(), StoreError> {
        if o.status == WorkflowRunStatus::Running {
            return Err(StoreError::InvalidArgument { field: "status", reason: "a finished workflow run cannot be running".into() });
        }
        require_json("outputs", &o.outputs_json)?;
        require_elapsed("elapsed_secs", o.elapsed_secs)?;
        let total_tokens = to_i64("total_tokens", o.total_tokens)?;
        let mut checked = Vec::with_capacity(nodes.len());
        for n in nodes {
            require_non_empty("node execution id", &n.id)?;
            require_json("node inputs", &n.inputs_json)?;
            require_json("node process_data", &n.process_data_json)?;
            require_json("node outputs", &n.outputs_json)?;
            require_elapsed("node elapsed_secs", n.elapsed_secs)?;
            let tokens = to_i64("node total_tokens", n.total_tokens)?;
            checked.push((n, tokens));
        }
        self.write_run(RunWrite::Finish { id: id.to_owned(), outcome: o, total_tokens, nodes: checked }).await
    }

    /// One run of `app_id` (Dify's `GET /workflows/run/{id}`); another app's
    /// run is `NotFound` like an unknown one.
    pub async fn get_workflow_run(&self, app_id: &str, id: &str) -> Result<WorkflowRunRecord, StoreError> {
        let (app_id, id) = (app_id.to_owned(), id.to_owned());
        self.read("get workflow run", move |conn| {
            conn.prepare_cached(&format!("SELECT {RUN_COLUMNS} FROM workflow_runs WHERE id = ?1 AND app_id = ?2"))
                .and_then(|mut stmt| stmt.query_row([&id, &app_id], run_from_row).optional())
                .map_err(sql("get workflow run"))?
                .ok_or_else(|| not_found(&id))
        })
        .await
    }

    /// The node executions of a run, by index (empty while it runs or for an
    /// unknown run: scope the run with [`Store::get_workflow_run`] first).
    pub async fn workflow_node_executions(&self, run_id: &str) -> Result<Vec<NodeExecutionRecord>, StoreError> {
        let run_id = run_id.to_owned();
        self.read("workflow node executions", move |conn| {
            let op = "workflow node executions";
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {NODE_COLUMNS} FROM workflow_node_executions WHERE workflow_run_id = ?1 ORDER BY idx, rowid"
                ))
                .map_err(sql(op))?;
            let rows = stmt.query_map([&run_id], node_from_row).map_err(sql(op))?;
            rows.collect::<Result<Vec<_>, _>>().map_err(sql(op))
        })
        .await
    }

    /// Dify's `GET /workflows/logs`: one page of `app_id`'s runs matching
    /// `filter`, newest first, and how many match in all. Count and page
    /// come from one snapshot.
    pub async fn list_workflow_runs(&self, app_id: &str, filter: WorkflowLogFilter) -> Result<(Vec<WorkflowRunRecord>, u64), StoreError> {
        if filter.page == 0 {
            return Err(StoreError::InvalidArgument { field: "page", reason: "must be at least 1".into() });
        }
        require_limit(filter.limit)?;
        let app_id = app_id.to_owned();
        let offset = i64::from(filter.page - 1) * i64::from(filter.limit);
        let keyword: Option<String> = filter.keyword.as_deref().filter(|k| !k.is_empty()).map(|k| k.chars().take(KEYWORD_CHARS).collect());
        let pattern = keyword.as_deref().map(like_pattern);
        self.read("list workflow runs", move |conn| {
            let op = "list workflow runs";
            const WHERE: &str = "WHERE app_id = ?1
                  AND (?2 IS NULL OR status = ?2)
                  AND (?3 IS NULL OR inputs LIKE ?3 ESCAPE '\\' OR outputs LIKE ?3 ESCAPE '\\' OR user LIKE ?3 ESCAPE '\\'
                       OR id = ?7)
                  AND (?4 IS NULL OR user = ?4)
                  AND (?5 IS NULL OR created_at >= ?5)
                  AND (?6 IS NULL OR created_at <= ?6)";
            let snapshot = conn.unchecked_transaction().map_err(sql(op))?;
            require_app(&snapshot, &app_id)?;
            let total: u64 = snapshot
                .prepare_cached(&format!("SELECT count(*) FROM workflow_runs {WHERE}"))
                .and_then(|mut stmt| {
                    stmt.query_row(
                        params![app_id, filter.status, pattern, filter.user, filter.created_after, filter.created_before, keyword],
                        |row| row.get(0),
                    )
                })
                .map_err(sql(op))?;
            let mut stmt = snapshot
                .prepare_cached(&format!(
                    "SELECT {RUN_COLUMNS} FROM workflow_runs {WHERE}
                      ORDER BY created_at_ms DESC, rowid DESC LIMIT ?8 OFFSET ?9"
                ))
                .map_err(sql(op))?;
            let rows = stmt
                .query_map(
                    params![
                        app_id,
                        filter.status,
                        pattern,
                        filter.user,
                        filter.created_after,
                        filter.created_before,
                        keyword,
                        filter.limit,
                        offset
                    ],
                    run_from_row,
                )
                .map_err(sql(op))?;
            let page = rows.collect::<Result<Vec<_>, _>>().map_err(sql(op))?;
            Ok((page, total))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::store::testutil::{hold_writer, open_store, wait_for, TestStore};

    /// Puts app `app_id` and returns its version 1's workflow id.
    async fn app(store: &Store, app_id: &str) -> String {
        store.put_app(app_id, app_id, "workflow", r#"{"graph":{}}"#, "import").await.expect("app").workflow_id
    }

    fn new_run(id: &str, app_id: &str, workflow_id: &str) -> NewWorkflowRun {
        NewWorkflowRun {
            id: id.into(),
            app_id: app_id.into(),
            app_version: 1,
            workflow_id: workflow_id.into(),
            task_id: format!("task-{id}"),
            user: "u1".into(),
            conversation_id: None,
            message_id: None,
            inputs_json: format!(r#"{{"query":"input of {id}"}}"#),
            triggered_from: "app-run".into(),
        }
    }

    fn outcome(status: WorkflowRunStatus) -> WorkflowRunOutcome {
        WorkflowRunOutcome {
            status,
            outputs_json: r#"{"answer":"done"}"#.into(),
            error: None,
            elapsed_secs: 0.25,
            total_tokens: 42,
            total_steps: 2,
            finished_at: 1_700_000_100,
        }
    }

    fn node(id: &str, index: u32, node_id: &str) -> NodeExecutionRecord {
        NodeExecutionRecord {
            id: id.into(),
            index,
            node_id: node_id.into(),
            node_type: "llm".into(),
            title: format!("Node {node_id}"),
            predecessor_node_id: None,
            iteration_id: None,
            iteration_index: None,
            inputs_json: r#"{"x":1}"#.into(),
            process_data_json: "null".into(),
            outputs_json: r#"{"text":"hi"}"#.into(),
            status: NodeExecutionStatus::Succeeded,
            error: None,
            elapsed_secs: 0.125,
            total_tokens: 21,
            created_at: 1_700_000_000,
            finished_at: 1_700_000_001,
        }
    }

    /// Sets a run's `created_at` (and `created_at_ms`) for the log tests.
    async fn set_created(store: &Store, id: &str, created_at: i64) {
        let id = id.to_owned();
        store
            .write("test: set created", move |conn| {
                conn.execute("UPDATE workflow_runs SET created_at = ?2, created_at_ms = ?2 * 1000 WHERE id = ?1", params![id, created_at])
                    .map_err(sql("set created"))
            })
            .await
            .expect("set created");
    }

    async fn count(store: &Store, table: &'static str) -> i64 {
        store
            .read("test: count", move |conn| {
                conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0)).map_err(sql("count"))
            })
            .await
            .expect("count")
    }

    #[test]
    fn statuses_parse_difys_spelling() {
        for status in [
            WorkflowRunStatus::Running,
            WorkflowRunStatus::Succeeded,
            WorkflowRunStatus::Failed,
            WorkflowRunStatus::Stopped,
            WorkflowRunStatus::PartialSucceeded,
        ] {
            assert_eq!(WorkflowRunStatus::parse(status.as_str()).expect("parse"), status);
        }
        assert_eq!(WorkflowRunStatus::PartialSucceeded.to_string(), "partial-succeeded");
        for bad in ["", "Succeeded", "partial_succeeded", "done"] {
            let err = WorkflowRunStatus::parse(bad).expect_err(bad);
            assert!(matches!(err, StoreError::InvalidArgument { field: "status", .. }), "{err:?}");
        }
    }

    #[test]
    fn like_patterns_match_percent_and_underscore_literally() {
        assert_eq!(like_pattern("a%b_c\\d"), "%a\\%b\\_c\\\\d%");
        assert_eq!(like_pattern("plain"), "%plain%");
    }

    #[tokio::test]
    async fn a_run_begins_running_and_finishes_with_its_nodes() {
        let TestStore { store, _dir } = open_store();
        let workflow_id = app(&store, "a1").await;
        let conversation = store.create_conversation("a1", "u1", "c", "{}").await.expect("conversation");
        let mut run = new_run("r1", "a1", &workflow_id);
        run.conversation_id = Some(conversation.id.clone());
        run.message_id = Some("m1".into());
        store.begin_workflow_run(run.clone()).await.expect("begin");

        let started = store.get_workflow_run("a1", "r1").await.expect("get running");
        assert_eq!(started.status, WorkflowRunStatus::Running);
        assert_eq!((started.app_version, started.workflow_id.as_str(), started.task_id.as_str()), (1, workflow_id.as_str(), "task-r1"));
        assert_eq!((started.conversation_id.as_deref(), started.message_id.as_deref()), (Some(conversation.id.as_str()), Some("m1")));
        assert_eq!((started.inputs_json.as_str(), started.triggered_from.as_str()), (run.inputs_json.as_str(), "app-run"));
        assert_eq!((started.outputs_json, started.error, started.finished_at), (None, None, None));
        assert_eq!((started.elapsed_secs, started.total_tokens, started.total_steps, started.exceptions_count), (0.0, 0, 0, 0));
        assert!(started.created_at > 0 && started.created_at_ms / 1000 == started.created_at);
        assert!(store.workflow_node_executions("r1").await.expect("no nodes yet").is_empty());

        // Nodes arrive out of order; they are read back by index.
        let mut second = node("n2", 2, "answer");
        second.node_type = "answer".into();
        second.predecessor_node_id = Some("llm".into());
        second.iteration_id = Some("it".into());
        second.iteration_index = Some(3);
        second.status = NodeExecutionStatus::Exception;
        second.error = Some("handled".into());
        second.total_tokens = u64::MAX >> 1;
        let first = node("n1", 1, "llm");
        let mut done = outcome(WorkflowRunStatus::PartialSucceeded);
        done.error = Some("one node failed".into());
        store.finish_workflow_run("r1", done.clone(), vec![second.clone(), first.clone()]).await.expect("finish");

        let finished = store.get_workflow_run("a1", "r1").await.expect("get finished");
        assert_eq!(finished.status, WorkflowRunStatus::PartialSucceeded);
        assert_eq!(finished.outputs_json.as_deref(), Some(r#"{"answer":"done"}"#));
        assert_eq!(finished.error.as_deref(), Some("one node failed"));
        assert_eq!((finished.elapsed_secs, finished.total_tokens, finished.total_steps, finished.exceptions_count), (0.25, 42, 2, 1));
        assert_eq!(finished.finished_at, Some(done.finished_at));
        assert_eq!((finished.created_at, finished.created_at_ms), (started.created_at, started.created_at_ms));
        assert_eq!(store.workflow_node_executions("r1").await.expect("nodes"), [first, second]);

        // Another app's run is not found; nor is an unknown one.
        app(&store, "a2").await;
        for (app_id, id) in [("a2", "r1"), ("a1", "ghost")] {
            let err = store.get_workflow_run(app_id, id).await.expect_err("not found");
            assert!(matches!(err, StoreError::NotFound { what: "workflow run", id: ref got } if got == id), "{err:?}");
        }
        assert!(store.workflow_node_executions("ghost").await.expect("unknown run").is_empty());
        store.close().await.expect("close");
    }

    #[tokio::test]
    async fn begin_rejects_bad_runs_and_writes_nothing() {
        let TestStore { store, _dir } = open_store();
        let workflow_id = app(&store, "a1").await;
        let v2 = store.put_app("a1", "a1", "workflow", r#"{"graph":{"v":2}}"#, "import").await.expect("v2").workflow_id;
        store.begin_workflow_run(new_run("r1", "a1", &workflow_id)).await.expect("begin");

        let cases: Vec<(NewWorkflowRun, &str)> = vec![
            (NewWorkflowRun { id: String::new(), ..new_run("x", "a1", &workflow_id) }, "id"),
            (NewWorkflowRun { user: String::new(), ..new_run("x", "a1", &workflow_id) }, "user"),
            (NewWorkflowRun { triggered_from: String::new(), ..new_run("x", "a1", &workflow_id) }, "triggered_from"),
            (NewWorkflowRun { inputs_json: "{oops".into(), ..new_run("x", "a1", &workflow_id) }, "inputs"),
            (new_run("x", "ghost", &workflow_id), "no app"),
            (NewWorkflowRun { app_version: 3, ..new_run("x", "a1", &workflow_id) }, "no version"),
            (NewWorkflowRun { app_version: 2, ..new_run("x", "a1", &workflow_id) }, "workflow id of another version"),
            (new_run("r1", "a1", &v2), "workflow id of another version"),
            (NewWorkflowRun { app_version: 2, ..new_run("r1", "a1", &v2) }, "duplicate"),
        ];
        for (run, case) in cases {
            let err = store.begin_workflow_run(run).await.expect_err(case);
            let ok = match case {
                "id" => matches!(err, StoreError::InvalidArgument { field: "workflow run id", .. }),
                "user" | "triggered_from" | "inputs" => matches!(err, StoreError::InvalidArgument { field, .. } if field == case),
                "no app" => matches!(err, StoreError::NotFound { what: "app", .. }),
                "no version" => matches!(err, StoreError::NotFound { what: "app version", .. }),
                "workflow id of another version" => matches!(err, StoreError::InvalidArgument { field: "workflow_id", .. }),
                "duplicate" => matches!(err, StoreError::AlreadyExists { what: "workflow run", ref id } if id == "r1"),
                _ => false,
            };
            assert!(ok, "{case}: {err:?}");
        }
        assert_eq!(count(&store, "workflow_runs").await, 1);
        let r1 = store.get_workflow_run("a1", "r1").await.expect("first run untouched");
        assert_eq!((r1.app_version, r1.workflow_id.as_str()), (1, workflow_id.as_str()));
        // A run of version 2 with version 2's workflow id is fine.
        store.begin_workflow_run(NewWorkflowRun { app_version: 2, ..new_run("r2", "a1", &v2) }).await.expect("v2 run");
        store.close().await.expect("close");
    }

    /// A failure inside the finishing transaction rolls all of it back.
    #[tokio::test]
    async fn finish_is_one_transaction() {
        let TestStore { store, _dir } = open_store();
        let workflow_id = app(&store, "a1").await;
        store.begin_workflow_run(new_run("r1", "a1", &workflow_id)).await.expect("begin r1");
        store.begin_workflow_run(new_run("r2", "a1", &workflow_id)).await.expect("begin r2");
        store.finish_workflow_run("r2", outcome(WorkflowRunStatus::Succeeded), vec![node("taken", 1, "start")]).await.expect("finish r2");

        // The third node repeats the first node's id: the run's update and the
        // first two inserts must be undone.
        let batch = vec![node("n1", 1, "start"), node("n2", 2, "llm"), node("n1", 3, "end")];
        let err = store.finish_workflow_run("r1", outcome(WorkflowRunStatus::Succeeded), batch).await.expect_err("duplicate");
        assert!(matches!(err, StoreError::AlreadyExists { what: "node execution", ref id } if id == "n1"), "{err:?}");
        // An id already used by another run fails the same way.
        let batch = vec![node("n1", 1, "start"), node("taken", 2, "llm")];
        let err = store.finish_workflow_run("r1", outcome(WorkflowRunStatus::Succeeded), batch).await.expect_err("taken");
        assert!(matches!(err, StoreError::AlreadyExists { what: "node execution", ref id } if id == "taken"), "{err:?}");

        let r1 = store.get_workflow_run("a1", "r1").await.expect("get");
        assert_eq!((r1.status, r1.outputs_json, r1.finished_at), (WorkflowRunStatus::Running, None, None));
        assert!(store.workflow_node_executions("r1").await.expect("nodes").is_empty());
        assert_eq!(count(&store, "workflow_node_executions").await, 1, "only r2's node");

        // The run can still finish properly.
        let batch = vec![node("n1", 1, "start"), node("n2", 2, "llm")];
        store.finish_workflow_run("r1", outcome(WorkflowRunStatus::Failed), batch).await.expect("finish");
        assert_eq!(store.get_workflow_run("a1", "r1").await.expect("get").status, WorkflowRunStatus::Failed);
        assert_eq!(store.workflow_node_executions("r1").await.expect("nodes").len(), 2);
        store.close().await.expect("close");
    }

    #[tokio::test]
    async fn finish_rejects_bad_outcomes_and_finished_runs() {
        let TestStore { store, _dir } = open_store();
        let workflow_id = app(&store, "a1").await;
        store.begin_workflow_run(new_run("r1", "a1", &workflow_id)).await.expect("begin");

        let bad_node = |f: &dyn Fn(&mut NodeExecutionRecord)| {
            let mut n = node("n1", 1, "start");
            f(&mut n);
            (outcome(WorkflowRunStatus::Succeeded), vec![n])
        };
        let bad_run = |f: &dyn Fn(&mut WorkflowRunOutcome)| {
            let mut o = outcome(WorkflowRunStatus::Succeeded);
            f(&mut o);
            (o, vec![node("n1", 1, "start")])
        };
        let cases = [
            (bad_run(&|o| o.status = WorkflowRunStatus::Running), "status"),
            (bad_run(&|o| o.outputs_json = "{".into()), "outputs"),
            (bad_run(&|o| o.elapsed_secs = f64::NAN), "elapsed_secs"),
            (bad_run(&|o| o.elapsed_secs = -1.0), "elapsed_secs"),
            (bad_run(&|o| o.total_tokens = u64::MAX), "total_tokens"),
            (bad_node(&|n| n.id = String::new()), "node execution id"),
            (bad_node(&|n| n.inputs_json = String::new()), "node inputs"),
            (bad_node(&|n| n.process_data_json = "nope".into()), "node process_data"),
            (bad_node(&|n| n.outputs_json = "[".into()), "node outputs"),
            (bad_node(&|n| n.elapsed_secs = f64::INFINITY), "node elapsed_secs"),
            (bad_node(&|n| n.total_tokens = u64::MAX), "node total_tokens"),
        ];
        for ((o, nodes), field) in cases {
            let err = store.finish_workflow_run("r1", o, nodes).await.expect_err(field);
            assert!(matches!(err, StoreError::InvalidArgument { field: f, .. } if f == field), "{field}: {err:?}");
        }
        assert_eq!(store.get_workflow_run("a1", "r1").await.expect("get").status, WorkflowRunStatus::Running);

        let err = store.finish_workflow_run("ghost", outcome(WorkflowRunStatus::Succeeded), vec![]).await.expect_err("unknown");
        assert!(matches!(err, StoreError::NotFound { what: "workflow run", .. }), "{err:?}");
        store.finish_workflow_run("r1", outcome(WorkflowRunStatus::Stopped), vec![]).await.expect("finish without nodes");
        let err =
            store.finish_workflow_run("r1", outcome(WorkflowRunStatus::Succeeded), vec![node("n9", 1, "x")]).await.expect_err("twice");
        assert!(matches!(err, StoreError::NotPending { what: "workflow run", ref status, .. } if status == "stopped"), "{err:?}");
        assert_eq!(store.get_workflow_run("a1", "r1").await.expect("get").status, WorkflowRunStatus::Stopped);
        assert_eq!(count(&store, "workflow_node_executions").await, 0);
        store.close().await.expect("close");
    }

    /// A chatflow's start is one write: its new conversation, run and
    /// pending message land together, and a refused part (a duplicate
    /// message id) leaves none of them behind.
    #[tokio::test]
    async fn a_chatflow_start_lands_whole_or_not_at_all() {
        let TestStore { store, _dir } = open_store();
        let workflow_id = app(&store, "a1").await;
        let chat = |run: &str, message: &str, conversation: &str| {
            let mut r = new_run(run, "a1", &workflow_id);
            (r.conversation_id, r.message_id) = (Some(conversation.to_owned()), Some(message.to_owned()));
            let m = crate::store::NewMessage {
                id: message.into(),
                app_id: "a1".into(),
                conversation_id: Some(conversation.into()),
                user: "u1".into(),
                task_id: format!("task-{run}"),
                query: "hi".into(),
                inputs_json: "{}".into(),
            };
            (r, m)
        };
        let (run, message) = chat("r1", "m1", "c1");
        store.begin_chatflow_run(run, message, Some("hi".into())).await.expect("first start");
        assert_eq!(store.get_conversation("a1", "u1", "c1").await.expect("conversation").name, "hi");
        assert_eq!(store.get_workflow_run("a1", "r1").await.expect("run").status, WorkflowRunStatus::Running);

        let (run, message) = chat("r2", "m1", "c2");
        let err = store.begin_chatflow_run(run, message, Some("again".into())).await.expect_err("duplicate message");
        assert!(matches!(err, StoreError::AlreadyExists { what: "message", .. }), "{err:?}");
        assert!(matches!(store.get_conversation("a1", "u1", "c2").await, Err(StoreError::NotFound { .. })), "no conversation left behind");
        assert!(matches!(store.get_workflow_run("a1", "r2").await, Err(StoreError::NotFound { .. })), "no run left behind");

        let (run, mut message) = chat("r3", "m3", "c1");
        message.conversation_id = None;
        let err = store.begin_chatflow_run(run, message, None).await.expect_err("mismatch");
        assert!(matches!(err, StoreError::InvalidArgument { field: "message_id", .. }), "{err:?}");
        assert_eq!(count(&store, "workflow_runs").await, 1);
        store.close().await.expect("close");
    }

    /// Writes that wait together are committed together, yet each succeeds
    /// or fails on its own: a failing finish in the group leaves its run
    /// running and the others' writes in place.
    #[tokio::test]
    async fn a_group_commit_keeps_each_write_atomic_and_separate() {
        let TestStore { store, _dir } = open_store();
        let workflow_id = app(&store, "a1").await;
        store.begin_workflow_run(new_run("r1", "a1", &workflow_id)).await.expect("begin r1");
        store.begin_workflow_run(new_run("r2", "a1", &workflow_id)).await.expect("begin r2");
        // Every write below is queued while the writer sleeps, so one job commits them all.
        store.occupy_writer(Duration::from_millis(300)).expect("occupy");
        let (ok_finish, bad_finish, new_begin, dup_begin, late_finish) = tokio::join!(
            store.finish_workflow_run("r1", outcome(WorkflowRunStatus::Succeeded), vec![node("a", 1, "start"), node("b", 2, "end")]),
            store.finish_workflow_run("r2", outcome(WorkflowRunStatus::Succeeded), vec![node("c", 1, "start"), node("c", 2, "end")]),
            store.begin_workflow_run(new_run("r3", "a1", &workflow_id)),
            store.begin_workflow_run(new_run("r1", "a1", &workflow_id)),
            store.finish_workflow_run("r1", outcome(WorkflowRunStatus::Failed), vec![node("d", 1, "start")]),
        );
        ok_finish.expect("r1 finishes");
        assert!(matches!(bad_finish, Err(StoreError::AlreadyExists { what: "node execution", .. })), "{bad_finish:?}");
        new_begin.expect("r3 begins");
        assert!(matches!(dup_begin, Err(StoreError::AlreadyExists { what: "workflow run", .. })), "{dup_begin:?}");
        // Writes run in the order they were queued: r1 was finished just before.
        assert!(matches!(late_finish, Err(StoreError::NotPending { ref status, .. }) if status == "succeeded"), "{late_finish:?}");

        let status = |id: &'static str| {
            let store = store.clone();
            async move { store.get_workflow_run("a1", id).await.expect("get").status }
        };
        assert_eq!(status("r1").await, WorkflowRunStatus::Succeeded);
        assert_eq!(status("r2").await, WorkflowRunStatus::Running);
        assert_eq!(status("r3").await, WorkflowRunStatus::Running);
        let ids: Vec<String> = store.workflow_node_executions("r1").await.expect("nodes").into_iter().map(|n| n.id).collect();
        assert_eq!(ids, ["a", "b"]);
        assert!(store.workflow_node_executions("r2").await.expect("nodes").is_empty());
        assert_eq!(count(&store, "workflow_node_executions").await, 2);
        store.close().await.expect("close");
    }

    /// Writes wait in the bounded writer queue, and a closed store refuses.
    #[tokio::test]
    async fn a_full_group_is_busy_and_a_closed_store_refuses() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = crate::store::StoreOptions { write_queue: 2, ..crate::store::StoreOptions::default() };
        let (store, _) = Store::open_with(&dir.path().join("edgeai.db"), options).expect("open");
        let workflow_id = app(&store, "a1").await;
        // The writer runs a job that waits for a release, so the queue's two
        // places are all there is.
        let release = hold_writer(&store).await;
        let (a, b, c) = tokio::join!(
            store.begin_workflow_run(new_run("r1", "a1", &workflow_id)),
            store.begin_workflow_run(new_run("r2", "a1", &workflow_id)),
            async {
                let c = store.begin_workflow_run(new_run("r3", "a1", &workflow_id)).await;
                release.send(()).expect("release");
                c
            },
        );
        a.expect("r1");
        b.expect("r2");
        assert!(matches!(c, Err(StoreError::Busy)), "{c:?}");
        // Once the group is committed there is room again.
        store.begin_workflow_run(new_run("r3", "a1", &workflow_id)).await.expect("r3 after the group");
        assert_eq!(count(&store, "workflow_runs").await, 3);

        let other = store.clone();
        store.close().await.expect("close");
        let err = other.begin_workflow_run(new_run("r4", "a1", &workflow_id)).await.expect_err("closed");
        assert!(matches!(err, StoreError::Closed), "{err:?}");
        let err = other.finish_workflow_run("r1", outcome(WorkflowRunStatus::Succeeded), vec![]).await.expect_err("closed");
        assert!(matches!(err, StoreError::Closed), "{err:?}");
    }

    /// A write the full writer queue refuses is answered at once instead of
    /// left waiting, and the next one commits.
    #[tokio::test]
    async fn a_refused_write_fails_fast_and_the_next_one_commits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = crate::store::StoreOptions { write_queue: 1, ..crate::store::StoreOptions::default() };
        let (store, _) = Store::open_with(&dir.path().join("edgeai.db"), options).expect("open");
        let workflow_id = app(&store, "a1").await;
        // The writer runs one job that waits for a release; another fills the queue.
        let release = hold_writer(&store).await;
        store.submit(Box::new(|_| crate::store::writer::Done::unanswered(true))).expect("fills the queue");

        let err = tokio::time::timeout(Duration::from_secs(5), store.begin_workflow_run(new_run("r1", "a1", &workflow_id)))
            .await
            .expect("answered at once, not left waiting")
            .expect_err("queue full");
        assert!(matches!(err, StoreError::Busy), "{err:?}");
        release.send(()).expect("release");
        wait_for(|| async { store.ping_writer().await.ok() }).await;
        store.begin_workflow_run(new_run("r1", "a1", &workflow_id)).await.expect("the next group commits");
        assert_eq!(count(&store, "workflow_runs").await, 1);
        store.close().await.expect("close");
    }

    /// Close flushes the writer queue, so a run write queued before close lands.
    #[tokio::test]
    async fn a_run_write_queued_before_close_lands() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("edgeai.db");
        let (store, _) = Store::open(&path).expect("open");
        let workflow_id = app(&store, "a1").await;
        store.occupy_writer(Duration::from_millis(100)).expect("occupy");
        let queued = tokio::spawn({
            let (store, workflow_id) = (store.clone(), workflow_id.clone());
            async move { store.begin_workflow_run(new_run("r1", "a1", &workflow_id)).await }
        });
        tokio::task::yield_now().await;
        store.close().await.expect("close");
        queued.await.expect("join").expect("the queued write landed");
        let (store, report) = Store::open(&path).expect("reopen");
        assert_eq!(report.recovered_workflow_runs, 1, "the run was written (and, never finished, is recovered)");
        assert_eq!(store.get_workflow_run("a1", "r1").await.expect("get").status, WorkflowRunStatus::Failed);
        store.close().await.expect("close");
    }

    /// Every filter alone and combined, and paging, against an expectation
    /// computed in Rust.
    #[tokio::test]
    async fn logs_filter_and_page() {
        let TestStore { store, _dir } = open_store();
        let workflow_id = app(&store, "a1").await;
        let other = app(&store, "a2").await;
        let statuses =
            [WorkflowRunStatus::Succeeded, WorkflowRunStatus::Failed, WorkflowRunStatus::Stopped, WorkflowRunStatus::PartialSucceeded];
        // Runs r0..r11: created at 1000 + 10 i (r5 and r6 tie at 1050: insertion
        // order decides), user u0/u1/u2, status by i % 4 (r11 still running).
        let mut runs = Vec::new();
        for i in 0..12_usize {
            let id = format!("r{i}");
            let mut run = new_run(&id, "a1", &workflow_id);
            run.user = format!("u{}", i % 3);
            run.inputs_json = match i {
                3 => r#"{"q":"100% sure"}"#.into(),
                4 => r#"{"q":"100 percent"}"#.into(),
                7 => r#"{"q":"snake_case"}"#.into(),
                8 => r#"{"q":"snakeXcase"}"#.into(),
                _ => format!(r#"{{"q":"plain {i}"}}"#),
            };
            store.begin_workflow_run(run).await.expect("begin");
            let created = if i == 6 { 1050 } else { 1000 + 10 * i as i64 };
            set_created(&store, &id, created).await;
            let status = if i == 11 { WorkflowRunStatus::Running } else { statuses[i % 4] };
            if status != WorkflowRunStatus::Running {
                let mut o = outcome(status);
                o.outputs_json = if i == 9 { r#"{"answer":"NEEDLE in outputs"}"#.into() } else { "{}".into() };
                store.finish_workflow_run(&id, o, vec![]).await.expect("finish");
            }
            runs.push((id, format!("u{}", i % 3), status, created));
        }
        store.begin_workflow_run(new_run("elsewhere", "a2", &other)).await.expect("other app's run");

        // Newest first; r6 was inserted after r5 with the same time, so it comes first.
        let newest_first: Vec<usize> = vec![11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0];
        let filter = |f: &dyn Fn(&mut WorkflowLogFilter)| {
            let mut filter = WorkflowLogFilter {
                status: None,
                keyword: None,
                user: None,
                created_after: None,
                created_before: None,
                page: 1,
                limit: 100,
            };
            f(&mut filter);
            filter
        };
        let cases: Vec<(WorkflowLogFilter, Vec<usize>)> = vec![
            (filter(&|_| {}), newest_first.clone()),
            (filter(&|f| f.status = Some(WorkflowRunStatus::Failed)), vec![9, 5, 1]),
            (filter(&|f| f.status = Some(WorkflowRunStatus::PartialSucceeded)), vec![7, 3]),
            (filter(&|f| f.status = Some(WorkflowRunStatus::Running)), vec![11]),
            (filter(&|f| f.user = Some("u1".into())), vec![10, 7, 4, 1]),
            (filter(&|f| f.user = Some("nobody".into())), vec![]),
            (filter(&|f| f.created_after = Some(1080)), vec![11, 10, 9, 8]),
            (filter(&|f| f.created_before = Some(1020)), vec![2, 1, 0]),
            (filter(&|f| (f.created_after, f.created_before) = (Some(1050), Some(1050))), vec![6, 5]),
            (filter(&|f| f.keyword = Some("100%".into())), vec![3]),
            (filter(&|f| f.keyword = Some("100".into())), vec![4, 3]),
            (filter(&|f| f.keyword = Some("snake_case".into())), vec![7]),
            (filter(&|f| f.keyword = Some("needle".into())), vec![9]),
            // The user and the run id match too, as in Dify.
            (filter(&|f| f.keyword = Some("U2".into())), vec![11, 8, 5, 2]),
            (filter(&|f| f.keyword = Some("r10".into())), vec![10]),
            (filter(&|f| f.keyword = Some("r1".into())), vec![1]),
            // Only the first 30 characters count.
            (filter(&|f| f.keyword = Some(format!("NEEDLE in outputs{}", "x".repeat(13)))), vec![]),
            (filter(&|f| f.keyword = Some(format!("{}{}", r#"{"answer":"NEEDLE in outputs"}"#, "not in any run"))), vec![9]),
            (filter(&|f| f.keyword = Some(String::new())), newest_first.clone()),
            (filter(&|f| f.keyword = Some("\\".into())), vec![]),
            (
                filter(&|f| {
                    f.status = Some(WorkflowRunStatus::Succeeded);
                    f.user = Some("u1".into());
                    f.created_after = Some(1040);
                }),
                vec![4],
            ),
            (
                filter(&|f| {
                    f.keyword = Some("plain".into());
                    f.user = Some("u2".into());
                    f.created_before = Some(1100);
                }),
                vec![5, 2],
            ),
        ];
        for (f, want) in cases {
            // The expectation agrees with the runs' own data.
            for &i in &want {
                let (_, user, status, created) = &runs[i];
                assert!(f.status.iter().all(|s| s == status) && f.user.iter().all(|u| u == user), "case {f:?}");
                assert!(f.created_after.iter().all(|a| created >= a) && f.created_before.iter().all(|b| created <= b), "case {f:?}");
            }
            let (page, total) = store.list_workflow_runs("a1", f.clone()).await.expect("list");
            let got: Vec<&str> = page.iter().map(|r| r.id.as_str()).collect();
            let want_ids: Vec<&str> = want.iter().map(|&i| runs[i].0.as_str()).collect();
            assert_eq!(got, want_ids, "{f:?}");
            assert_eq!(total, want.len() as u64, "{f:?}");
            assert!(page.iter().all(|r| r.app_id == "a1"));
        }

        // Paging: every page size walks the same order, with the full total.
        for limit in [1_u32, 2, 5, 12] {
            let mut seen = Vec::new();
            for page in 1..=13 {
                let (rows, total) = store.list_workflow_runs("a1", filter(&|f| (f.page, f.limit) = (page, limit))).await.expect("page");
                assert_eq!(total, 12);
                assert!(rows.len() <= limit as usize);
                seen.extend(rows.into_iter().map(|r| r.id));
            }
            let want: Vec<String> = newest_first.iter().map(|&i| runs[i].0.clone()).collect();
            assert_eq!(seen, want, "limit {limit}");
        }
        let (rows, total) = store.list_workflow_runs("a1", filter(&|f| (f.page, f.limit) = (99, 100))).await.expect("past the end");
        assert!(rows.is_empty());
        assert_eq!(total, 12);
        let (rows, total) = store.list_workflow_runs("a2", filter(&|_| {})).await.expect("other app");
        assert_eq!((rows.len(), total), (1, 1));

        for (f, field) in [(filter(&|f| f.page = 0), "page"), (filter(&|f| f.limit = 0), "limit"), (filter(&|f| f.limit = 101), "limit")] {
            let err = store.list_workflow_runs("a1", f).await.expect_err(field);
            assert!(matches!(err, StoreError::InvalidArgument { field: got, .. } if got == field), "{err:?}");
        }
        let err = store.list_workflow_runs("ghost", filter(&|_| {})).await.expect_err("no app");
        assert!(matches!(err, StoreError::NotFound { what: "app", .. }), "{err:?}");
        store.close().await.expect("close");
    }

    /// Throughput of begin + finish with 7 nodes, as the engine writes them.
    /// Prints the rate; asserts only that every row landed (machines are noisy).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_thousand_runs_of_seven_nodes() {
        const RUNS: usize = 2_000;
        const IN_FLIGHT: usize = 16;
        let TestStore { store, _dir } = open_store();
        let workflow_id = app(&store, "a1").await;
        let started = Instant::now();
        let mut tasks = Vec::new();
        for worker in 0..IN_FLIGHT {
            let (store, workflow_id) = (store.clone(), workflow_id.clone());
            tasks.push(tokio::spawn(async move {
                for i in (worker..RUNS).step_by(IN_FLIGHT) {
                    let id = uuid::Uuid::new_v4().to_string();
                    store.begin_workflow_run(new_run(&id, "a1", &workflow_id)).await?;
                    let nodes = (1..=7).map(|n| node(&uuid::Uuid::new_v4().to_string(), n, &format!("node{n}"))).collect();
                    let mut o = outcome(WorkflowRunStatus::Succeeded);
                    o.total_steps = 7;
                    o.outputs_json = format!(r#"{{"answer":"run {i}"}}"#);
                    store.finish_workflow_run(&id, o, nodes).await?;
                }
                Ok::<_, StoreError>(())
            }));
        }
        for task in tasks {
            task.await.expect("join").expect("every run lands");
        }
        let elapsed = started.elapsed();
        eprintln!(
            "store: {RUNS} workflow runs of 7 nodes (begin + finish, {IN_FLIGHT} in flight) in {:.3} s = {:.0} runs/s",
            elapsed.as_secs_f64(),
            RUNS as f64 / elapsed.as_secs_f64()
        );
        assert_eq!(count(&store, "workflow_runs").await, RUNS as i64);
        assert_eq!(count(&store, "workflow_node_executions").await, RUNS as i64 * 7);
        store.close().await.expect("close");
    }
}
