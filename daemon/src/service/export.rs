//! The log export (`edgeaictl export logs`, later D-Bus `ExportLogs`):
//! messages or workflow runs as an Arrow IPC file or a Parquet file, for
//! DuckDB, Spark and pandas.
//!
//! Owns: the exported schemas, the Arrow/Parquet encoding and the paging
//! loop. Memory is bounded whatever the row count: the store hands over
//! [`PAGE_ROWS`] rows at a time (keyset paging on the reader pool), each page
//! becomes one `RecordBatch` (one Parquet row group) that is encoded and
//! written at once, and the bytes go to any [`Write`] — a file, or a
//! [`ChannelSink`] whose bounded channel makes the encoder wait for a slow
//! reader. Both formats are written front to back (the Arrow footer and the
//! Parquet footer come last), so nothing needs to seek. Encoding runs on
//! tokio's blocking threads.
//! Must not touch: SQL (the store's `export` module), HTTP.

use std::io::Write;
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef, TimeUnit};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;
use tokio::sync::mpsc;

use crate::store::{LogCursor, LogFilter, LogTable, MessageLogRow, RunLogRow, Store, StoreError};

/// Rows per store page, `RecordBatch` and Parquet row group.
pub const PAGE_ROWS: u32 = 4096;

/// Bytes a [`ChannelSink`] gathers before it hands a chunk over.
const CHUNK_BYTES: usize = 64 * 1024;

/// The file format of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// Arrow IPC file format (Feather v2), uncompressed.
    Arrow,
    /// Parquet, Snappy-compressed.
    Parquet,
}

impl ExportFormat {
    /// `arrow` or `parquet`.
    pub fn from_name(name: &str) -> Result<Self, ExportError> {
        match name {
            "arrow" => Ok(ExportFormat::Arrow),
            "parquet" => Ok(ExportFormat::Parquet),
            other => Err(ExportError::UnknownFormat(other.to_owned())),
        }
    }

    /// The media type of the file.
    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Arrow => "application/vnd.apache.arrow.file",
            ExportFormat::Parquet => "application/vnd.apache.parquet",
        }
    }

    fn name(self) -> &'static str {
        match self {
            ExportFormat::Arrow => "arrow",
            ExportFormat::Parquet => "parquet",
        }
    }
}

/// `messages` or `workflow-runs`.
pub fn table_from_name(name: &str) -> Result<LogTable, ExportError> {
    match name {
        "messages" => Ok(LogTable::Messages),
        "workflow-runs" => Ok(LogTable::WorkflowRuns),
        other => Err(ExportError::UnknownTable(other.to_owned())),
    }
}

fn table_name(table: LogTable) -> &'static str {
    match table {
        LogTable::Messages => "messages",
        LogTable::WorkflowRuns => "workflow-runs",
    }
}

/// What to export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportRequest {
    /// Messages or workflow runs.
    pub table: LogTable,
    /// Arrow IPC or Parquet.
    pub format: ExportFormat,
    /// Which rows.
    pub filter: LogFilter,
}

/// What an export wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportSummary {
    /// Rows written.
    pub rows: u64,
    /// Record batches (Parquet row groups) written.
    pub batches: u64,
}

/// Why an export was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("unknown table {0:?}: export messages or workflow-runs")]
    UnknownTable(String),
    #[error("unknown format {0:?}: export as arrow or parquet")]
    UnknownFormat(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("encoding the {table} export as Arrow failed")]
    Arrow {
        table: &'static str,
        #[source]
        source: ArrowError,
    },
    #[error("encoding the {table} export as Parquet failed")]
    Parquet {
        table: &'static str,
        #[source]
        source: ParquetError,
    },
    /// The reader went away (or the file could not be written).
    #[error("writing the {table} export failed")]
    Write {
        table: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the export's encoder task panicked")]
    Panicked,
}

/// An export whose filter the store accepted; nothing is encoded yet.
#[derive(Debug)]
pub struct LogExport {
    store: Store,
    request: ExportRequest,
    cursor: LogCursor,
}

/// Checks `request` against the store (the app exists, `since` <= `until`)
/// before anything is written, so a bad request fails with its own error
/// and not halfway through a file.
pub async fn start(store: &Store, request: ExportRequest) -> Result<LogExport, ExportError> {
    let cursor = store.begin_log_export(request.table, &request.filter).await?;
    Ok(LogExport { store: store.clone(), request, cursor })
}

impl LogExport {
    /// The format being written.
    pub fn format(&self) -> ExportFormat {
        self.request.format
    }

    /// Pages through the rows and writes the whole file to `sink`.
    pub async fn write_to<W: Write + Send + 'static>(mut self, sink: W) -> Result<ExportSummary, ExportError> {
        let started = std::time::Instant::now();
        let table = self.request.table;
        let name = table_name(table);
        let format = self.request.format;
        let mut encoder = blocking(move || Encoder::new(format, table, sink)).await??;
        let mut summary = ExportSummary { rows: 0, batches: 0 };
        loop {
            let f = &self.request.filter;
            let page = match table {
                LogTable::Messages => Page::Messages(self.store.message_log_page(f, &mut self.cursor, PAGE_ROWS).await?),
                LogTable::WorkflowRuns => Page::Runs(self.store.run_log_page(f, &mut self.cursor, PAGE_ROWS).await?),
            };
            let rows = page.len();
            if rows == 0 {
                break;
            }
            encoder = blocking(move || {
                let batch = page.batch().map_err(|source| ExportError::Arrow { table: name, source })?;
                encoder.write(&batch)?;
                Ok::<_, ExportError>(encoder)
            })
            .await??;
            summary.rows += rows as u64;
            summary.batches += 1;
            fail::fail_point!("export-batch", |_| Err(ExportError::Arrow {
                table: name,
                source: ArrowError::ComputeError("failpoint export-batch".into())
            }));
        }
        blocking(move || encoder.finish()).await??;
        tracing::info!(
            table = name,
            format = format.name(),
            rows = summary.rows,
            batches = summary.batches,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "log export written"
        );
        Ok(summary)
    }
}

async fn blocking<T: Send + 'static>(job: impl FnOnce() -> T + Send + 'static) -> Result<T, ExportError> {
    tokio::task::spawn_blocking(job).await.map_err(|_| ExportError::Panicked)
}

/// One store page.
enum Page {
    Messages(Vec<MessageLogRow>),
    Runs(Vec<RunLogRow>),
}

impl Page {
    fn len(&self) -> usize {
        match self {
            Page::Messages(rows) => rows.len(),
            Page::Runs(rows) => rows.len(),
        }
    }

    fn batch(&self) -> Result<RecordBatch, ArrowError> {
        match self {
            Page::Messages(rows) => messages_batch(rows),
            Page::Runs(rows) => runs_batch(rows),
        }
    }
}

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

/// The columns of an export of `table`.
pub fn schema(table: LogTable) -> SchemaRef {
    let text = |name: &str, nullable| Field::new(name, DataType::Utf8, nullable);
    let int = |name: &str| Field::new(name, DataType::Int64, false);
    let fields = match table {
        LogTable::Messages => vec![
            text("message_id", false),
            text("conversation_id", true),
            text("conversation_name", true),
            text("app_id", false),
            text("user", false),
            text("query", false),
            text("answer", false),
            text("status", false),
            text("error", true),
            int("prompt_tokens"),
            int("completion_tokens"),
            int("total_tokens"),
            int("latency_ms"),
            Field::new("created_at", timestamp(), false),
            text("feedback_rating", true),
            text("feedback_content", true),
        ],
        LogTable::WorkflowRuns => vec![
            text("run_id", false),
            text("app_id", false),
            int("app_version"),
            text("workflow_id", false),
            text("user", false),
            text("status", false),
            text("error", true),
            Field::new("elapsed_secs", DataType::Float64, false),
            int("total_tokens"),
            int("total_steps"),
            Field::new("created_at", timestamp(), false),
            Field::new("finished_at", timestamp(), true),
            text("triggered_from", false),
            text("conversation_id", true),
            text("message_id", true),
        ],
    };
    Arc::new(Schema::new(fields))
}

fn texts<'a, T: 'a>(rows: &'a [T], f: impl Fn(&'a T) -> Option<&'a str>) -> ArrayRef {
    Arc::new(rows.iter().map(f).collect::<StringArray>())
}

fn ints<T>(rows: &[T], f: impl Fn(&T) -> i64) -> ArrayRef {
    Arc::new(Int64Array::from_iter_values(rows.iter().map(f)))
}

fn times<T>(rows: &[T], f: impl Fn(&T) -> Option<i64>) -> ArrayRef {
    Arc::new(rows.iter().map(f).collect::<TimestampMillisecondArray>().with_timezone("UTC"))
}

fn messages_batch(rows: &[MessageLogRow]) -> Result<RecordBatch, ArrowError> {
    let columns = vec![
        texts(rows, |m| Some(&m.id)),
        texts(rows, |m| m.conversation_id.as_deref()),
        texts(rows, |m| m.conversation_name.as_deref()),
        texts(rows, |m| Some(&m.app_id)),
        texts(rows, |m| Some(&m.user)),
        texts(rows, |m| Some(&m.query)),
        texts(rows, |m| Some(&m.answer)),
        texts(rows, |m| Some(m.status.as_str())),
        texts(rows, |m| m.error.as_deref()),
        ints(rows, |m| i64::from(m.prompt_tokens)),
        ints(rows, |m| i64::from(m.completion_tokens)),
        ints(rows, |m| i64::from(m.prompt_tokens) + i64::from(m.completion_tokens)),
        ints(rows, |m| m.latency_ms),
        times(rows, |m| Some(m.created_at.saturating_mul(1000))),
        texts(rows, |m| m.rating.map(|r| r.as_str())),
        texts(rows, |m| m.feedback.as_deref()),
    ];
    RecordBatch::try_new(schema(LogTable::Messages), columns)
}

fn runs_batch(rows: &[RunLogRow]) -> Result<RecordBatch, ArrowError> {
    let columns = vec![
        texts(rows, |r| Some(&r.id)),
        texts(rows, |r| Some(&r.app_id)),
        ints(rows, |r| i64::from(r.app_version)),
        texts(rows, |r| Some(&r.workflow_id)),
        texts(rows, |r| Some(&r.user)),
        texts(rows, |r| Some(r.status.as_str())),
        texts(rows, |r| r.error.as_deref()),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.elapsed_secs))),
        ints(rows, |r| r.total_tokens),
        ints(rows, |r| i64::from(r.total_steps)),
        times(rows, |r| Some(r.created_at_ms)),
        times(rows, |r| r.finished_at.map(|s| s.saturating_mul(1000))),
        texts(rows, |r| Some(&r.triggered_from)),
        texts(rows, |r| r.conversation_id.as_deref()),
        texts(rows, |r| r.message_id.as_deref()),
    ];
    RecordBatch::try_new(schema(LogTable::WorkflowRuns), columns)
}

/// The file being written.
enum Encoder<W: Write + Send> {
    Arrow { table: &'static str, writer: arrow_ipc::writer::FileWriter<W> },
    Parquet { table: &'static str, writer: ArrowWriter<W> },
}

impl<W: Write + Send> Encoder<W> {
    fn new(format: ExportFormat, table: LogTable, sink: W) -> Result<Self, ExportError> {
        let schema = schema(table);
        let table = table_name(table);
        Ok(match format {
            ExportFormat::Arrow => {
                Encoder::Arrow { table, writer: arrow_ipc::writer::FileWriter::try_new(sink, &schema).map_err(|e| arrow_error(table, e))? }
            }
            ExportFormat::Parquet => {
                let props = WriterProperties::builder()
                    .set_compression(Compression::SNAPPY)
                    .set_max_row_group_row_count(Some(PAGE_ROWS as usize))
                    .set_created_by(format!("edgeaid {}", env!("CARGO_PKG_VERSION")))
                    .build();
                Encoder::Parquet { table, writer: ArrowWriter::try_new(sink, schema, Some(props)).map_err(|e| parquet_error(table, e))? }
            }
        })
    }

    /// Encodes and writes one batch at once (one Parquet row group).
    fn write(&mut self, batch: &RecordBatch) -> Result<(), ExportError> {
        match self {
            Encoder::Arrow { table, writer } => writer.write(batch).map_err(|e| arrow_error(table, e)),
            Encoder::Parquet { table, writer } => writer.write(batch).and_then(|()| writer.flush()).map_err(|e| parquet_error(table, e)),
        }
    }

    /// Writes the footer and flushes the sink.
    fn finish(self) -> Result<(), ExportError> {
        let (table, mut sink) = match self {
            Encoder::Arrow { table, mut writer } => {
                writer.finish().map_err(|e| arrow_error(table, e))?;
                (table, writer.into_inner().map_err(|e| arrow_error(table, e))?)
            }
            Encoder::Parquet { table, writer } => (table, writer.into_inner().map_err(|e| parquet_error(table, e))?),
        };
        sink.flush().map_err(|source| ExportError::Write { table, source })
    }
}

/// An I/O error of the sink, which arrow and parquet wrap, stays a write error.
fn arrow_error(table: &'static str, e: ArrowError) -> ExportError {
    match e {
        ArrowError::IoError(_, source) => ExportError::Write { table, source },
        source => ExportError::Arrow { table, source },
    }
}

fn parquet_error(table: &'static str, e: ParquetError) -> ExportError {
    match e {
        ParquetError::External(inner) => match inner.downcast::<std::io::Error>() {
            Ok(io) => ExportError::Write { table, source: *io },
            Err(inner) => ExportError::Parquet { table, source: ParquetError::External(inner) },
        },
        source => ExportError::Parquet { table, source },
    }
}

/// A [`Write`] (for blocking threads) that hands the bytes over a bounded
/// channel in chunks of about [`CHUNK_BYTES`]; a full channel blocks the
/// writer, a dropped receiver fails it with `BrokenPipe`.
pub struct ChannelSink {
    tx: mpsc::Sender<Bytes>,
    buf: Vec<u8>,
}

impl ChannelSink {
    /// A sink feeding `tx`.
    pub fn new(tx: mpsc::Sender<Bytes>) -> Self {
        ChannelSink { tx, buf: Vec::with_capacity(CHUNK_BYTES) }
    }

    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK_BYTES)));
        self.tx.blocking_send(chunk).map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the reader of the export went away"))
    }
}

impl Write for ChannelSink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK_BYTES {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}
