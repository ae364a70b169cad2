//! Files into Slack the way Slack documents it (the `files.upload` method is retired):
//! `files.getUploadURLExternal` (form arguments `filename`, `length`) answers an `upload_url`
//! and a `file_id`; the bytes are POSTed to that URL; `files.completeUploadExternal` (`files` =
//! `[{"id", "title"}]`, `channel_id`, `thread_ts`, `initial_comment`) shares the file in the
//! channel, as a reply in the thread when `thread_ts` is given.

use hyper::body::Body as _;
use runbot_commands::ports::{ChatError, Upload};
use serde_json::{Value, json};
use std::time::Duration;

/// The plain hyper client the Slack adapter also uses for response_url replies.
pub(super) type Client = hyper_util::client::legacy::Client<crate::tls::LazyHttpsConnector, String>;

/// One HTTP POST; the answer's status, Retry-After and body.
async fn send(client: &Client, url: &str, token: Option<&str>, content_type: &str, body: String) -> Result<(u16, Option<u64>, Vec<u8>), ChatError> {
    let uri: hyper::Uri = url.parse().map_err(|_| ChatError::Other(format!("unreadable Slack URL {url}")))?;
    let mut req = hyper::Request::post(uri).header(hyper::header::CONTENT_TYPE, content_type);
    if let Some(t) = token {
        req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = req.body(body).map_err(|e| ChatError::Other(format!("building a Slack request: {e}")))?;
    let res =
        client.request(req).await.map_err(|e| ChatError::Other(format!("Slack request failed: {}", e.to_string().lines().next().unwrap_or(""))))?;
    let status = res.status().as_u16();
    let retry = res.headers().get(hyper::header::RETRY_AFTER).and_then(|v| v.to_str().ok()?.trim().parse().ok());
    let mut incoming = res.into_body();
    let mut bytes = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| std::pin::Pin::new(&mut incoming).poll_frame(cx)).await {
        let frame = frame.map_err(|e| ChatError::Other(format!("reading Slack's answer: {e}")))?;
        if let Ok(data) = frame.into_data() {
            bytes.extend_from_slice(&data);
        }
    }
    Ok((status, retry, bytes))
}

/// A Web API method with form arguments; its JSON answer when `ok`.
async fn call(client: &Client, api_url: &str, token: &str, method: &str, form: &[(&str, &str)]) -> Result<Value, ChatError> {
    let body = serde_urlencoded::to_string(form).map_err(|e| ChatError::Other(format!("encoding {method}: {e}")))?;
    let url = format!("{}/{method}", api_url.trim_end_matches('/'));
    let (status, retry, bytes) = send(client, &url, Some(token), "application/x-www-form-urlencoded", body).await?;
    if status == 429 {
        return Err(ChatError::RateLimited(Duration::from_secs(retry.unwrap_or(1))));
    }
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| ChatError::Other(format!("{method}: HTTP {status}, not a Slack answer")))?;
    if v["ok"] != true {
        return Err(ChatError::Other(format!("{method}: {}", v["error"].as_str().unwrap_or("error"))));
    }
    Ok(v)
}

/// Uploads `file` into `channel` (in thread `thread_ts` when given); returns the file id.
pub(super) async fn upload(
    client: &Client,
    api_url: &str,
    token: &str,
    channel: &str,
    thread_ts: Option<&str>,
    file: &Upload,
    comment: &str,
) -> Result<String, ChatError> {
    let content = String::from_utf8(file.content.clone()).map_err(|_| ChatError::Other("only text files are uploaded to Slack".into()))?;
    let length = file.content.len().to_string();
    let got = call(client, api_url, token, "files.getUploadURLExternal", &[("filename", &file.filename), ("length", &length)]).await?;
    let (Some(url), Some(id)) = (got["upload_url"].as_str(), got["file_id"].as_str()) else {
        return Err(ChatError::Other("files.getUploadURLExternal answered no upload_url or file_id".into()));
    };
    let (status, retry, _) = send(client, url, None, "application/octet-stream", content).await?;
    match status {
        200..=299 => {}
        429 => return Err(ChatError::RateLimited(Duration::from_secs(retry.unwrap_or(1)))),
        code => return Err(ChatError::Other(format!("uploading {} to Slack: HTTP {code}", file.filename))),
    }
    let files = json!([{"id": id, "title": file.title}]).to_string();
    let mut form = vec![("files", files.as_str()), ("channel_id", channel), ("initial_comment", comment)];
    if let Some(ts) = thread_ts {
        form.push(("thread_ts", ts));
    }
    call(client, api_url, token, "files.completeUploadExternal", &form).await?;
    Ok(id.to_string())
}
