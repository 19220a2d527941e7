//! Request targets of the admin API, with user-supplied ids percent-encoded
//! so that an id can never change the route.
//!
//! Owns: URL paths only. Must not: send requests.

use edgeai_common::admin::ADMIN_PREFIX;

pub fn status() -> String {
    format!("{ADMIN_PREFIX}/status")
}

/// `/admin/v1/backup`: the snapshot archive.
pub fn backup() -> String {
    format!("{ADMIN_PREFIX}/backup")
}

/// `/admin/v1/models`: every model the daemon has.
pub fn models() -> String {
    format!("{ADMIN_PREFIX}/models")
}

/// `/admin/v1/models/{name}/load` or `.../unload` (`verb`).
pub fn model_action(name: &str, verb: &str) -> String {
    format!("{ADMIN_PREFIX}/models/{}/{verb}", encode(name))
}

/// `/admin/v1/audit` with its filters.
pub fn audit(kind: Option<&str>, since: Option<i64>, limit: u32) -> String {
    let mut q = vec![format!("limit={limit}")];
    q.extend(kind.map(|k| format!("kind={k}")));
    q.extend(since.map(|s| format!("since={s}")));
    format!("{ADMIN_PREFIX}/audit?{}", q.join("&"))
}

pub fn apps() -> String {
    format!("{ADMIN_PREFIX}/apps")
}

pub fn keys(app: Option<&str>) -> String {
    match app {
        Some(app) => format!("{ADMIN_PREFIX}/keys?app={}", encode(app)),
        None => format!("{ADMIN_PREFIX}/keys"),
    }
}

pub fn key(id: &str) -> String {
    format!("{ADMIN_PREFIX}/keys/{}", encode(id))
}

/// `/admin/v1/cache`, or one app's entries with `?app=`.
pub fn cache(app: Option<&str>) -> String {
    match app {
        Some(app) => format!("{ADMIN_PREFIX}/cache?app={}", encode(app)),
        None => format!("{ADMIN_PREFIX}/cache"),
    }
}

/// `/admin/v1/doctor`: the daemon's checks for `edgeaictl doctor`.
pub fn doctor() -> String {
    format!("{ADMIN_PREFIX}/doctor")
}

/// A workflow app's run, authorised by the peer (`edgeaictl run`).
pub fn workflow_run(app: &str) -> String {
    format!("{ADMIN_PREFIX}/apps/{}/workflows/run", encode(app))
}

pub fn import_dsl() -> String {
    format!("{ADMIN_PREFIX}/apps/dsl")
}

pub fn app_versions(app: &str) -> String {
    format!("{ADMIN_PREFIX}/apps/{}/versions", encode(app))
}

pub fn activate(app: &str) -> String {
    format!("{ADMIN_PREFIX}/apps/{}/activate", encode(app))
}

pub fn export(app: &str, version: Option<u32>) -> String {
    match version {
        Some(v) => format!("{ADMIN_PREFIX}/apps/{}/export?version={v}", encode(app)),
        None => format!("{ADMIN_PREFIX}/apps/{}/export", encode(app)),
    }
}

pub fn chat_messages(app: &str) -> String {
    format!("{ADMIN_PREFIX}/apps/{}/chat-messages", encode(app))
}

/// `/admin/v1/datasets`: Dify's Knowledge API on the admin socket.
pub fn datasets() -> String {
    format!("{ADMIN_PREFIX}/datasets")
}

/// One page (of at most 100) of the datasets whose name contains `keyword`.
pub fn datasets_page(keyword: Option<&str>, page: u32) -> String {
    match keyword {
        Some(k) => format!("{ADMIN_PREFIX}/datasets?keyword={}&page={page}&limit=100", encode(k)),
        None => format!("{ADMIN_PREFIX}/datasets?page={page}&limit=100"),
    }
}

pub fn dataset(id: &str) -> String {
    format!("{ADMIN_PREFIX}/datasets/{}", encode(id))
}

/// One page (of at most 100) of a dataset's documents whose name contains `keyword`.
pub fn documents_page(dataset: &str, keyword: Option<&str>, page: u32) -> String {
    match keyword {
        Some(k) => format!("{}/documents?keyword={}&page={page}&limit=100", self::dataset(dataset), encode(k)),
        None => format!("{}/documents?page={page}&limit=100", self::dataset(dataset)),
    }
}

pub fn document(dataset: &str, document: &str) -> String {
    format!("{}/documents/{}", self::dataset(dataset), encode(document))
}

pub fn create_by_file(dataset: &str) -> String {
    format!("{}/document/create-by-file", self::dataset(dataset))
}

pub fn indexing_status(dataset: &str, batch: &str) -> String {
    format!("{}/documents/{}/indexing-status", self::dataset(dataset), encode(batch))
}

pub fn retrieve(dataset: &str) -> String {
    format!("{}/retrieve", self::dataset(dataset))
}

/// `/admin/v1/export/logs?k=v&…` with each value percent-encoded.
pub fn export_logs(query: &[(&str, String)]) -> String {
    let query: Vec<String> = query.iter().map(|(k, v)| format!("{k}={}", encode(v))).collect();
    format!("{ADMIN_PREFIX}/export/logs?{}", query.join("&"))
}

/// `/admin/v1/update/install?…`: the bundle is the request's body, or the
/// daemon downloads it from `url`.
pub fn update_install(allow_downgrade: bool, reinstall: bool, url: Option<&str>) -> String {
    let from = url.map(|u| format!("&url={}", encode(u))).unwrap_or_default();
    format!("{ADMIN_PREFIX}/update/install?allow_downgrade={allow_downgrade}&reinstall={reinstall}{from}")
}

/// Percent-encodes everything but RFC 3986 unreserved characters, and the
/// dots of a `.` or `..` segment.
fn encode(value: &str) -> String {
    let dot_segment = value == "." || value == "..";
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        let keep = byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'~') || (byte == b'.' && !dot_segment);
        if keep {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap (style.md)
mod tests {
    use super::*;

    #[test]
    fn plain_ids_are_unchanged() {
        assert_eq!(key("k_1-a.b~c"), "/admin/v1/keys/k_1-a.b~c");
        assert_eq!(chat_messages("demo"), "/admin/v1/apps/demo/chat-messages");
        assert_eq!(keys(Some("demo")), "/admin/v1/keys?app=demo");
        assert_eq!(keys(None), "/admin/v1/keys");
        assert_eq!(indexing_status("d-1", "b2"), "/admin/v1/datasets/d-1/documents/b2/indexing-status");
        assert_eq!(create_by_file("d-1"), "/admin/v1/datasets/d-1/document/create-by-file");
        assert_eq!(documents_page("d-1", None, 2), "/admin/v1/datasets/d-1/documents?page=2&limit=100");
    }

    #[test]
    fn separators_and_non_ascii_are_encoded() {
        assert_eq!(key("../apps"), "/admin/v1/keys/..%2Fapps");
        assert_eq!(keys(Some("a&b=c d")), "/admin/v1/keys?app=a%26b%3Dc%20d");
        assert_eq!(chat_messages("ü?#"), "/admin/v1/apps/%C3%BC%3F%23/chat-messages");
        assert_eq!(key(".."), "/admin/v1/keys/%2E%2E");
        assert_eq!(chat_messages("."), "/admin/v1/apps/%2E/chat-messages");
        assert_eq!(datasets_page(Some("泵 & co"), 1), "/admin/v1/datasets?keyword=%E6%B3%B5%20%26%20co&page=1&limit=100");
        assert_eq!(document("d", "../x"), "/admin/v1/datasets/d/documents/..%2Fx");
    }
}
