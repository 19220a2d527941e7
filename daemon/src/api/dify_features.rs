//! Dify Service API routes around the chat turn (`/v1/...` with an app
//! key): suggested questions after an answer, the app's feedback list, the
//! site settings, file upload (multipart/form-data, bounded) and preview,
//! and the speech routes, which answer Dify's own error because no app has
//! a speech model. Shapes and error codes follow Dify's controllers
//! (`api/controllers/service_api/app/{message,file,file_preview,audio,site}.py`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{json, Value};

use super::body::{self, Body};
use super::dify::{query, required_query_user, DEFAULT_USER};
use super::error::ApiError;
use super::{ApiState, Caller};
use crate::engine::{AppDefinition, AppMode};
use crate::service::features::{check_upload, FeatureError, Upload};
use crate::store::{AppFeedback, UploadFile};

/// Room for the multipart framing and the small fields around the file.
const FORM_OVERHEAD_BYTES: u64 = 64 << 10;
/// Longest `user` form field read.
const MAX_USER_FIELD_BYTES: u64 = 1024;

/// Whether `rest` (the path after `/v1/`) is one of these routes. Ids must
/// be UUIDs, as in Dify's `<uuid:...>` routes, so anything else is a 404
/// before any key is checked.
pub fn is_route(rest: &[String]) -> bool {
    let r: Vec<&str> = rest.iter().map(String::as_str).collect();
    match r.as_slice() {
        ["messages", id, "suggested"] | ["files", id, "preview"] => uuid::Uuid::parse_str(id).is_ok(),
        ["app", "feedbacks"] | ["site"] | ["files", "upload"] | ["audio-to-text"] | ["text-to-audio"] => true,
        _ => false,
    }
}

pub async fn route(state: &Arc<ApiState>, caller: Caller, rest: &[String], req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let Caller { app, user: forced } = caller;
    let forced = forced.as_deref();
    let r: Vec<&str> = rest.iter().map(String::as_str).collect();
    let m = req.method().clone();
    match (r.as_slice(), &m) {
        (["messages", id, "suggested"], &Method::GET) => {
            let user = required_query_user(forced, &query(&req))?;
            if app.mode != AppMode::Chat {
                return Err(ApiError::NotChatApp);
            }
            let questions = state.service.suggested_questions(&app, &user, id).await??;
            Ok(body::json(StatusCode::OK, &json!({"result": "success", "data": questions})))
        }
        (["app", "feedbacks"], &Method::GET) => feedbacks(state, &app, &query(&req)).await,
        (["site"], &Method::GET) => Ok(body::json(StatusCode::OK, &site(&app))),
        (["files", "upload"], &Method::POST) => upload(state, &app, forced, req).await,
        (["files", id, "preview"], &Method::GET) => {
            let as_attachment = parse_bool("as_attachment", query(&req).get("as_attachment"))?;
            let (file, bytes) = state.service.read_upload(&state.files, &app, id).await??;
            Ok(file_response(&file, bytes, as_attachment))
        }
        (["audio-to-text"], &Method::POST) => {
            // Read what the client sends (bounded, frame by frame, nothing
            // kept) so it sees the answer, not a reset.
            let mut body = Limited::new(req.into_body(), (state.files.max_file_bytes + FORM_OVERHEAD_BYTES) as usize);
            while let Some(Ok(_)) = body.frame().await {}
            Err(ApiError::InvalidParam("Speech to text is not enabled".into()))
        }
        (["text-to-audio"], &Method::POST) => {
            let b: TextToAudioBody = body::typed(body::read_json(req.into_body(), state.limits.max_body_bytes).await?)?;
            let empty = |s: &Option<String>| s.as_deref().unwrap_or("").is_empty();
            if empty(&b.message_id) && empty(&b.text) {
                return Err(ApiError::InvalidParam("Text is required".into()));
            }
            Err(ApiError::InvalidParam("TTS is not enabled".into()))
        }
        _ => Err(ApiError::MethodNotAllowed),
    }
}

/// Dify's text-to-audio body; `voice`, `streaming` and `user` are accepted and unused.
#[derive(Deserialize)]
struct TextToAudioBody {
    message_id: Option<String>,
    text: Option<String>,
}

/// A bool query parameter as pydantic reads one; absent is false.
fn parse_bool(name: &str, v: Option<&String>) -> Result<bool, ApiError> {
    match v.map(|s| s.to_ascii_lowercase()).as_deref() {
        None => Ok(false),
        Some("true" | "1" | "yes" | "on" | "t" | "y") => Ok(true),
        Some("false" | "0" | "no" | "off" | "f" | "n") => Ok(false),
        Some(other) => Err(ApiError::InvalidParam(format!("{name} must be a boolean, not {other:?}"))),
    }
}

/// A positive integer query parameter within `range`, or its default.
fn parse_int(q: &HashMap<String, String>, name: &str, default: u32, range: std::ops::RangeInclusive<u32>) -> Result<u32, ApiError> {
    match q.get(name) {
        None => Ok(default),
        Some(s) => match s.parse::<u32>() {
            Ok(n) if range.contains(&n) => Ok(n),
            _ => Err(ApiError::InvalidParam(format!("{name} must be an integer from {} to {}, not {s:?}", range.start(), range.end()))),
        },
    }
}

/// Unix seconds as RFC 3339 UTC.
fn iso(secs: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

fn feedback_json(app: &AppDefinition, f: &AppFeedback) -> Value {
    // A message has at most one feedback here, so its id names the feedback.
    json!({
        "id": f.message_id, "app_id": app.id, "conversation_id": f.conversation_id, "message_id": f.message_id,
        "rating": f.rating.as_str(), "content": f.content, "from_source": "api", "from_end_user_id": f.user,
        "from_account_id": null, "created_at": iso(f.created_at), "updated_at": iso(f.updated_at),
    })
}

async fn feedbacks(state: &ApiState, app: &AppDefinition, q: &HashMap<String, String>) -> Result<Response<Body>, ApiError> {
    let page = parse_int(q, "page", 1, 1..=u32::MAX / 101)?;
    let limit = parse_int(q, "limit", 20, 1..=101)?;
    let items = state.service.app_feedbacks(app, page, limit).await?;
    let data: Vec<Value> = items.iter().map(|f| feedback_json(app, f)).collect();
    Ok(body::json(StatusCode::OK, &json!({"data": data})))
}

/// Dify's site fields: the app's name and description; the web-app styling
/// Dify keeps per site does not exist here, so it is null or off.
fn site(app: &AppDefinition) -> Value {
    json!({
        "title": app.name, "chat_color_theme": null, "chat_color_theme_inverted": false, "icon_type": null, "icon": null,
        "icon_background": null, "icon_url": null, "description": app.description, "copyright": null,
        "privacy_policy": null, "custom_disclaimer": "", "default_language": "en-US", "show_workflow_steps": false,
        "use_icon_as_answer_icon": false,
    })
}

fn file_json(f: &UploadFile) -> Value {
    let url = format!("/v1/files/{}/preview", f.id);
    json!({
        "id": f.id, "name": f.name, "size": f.size, "extension": f.extension, "mime_type": f.mime_type,
        "created_by": f.user, "created_at": f.created_at, "preview_url": url, "source_url": url,
    })
}

fn multipart_error(e: multer::Error, limit: u64) -> ApiError {
    match e {
        multer::Error::FieldSizeExceeded { field_name: Some(name), .. } if name == "user" => {
            ApiError::InvalidParam(format!("user is longer than {MAX_USER_FIELD_BYTES} bytes"))
        }
        multer::Error::FieldSizeExceeded { .. } | multer::Error::StreamSizeExceeded { .. } => FeatureError::FileTooLarge { limit }.into(),
        other => ApiError::BodyRead(format!("malformed multipart/form-data: {other}")),
    }
}

/// Dify's `POST /files/upload`: one part named `file` (with a file name
/// and a content type) and an optional `user` field. The file streams to
/// disk within `files.max_file_bytes`; the checks run in Dify's order.
async fn upload(state: &ApiState, app: &AppDefinition, forced: Option<&str>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let limit = state.files.max_file_bytes;
    let boundary = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| multer::parse_boundary(ct).ok())
        // Not a multipart body: there is no file in it.
        .ok_or(ApiError::NoFileUploaded)?;
    let sizes =
        multer::SizeLimit::new().whole_stream(limit + FORM_OVERHEAD_BYTES).per_field(limit + 1).for_field("user", MAX_USER_FIELD_BYTES);
    let stream = req.into_body().into_data_stream();
    let mut form = multer::Multipart::with_constraints(stream, boundary, multer::Constraints::new().size_limit(sizes));

    let mut user: Option<String> = None;
    // The first file part's name, whether another name followed (Dify counts
    // distinct names), and the checked `file`.
    let mut first_file_name: Option<String> = None;
    let mut more_file_names = false;
    let mut file: Option<Result<Upload, FeatureError>> = None;
    while let Some(mut field) = form.next_field().await.map_err(|e| multipart_error(e, limit))? {
        let name = field.name().unwrap_or("").to_owned();
        if field.file_name().is_none() {
            // The first `user` counts, as with Flask's `request.form.get`.
            if name == "user" && user.is_none() {
                user = Some(field.text().await.map_err(|e| multipart_error(e, limit))?);
                continue;
            }
        } else {
            match &first_file_name {
                None => first_file_name = Some(name.clone()),
                Some(first) if *first != name => more_file_names = true,
                Some(_) => {}
            }
            if name == "file" && file.is_none() {
                let checked = check_upload(field.file_name(), field.content_type().map(|m| m.essence_str()));
                let mut started = match checked {
                    Ok(meta) => state.service.begin_upload(&state.files, meta).await,
                    Err(e) => Err(e),
                };
                if let Ok(up) = &mut started {
                    while let Some(chunk) = field.chunk().await.map_err(|e| multipart_error(e, limit))? {
                        up.write(&chunk).await?;
                    }
                }
                let streamed = started.is_ok();
                file = Some(started);
                if streamed {
                    continue;
                }
            }
        }
        // Any other part is read and dropped.
        while field.chunk().await.map_err(|e| multipart_error(e, limit))?.is_some() {}
    }
    let Some(file) = file else { return Err(ApiError::NoFileUploaded) };
    if more_file_names {
        return Err(ApiError::TooManyFiles);
    }
    let user = match forced {
        Some(f) => f.to_owned(),
        None => user.filter(|u| !u.is_empty()).unwrap_or_else(|| DEFAULT_USER.to_owned()),
    };
    let stored = state.service.finish_upload(&state.files, app, &user, file?).await??;
    Ok(body::json(StatusCode::CREATED, &file_json(&stored)))
}

/// What Python's `urllib.parse.quote` leaves as it is in a file name.
const FILENAME_SAFE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Content types served inline: plain data a browser shows but never runs.
/// Anything else (HTML, SVG, XML, scripts, office files, whatever type the
/// uploader claimed) is served as a download, so an upload cannot become a
/// page of this origin (Dify's `enforce_download_for_html`, as an allow-list).
fn is_inline_safe(mime: &str) -> bool {
    let essence = mime.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    matches!(essence.as_str(), "text/plain" | "text/markdown" | "text/csv" | "text/vtt" | "application/json" | "application/pdf")
}

/// The bytes with Dify's preview headers: the stored content type, or a
/// download (`application/octet-stream`, `Content-Disposition: attachment`).
fn file_response(f: &UploadFile, bytes: Vec<u8>, as_attachment: bool) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(bytes)).boxed());
    let attachment = as_attachment || !is_inline_safe(&f.mime_type);
    let h = r.headers_mut();
    let octet = HeaderValue::from_static("application/octet-stream");
    let content_type = if attachment { octet } else { HeaderValue::from_str(&f.mime_type).unwrap_or(octet) };
    h.insert(header::CONTENT_TYPE, content_type);
    if attachment {
        let encoded = percent_encoding::utf8_percent_encode(&f.name, FILENAME_SAFE);
        if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename*=UTF-8''{encoded}")) {
            h.insert(header::CONTENT_DISPOSITION, v);
        }
    }
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=3600"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(p: &str) -> bool {
        is_route(&p.split('/').map(str::to_owned).collect::<Vec<_>>())
    }

    const ID: &str = "3f0e8a52-9a5c-4c1e-8f43-2f3b8d3c9e11";

    #[test]
    fn routes_with_ids_need_uuids() {
        for p in ["app/feedbacks", "site", "files/upload", "audio-to-text", "text-to-audio"] {
            assert!(route(p), "{p}");
        }
        assert!(route(&format!("messages/{ID}/suggested")));
        assert!(route(&format!("files/{ID}/preview")));
        for p in ["messages/x/suggested", "files/x/preview", "files", "app", "site/x", "messages", "parameters"] {
            assert!(!route(p), "{p}");
        }
    }

    #[test]
    fn errors_map_to_difys_status_and_code() {
        let code = |e: ApiError| {
            let m = e.mapped();
            (m.status.as_u16(), m.code)
        };
        assert_eq!(code(ApiError::NoFileUploaded), (400, "no_file_uploaded"));
        assert_eq!(code(ApiError::TooManyFiles), (400, "too_many_files"));
        assert_eq!(code(FeatureError::SuggestionsDisabled.into()), (400, "bad_request"));
        assert_eq!(code(FeatureError::FileTooLarge { limit: 1 }.into()), (413, "file_too_large"));
        assert_eq!(code(FeatureError::UnsupportedFileType { reason: String::new() }.into()), (415, "unsupported_file_type"));
        assert_eq!(code(FeatureError::FilenameMissing.into()), (400, "filename_not_exists_error"));
        assert_eq!(code(FeatureError::FilenameInvalid.into()), (400, "invalid_param"));
        assert_eq!(code(FeatureError::FileNotFound { id: ID.into() }.into()), (404, "file_not_found"));
        let io = FeatureError::Io { path: "/secret/dir".into(), source: std::io::Error::other("disk") };
        let m = ApiError::from(io).mapped();
        assert_eq!((m.status.as_u16(), m.code), (500, "internal_server_error"));
        assert!(!m.message.contains("/secret/dir"), "{}", m.message);
    }

    #[test]
    fn booleans_and_pages_are_checked() {
        assert!(!parse_bool("b", None).expect("absent"));
        assert!(parse_bool("b", Some(&"True".into())).expect("true"));
        assert!(!parse_bool("b", Some(&"0".into())).expect("0"));
        assert!(parse_bool("b", Some(&"maybe".into())).is_err());
        let q: HashMap<String, String> = [("limit".to_owned(), "102".to_owned())].into();
        assert!(parse_int(&q, "limit", 20, 1..=101).is_err());
        assert_eq!(parse_int(&q, "page", 1, 1..=10).expect("default"), 1);
    }

    #[test]
    fn html_is_never_served_inline() {
        assert!(!is_inline_safe("text/html; charset=utf-8"));
        assert!(!is_inline_safe("image/svg+xml"));
        assert!(!is_inline_safe("application/xml"));
        assert!(!is_inline_safe("application/xhtml+xml"));
        assert!(!is_inline_safe("text/xml"));
        assert!(is_inline_safe("text/plain"));
        assert!(is_inline_safe("Text/Plain; charset=utf-8"));
        assert!(is_inline_safe("application/pdf"));
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(iso(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso(1_796_000_000), "2026-11-30T00:53:20Z");
    }
}
