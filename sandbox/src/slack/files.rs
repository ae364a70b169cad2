//! The fake Slack's external file upload, on Slack's documented wire format:
//! `files.getUploadURLExternal` (`filename`, `length` > 0; else `missing_argument`, a length
//! that is not a number `invalid_arguments`) answers `upload_url` + `file_id`; a POST of the
//! bytes to `/upload/{file_id}` (HTTP 200, or 400 when the bytes are not `length` long or the
//! file is unknown); `files.completeUploadExternal` (`files` a JSON array of `{id, title}`;
//! missing or unreadable: `invalid_arguments`; an id never uploaded: `file_not_found`) shares
//! the files in `channel_id`, in `thread_ts`'s thread, with `initial_comment`.

use super::{FakeSlack, Inner};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::Arc;

/// A file as the fake received it.
#[derive(Debug, Clone, PartialEq)]
pub struct SlackFile {
    pub id: String,
    pub filename: String,
    /// The length declared to `files.getUploadURLExternal`.
    pub length: usize,
    /// The bytes POSTed to the upload URL (`None` until then).
    pub content: Option<Vec<u8>>,
    /// Set by `files.completeUploadExternal`.
    pub title: Option<String>,
    pub channel: Option<String>,
    pub thread_ts: Option<String>,
    pub initial_comment: Option<String>,
}

/// `files.getUploadURLExternal`.
pub(super) fn get_upload_url(inner: &Inner, body: &Value) -> Result<Value, &'static str> {
    let filename = body["filename"].as_str().unwrap_or("");
    let length = match &body["length"] {
        Value::String(s) if !s.is_empty() => s.parse::<usize>().map_err(|_| "invalid_arguments")?,
        Value::Number(n) => n.as_u64().ok_or("invalid_arguments")? as usize,
        _ => 0,
    };
    if filename.is_empty() || length == 0 {
        return Err("missing_argument");
    }
    let id = inner.quiet(|s| {
        s.next_file += 1;
        let id = format!("F0FAKE{:05}", s.next_file);
        s.files.push(SlackFile {
            id: id.clone(),
            filename: filename.to_string(),
            length,
            content: None,
            title: None,
            channel: None,
            thread_ts: None,
            initial_comment: None,
        });
        id
    });
    Ok(json!({"upload_url": format!("{}/upload/{id}", inner.base), "file_id": id}))
}

/// `POST /upload/{file_id}`: the bytes, raw.
pub(super) async fn receive(State(inner): State<Arc<Inner>>, Path(id): Path<String>, body: Bytes) -> Response {
    let answer = inner.with(|s| match s.files.iter_mut().find(|f| f.id == id) {
        None => Err("no such upload"),
        Some(f) if f.length != body.len() => Err("the body is not the declared length"),
        Some(f) => {
            f.content = Some(body.to_vec());
            Ok(())
        }
    });
    match answer {
        Ok(()) => (StatusCode::OK, format!("OK - {}", body.len())).into_response(),
        Err(why) => (StatusCode::BAD_REQUEST, why).into_response(),
    }
}

/// `files.completeUploadExternal`.
pub(super) fn complete(inner: &Inner, body: &Value) -> Result<Value, &'static str> {
    let files: Vec<Value> = match &body["files"] {
        Value::String(s) => serde_json::from_str(s).map_err(|_| "invalid_arguments")?,
        Value::Array(a) => a.clone(),
        _ => return Err("invalid_arguments"),
    };
    if files.is_empty() || files.iter().any(|f| f["id"].as_str().is_none_or(str::is_empty)) {
        return Err("invalid_arguments");
    }
    let text = |k: &str| body[k].as_str().filter(|v| !v.is_empty()).map(str::to_string);
    inner.quiet(|s| {
        for f in &files {
            let id = f["id"].as_str().unwrap_or("");
            if !s.files.iter().any(|x| x.id == id && x.content.is_some()) {
                return Err("file_not_found");
            }
        }
        let mut shared = Vec::new();
        for f in &files {
            if let Some(x) = s.files.iter_mut().find(|x| Some(x.id.as_str()) == f["id"].as_str()) {
                x.title = f["title"].as_str().map(str::to_string).or_else(|| Some(x.filename.clone()));
                x.channel = text("channel_id");
                x.thread_ts = text("thread_ts");
                x.initial_comment = text("initial_comment");
                shared.push(json!({"id": x.id, "title": x.title, "name": x.filename, "size": x.length}));
            }
        }
        Ok(json!({"files": shared}))
    })
}

impl FakeSlack {
    /// The files uploaded and shared (completed), in order.
    pub fn files(&self) -> Vec<SlackFile> {
        self.inner.quiet(|s| s.files.iter().filter(|f| f.channel.is_some()).cloned().collect())
    }
}
