//! Blocking calls to the daemon's admin API over its unix socket, through
//! `edgeai_common::UnixClient` (the same client `edgeaictl` uses), each on a
//! throw-away current-thread runtime so tests stay synchronous.

use std::path::PathBuf;

use edgeai_common::admin::{CreateKeyRequest, CreatedKey};
use edgeai_common::{ClientError, UnixClient};
use serde_json::Value;

pub struct Admin {
    client: UnixClient,
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime for an admin call").block_on(f)
}

impl Admin {
    pub fn new(socket: PathBuf) -> Admin {
        Admin { client: UnixClient::new(socket) }
    }

    pub fn get(&self, path: &str) -> Result<Value, ClientError> {
        block_on(self.client.get(path))
    }

    pub fn delete(&self, path: &str) -> Result<(), ClientError> {
        block_on(self.client.delete(path))
    }

    /// `POST path` with a JSON body; the 2xx answer's JSON.
    pub fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        block_on(self.client.post_json(path, body))
    }

    /// `GET /admin/v1/status`.
    pub fn status(&self) -> Value {
        self.get("/admin/v1/status").expect("admin status")
    }

    /// Creates a key for `app`; returns (key id, secret).
    pub fn create_key(&self, app: &str) -> (String, String) {
        self.post_key(&CreateKeyRequest { app: Some(app.to_owned()), dataset: false })
    }

    /// Creates a Knowledge API (`dataset-…`) key; returns (key id, secret).
    pub fn create_dataset_key(&self) -> (String, String) {
        self.post_key(&CreateKeyRequest { app: None, dataset: true })
    }

    fn post_key(&self, request: &CreateKeyRequest) -> (String, String) {
        let created: CreatedKey = block_on(self.client.post_json("/admin/v1/keys", request)).expect("admin: create a key");
        (created.id, created.key)
    }

    /// Revokes a key by its id.
    pub fn revoke_key(&self, id: &str) {
        self.delete(&format!("/admin/v1/keys/{id}")).expect("admin: revoke a key");
    }
}
