//! App definitions and how a chat or completion app turns a request into a
//! model job: input-form validation, `{{variable}}` substitution, the
//! message list (pre-prompt, history, query), and the whole turn (`turn`):
//! the request's rules, sampling, and fitting the prompt into the context.
//! No I/O, no HTTP, no store: the caller brings the history and runs the job.
//! The Dify DSL workflow engine joins this module in a later issue.

pub mod app;
pub mod prompt;
pub mod turn;
pub mod workflow;

pub use app::{AppDefinition, AppMode, AppProblem, CompletionParams, DatasetContext, FieldSpec, FormField};
pub use turn::{Turn, TurnError, TurnRequest};
