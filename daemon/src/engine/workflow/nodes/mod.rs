//! The node types that implement [`NodeKind`](super::NodeKind): each module
//! owns one Dify node type's `data` shape (serde, as Dify exports it) and its
//! behaviour. start, end, answer, llm, iteration and loop are the executor's
//! (`run`); code, knowledge-retrieval, tool and agent are refused by `graph`.

use serde_json::Value;

use super::NodeKind;

pub mod compare;

/// Compiles one node's `data` for the types this module knows; `None` for
/// any other type. Errors are (field, message) pairs, fields as dotted paths
/// inside `data`.
pub fn build(node_type: &str, data: &Value) -> Option<Result<Box<dyn NodeKind>, Vec<(String, String)>>> {
    let _ = (node_type, data);
    None
}
