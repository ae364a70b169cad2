//! The Web API and response_url endpoints of the fake Slack.

use super::{Call, Inner, Posted};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Instant;

pub(super) fn router(inner: Arc<Inner>) -> Router {
    Router::new()
        .route("/api/{method}", post(method))
        .route("/hooks/{n}", post(hook))
        .route("/upload/{file}", post(super::files::receive))
        .with_state(inner)
}

fn ok(v: Value) -> Response {
    let mut v = v;
    v["ok"] = json!(true);
    Json(v).into_response()
}

fn err(code: &str) -> Response {
    Json(json!({"ok": false, "error": code})).into_response()
}

/// Slack reads JSON bodies and form bodies alike.
fn parse_body(headers: &HeaderMap, body: &[u8]) -> Value {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if ct.starts_with("application/json") {
        return serde_json::from_slice(body).unwrap_or(Value::Null);
    }
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body).unwrap_or_default();
    let mut o = serde_json::Map::new();
    for (k, v) in pairs {
        let v = if k == "blocks" { serde_json::from_str(&v).unwrap_or(Value::String(v)) } else { Value::String(v) };
        o.insert(k, v);
    }
    Value::Object(o)
}

async fn method(State(inner): State<Arc<Inner>>, Path(method): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let body = parse_body(&headers, &body);
    let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let want = if method == "apps.connections.open" { &inner.app_token } else { &inner.bot_token };
    let record = |status: u16, error: Option<&str>| {
        inner.with(|s| s.calls.push(Call { method: method.clone(), body: body.clone(), status, error: error.map(str::to_string) }));
    };
    if auth != format!("Bearer {want}") {
        record(200, Some("invalid_auth"));
        return err("invalid_auth");
    }
    // Rate limits: a scripted storm, or the per-method window.
    let limited = inner.quiet(|s| {
        let retry = s.retry_after_secs;
        if let Some(n) = s.storms.get_mut(&method)
            && *n > 0
        {
            *n -= 1;
            return Some(retry);
        }
        if let Some((max, window)) = s.limits.get(&method).copied() {
            let now = Instant::now();
            let q = s.recent.entry(method.clone()).or_default();
            while q.front().is_some_and(|t| now.duration_since(*t) >= window) {
                q.pop_front();
            }
            if q.len() >= max {
                return Some(retry.max(window.as_secs().max(1)));
            }
            q.push_back(now);
        }
        None
    });
    if let Some(secs) = limited {
        record(429, Some("ratelimited"));
        return (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, secs.to_string())], Json(json!({"ok": false, "error": "ratelimited"})))
            .into_response();
    }
    let content = json!({"text": body["text"], "blocks": body["blocks"]});
    if matches!(method.as_str(), "chat.postMessage" | "chat.update" | "chat.postEphemeral") {
        let v = super::violations(&content);
        if !v.is_empty() {
            inner.quiet(|s| s.violations.extend(v.iter().map(|x| format!("{method}: {x}"))));
            record(200, Some("invalid_blocks"));
            return err("invalid_blocks");
        }
        if content["text"].is_null() && content["blocks"].is_null() {
            record(200, Some("no_text"));
            return err("no_text");
        }
    }
    let channel = body["channel"].as_str().unwrap_or("").to_string();
    let valid_channel = !channel.is_empty() && channel.bytes().all(|b| b.is_ascii_alphanumeric());
    let res = match method.as_str() {
        "chat.postMessage" if valid_channel => {
            let (ts, thread) = inner.quiet(|s| {
                s.next_ts += 1;
                let ts = format!("1700000000.{:06}", s.next_ts);
                let thread = body["thread_ts"].as_str().map(str::to_string);
                s.messages.push(Posted {
                    channel: channel.clone(),
                    ts: ts.clone(),
                    thread_ts: thread.clone(),
                    content: content.clone(),
                    versions: vec![content.clone()],
                });
                (ts, thread)
            });
            let mut m = json!({"type": "message", "ts": ts, "text": content["text"], "blocks": content["blocks"], "bot_id": "B0RUNBOT"});
            if let Some(t) = thread {
                m["thread_ts"] = json!(t);
            }
            Ok(json!({"channel": channel, "ts": ts, "message": m}))
        }
        "chat.update" if valid_channel => {
            let ts = body["ts"].as_str().unwrap_or("").to_string();
            let found = inner.quiet(|s| match s.messages.iter_mut().find(|m| m.channel == channel && m.ts == ts) {
                Some(m) => {
                    m.content = content.clone();
                    m.versions.push(content.clone());
                    true
                }
                None => false,
            });
            if found {
                Ok(json!({"channel": channel, "ts": ts, "text": content["text"], "message": {"text": content["text"], "blocks": content["blocks"]}}))
            } else {
                Err("message_not_found")
            }
        }
        "chat.postEphemeral" if valid_channel => {
            if body["user"].as_str().is_none_or(|u| u.is_empty()) {
                Err("user_not_in_channel")
            } else {
                inner.quiet(|s| s.ephemerals.push(body.clone()));
                Ok(json!({"message_ts": "1700000000.000001"}))
            }
        }
        "conversations.create" => {
            let name = body["name"].as_str().unwrap_or("").to_string();
            let valid = !name.is_empty()
                && name.chars().count() <= 80
                && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_'));
            if !valid {
                Err("invalid_name_specials")
            } else {
                inner.quiet(|s| {
                    if s.channels.iter().any(|(_, n)| *n == name) {
                        return Err("name_taken");
                    }
                    s.next_channel += 1;
                    let id = format!("C0NEW{:05}", s.next_channel);
                    s.channels.push((id.clone(), name.clone()));
                    Ok(json!({"channel": {"id": id, "name": name, "created": 1700000000, "is_channel": true}}))
                })
            }
        }
        "conversations.invite" if valid_channel => {
            let users: Vec<String> = match &body["users"] {
                Value::String(s) => s.split(',').map(str::to_string).collect(),
                Value::Array(a) => a.iter().filter_map(|u| u.as_str().map(str::to_string)).collect(),
                _ => Vec::new(),
            };
            if users.is_empty() {
                Err("no_user")
            } else {
                inner.quiet(|s| s.invites.push((channel.clone(), users)));
                Ok(json!({"channel": {"id": channel, "created": 1700000000}}))
            }
        }
        "apps.connections.open" => {
            let ticket = inner.quiet(|s| {
                s.next_envelope += 1;
                s.next_envelope
            });
            Ok(json!({"url": format!("{}/link/?ticket={ticket}&app_id=A0RUNBOT", inner.ws_base)}))
        }
        "files.getUploadURLExternal" => super::files::get_upload_url(&inner, &body),
        "files.completeUploadExternal" => super::files::complete(&inner, &body),
        "auth.test" => Ok(json!({"user_id": "U0RUNBOT", "team_id": "T0001", "bot_id": "B0RUNBOT"})),
        "chat.postMessage" | "chat.update" | "chat.postEphemeral" | "conversations.invite" => Err("channel_not_found"),
        _ => Err("unknown_method"),
    };
    match res {
        Ok(v) => {
            record(200, None);
            ok(v)
        }
        Err(code) => {
            record(200, Some(code));
            err(code)
        }
    }
}

async fn hook(State(inner): State<Arc<Inner>>, Path(n): Path<u64>, headers: HeaderMap, body: Bytes) -> Response {
    let body = parse_body(&headers, &body);
    let v = super::violations(&json!({"text": body["text"], "blocks": body["blocks"]}));
    if !v.is_empty() {
        inner.with(|s| s.violations.extend(v.iter().map(|x| format!("response_url: {x}"))));
        return (StatusCode::BAD_REQUEST, "invalid_blocks").into_response();
    }
    let known = inner.with(|s| {
        if n == 0 || n > s.next_hook {
            return false;
        }
        s.responses.push((n, body.clone()));
        true
    });
    if known {
        (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], "{\"ok\":true}").into_response()
    } else {
        (StatusCode::NOT_FOUND, "no_such_hook").into_response()
    }
}
