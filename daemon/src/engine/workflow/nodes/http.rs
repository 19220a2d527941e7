//! http-request: one HTTP exchange, as Dify's http-request node makes it.
//! url, params, headers and body are `{{#node.var#}}` templates rendered
//! through the [`Scope`]; authorization adds its header; the call goes out
//! through [`Effects::http`](super::super::Effects::http), which owns the
//! transport and the destination allowlist. With `retry_config` enabled a
//! transport error or a non-2xx answer is retried (bounded), and a final
//! non-2xx fails the node, as Dify's graph engine does.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::super::{BoxFuture, HttpCall, HttpReply, NodeCtx, NodeError, NodeKind, NodeOutput, VarType};
use super::{check_selector, nullable, parse, template_refs, upload_id, Problems};

const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
/// Dify's defaults (HTTP_REQUEST_MAX_CONNECT_TIMEOUT / _READ_TIMEOUT).
const DEFAULT_CONNECT: f64 = 10.0;
const DEFAULT_READ: f64 = 60.0;
const MAX_CONNECT: f64 = 60.0;
const MAX_READ: f64 = 600.0;
/// Dify's builder allows at most 10 retries, at most 5 s apart.
const MAX_RETRIES: u32 = 10;
const MAX_RETRY_INTERVAL_MS: u64 = 5_000;
/// How much of a request body `process_data.request` shows.
const LOGGED_BODY_BYTES: usize = 4096;

#[derive(Debug, Deserialize)]
struct Data {
    method: String,
    url: String,
    #[serde(default)]
    authorization: Authorization,
    #[serde(default, deserialize_with = "nullable")]
    headers: String,
    #[serde(default, deserialize_with = "nullable")]
    params: String,
    #[serde(default)]
    body: Option<Body>,
    #[serde(default)]
    timeout: Option<Timeout>,
    #[serde(default)]
    retry_config: Option<RetryConfig>,
    #[serde(default)]
    error_strategy: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Authorization {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    config: Option<AuthConfig>,
}

impl Default for Authorization {
    fn default() -> Self {
        Authorization { kind: "no-auth".into(), config: None }
    }
}

#[derive(Debug, Deserialize)]
struct AuthConfig {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    api_key: Option<String>,
    #[serde(default)]
    header: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Body {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    data: BodyData,
}

/// Current DSLs list items; older ones hold one string.
#[derive(Debug, Deserialize, Default)]
#[serde(untagged)]
enum BodyData {
    Items(Vec<BodyItem>),
    Text(String),
    #[default]
    Empty,
}

#[derive(Debug, Clone, Deserialize)]
struct BodyItem {
    #[serde(default, deserialize_with = "nullable")]
    key: String,
    #[serde(default = "text_kind", rename = "type")]
    kind: String,
    #[serde(default, deserialize_with = "nullable")]
    value: String,
    #[serde(default, deserialize_with = "nullable")]
    file: Vec<String>,
}

fn text_kind() -> String {
    "text".to_owned()
}

#[derive(Debug, Deserialize)]
struct Timeout {
    #[serde(default)]
    connect: Option<f64>,
    #[serde(default)]
    read: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct RetryConfig {
    #[serde(default, alias = "enabled")]
    retry_enabled: bool,
    #[serde(default)]
    max_retries: u32,
    /// Milliseconds.
    #[serde(default)]
    retry_interval: u64,
}

/// The request body, compiled.
#[derive(Debug)]
enum BodyKind {
    None,
    Json(String),
    Raw(String),
    UrlEncoded(Vec<BodyItem>),
    FormData(Vec<BodyItem>),
    Binary(Vec<String>),
}

#[derive(Debug)]
enum Auth {
    None,
    Bearer { header: String, key: String },
    Basic { header: String, key: String },
    Custom { header: String, key: String },
}

#[derive(Debug)]
pub struct HttpRequest {
    method: String,
    url: String,
    headers: String,
    params: String,
    auth: Auth,
    body: BodyKind,
    connect_timeout: Duration,
    read_timeout: Duration,
    retries: u32,
    retry_interval: Duration,
    /// Dify fails a non-2xx answer only when the node retries or has an
    /// error strategy; otherwise the status is just an output.
    fail_on_status: bool,
}

fn seconds(v: Option<f64>, default: f64, max: f64) -> Duration {
    let s = v.filter(|s| s.is_finite() && *s > 0.0).unwrap_or(default);
    Duration::from_secs_f64(s.min(max))
}

impl HttpRequest {
    pub fn build(data: &Value) -> Result<HttpRequest, Problems> {
        let d: Data = parse(data)?;
        let mut problems = Problems::new();
        let method = d.method.to_ascii_uppercase();
        if !METHODS.contains(&method.as_str()) {
            problems.push(("method".into(), format!("unknown HTTP method {:?}", d.method)));
        }
        let url = d.url.trim().to_owned();
        if url.is_empty() {
            problems.push(("url".into(), "url is required".into()));
        } else if !url.starts_with("{{#") && !url.starts_with("http://") && !url.starts_with("https://") {
            problems.push(("url".into(), "url should start with http:// or https://".into()));
        }
        let auth = match (d.authorization.kind.as_str(), d.authorization.config) {
            ("no-auth", _) => Auth::None,
            ("api-key", Some(c)) => {
                let header = c.header.filter(|h| !h.trim().is_empty()).unwrap_or_else(|| "Authorization".into());
                let key = c.api_key.unwrap_or_default();
                match c.kind.as_deref() {
                    Some("bearer") => Auth::Bearer { header, key },
                    Some("basic") => Auth::Basic { header, key },
                    Some("custom") => Auth::Custom { header, key },
                    other => {
                        problems.push((
                            "authorization.config.type".into(),
                            format!("api-key authorization is basic, bearer or custom, got {other:?}"),
                        ));
                        Auth::None
                    }
                }
            }
            ("api-key", None) => {
                problems.push(("authorization.config".into(), "api-key authorization needs a config".into()));
                Auth::None
            }
            (other, _) => {
                problems.push(("authorization.type".into(), format!("authorization is no-auth or api-key, got {other:?}")));
                Auth::None
            }
        };
        let body = match d.body {
            None => BodyKind::None,
            Some(b) => compile_body(b, &mut problems),
        };
        let timeout = d.timeout.unwrap_or(Timeout { connect: None, read: None });
        let retry = d.retry_config.filter(|r| r.retry_enabled);
        let node = HttpRequest {
            method,
            url,
            headers: d.headers,
            params: d.params,
            auth,
            body,
            connect_timeout: seconds(timeout.connect, DEFAULT_CONNECT, MAX_CONNECT),
            read_timeout: seconds(timeout.read, DEFAULT_READ, MAX_READ),
            retries: retry.as_ref().map_or(0, |r| r.max_retries.min(MAX_RETRIES)),
            retry_interval: Duration::from_millis(retry.as_ref().map_or(0, |r| r.retry_interval.min(MAX_RETRY_INTERVAL_MS))),
            fail_on_status: retry.is_some() || d.error_strategy.is_some_and(|s| !s.is_empty() && s != "none"),
        };
        if problems.is_empty() {
            Ok(node)
        } else {
            Err(problems)
        }
    }

    /// The templated request: (url with params, headers, body).
    async fn request(&self, ctx: &NodeCtx<'_>) -> Result<(String, Vec<(String, String)>, Option<Vec<u8>>), String> {
        let scope = ctx.scope;
        let mut url = scope.render(&self.url);
        if !url.starts_with("http://") && !url.starts_with("https://") {
            return Err(format!("url should start with http:// or https://, got {url:?}"));
        }
        let params = key_values(&self.params, |s| scope.render(s));
        if !params.is_empty() {
            let mut q = form_urlencoded::Serializer::new(String::new());
            for (k, v) in &params {
                q.append_pair(k, v);
            }
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str(&q.finish());
        }
        // Split first, then render: a variable's line breaks cannot add headers.
        let mut headers: Vec<(String, String)> =
            key_values(&self.headers, |s| scope.render(s).replace(['\r', '\n'], " ").trim().to_owned());
        let (body, content_type) = self.body(ctx).await?;
        if let Some(ct) = content_type {
            if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
                headers.push(("Content-Type".into(), ct));
            }
        }
        match &self.auth {
            Auth::None => {}
            Auth::Bearer { header, key } => set_header(&mut headers, header, format!("Bearer {}", scope.render(key))),
            Auth::Basic { header, key } => {
                let key = scope.render(key);
                // Dify encodes "user:password"; a key without ':' is taken as already encoded.
                let key = if key.contains(':') { base64(key.as_bytes()) } else { key };
                set_header(&mut headers, header, format!("Basic {key}"));
            }
            Auth::Custom { header, key } => set_header(&mut headers, header, scope.render(key)),
        }
        Ok((url, headers, body))
    }

    /// The body's bytes and its default content type.
    async fn body(&self, ctx: &NodeCtx<'_>) -> Result<(Option<Vec<u8>>, Option<String>), String> {
        let scope = ctx.scope;
        Ok(match &self.body {
            BodyKind::None => (None, None),
            BodyKind::Raw(t) => (Some(scope.render(t).into_bytes()), Some("text/plain".into())),
            BodyKind::Json(t) => (Some(json_body(&scope.render(t))?.into_bytes()), Some("application/json".into())),
            BodyKind::UrlEncoded(items) => {
                let mut q = form_urlencoded::Serializer::new(String::new());
                for it in items {
                    q.append_pair(&scope.render(&it.key), &scope.render(&it.value));
                }
                (Some(q.finish().into_bytes()), Some("application/x-www-form-urlencoded".into()))
            }
            BodyKind::FormData(items) => {
                let boundary = format!("----edgeaiFormBoundary{}", uuid::Uuid::new_v4().simple());
                let mut out = Vec::new();
                for it in items {
                    let key = scope.render(&it.key).replace('"', "%22");
                    if it.kind == "file" {
                        for (name, mime, bytes) in files(ctx, &it.file).await? {
                            let name = name.replace('"', "%22");
                            out.extend_from_slice(
                                format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{key}\"; filename=\"{name}\"\r\nContent-Type: {mime}\r\n\r\n").as_bytes(),
                            );
                            out.extend_from_slice(&bytes);
                            out.extend_from_slice(b"\r\n");
                        }
                    } else {
                        out.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{key}\"\r\n\r\n").as_bytes());
                        out.extend_from_slice(scope.render(&it.value).as_bytes());
                        out.extend_from_slice(b"\r\n");
                    }
                }
                out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
                (Some(out), Some(format!("multipart/form-data; boundary={boundary}")))
            }
            BodyKind::Binary(sel) => {
                let mut all = files(ctx, sel).await?;
                if all.len() != 1 {
                    return Err(format!("a binary body needs exactly one file, {:?} holds {}", sel, all.len()));
                }
                let (_, mime, bytes) = all.remove(0);
                (Some(bytes), Some(mime))
            }
        })
    }

    /// One exchange with retries; the last reply or error.
    async fn exchange(&self, ctx: &NodeCtx<'_>, call: HttpCall) -> (Result<HttpReply, String>, u32) {
        let mut attempt = 0;
        loop {
            let result = ctx.effects.http(call.clone()).await;
            let retryable = match &result {
                Err(_) => true,
                Ok(r) => !(200..300).contains(&r.status),
            };
            if !retryable || attempt >= self.retries {
                return (result, attempt);
            }
            attempt += 1;
            tracing::debug!(node_id = ctx.node_id, attempt, "http-request retrying");
            if !self.retry_interval.is_zero() {
                tokio::time::sleep(self.retry_interval).await;
            }
        }
    }
}

fn compile_body(b: Body, problems: &mut Problems) -> BodyKind {
    let items = match b.data {
        BodyData::Items(items) => items,
        // Older DSLs: the whole body as one string (form kinds as `key:value` lines).
        BodyData::Text(t) => match b.kind.as_str() {
            "form-data" | "x-www-form-urlencoded" => key_values(&t, str::to_owned)
                .into_iter()
                .map(|(key, value)| BodyItem { key, kind: text_kind(), value, file: Vec::new() })
                .collect(),
            _ => vec![BodyItem { key: String::new(), kind: text_kind(), value: t, file: Vec::new() }],
        },
        BodyData::Empty => Vec::new(),
    };
    let single = |items: &[BodyItem], problems: &mut Problems| -> Option<BodyItem> {
        match items {
            [one] => Some(one.clone()),
            [] if b.kind != "binary" => Some(BodyItem { key: String::new(), kind: text_kind(), value: String::new(), file: Vec::new() }),
            _ => {
                problems.push(("body.data".into(), format!("a {} body has exactly one item, got {}", b.kind, items.len())));
                None
            }
        }
    };
    match b.kind.as_str() {
        "none" => BodyKind::None,
        "json" => single(&items, problems).map_or(BodyKind::None, |i| BodyKind::Json(i.value)),
        "raw-text" => single(&items, problems).map_or(BodyKind::None, |i| BodyKind::Raw(i.value)),
        "binary" => match single(&items, problems) {
            Some(i) => {
                check_selector("body.data.0.file", &i.file, problems);
                BodyKind::Binary(i.file)
            }
            None => BodyKind::None,
        },
        "x-www-form-urlencoded" => BodyKind::UrlEncoded(items),
        "form-data" => {
            for (i, it) in items.iter().enumerate() {
                match it.kind.as_str() {
                    "text" => {}
                    "file" => check_selector(&format!("body.data.{i}.file"), &it.file, problems),
                    other => problems.push((format!("body.data.{i}.type"), format!("a form field is text or file, got {other:?}"))),
                }
            }
            BodyKind::FormData(items)
        }
        other => {
            problems.push((
                "body.type".into(),
                format!("body type is none, json, raw-text, form-data, x-www-form-urlencoded or binary, got {other:?}"),
            ));
            BodyKind::None
        }
    }
}

/// A rendered JSON body: sent as written when it is JSON; otherwise, as
/// Dify's lenient parse (`strict=False`) allows, raw control characters
/// inside strings (a variable's newlines) are escaped first.
fn json_body(text: &str) -> Result<String, String> {
    if serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() {
        return Ok(text.to_owned());
    }
    let mut fixed = String::with_capacity(text.len() + 16);
    let (mut in_string, mut escaped) = (false, false);
    for c in text.chars() {
        match c {
            _ if escaped => {
                escaped = false;
                fixed.push(c);
            }
            '\\' if in_string => {
                escaped = true;
                fixed.push(c);
            }
            '"' => {
                in_string = !in_string;
                fixed.push(c);
            }
            '\n' if in_string => fixed.push_str("\\n"),
            '\r' if in_string => fixed.push_str("\\r"),
            '\t' if in_string => fixed.push_str("\\t"),
            c if in_string && u32::from(c) < 0x20 => fixed.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => fixed.push(c),
        }
    }
    match serde_json::from_str::<serde::de::IgnoredAny>(&fixed) {
        Ok(_) => Ok(fixed),
        Err(e) => Err(format!("Failed to parse JSON body: {e}: {text}")),
    }
}

/// The (name, mime, bytes) of the file or files a selector holds.
async fn files(ctx: &NodeCtx<'_>, selector: &[String]) -> Result<Vec<(String, String, Vec<u8>)>, String> {
    let v = ctx.scope.get(selector).ok_or_else(|| format!("cannot fetch file with selector {selector:?}: it is not set"))?;
    let list = match v {
        Value::Array(list) => list,
        one => vec![one],
    };
    let mut out = Vec::new();
    for f in &list {
        let id = upload_id(f)?;
        out.push(ctx.effects.file(id).await?);
    }
    Ok(out)
}

/// Dify's `Key:Value` lines: blank lines and empty keys skipped, a line
/// without ':' is a key with an empty value.
fn key_values(text: &str, render: impl Fn(&str) -> String) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let (k, v) = line.split_once(':').unwrap_or((line, ""));
            let k = k.trim();
            (!k.is_empty()).then(|| (render(k), render(v.trim())))
        })
        .collect()
}

fn set_header(headers: &mut Vec<(String, String)>, name: &str, value: String) {
    headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    headers.push((name.to_owned(), value));
}

fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ABC[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The request as Dify's `process_data.request` shows it, secrets masked.
fn request_log(method: &str, url: &str, headers: &[(String, String)], body: Option<&[u8]>, secret_header: Option<&str>) -> String {
    let (host, path) = match url.split_once("://").map(|(_, rest)| rest) {
        Some(rest) => match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        },
        None => ("", url),
    };
    let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    for (k, v) in headers {
        let v = if secret_header.is_some_and(|s| s.eq_ignore_ascii_case(k)) { "*".repeat(v.len()) } else { v.clone() };
        raw.push_str(&format!("{k}: {v}\r\n"));
    }
    raw.push_str("\r\n");
    if let Some(b) = body {
        raw.push_str(&String::from_utf8_lossy(&b[..b.len().min(LOGGED_BODY_BYTES)]));
    }
    raw
}

impl NodeKind for HttpRequest {
    fn references(&self) -> Vec<(String, Vec<String>)> {
        let mut refs = Vec::new();
        template_refs("url", &self.url, &mut refs);
        template_refs("headers", &self.headers, &mut refs);
        template_refs("params", &self.params, &mut refs);
        match &self.auth {
            Auth::None => {}
            Auth::Bearer { key, .. } | Auth::Basic { key, .. } | Auth::Custom { key, .. } => {
                template_refs("authorization.config.api_key", key, &mut refs)
            }
        }
        match &self.body {
            BodyKind::None => {}
            BodyKind::Json(t) | BodyKind::Raw(t) => template_refs("body.data.0.value", t, &mut refs),
            BodyKind::Binary(sel) => refs.push(("body.data.0.file".into(), sel.clone())),
            BodyKind::UrlEncoded(items) | BodyKind::FormData(items) => {
                for (i, it) in items.iter().enumerate() {
                    template_refs(&format!("body.data.{i}.key"), &it.key, &mut refs);
                    if it.kind == "file" {
                        refs.push((format!("body.data.{i}.file"), it.file.clone()));
                    } else {
                        template_refs(&format!("body.data.{i}.value"), &it.value, &mut refs);
                    }
                }
            }
        }
        refs
    }
    fn outputs(&self) -> Vec<(String, VarType)> {
        vec![
            ("status_code".into(), VarType::Number),
            ("body".into(), VarType::String),
            ("headers".into(), VarType::Object),
            ("files".into(), VarType::ArrayFile),
        ]
    }
    fn run<'a>(&'a self, ctx: NodeCtx<'a>) -> BoxFuture<'a, Result<NodeOutput, NodeError>> {
        Box::pin(async move {
            let (url, headers, body) = self.request(&ctx).await.map_err(NodeError::Failed)?;
            let secret = match &self.auth {
                Auth::None => None,
                Auth::Bearer { header, .. } | Auth::Basic { header, .. } | Auth::Custom { header, .. } => Some(header.as_str()),
            };
            let mut process_data = Map::new();
            process_data.insert("request".into(), Value::String(request_log(&self.method, &url, &headers, body.as_deref(), secret)));
            let max = ctx.limits.http_max_response_bytes;
            let call = HttpCall {
                node_id: ctx.node_id.to_owned(),
                method: self.method.clone(),
                url,
                headers,
                body,
                connect_timeout: self.connect_timeout,
                read_timeout: self.read_timeout,
                max_response_bytes: max,
            };
            let (result, retries) = self.exchange(&ctx, call).await;
            process_data.insert("retries".into(), json!(retries));
            let reply = result.map_err(NodeError::Failed)?;
            if reply.body.len() > max {
                return Err(NodeError::Failed(format!("the response body is larger than the limit of {max} bytes")));
            }
            if self.fail_on_status && !(200..300).contains(&reply.status) {
                return Err(NodeError::Failed(format!("Request failed with status code {}", reply.status)));
            }
            let mut header_map = Map::new();
            for (k, v) in &reply.headers {
                let k = k.to_ascii_lowercase();
                let joined = match header_map.get(&k).and_then(Value::as_str) {
                    Some(prev) => format!("{prev}, {v}"),
                    None => v.clone(),
                };
                header_map.insert(k, Value::String(joined));
            }
            let mut outputs = Map::new();
            outputs.insert("status_code".into(), json!(reply.status));
            outputs.insert("body".into(), Value::String(String::from_utf8_lossy(&reply.body).into_owned()));
            outputs.insert("headers".into(), Value::Object(header_map));
            outputs.insert("files".into(), json!([]));
            Ok(NodeOutput { process_data, outputs, ..NodeOutput::default() })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{ctx, limits, FakeEffects, MapScope};
    use super::*;

    fn reply(status: u16, body: &str) -> Result<HttpReply, String> {
        Ok(HttpReply {
            status,
            headers: vec![("Content-Type".into(), "application/json".into()), ("X-A".into(), "1".into()), ("x-a".into(), "2".into())],
            body: body.as_bytes().to_vec(),
        })
    }

    fn data(extra: Value) -> Value {
        let mut d = json!({
            "type": "http-request", "title": "H", "method": "post",
            "url": "https://api.example.com/v1/{{#start.path#}}",
            "authorization": {"type": "no-auth", "config": null},
            "headers": "X-User:{{#sys.user_id#}}\n\nX-Empty\n :skipped\nX-Note: {{#start.note#}}",
            "params": "q:{{#start.q#}}\nlimit: 5",
            "body": {"type": "none", "data": []},
            "timeout": {"connect": 5, "read": 30, "write": 10, "max_connect_timeout": 0, "max_read_timeout": 0, "max_write_timeout": 0}
        });
        if let (Value::Object(d), Value::Object(e)) = (&mut d, extra) {
            d.extend(e);
        }
        d
    }

    fn scope() -> MapScope {
        MapScope::with(&[
            ("start.path", json!("items")),
            ("start.q", json!("a b&c")),
            ("start.name", json!("Ada")),
            ("start.key", json!("s3cret")),
            ("start.doc", json!({"type": "document", "transfer_method": "local_file", "related_id": "f1"})),
            ("sys.user_id", json!("u1")),
            ("start.note", json!("line one\r\nX-Evil: 1")),
            ("start.lines", json!("a\nb\tc\\\"d")),
        ])
    }

    async fn run_with(d: Value, replies: Vec<Result<HttpReply, String>>) -> (Result<NodeOutput, NodeError>, Vec<HttpCall>) {
        let n = HttpRequest::build(&d).unwrap_or_else(|e| panic!("{e:?}"));
        let mut fx = FakeEffects::default();
        fx.files.insert("f1".into(), ("a.txt".into(), "text/plain".into(), b"file bytes".to_vec()));
        for r in replies {
            fx.push_http(r);
        }
        let scope = scope();
        let out = n.run(ctx(&scope, &fx, &limits())).await;
        (out, fx.http_calls())
    }

    fn header<'c>(call: &'c HttpCall, name: &str) -> Option<&'c str> {
        call.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    #[tokio::test]
    async fn templated_request_and_outputs() {
        let (out, calls) = run_with(data(json!({})), vec![reply(200, "{\"ok\":true}")]).await;
        let out = out.unwrap();
        let call = &calls[0];
        assert_eq!(call.method, "POST");
        assert_eq!(call.url, "https://api.example.com/v1/items?q=a+b%26c&limit=5");
        assert_eq!(header(call, "X-User"), Some("u1"));
        assert_eq!(header(call, "X-Empty"), Some(""));
        assert_eq!(header(call, "X-Evil"), None);
        assert_eq!(header(call, "X-Note"), Some("line one  X-Evil: 1"));
        assert_eq!(call.body, None);
        assert_eq!(call.connect_timeout, Duration::from_secs(5));
        assert_eq!(call.read_timeout, Duration::from_secs(30));
        assert_eq!(call.max_response_bytes, 1024);
        assert_eq!(out.outputs["status_code"], 200);
        assert_eq!(out.outputs["body"], "{\"ok\":true}");
        assert_eq!(out.outputs["headers"]["x-a"], "1, 2");
        assert_eq!(out.outputs["files"], json!([]));
        assert!(out.process_data["request"]
            .as_str()
            .unwrap()
            .starts_with("POST /v1/items?q=a+b%26c&limit=5 HTTP/1.1\r\nHost: api.example.com\r\n"));
    }

    #[test]
    fn references_name_their_fields() {
        let n = HttpRequest::build(&data(json!({
            "authorization": {"type": "api-key", "config": {"type": "bearer", "api_key": "{{#env.key#}}"}},
            "body": {"type": "form-data", "data": [
                {"key": "name", "type": "text", "value": "{{#start.name#}}"},
                {"key": "doc", "type": "file", "file": ["start", "doc"]}
            ]}
        })))
        .unwrap();
        let refs: Vec<(String, String)> = n.references().into_iter().map(|(f, s)| (f, s.join("."))).collect();
        let want = [
            ("url", "start.path"),
            ("headers", "sys.user_id"),
            ("headers", "start.note"),
            ("params", "start.q"),
            ("authorization.config.api_key", "env.key"),
            ("body.data.0.value", "start.name"),
            ("body.data.1.file", "start.doc"),
        ];
        assert_eq!(refs, want.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect::<Vec<_>>());
        assert_eq!(n.outputs().len(), 4);
    }

    #[tokio::test]
    async fn authorization_kinds() {
        let auth = |kind: &str, header: Value| json!({"authorization": {"type": "api-key", "config": {"type": kind, "api_key": "{{#start.key#}}", "header": header}}});
        let (out, calls) = run_with(data(auth("bearer", Value::Null)), vec![reply(200, "")]).await;
        assert_eq!(header(&calls[0], "Authorization"), Some("Bearer s3cret"));
        // The secret is masked in process_data.
        let log = out.unwrap().process_data["request"].as_str().unwrap().to_owned();
        assert!(log.contains("Authorization: *************") && !log.contains("s3cret"), "{log}");
        let (_, calls) = run_with(data(auth("custom", json!("X-Api-Key"))), vec![reply(200, "")]).await;
        assert_eq!(header(&calls[0], "X-Api-Key"), Some("s3cret"));
        assert_eq!(header(&calls[0], "Authorization"), None);
        let d = data(json!({"authorization": {"type": "api-key", "config": {"type": "basic", "api_key": "user:pass"}}}));
        let (_, calls) = run_with(d, vec![reply(200, "")]).await;
        assert_eq!(header(&calls[0], "Authorization"), Some("Basic dXNlcjpwYXNz"));
        let d = data(json!({"authorization": {"type": "api-key", "config": {"type": "basic", "api_key": "dXNlcjpwYXNz"}}}));
        let (_, calls) = run_with(d, vec![reply(200, "")]).await;
        assert_eq!(header(&calls[0], "Authorization"), Some("Basic dXNlcjpwYXNz"));
    }

    #[tokio::test]
    async fn body_kinds() {
        let body = |b: Value| data(json!({ "body": b }));
        let (_, c) = run_with(
            body(json!({"type": "json", "data": [{"key": "", "type": "text", "value": "{\"name\": \"{{#start.name#}}\", \"n\": 1}"}]})),
            vec![reply(200, "")],
        )
        .await;
        assert_eq!(c[0].body.as_deref(), Some(&b"{\"name\": \"Ada\", \"n\": 1}"[..]));
        assert_eq!(header(&c[0], "Content-Type"), Some("application/json"));
        let (_, c) =
            run_with(body(json!({"type": "raw-text", "data": [{"type": "text", "value": "hi {{#start.name#}}"}]})), vec![reply(200, "")])
                .await;
        assert_eq!(c[0].body.as_deref(), Some(&b"hi Ada"[..]));
        assert_eq!(header(&c[0], "Content-Type"), Some("text/plain"));
        let (_, c) = run_with(
            body(json!({"type": "x-www-form-urlencoded", "data": [{"key": "a", "type": "text", "value": "{{#start.q#}}"}, {"key": "b", "type": "text", "value": "2"}]})),
            vec![reply(200, "")],
        )
        .await;
        assert_eq!(c[0].body.as_deref(), Some(&b"a=a+b%26c&b=2"[..]));
        assert_eq!(header(&c[0], "Content-Type"), Some("application/x-www-form-urlencoded"));
        let (_, c) = run_with(
            body(json!({"type": "form-data", "data": [{"key": "name", "type": "text", "value": "{{#start.name#}}"}, {"key": "doc", "type": "file", "file": ["start", "doc"]}]})),
            vec![reply(200, "")],
        )
        .await;
        let ct = header(&c[0], "Content-Type").unwrap().to_owned();
        let boundary = ct.strip_prefix("multipart/form-data; boundary=").unwrap();
        let sent = String::from_utf8(c[0].body.clone().unwrap()).unwrap();
        assert_eq!(
            sent,
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nAda\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"doc\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\nfile bytes\r\n--{boundary}--\r\n")
        );
        let (_, c) =
            run_with(body(json!({"type": "binary", "data": [{"type": "file", "file": ["start", "doc"]}]})), vec![reply(200, "")]).await;
        assert_eq!(c[0].body.as_deref(), Some(&b"file bytes"[..]));
        assert_eq!(header(&c[0], "Content-Type"), Some("text/plain"));
        // Older DSLs: one string; a Content-Type the user set wins.
        let d = data(
            json!({"headers": "content-type: application/vnd.x+json", "body": {"type": "json", "data": "{\"v\": \"{{#start.name#}}\"}"}}),
        );
        let (_, c) = run_with(d, vec![reply(200, "")]).await;
        assert_eq!(c[0].body.as_deref(), Some(&b"{\"v\": \"Ada\"}"[..]));
        assert_eq!(header(&c[0], "Content-Type"), Some("application/vnd.x+json"));
        // A variable's raw newline inside a JSON string is escaped, as Dify's lenient parse accepts it.
        let d = data(json!({"body": {"type": "json", "data": [{"type": "text", "value": "{\"v\": \"{{#start.lines#}}\",\n \"w\": 1}"}]}}));
        let (_, c) = run_with(d, vec![reply(200, "")]).await;
        assert_eq!(c[0].body.as_deref(), Some(&b"{\"v\": \"a\\nb\\tc\\\"d\",\n \"w\": 1}"[..]));
        let (out, c) = run_with(body(json!({"type": "json", "data": [{"type": "text", "value": "{not json"}]})), vec![]).await;
        assert!(out.unwrap_err().to_string().contains("Failed to parse JSON body"));
        assert!(c.is_empty());
    }

    #[tokio::test]
    async fn retries_are_bounded_and_follow_dify() {
        let retry = json!({"retry_config": {"retry_enabled": true, "max_retries": 2, "retry_interval": 1}});
        // A transport error, then a 503, then success.
        let (out, calls) = run_with(data(retry.clone()), vec![Err("connection reset".into()), reply(503, "busy"), reply(200, "ok")]).await;
        let out = out.unwrap();
        assert_eq!(calls.len(), 3);
        assert_eq!(out.outputs["body"], "ok");
        assert_eq!(out.process_data["retries"], 2);
        // Exhausted: the last error fails the node.
        let (out, calls) = run_with(data(retry.clone()), vec![reply(500, ""), reply(502, ""), reply(429, "")]).await;
        assert_eq!(calls.len(), 3);
        assert_eq!(out.unwrap_err().to_string(), "Request failed with status code 429");
        let (out, calls) =
            run_with(data(retry), vec![Err("a".into()), Err("b".into()), Err("refused: 10.0.0.1 is not in the allowlist".into())]).await;
        assert_eq!(calls.len(), 3);
        assert_eq!(out.unwrap_err().to_string(), "refused: 10.0.0.1 is not in the allowlist");
        // Without retry or an error strategy a 404 is an answer, not a failure, and nothing is retried.
        let (out, calls) = run_with(data(json!({})), vec![reply(404, "nope"), reply(200, "")]).await;
        assert_eq!(calls.len(), 1);
        assert_eq!(out.unwrap().outputs["status_code"], 404);
        let (out, _) = run_with(data(json!({"error_strategy": "fail-branch"})), vec![reply(404, "nope")]).await;
        assert_eq!(out.unwrap_err().to_string(), "Request failed with status code 404");
        // An effects error fails the node with its message.
        let (out, calls) = run_with(data(json!({})), vec![Err("destination 169.254.169.254 is not allowed".into())]).await;
        assert_eq!(calls.len(), 1);
        assert_eq!(out.unwrap_err().to_string(), "destination 169.254.169.254 is not allowed");
        // max_retries is capped.
        let n = HttpRequest::build(&data(json!({"retry_config": {"retry_enabled": true, "max_retries": 1000, "retry_interval": 999999}})))
            .unwrap();
        assert_eq!((n.retries, n.retry_interval), (MAX_RETRIES, Duration::from_millis(MAX_RETRY_INTERVAL_MS)));
    }

    #[tokio::test]
    async fn response_cap_and_timeouts() {
        let big = "x".repeat(2000);
        let (out, _) = run_with(data(json!({})), vec![reply(200, &big)]).await;
        assert!(out.unwrap_err().to_string().contains("larger than the limit of 1024 bytes"));
        let n = HttpRequest::build(&data(json!({"timeout": {"connect": 100000, "read": null}}))).unwrap();
        assert_eq!(n.connect_timeout, Duration::from_secs(60));
        assert_eq!(n.read_timeout, Duration::from_secs(60));
        let n = HttpRequest::build(&data(json!({"timeout": null}))).unwrap();
        assert_eq!((n.connect_timeout, n.read_timeout), (Duration::from_secs(10), Duration::from_secs(60)));
        let (out, calls) = run_with(data(json!({"url": "{{#start.name#}}/x"})), vec![]).await;
        assert!(out.unwrap_err().to_string().contains("should start with http"));
        assert!(calls.is_empty());
    }

    #[test]
    fn bad_data_names_each_field() {
        let e = HttpRequest::build(&data(json!({
            "method": "fetch",
            "url": "ftp://x",
            "authorization": {"type": "api-key", "config": {"type": "digest", "api_key": "k"}},
            "body": {"type": "json", "data": [{"type": "text", "value": "1"}, {"type": "text", "value": "2"}]}
        })))
        .unwrap_err();
        let fields: Vec<&str> = e.iter().map(|p| p.0.as_str()).collect();
        assert_eq!(fields, vec!["method", "url", "authorization.config.type", "body.data"]);
        let e = HttpRequest::build(&data(json!({"url": "", "authorization": {"type": "oauth"}, "body": {"type": "xml", "data": []}})))
            .unwrap_err();
        let fields: Vec<&str> = e.iter().map(|p| p.0.as_str()).collect();
        assert_eq!(fields, vec!["url", "authorization.type", "body.type"]);
        let e = HttpRequest::build(&data(json!({"authorization": {"type": "api-key"}, "body": {"type": "form-data", "data": [{"key": "f", "type": "file", "file": []}, {"key": "g", "type": "blob"}]}})))
            .unwrap_err();
        let fields: Vec<&str> = e.iter().map(|p| p.0.as_str()).collect();
        assert_eq!(fields, vec!["authorization.config", "body.data.0.file", "body.data.1.type"]);
        let e = HttpRequest::build(&json!({"method": "get"})).unwrap_err();
        assert_eq!(e[0].0, "url");
        let e = HttpRequest::build(&data(json!({"timeout": {"connect": "ten"}}))).unwrap_err();
        assert_eq!(e[0].0, "timeout.connect");
    }
}
