//! `edgeaictl audit`: the daemon's audit trail (`GET /admin/v1/audit` on
//! the admin socket), newest first, as a table or JSON.
//!
//! Owns: what the command prints. Must not: choose exit codes (see
//! [`crate::error`]).

use edgeai_common::admin::AuditList;
use edgeai_common::UnixClient;
use serde_json::Value;

use crate::cli::{AuditArgs, AuditKind};
use crate::commands::{print, print_json};
use crate::error::CtlError;
use crate::{paths, render};

pub async fn show(client: &UnixClient, args: &AuditArgs, json: bool) -> Result<(), CtlError> {
    let kind = args.kind.map(|k| match k {
        AuditKind::Admin => "admin",
        AuditKind::AuthFailure => "auth_failure",
    });
    let path = paths::audit(kind, args.since, args.limit);
    if json {
        return print_json(&client.get::<Value>(&path).await?);
    }
    let list: AuditList = client.get(&path).await?;
    print(&render::audit(&list))
}
