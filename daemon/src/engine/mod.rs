//! App definitions and how a chat or completion app turns a request into
//! model messages: input-form validation, `{{variable}}` substitution and
//! the message list (pre-prompt, history, query). Pure logic: no I/O, no
//! HTTP, no model calls. The Dify DSL workflow engine joins this module in
//! a later issue.

pub mod app;
pub mod prompt;

pub use app::{AppDefinition, AppMode, AppProblem, CompletionParams, FieldSpec, FormField};
