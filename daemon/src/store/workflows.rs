//! Workflow runs and their node executions (Dify's `workflow_runs` and
//! `workflow_node_executions`).
//!
//! Owns: both tables. A run is inserted `running` when it starts and
//! finished by ONE transaction that updates the run and inserts every node
//! execution, so a run is either running with no nodes or finished with all
//! of them. [`Store::open`] marks runs still `running` (the daemon died
//! mid-run) as `failed`. Inputs, outputs and process data are opaque JSON
//! text here. Must not touch: apps, conversations, messages (a run names its
//! conversation and message but does not own them).

use std::fmt;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{params, Connection, ErrorCode, OptionalExtension, Row, TransactionBehavior};

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

impl WorkflowRunStatus {
    /// The stored (and Dify) spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Stopped => "stopped",
            Self::PartialSucceeded => "partial-succeeded",
        }
    }

    /// Parses Dify's spelling (`GET /workflows/logs?status=`).
    pub fn parse(s: &str) -> Result<Self, StoreError> {
        [Self::Running, Self::Succeeded, Self::Failed, Self::Stopped, Self::PartialSucceeded]
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| StoreError::InvalidArgument {
                field: "status",
                reason: format!("{s:?} is not one of running, succeeded, failed, stopped, partial-succeeded"),
            })
    }
}

impl fmt::Display for WorkflowRunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ToSql for WorkflowRunStatus {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(self.as_str().into())
    }
}

impl FromSql for WorkflowRunStatus {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        Self::parse(value.as_str()?).map_err(|e| FromSqlError::Other(e.to_string().into()))
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

impl NodeExecutionStatus {
    /// The stored (and Dify) spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Stopped => "stopped",
            Self::Exception => "exception",
        }
    }
}

impl fmt::Display for NodeExecutionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ToSql for NodeExecutionStatus {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(self.as_str().into())
    }
}

impl FromSql for NodeExecutionStatus {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        match value.as_str()? {
            "succeeded" => Ok(Self::Succeeded),
            "failed" => Ok(Self::Failed),
            "stopped" => Ok(Self::Stopped),
            "exception" => Ok(Self::Exception),
            other => Err(FromSqlError::Other(format!("unknown node execution status {other:?}").into())),
        }
    }
}

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
    /// Only runs whose inputs or outputs text contains this (case-insensitive
    /// for ASCII; `%` and `_` match literally).
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
        inputs, outputs, status, error, elapsed_secs, total_tokens, total_steps, created_at, created_at_ms, finished_at";

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
        created_at: row.get(16)?,
        created_at_ms: row.get(17)?,
        finished_at: row.get(18)?,
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

/// Escapes `%`, `_` and `\` for `LIKE ... ESCAPE '\'` and wraps in `%...%`.
fn like_pattern(keyword: &str) -> String {
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

impl Store {
    /// Records a workflow run as `running` when it starts. The app version
    /// must exist and `workflow_id` must be its workflow id. Scoping the
    /// conversation to the app and user is the caller's (see
    /// [`Store::get_conversation`]).
    pub async fn begin_workflow_run(&self, run: NewWorkflowRun) -> Result<(), StoreError> {
        require_non_empty("workflow run id", &run.id)?;
        require_non_empty("user", &run.user)?;
        require_non_empty("triggered_from", &run.triggered_from)?;
        require_json("inputs", &run.inputs_json)?;
        self.write("begin workflow run", move |conn| {
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
        })
        .await
    }

    /// Finishes a running workflow run: ONE transaction updates the run and
    /// inserts every node execution, so a failure (e.g. a duplicate node
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
        let mut node_tokens = Vec::with_capacity(nodes.len());
        for n in &nodes {
            require_non_empty("node execution id", &n.id)?;
            require_json("node inputs", &n.inputs_json)?;
            require_json("node process_data", &n.process_data_json)?;
            require_json("node outputs", &n.outputs_json)?;
            require_elapsed("node elapsed_secs", n.elapsed_secs)?;
            node_tokens.push(to_i64("node total_tokens", n.total_tokens)?);
        }
        let id = id.to_owned();
        self.write("finish workflow run", move |conn| {
            let op = "finish workflow run";
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql(op))?;
            let changed = tx
                .prepare_cached(
                    "UPDATE workflow_runs SET status = ?2, outputs = ?3, error = ?4, elapsed_secs = ?5, total_tokens = ?6,
                            total_steps = ?7, finished_at = ?8
                      WHERE id = ?1 AND status = 'running'",
                )
                .and_then(|mut stmt| {
                    stmt.execute(params![id, o.status, o.outputs_json, o.error, o.elapsed_secs, total_tokens, o.total_steps, o.finished_at])
                })
                .map_err(sql(op))?;
            if changed != 1 {
                let status: Option<WorkflowRunStatus> =
                    tx.query_row("SELECT status FROM workflow_runs WHERE id = ?1", [&id], |row| row.get(0)).optional().map_err(sql(op))?;
                return Err(match status {
                    Some(status) => StoreError::NotPending { what: "workflow run", id, status: status.to_string() },
                    None => not_found(&id),
                });
            }
            {
                let mut insert = tx
                    .prepare_cached(
                        "INSERT INTO workflow_node_executions (id, workflow_run_id, idx, node_id, node_type, title,
                                predecessor_node_id, iteration_id, iteration_index, inputs, process_data, outputs, status,
                                error, elapsed_secs, total_tokens, created_at, finished_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
                    )
                    .map_err(sql(op))?;
                for (n, tokens) in nodes.iter().zip(node_tokens) {
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
            }
            tx.commit().map_err(sql(op))
        })
        .await
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
        let keyword = filter.keyword.as_deref().filter(|k| !k.is_empty()).map(like_pattern);
        self.read("list workflow runs", move |conn| {
            let op = "list workflow runs";
            const WHERE: &str = "WHERE app_id = ?1
                  AND (?2 IS NULL OR status = ?2)
                  AND (?3 IS NULL OR inputs LIKE ?3 ESCAPE '\\' OR outputs LIKE ?3 ESCAPE '\\')
                  AND (?4 IS NULL OR user = ?4)
                  AND (?5 IS NULL OR created_at >= ?5)
                  AND (?6 IS NULL OR created_at <= ?6)";
            let snapshot = conn.unchecked_transaction().map_err(sql(op))?;
            require_app(&snapshot, &app_id)?;
            let total: u64 = snapshot
                .prepare_cached(&format!("SELECT count(*) FROM workflow_runs {WHERE}"))
                .and_then(|mut stmt| {
                    stmt.query_row(
                        params![app_id, filter.status, keyword, filter.user, filter.created_after, filter.created_before],
                        |row| row.get(0),
                    )
                })
                .map_err(sql(op))?;
            let mut stmt = snapshot
                .prepare_cached(&format!(
                    "SELECT {RUN_COLUMNS} FROM workflow_runs {WHERE}
                      ORDER BY created_at_ms DESC, rowid DESC LIMIT ?7 OFFSET ?8"
                ))
                .map_err(sql(op))?;
            let rows = stmt
                .query_map(
                    params![app_id, filter.status, keyword, filter.user, filter.created_after, filter.created_before, filter.limit, offset],
                    run_from_row,
                )
                .map_err(sql(op))?;
            let page = rows.collect::<Result<Vec<_>, _>>().map_err(sql(op))?;
            Ok((page, total))
        })
        .await
    }
}
