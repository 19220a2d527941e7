//! multipart/form-data bodies for the upload routes (`/v1/files/upload`,
//! the datasets API's `create-by-file`), built by hand so a test controls
//! every byte (file names, content types, repeated parts).

use crate::{Client, Response};

/// The boundary of every body built here.
pub const BOUNDARY: &str = "edgeai-test-boundary-7f3a";

/// One part of a multipart/form-data body.
pub struct Part<'a> {
    pub name: &'a str,
    pub file_name: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub data: &'a [u8],
}

pub fn field<'a>(name: &'a str, value: &'a str) -> Part<'a> {
    Part { name, file_name: None, content_type: None, data: value.as_bytes() }
}

pub fn file<'a>(name: &'a str, file_name: &'a str, content_type: &'a str, data: &'a [u8]) -> Part<'a> {
    Part { name, file_name: Some(file_name), content_type: Some(content_type), data }
}

pub fn multipart(parts: &[Part<'_>]) -> Vec<u8> {
    let mut b = Vec::new();
    for p in parts {
        b.extend_from_slice(format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{}\"", p.name).as_bytes());
        if let Some(f) = p.file_name {
            b.extend_from_slice(format!("; filename=\"{f}\"").as_bytes());
        }
        b.extend_from_slice(b"\r\n");
        if let Some(ct) = p.content_type {
            b.extend_from_slice(format!("Content-Type: {ct}\r\n").as_bytes());
        }
        b.extend_from_slice(b"\r\n");
        b.extend_from_slice(p.data);
        b.extend_from_slice(b"\r\n");
    }
    b.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    b
}

pub fn post_form(c: &Client, path: &str, parts: &[Part<'_>]) -> Response {
    let ct = format!("multipart/form-data; boundary={BOUNDARY}");
    c.request("POST", path, &[("Content-Type", &ct)], Some(&multipart(parts)))
}
