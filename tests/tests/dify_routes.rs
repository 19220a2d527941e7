//! The Dify Service API routes around the chat turn, end to end against
//! the real daemon and model: suggested questions after an answer, the
//! app's feedback list, the site settings, file upload and preview, and the
//! speech routes (Dify's error for an app without speech). Every bad input
//! gets its exact status and Dify code and leaves the stored data as it was.

#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)

use std::path::Path;

use edgeai_tests::multipart::{field, file, post_form, Part, BOUNDARY};
use edgeai_tests::{is_uuid, DaemonBuilder};
use serde_json::{json, Value};

const UNKNOWN: &str = "3f0e8a52-9a5c-4c1e-8f43-2f3b8d3c9e11";

/// The files kept in the upload directory (names), sorted.
fn stored_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("reading {}: {e}", dir.display()),
    };
    names.sort();
    names
}

#[test]
fn suggested_questions_feedbacks_site_and_speech() {
    let d = DaemonBuilder::new().app_set("demo", "suggested_questions_after_answer.enabled", true).start();
    let c = d.client();
    let (_, plain_key) = d.admin().create_key("summarise");
    let completion = c.with_key(&plain_key);
    assert_eq!(c.get("/v1/parameters").expect_json(200)["suggested_questions_after_answer"], json!({"enabled": true}));

    // Suggested questions after an answer, asked of the model.
    let a = c.chat_blocking("What is a PLC?", "alice", None);
    let msg = a["message_id"].as_str().unwrap().to_owned();
    let conv = a["conversation_id"].as_str().unwrap().to_owned();
    let s = c.get(&format!("/v1/messages/{msg}/suggested?user=alice")).expect_json(200);
    assert_eq!(s["result"], "success", "{s}");
    let data = s["data"].as_array().unwrap();
    assert!(!data.is_empty() && data.len() <= 3, "one to three suggestions: {s}");
    for q in data {
        let q = q.as_str().unwrap();
        assert!(!q.trim().is_empty() && q.chars().count() <= 120, "bounded, non-empty question: {q:?}");
    }
    // Greedy decoding: the same message gets the same suggestions.
    assert_eq!(c.get(&format!("/v1/messages/{msg}/suggested?user=alice")).expect_json(200), s);

    let before = c.messages("alice", &conv);
    c.get(&format!("/v1/messages/{msg}/suggested")).expect_dify_error(400, "invalid_param");
    c.get(&format!("/v1/messages/{msg}/suggested?user=")).expect_dify_error(400, "invalid_param");
    let e = c.get(&format!("/v1/messages/{msg}/suggested?user=mallory")).expect_dify_error(404, "not_found");
    assert_eq!(e["message"], "Message Not Exists.");
    let e = c.get(&format!("/v1/messages/{UNKNOWN}/suggested?user=alice")).expect_dify_error(404, "not_found");
    assert_eq!(e["message"], "Message Not Exists.");
    c.get("/v1/messages/not-a-uuid/suggested?user=alice").expect_dify_error(404, "not_found");
    c.without_key().get("/v1/messages/not-a-uuid/suggested?user=alice").expect_dify_error(404, "not_found");
    c.without_key().get(&format!("/v1/messages/{msg}/suggested?user=alice")).expect_dify_error(401, "unauthorized");
    c.post_json(&format!("/v1/messages/{msg}/suggested?user=alice"), &json!({})).expect_dify_error(405, "method_not_allowed");
    completion.get(&format!("/v1/messages/{msg}/suggested?user=alice")).expect_dify_error(400, "not_chat_app");
    assert_eq!(c.messages("alice", &conv), before, "asking for suggestions changes no message");

    // The app's feedback list.
    assert_eq!(c.get("/v1/app/feedbacks").expect_json(200), json!({"data": []}));
    let b = c.chat_blocking("What is Modbus?", "bob", None);
    let bob_msg = b["message_id"].as_str().unwrap();
    c.post_json(&format!("/v1/messages/{msg}/feedbacks"), &json!({"rating": "like", "user": "alice", "content": "clear"})).expect_json(200);
    c.post_json(&format!("/v1/messages/{bob_msg}/feedbacks"), &json!({"rating": "dislike", "user": "bob"})).expect_json(200);
    let f = c.get("/v1/app/feedbacks").expect_json(200);
    let list = f["data"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{f}");
    let mine = list.iter().find(|x| x["message_id"] == msg.as_str()).unwrap();
    assert_eq!(mine["id"], msg.as_str());
    assert_eq!(mine["app_id"], "demo");
    assert_eq!(mine["conversation_id"], conv.as_str());
    assert_eq!(mine["rating"], "like");
    assert_eq!(mine["content"], "clear");
    assert_eq!(mine["from_source"], "api");
    assert_eq!(mine["from_end_user_id"], "alice");
    assert_eq!(mine["from_account_id"], Value::Null);
    for k in ["created_at", "updated_at"] {
        let t = mine[k].as_str().unwrap();
        assert!(t.len() == 20 && t.ends_with('Z') && t.as_bytes()[10] == b'T', "{k} is RFC 3339 UTC: {t}");
    }
    let bobs = list.iter().find(|x| x["message_id"] == bob_msg).unwrap();
    assert_eq!((bobs["rating"].as_str(), bobs["content"].as_str()), (Some("dislike"), None));
    let page1 = c.get("/v1/app/feedbacks?page=1&limit=1").expect_json(200)["data"].clone();
    let page2 = c.get("/v1/app/feedbacks?page=2&limit=1").expect_json(200)["data"].clone();
    assert_eq!((page1.as_array().unwrap().len(), page2.as_array().unwrap().len()), (1, 1));
    assert_ne!(page1[0]["id"], page2[0]["id"], "pages do not overlap");
    assert_eq!(c.get("/v1/app/feedbacks?page=3&limit=1").expect_json(200), json!({"data": []}));
    assert_eq!(completion.get("/v1/app/feedbacks").expect_json(200), json!({"data": []}), "another app's feedbacks");
    for q in ["limit=0", "limit=102", "limit=x", "page=0", "page=-1", "page=abc"] {
        c.get(&format!("/v1/app/feedbacks?{q}")).expect_dify_error(400, "invalid_param");
    }
    assert_eq!(c.get("/v1/app/feedbacks").expect_json(200), f, "bad pages change nothing");
    c.request("DELETE", "/v1/app/feedbacks", &[], None).expect_dify_error(405, "method_not_allowed");

    // The site settings.
    let site = c.get("/v1/site").expect_json(200);
    assert_eq!(site["title"], "Demo chat");
    assert_eq!(site["description"], "The end-to-end tests' chat app.");
    assert_eq!(site["default_language"], "en-US");
    for k in ["chat_color_theme", "icon", "icon_url", "copyright", "privacy_policy"] {
        assert_eq!(site[k], Value::Null, "{k}: {site}");
    }
    assert_eq!(site["show_workflow_steps"], false);
    assert_eq!(completion.get("/v1/site").expect_json(200)["title"], "Summarise");
    c.without_key().get("/v1/site").expect_dify_error(401, "unauthorized");

    // Speech: no app has a speech model, and Dify says so for such an app.
    let audio = file("file", "hello.mp3", "audio/mpeg", b"ID3 not really audio");
    let e = post_form(&c, "/v1/audio-to-text", &[audio, field("user", "alice")]).expect_dify_error(400, "invalid_param");
    assert_eq!(e["message"], "Speech to text is not enabled");
    let e = c.post_json("/v1/text-to-audio", &json!({"text": "Hello", "user": "alice"})).expect_dify_error(400, "invalid_param");
    assert_eq!(e["message"], "TTS is not enabled");
    let e = c.post_json("/v1/text-to-audio", &json!({"message_id": msg, "user": "alice"})).expect_dify_error(400, "invalid_param");
    assert_eq!(e["message"], "TTS is not enabled");
    let e = c.post_json("/v1/text-to-audio", &json!({"user": "alice"})).expect_dify_error(400, "invalid_param");
    assert_eq!(e["message"], "Text is required");
    c.post_json("/v1/text-to-audio", &json!({"text": 5})).expect_dify_error(400, "invalid_param");
    c.request("POST", "/v1/text-to-audio", &[], Some(b"{")).expect_dify_error(400, "bad_request");
    c.get("/v1/audio-to-text").expect_dify_error(405, "method_not_allowed");
    c.without_key().post_json("/v1/text-to-audio", &json!({"text": "Hello"})).expect_dify_error(401, "unauthorized");
    assert_eq!(c.messages("alice", &conv).len(), before.len(), "the speech routes store nothing");
}

#[test]
fn suggested_questions_are_refused_when_the_app_has_them_off() {
    let d = DaemonBuilder::new().start();
    let c = d.client();
    assert_eq!(c.get("/v1/parameters").expect_json(200)["suggested_questions_after_answer"], json!({"enabled": false}));
    let a = c.chat_blocking("Hello", "alice", None);
    let msg = a["message_id"].as_str().unwrap();
    let e = c.get(&format!("/v1/messages/{msg}/suggested?user=alice")).expect_dify_error(400, "bad_request");
    assert_eq!(e["message"], "Suggested Questions Is Disabled.");
    // An unknown message is still "not found" first, as in Dify.
    c.get(&format!("/v1/messages/{UNKNOWN}/suggested?user=alice")).expect_dify_error(404, "not_found");

    // The admin import turns the feature on, at once.
    let app = json!({"id": "demo", "name": "Demo chat", "mode": "chat", "suggested_questions_after_answer": {"enabled": true}});
    assert_eq!(d.unix_client().post_json("/admin/v1/apps", &app).expect_json(201)["version"], 2, "a new version");
    let s = c.get(&format!("/v1/messages/{msg}/suggested?user=alice")).expect_json(200);
    assert_eq!(s["result"], "success");
    assert!(!s["data"].as_array().unwrap().is_empty(), "{s}");
    let bad = json!({"id": "demo", "name": "Demo chat", "mode": "chat", "suggested_questions_after_answer": {"enabled": "yes"}});
    d.unix_client().post_json("/admin/v1/apps", &bad).expect_dify_error(400, "invalid_param");
}

#[test]
fn files_upload_and_preview_with_difys_limits_and_errors() {
    let d = DaemonBuilder::new().set("files.max_file_bytes", 1024).start();
    let c = d.client();
    let dir = d.dir().join("files");
    let (_, other_key) = d.admin().create_key("summarise");
    let other = c.with_key(&other_key);

    // A document: stored, described in Dify's shape, served back to its app.
    let text = b"Alarm 7: reset the PLC module.\n";
    let r = post_form(&c, "/v1/files/upload", &[field("user", "alice"), file("file", "notes.txt", "text/plain", text)]);
    let up = r.expect_json(201);
    let id = up["id"].as_str().unwrap().to_owned();
    assert!(is_uuid(&id), "{up}");
    assert_eq!(up["name"], "notes.txt");
    assert_eq!(up["size"], text.len());
    assert_eq!(up["extension"], "txt");
    assert_eq!(up["mime_type"], "text/plain");
    assert_eq!(up["created_by"], "alice");
    assert!(up["created_at"].as_i64().unwrap() > 1_700_000_000, "{up}");
    assert_eq!(up["preview_url"], format!("/v1/files/{id}/preview"));
    assert_eq!(stored_files(&dir), std::slice::from_ref(&id), "the bytes are kept under the file's id, nothing else");
    assert_eq!(std::fs::read(dir.join(&id)).unwrap(), text);

    let p = c.get(&format!("/v1/files/{id}/preview"));
    assert_eq!(p.status, 200);
    assert_eq!(p.body, text);
    assert_eq!(p.header("content-type"), Some("text/plain"));
    assert_eq!(p.header("content-disposition"), None);
    assert_eq!(p.header("x-content-type-options"), Some("nosniff"));
    let p = c.get(&format!("/v1/files/{id}/preview?as_attachment=true"));
    assert_eq!(p.status, 200);
    assert_eq!(p.body, text);
    assert_eq!(p.header("content-type"), Some("application/octet-stream"));
    assert_eq!(p.header("content-disposition"), Some("attachment; filename*=UTF-8''notes.txt"));

    // Without a user the upload is Dify's default end user's; a UTF-8 name survives.
    let md = post_form(&c, "/v1/files/upload", &[file("file", "报告.md", "text/markdown", b"# PLC\n")]).expect_json(201);
    assert_eq!(md["created_by"], "DEFAULT-USER");
    assert_eq!(md["name"], "报告.md");
    let p = c.get(&format!("/v1/files/{}/preview?as_attachment=1", md["id"].as_str().unwrap()));
    assert_eq!(p.header("content-disposition"), Some("attachment; filename*=UTF-8''%E6%8A%A5%E5%91%8A.md"));
    // HTML sent as a text file is never served inline.
    let html = post_form(&c, "/v1/files/upload", &[file("file", "page.txt", "text/html", b"<script>x</script>")]).expect_json(201);
    let p = c.get(&format!("/v1/files/{}/preview", html["id"].as_str().unwrap()));
    assert_eq!(p.header("content-type"), Some("application/octet-stream"));
    assert!(p.header("content-disposition").unwrap().starts_with("attachment;"));
    // So is any type outside the plain-data allow-list (XML can carry script).
    let xml = post_form(&c, "/v1/files/upload", &[file("file", "data.xml", "application/xhtml+xml", b"<x/>")]).expect_json(201);
    let p = c.get(&format!("/v1/files/{}/preview", xml["id"].as_str().unwrap()));
    assert_eq!(p.header("content-type"), Some("application/octet-stream"));
    assert!(p.header("content-disposition").unwrap().starts_with("attachment;"));
    // As with Flask's form and files: the first `user` and the first `file` count.
    let twice = [
        field("user", "first"),
        field("user", "second"),
        file("file", "a.csv", "text/csv", b"a,b\n"),
        file("file", "b.csv", "text/csv", b"c"),
    ];
    let first = post_form(&c, "/v1/files/upload", &twice).expect_json(201);
    assert_eq!((first["created_by"].as_str(), first["name"].as_str(), first["size"].as_u64()), (Some("first"), Some("a.csv"), Some(4)));
    let kept = stored_files(&dir);
    assert_eq!(kept.len(), 5, "notes.txt, 报告.md, page.txt, data.xml, a.csv");

    // Preview: only the owning app, only known UUIDs.
    other.get(&format!("/v1/files/{id}/preview")).expect_dify_error(404, "file_not_found");
    c.get(&format!("/v1/files/{UNKNOWN}/preview")).expect_dify_error(404, "file_not_found");
    c.get("/v1/files/not-a-uuid/preview").expect_dify_error(404, "not_found");
    c.get(&format!("/v1/files/{id}/preview?as_attachment=maybe")).expect_dify_error(400, "invalid_param");
    c.without_key().get(&format!("/v1/files/{id}/preview")).expect_dify_error(401, "unauthorized");
    c.request("DELETE", &format!("/v1/files/{id}/preview"), &[], None).expect_dify_error(405, "method_not_allowed");

    // Uploads Dify refuses, each with its code; none leaves a byte behind.
    let up = |parts: &[Part<'_>]| post_form(&c, "/v1/files/upload", parts);
    c.post_json("/v1/files/upload", &json!({"user": "alice"})).expect_dify_error(400, "no_file_uploaded");
    up(&[field("user", "alice")]).expect_dify_error(400, "no_file_uploaded");
    up(&[field("file", "not a file part")]).expect_dify_error(400, "no_file_uploaded");
    up(&[file("doc", "notes.txt", "text/plain", text)]).expect_dify_error(400, "no_file_uploaded");
    let e = up(&[file("file", "a.txt", "text/plain", text), file("other", "b.txt", "text/plain", text)])
        .expect_dify_error(400, "too_many_files");
    assert_eq!(e["message"], "Only one file is allowed.");
    let no_type = Part { name: "file", file_name: Some("a.txt"), content_type: None, data: text };
    up(&[no_type]).expect_dify_error(415, "unsupported_file_type");
    let e = up(&[file("file", "", "text/plain", text)]).expect_dify_error(400, "filename_not_exists_error");
    assert_eq!(e["message"], "The specified filename does not exist.");
    up(&[file("file", "../etc/x.txt", "text/plain", text)]).expect_dify_error(400, "invalid_param");
    let e = up(&[file("file", "photo.png", "image/png", b"\x89PNG\r\n")]).expect_dify_error(415, "unsupported_file_type");
    assert_eq!(e["message"], "File type not allowed.");
    up(&[file("file", "run.sh", "text/x-sh", b"echo hi")]).expect_dify_error(415, "unsupported_file_type");
    let big = vec![b'x'; 2000];
    let e = up(&[file("file", "big.txt", "text/plain", &big)]).expect_dify_error(413, "file_too_large");
    assert!(e["message"].as_str().unwrap().starts_with("File size exceeded."), "{e}");
    let long_user = "u".repeat(2000);
    up(&[field("user", &long_user), file("file", "a.txt", "text/plain", text)]).expect_dify_error(400, "invalid_param");
    let ct = format!("multipart/form-data; boundary={BOUNDARY}");
    c.request("POST", "/v1/files/upload", &[("Content-Type", &ct)], Some(b"--garbage")).expect_dify_error(400, "bad_request");
    c.get("/v1/files/upload").expect_dify_error(405, "method_not_allowed");
    c.without_key().post_json("/v1/files/upload", &json!({})).expect_dify_error(401, "unauthorized");
    assert_eq!(stored_files(&dir), kept, "refused uploads leave nothing behind");
    assert_eq!(c.get(&format!("/v1/files/{id}/preview")).body, text, "and the stored file is unchanged");
}
