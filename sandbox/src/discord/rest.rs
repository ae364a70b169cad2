//! The REST endpoints of the fake Discord: one handler that routes, authorises, rate-limits,
//! validates and acts, recording every call.

use super::limits::{commands_problems, errors_json, is_empty_message, message_problems};
use super::multipart::FilePart;
use super::objects::{self, Author};
use super::{Attachment, Call, Chan, Inner, Posted, Route, State, Window};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub(super) fn router(inner: Arc<Inner>) -> Router {
    // Bodies up to 25 MiB reach the handler, which answers oversized attachments as Discord does.
    Router::new().fallback(handle).layer(axum::extract::DefaultBodyLimit::max(25 << 20)).with_state(inner)
}

/// An interaction endpoint's HTTP answer taken as the interaction's initial response, as
/// Discord takes it: checked and applied like `POST /interactions/{id}/{token}/callback`
/// (the 3-second deadline, one acknowledgement). Returns Discord's status and error, if any.
pub(super) fn inline_response(inner: &Inner, interaction: &str, token: &str, body: &Value) -> (u16, Option<Value>) {
    let a = act(inner, &Target::Callback { interaction: interaction.to_string(), token: token.to_string() }, body);
    if a.code == Some(50035)
        && let Some(b) = &a.body
    {
        inner.with(|s| s.problems.push(format!("inline interaction response: {}", b["errors"])));
    }
    (a.status.as_u16(), a.body)
}

/// A parsed request path.
enum Target {
    CreateMessage { channel: String },
    EditMessage { channel: String, message: String },
    CreateThread { channel: String, message: String },
    CreateChannel { guild: String },
    Callback { interaction: String, token: String },
    Followup { app: String, token: String },
    EditWebhook { app: String, token: String, message: String },
    Commands { app: String, guild: Option<String> },
    GatewayBot,
}

impl Target {
    fn route(&self) -> Route {
        match self {
            Target::CreateMessage { .. } => Route::CreateMessage,
            Target::EditMessage { .. } => Route::EditMessage,
            Target::CreateThread { .. } => Route::CreateThread,
            Target::CreateChannel { .. } => Route::CreateChannel,
            Target::Callback { .. } => Route::InteractionCallback,
            Target::Followup { .. } => Route::CreateFollowup,
            Target::EditWebhook { .. } => Route::EditWebhookMessage,
            Target::Commands { .. } => Route::BulkCommands,
            Target::GatewayBot => Route::GatewayBot,
        }
    }
    /// The major parameter the bucket is kept per.
    fn major(&self) -> String {
        match self {
            Target::CreateMessage { channel } | Target::EditMessage { channel, .. } | Target::CreateThread { channel, .. } => channel.clone(),
            Target::CreateChannel { guild } => guild.clone(),
            Target::Callback { interaction, .. } => interaction.clone(),
            Target::Followup { app, token } | Target::EditWebhook { app, token, .. } => format!("{app}/{token}"),
            Target::Commands { app, .. } => app.clone(),
            Target::GatewayBot => String::new(),
        }
    }
}

fn parse(method: &Method, path: &str) -> Option<Target> {
    let rest = path.strip_prefix("/api/v10/")?;
    let s: Vec<&str> = rest.split('/').collect();
    let m = method.as_str();
    let t = match (m, s.as_slice()) {
        ("POST", ["channels", c, "messages"]) => Target::CreateMessage { channel: c.to_string() },
        ("PATCH", ["channels", c, "messages", id]) => Target::EditMessage { channel: c.to_string(), message: id.to_string() },
        ("POST", ["channels", c, "messages", id, "threads"]) => Target::CreateThread { channel: c.to_string(), message: id.to_string() },
        ("POST", ["guilds", g, "channels"]) => Target::CreateChannel { guild: g.to_string() },
        ("POST", ["interactions", id, tok, "callback"]) => Target::Callback { interaction: id.to_string(), token: tok.to_string() },
        ("POST", ["webhooks", app, tok]) => Target::Followup { app: app.to_string(), token: tok.to_string() },
        ("PATCH", ["webhooks", app, tok, "messages", id]) => {
            Target::EditWebhook { app: app.to_string(), token: tok.to_string(), message: id.to_string() }
        }
        ("PUT", ["applications", app, "commands"]) => Target::Commands { app: app.to_string(), guild: None },
        ("PUT", ["applications", app, "guilds", g, "commands"]) => Target::Commands { app: app.to_string(), guild: Some(g.to_string()) },
        ("GET", ["gateway", "bot"]) => Target::GatewayBot,
        _ => return None,
    };
    Some(t)
}

/// The path with interaction tokens replaced, for the call log.
fn loggable(path: &str, t: Option<&Target>) -> String {
    match t {
        Some(Target::Callback { token, .. } | Target::Followup { token, .. } | Target::EditWebhook { token, .. }) => {
            path.replace(token.as_str(), "{token}")
        }
        _ => path.to_string(),
    }
}

/// An answer before the rate-limit headers are added.
struct Answer {
    status: StatusCode,
    body: Option<Value>,
    code: Option<i64>,
    extra: Vec<(&'static str, String)>,
}

fn ok(status: u16, body: Value) -> Answer {
    Answer { status: StatusCode::from_u16(status).unwrap_or(StatusCode::OK), body: Some(body), code: None, extra: Vec::new() }
}

fn no_content() -> Answer {
    Answer { status: StatusCode::NO_CONTENT, body: None, code: None, extra: Vec::new() }
}

fn error(status: u16, code: i64, message: &str) -> Answer {
    Answer {
        status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        body: Some(json!({"message": message, "code": code})),
        code: Some(code),
        extra: Vec::new(),
    }
}

fn invalid_form(errors: Value) -> Answer {
    Answer {
        status: StatusCode::BAD_REQUEST,
        body: Some(json!({"code": 50035, "errors": errors, "message": "Invalid Form Body"})),
        code: Some(50035),
        extra: Vec::new(),
    }
}

fn epoch_secs(after: Duration) -> f64 {
    (SystemTime::now() + after).duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// The bucket state after counting this request, or the wait when it is over the limit.
fn take(s: &mut State, route: Route, major: &str) -> Result<(u32, u32, Duration), (u32, Duration)> {
    let (limit, window) = s.limits.get(&route).copied().unwrap_or((5, Duration::from_secs(1)));
    let now = Instant::now();
    let w = s.windows.entry((route, major.to_string())).or_insert(Window { start: now, used: 0 });
    if now.duration_since(w.start) >= window {
        *w = Window { start: now, used: 0 };
    }
    let reset_after = window.saturating_sub(now.duration_since(w.start));
    if w.used >= limit {
        return Err((limit, reset_after));
    }
    w.used += 1;
    Ok((limit, limit - w.used, reset_after))
}

fn take_global(s: &mut State) -> Result<(), Duration> {
    let (limit, window) = s.global_limit;
    let now = Instant::now();
    if now.duration_since(s.global_window.start) >= window {
        s.global_window = Window { start: now, used: 0 };
    }
    if s.global_window.used >= limit {
        return Err(window.saturating_sub(now.duration_since(s.global_window.start)));
    }
    s.global_window.used += 1;
    Ok(())
}

fn secs3(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

fn rate_limited(retry: Duration, global: bool, bucket: Option<(u32, &str)>) -> Answer {
    // Discord never says 0: a wait shorter than a millisecond is still a wait.
    let retry = retry.max(Duration::from_millis(1));
    let secs = (retry.as_secs_f64() * 1000.0).ceil() / 1000.0;
    let mut extra = vec![
        ("retry-after", retry.as_secs_f64().ceil().max(1.0).to_string()),
        ("x-ratelimit-scope", if global { "global" } else { "user" }.to_string()),
    ];
    if global {
        extra.push(("x-ratelimit-global", "true".to_string()));
    }
    if let Some((limit, hash)) = bucket {
        extra.push(("x-ratelimit-limit", limit.to_string()));
        extra.push(("x-ratelimit-remaining", "0".to_string()));
        extra.push(("x-ratelimit-reset", format!("{:.3}", epoch_secs(retry))));
        extra.push(("x-ratelimit-reset-after", secs3(retry)));
        extra.push(("x-ratelimit-bucket", hash.to_string()));
    }
    Answer {
        status: StatusCode::TOO_MANY_REQUESTS,
        body: Some(json!({"message": "You are being rate limited.", "retry_after": secs, "global": global, "code": 0})),
        code: Some(0),
        extra,
    }
}

async fn handle(AxState(inner): AxState<Arc<Inner>>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_string();
    let target = parse(&method, &path);
    let route = target.as_ref().map(Target::route);
    let boundary = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).and_then(super::multipart::boundary);
    let (parsed, files): (Result<Value, ()>, Vec<FilePart>) = match &boundary {
        Some(b) => match super::multipart::parse(b, &body) {
            Ok((payload, files)) => (payload.map(|p| serde_json::from_str(&p).map_err(|_| ())).unwrap_or(Ok(Value::Null)), files),
            Err(_) => (Err(()), Vec::new()),
        },
        None if body.is_empty() => (Ok(Value::Null), Vec::new()),
        None => (serde_json::from_slice(&body).map_err(|_| ()), Vec::new()),
    };
    let logged_body = parsed.clone().unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    let mut rl_headers: Vec<(&'static str, String)> = Vec::new();

    let answer = 'answer: {
        let Some(target) = target else {
            break 'answer error(404, 0, "404: Not Found");
        };
        let route = target.route();
        // Authorisation: the bot token on bot routes.
        if route.uses_bot_token() {
            let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
            if auth != format!("Bot {}", inner.bot_token) {
                break 'answer error(401, 0, "401: Unauthorized");
            }
        }
        // Rate limits: scripted, global (bot routes), then the route's bucket.
        let major = target.major();
        let hash = route.bucket_hash();
        let limited = inner.with(|s| {
            if route.uses_bot_token()
                && let Some(d) = s.scripted_global.pop_front()
            {
                return Err(rate_limited(d, true, None));
            }
            if let Some(d) = s.scripted.get_mut(&route).and_then(|q| q.pop_front()) {
                let limit = s.limits.get(&route).map(|l| l.0).unwrap_or(5);
                return Err(rate_limited(d, false, Some((limit, &hash))));
            }
            if route.uses_bot_token()
                && let Err(d) = take_global(s)
            {
                return Err(rate_limited(d, true, None));
            }
            match take(s, route, &major) {
                Ok(v) => Ok(v),
                Err((limit, d)) => Err(rate_limited(d, false, Some((limit, &hash)))),
            }
        });
        match limited {
            Err(a) => break 'answer a,
            Ok((limit, remaining, reset_after)) => {
                rl_headers = vec![
                    ("x-ratelimit-limit", limit.to_string()),
                    ("x-ratelimit-remaining", remaining.to_string()),
                    ("x-ratelimit-reset", format!("{:.3}", epoch_secs(reset_after))),
                    ("x-ratelimit-reset-after", secs3(reset_after)),
                    ("x-ratelimit-bucket", hash),
                ];
            }
        }
        let Ok(body) = parsed else {
            break 'answer error(400, 50109, "The request body contains invalid JSON.");
        };
        match (&target, boundary.is_some()) {
            (Target::CreateMessage { channel }, true) => create_message_with_files(&inner, channel, &body, &files).unwrap_or_else(|r| r),
            _ => act(&inner, &target, &body),
        }
    };

    let status = answer.status.as_u16();
    let problems = answer.body.as_ref().filter(|_| answer.code == Some(50035)).map(|b| b["errors"].to_string());
    inner.with(|s| {
        if let Some(p) = problems {
            s.problems.push(format!("{}: {p}", route.map(Route::as_str).unwrap_or("?")));
        }
        s.calls.push(Call {
            method: method.to_string(),
            path: loggable(&path, parse(&method, &path).as_ref()),
            route,
            body: logged_body,
            status,
            code: answer.code,
            at: Instant::now(),
        });
    });
    let mut resp = match answer.body {
        Some(b) => (answer.status, axum::Json(b)).into_response(),
        None => answer.status.into_response(),
    };
    for (k, v) in rl_headers.into_iter().chain(answer.extra) {
        if let Ok(v) = HeaderValue::from_str(&v) {
            resp.headers_mut().insert(k, v);
        }
    }
    resp
}

/// The content fields a message body sets (absent fields are left alone by an edit).
fn content_of(body: &Value) -> Value {
    let mut c = json!({});
    for k in ["content", "embeds", "components"] {
        if let Some(v) = body.get(k).filter(|v| !v.is_null()) {
            c[k] = v.clone();
        }
    }
    c
}

fn check_message(body: &Value) -> Result<(), Answer> {
    let probs = message_problems(body);
    if !probs.is_empty() {
        return Err(invalid_form(errors_json(&probs)));
    }
    Ok(())
}

fn new_message(s: &mut State, channel: &str, author: Author, flags: u64, interaction: Option<String>, content: Value) -> Posted {
    let id = s.snowflake();
    let p = Posted {
        id,
        channel_id: channel.to_string(),
        author,
        flags,
        interaction,
        content: normalize(&content),
        versions: vec![normalize(&content)],
        created: objects::now_iso(),
        edited: None,
    };
    s.messages.push(p.clone());
    p
}

/// Every stored message has all three content fields.
fn normalize(c: &Value) -> Value {
    json!({
        "content": c.get("content").cloned().filter(|v| !v.is_null()).unwrap_or(json!("")),
        "embeds": c.get("embeds").cloned().filter(|v| !v.is_null()).unwrap_or(json!([])),
        "components": c.get("components").cloned().filter(|v| !v.is_null()).unwrap_or(json!([])),
    })
}

fn edit(p: &mut Posted, changes: &Value) {
    let mut c = p.content.clone();
    if let Some(o) = changes.as_object() {
        for (k, v) in o {
            c[k.as_str()] = v.clone();
        }
    }
    p.content = normalize(&c);
    p.versions.push(p.content.clone());
    p.edited = Some(objects::now_iso());
}

fn object(inner: &Inner, p: &Posted) -> Value {
    objects::message(
        &p.id,
        &p.channel_id,
        Some(&inner.guild_id),
        &inner.app_id,
        &inner.bot_user,
        &p.author,
        &p.content,
        p.flags,
        p.edited.as_deref(),
        &p.created,
    )
}

/// Checks an interaction token: known, not expired, of this application.
fn interaction_for(s: &State, app: Option<&str>, id: Option<&str>, token: &str, app_id: &str) -> Result<String, Answer> {
    if app.is_some_and(|a| a != app_id) {
        return Err(error(404, 10015, "Unknown Webhook"));
    }
    let found = s.interactions.iter().find(|(i, x)| x.token == token && id.is_none_or(|want| want == i.as_str()));
    let Some((iid, x)) = found else {
        return Err(if id.is_some() { error(404, 10062, "Unknown interaction") } else { error(404, 10015, "Unknown Webhook") });
    };
    if x.expired || x.at.elapsed() > Duration::from_secs(15 * 60) {
        return Err(error(401, 50027, "Invalid Webhook Token"));
    }
    Ok(iid.clone())
}

/// Applies a routed, authorised, rate-limited request: one handler per endpoint, each checking
/// the body as Discord does before touching the state.
fn act(inner: &Inner, target: &Target, body: &Value) -> Answer {
    let done = match target {
        Target::GatewayBot => Ok(ok(200, super::gateway::bot_answer(inner))),
        Target::CreateMessage { channel } => create_message(inner, channel, body),
        Target::EditMessage { channel, message } => edit_message(inner, channel, message, body),
        Target::CreateThread { channel, message } => create_thread(inner, channel, message, body),
        Target::CreateChannel { guild } => create_channel(inner, guild, body),
        Target::Callback { interaction, token } => callback(inner, interaction, token, body),
        Target::Followup { app, token } => followup(inner, app, token, body),
        Target::EditWebhook { app, token, message } => edit_webhook(inner, app, token, message, body),
        Target::Commands { app, guild } => bulk_commands(inner, app, guild, body),
    };
    done.unwrap_or_else(|refused| refused)
}

/// A 400 naming one invalid field, as Discord's form validation reports it.
fn invalid_field(path: &[&str], code: &'static str, message: &str) -> Answer {
    let path = path.iter().map(|p| p.to_string()).collect();
    invalid_form(errors_json(&[super::limits::Problem { path, code, message: message.into() }]))
}

fn check_not_empty(body: &Value) -> Result<(), Answer> {
    if is_empty_message(body) { Err(error(400, 50006, "Cannot send an empty message")) } else { Ok(()) }
}

/// `POST /channels/{channel}/messages`: in a text channel or a thread.
fn create_message(inner: &Inner, channel: &str, body: &Value) -> Result<Answer, Answer> {
    check_message(body)?;
    check_not_empty(body)?;
    let posted = inner.with(|s| match s.chan(channel) {
        Some(c) if c.kind == 0 || c.kind == 11 => Some(new_message(s, channel, Author::Bot, 0, None, content_of(body))),
        _ => None,
    });
    let p = posted.ok_or_else(|| error(404, 10003, "Unknown Channel"))?;
    Ok(ok(200, object(inner, &p)))
}

/// `PATCH /channels/{channel}/messages/{message}`: the bot's own message, not emptied.
fn edit_message(inner: &Inner, channel: &str, message: &str, body: &Value) -> Result<Answer, Answer> {
    check_message(body)?;
    let p = inner.with(|s| {
        if s.chan(channel).is_none() {
            return Err(error(404, 10003, "Unknown Channel"));
        }
        let Some(p) = s.messages.iter_mut().find(|m| m.id == message && m.channel_id == channel) else {
            return Err(error(404, 10008, "Unknown Message"));
        };
        if p.author != Author::Bot {
            return Err(error(403, 50005, "Cannot edit a message authored by another user"));
        }
        let mut after = p.content.clone();
        for (k, v) in content_of(body).as_object().into_iter().flatten() {
            after[k.as_str()] = v.clone();
        }
        check_not_empty(&after)?;
        edit(p, &content_of(body));
        Ok(p.clone())
    })?;
    Ok(ok(200, object(inner, &p)))
}

/// `POST /channels/{channel}/messages/{message}/threads`: one thread per message, in a text channel.
fn create_thread(inner: &Inner, channel: &str, message: &str, body: &Value) -> Result<Answer, Answer> {
    let name = body["name"].as_str().unwrap_or("");
    let n = name.chars().count();
    if n == 0 || n > 100 {
        return Err(invalid_field(&["name"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length."));
    }
    let archive = body["auto_archive_duration"].as_u64().unwrap_or(4320);
    if ![60, 1440, 4320, 10080].contains(&archive) {
        return Err(invalid_field(&["auto_archive_duration"], "BASE_TYPE_CHOICES", "Value must be one of {60, 1440, 4320, 10080}."));
    }
    let obj = inner.with(|s| {
        match s.chan(channel) {
            Some(c) if c.kind == 0 => {}
            Some(_) => return Err(error(400, 50024, "Cannot execute action on this channel type")),
            None => return Err(error(404, 10003, "Unknown Channel")),
        }
        if !s.messages.iter().any(|m| m.id == message && m.channel_id == channel) {
            return Err(error(404, 10008, "Unknown Message"));
        }
        if s.chan(message).is_some() {
            return Err(error(400, 160004, "A thread has already been created for this message"));
        }
        let obj = objects::thread(message, &inner.guild_id, channel, name, super::BOT_USER_ID, archive);
        s.channels.push(Chan { id: message.to_string(), kind: 11, name: name.to_string(), parent: Some(channel.to_string()), object: obj.clone() });
        s.created.push(message.to_string());
        Ok(obj)
    })?;
    Ok(ok(201, obj))
}

/// The form problems of a channel creation that need no state: name, type, topic.
fn channel_problems(body: &Value) -> Vec<super::limits::Problem> {
    let problem = |path: &str, code, message: &str| super::limits::Problem { path: vec![path.into()], code, message: message.into() };
    let mut probs = Vec::new();
    let n = body["name"].as_str().unwrap_or("").chars().count();
    if n == 0 || n > 100 {
        probs.push(problem("name", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length."));
    }
    if body["type"].as_u64().unwrap_or(0) != 0 {
        probs.push(problem("type", "BASE_TYPE_CHOICES", "runbot creates text channels (type 0) only."));
    }
    if body["topic"].as_str().is_some_and(|t| t.chars().count() > 1024) {
        probs.push(problem("topic", "BASE_TYPE_MAX_LENGTH", "Must be 1024 or fewer in length."));
    }
    probs
}

/// `POST /guilds/{guild}/channels`: a text channel, under a category if `parent_id` names one.
fn create_channel(inner: &Inner, g: &str, body: &Value) -> Result<Answer, Answer> {
    let guild = &inner.guild_id;
    if g != guild {
        return Err(error(404, 10004, "Unknown Guild"));
    }
    let name = body["name"].as_str().unwrap_or("");
    let mut probs = channel_problems(body);
    let parent = body["parent_id"].as_str().map(str::to_string);
    let obj = inner.with(|s| {
        if let Some(pid) = &parent
            && s.chan(pid).is_none_or(|c| c.kind != 4)
        {
            probs.push(super::limits::Problem { path: vec!["parent_id".into()], code: "CHANNEL_PARENT_INVALID", message: "Not a category".into() });
        }
        if !probs.is_empty() {
            return Err(invalid_form(errors_json(&probs)));
        }
        // Discord lower-cases text channel names and turns spaces into dashes.
        let name: String = name.to_lowercase().split_whitespace().collect::<Vec<_>>().join("-");
        let id = s.snowflake();
        let pos = s.channels.len() as u64;
        let mut obj = objects::channel(&id, guild, &name, 0, parent.as_deref(), pos);
        if let Some(t) = body["topic"].as_str() {
            obj["topic"] = json!(t);
        }
        s.channels.push(Chan { id: id.clone(), kind: 0, name, parent, object: obj.clone() });
        s.created.push(id);
        Ok(obj)
    })?;
    Ok(ok(201, obj))
}

/// The form checks of an interaction response, by its type.
fn check_callback(kind: u64, data: &Value) -> Result<(), Answer> {
    match kind {
        4 | 7 => check_message(data),
        5 | 6 if data["flags"].as_u64().unwrap_or(0) & !64 != 0 => {
            Err(invalid_field(&["data", "flags"], "INTERACTION_RESPONSE_FLAGS_INVALID", "Only the EPHEMERAL flag is allowed"))
        }
        8 if data["choices"].as_array().is_none_or(|c| c.len() > 25) => {
            Err(invalid_field(&["data", "choices"], "BASE_TYPE_BAD_LENGTH", "Must be between 0 and 25 in length."))
        }
        1 | 5 | 6 | 8 | 9 => Ok(()),
        _ => Err(invalid_field(&["type"], "BASE_TYPE_CHOICES", "Value must be one of {1, 4, 5, 6, 7, 8, 9}.")),
    }
}

/// `POST /interactions/{id}/{token}/callback`: the one initial response, within the deadline.
fn callback(inner: &Inner, interaction: &str, token: &str, body: &Value) -> Result<Answer, Answer> {
    let kind = body["type"].as_u64().unwrap_or(0);
    let data = &body["data"];
    check_callback(kind, data)?;
    inner.with(|s| {
        let iid = interaction_for(s, None, Some(interaction), token, &inner.app_id)?;
        let deadline = s.callback_deadline;
        let Some(x) = s.interactions.get(&iid).cloned() else { return Err(error(404, 10062, "Unknown interaction")) };
        if x.acked.is_some() {
            return Err(error(400, 40060, "Interaction has already been acknowledged."));
        }
        if x.at.elapsed() > deadline {
            return Err(error(404, 10062, "Unknown interaction"));
        }
        let flags = data["flags"].as_u64().unwrap_or(0);
        let mut original = None;
        match kind {
            4 => original = Some(new_message(s, &x.channel, Author::Interaction, flags & 64, Some(iid.clone()), content_of(data)).id),
            // A deferred response shows "thinking" until @original is edited.
            5 => original = Some(new_message(s, &x.channel, Author::Interaction, (flags & 64) | 128, Some(iid.clone()), json!({})).id),
            7 => {
                if let Some(mid) = &x.message
                    && let Some(p) = s.messages.iter_mut().find(|m| m.id == *mid)
                {
                    edit(p, &content_of(data));
                }
            }
            _ => {}
        }
        if let Some(i) = s.interactions.get_mut(&iid) {
            i.acked = Some(kind);
            i.original = original;
        }
        s.callbacks.push((iid, body.clone()));
        Ok(no_content())
    })
}

/// `POST /webhooks/{app}/{token}`: a follow-up message, once the interaction is acknowledged.
fn followup(inner: &Inner, app: &str, token: &str, body: &Value) -> Result<Answer, Answer> {
    check_message(body)?;
    check_not_empty(body)?;
    let p = inner.with(|s| {
        let iid = interaction_for(s, Some(app), None, token, &inner.app_id)?;
        let x = s.interactions.get(&iid).cloned().ok_or_else(|| error(404, 10015, "Unknown Webhook"))?;
        if x.acked.is_none() {
            return Err(error(404, 10015, "Unknown Webhook"));
        }
        let flags = body["flags"].as_u64().unwrap_or(0) & 64;
        Ok(new_message(s, &x.channel, Author::Interaction, flags, Some(iid), content_of(body)))
    })?;
    Ok(ok(200, object(inner, &p)))
}

/// `PATCH /webhooks/{app}/{token}/messages/{message}`: `@original` or a follow-up of this interaction.
fn edit_webhook(inner: &Inner, app: &str, token: &str, message: &str, body: &Value) -> Result<Answer, Answer> {
    check_message(body)?;
    let p = inner.with(|s| {
        let iid = interaction_for(s, Some(app), None, token, &inner.app_id)?;
        let x = s.interactions.get(&iid).cloned().ok_or_else(|| error(404, 10015, "Unknown Webhook"))?;
        let mid = if message == "@original" { x.original.clone().ok_or_else(|| error(404, 10008, "Unknown Message"))? } else { message.to_string() };
        let Some(p) = s.messages.iter_mut().find(|m| m.id == mid && m.interaction.as_deref() == Some(iid.as_str())) else {
            return Err(error(404, 10008, "Unknown Message"));
        };
        p.flags &= !128;
        edit(p, &content_of(body));
        Ok(p.clone())
    })?;
    Ok(ok(200, object(inner, &p)))
}

/// `PUT /applications/{app}[/guilds/{guild}]/commands`: the list replaces the old one; a command
/// keeps its id when overwritten under the same name.
fn bulk_commands(inner: &Inner, app: &str, g: &Option<String>, body: &Value) -> Result<Answer, Answer> {
    if app != inner.app_id {
        return Err(error(403, 50001, "Missing Access"));
    }
    if g.as_ref().is_some_and(|g| *g != inner.guild_id) {
        return Err(error(404, 10004, "Unknown Guild"));
    }
    let probs = commands_problems(body);
    if !probs.is_empty() {
        return Err(invalid_form(errors_json(&probs)));
    }
    let stored = inner.with(|s| {
        let list: Vec<Value> = body.as_array().cloned().unwrap_or_default();
        let old = s.commands.get(g).cloned().unwrap_or_default();
        let out: Vec<Value> = list
            .iter()
            .map(|c| {
                let id =
                    old.iter().find(|o| o["name"] == c["name"]).and_then(|o| o["id"].as_str().map(str::to_string)).unwrap_or_else(|| s.snowflake());
                objects::command(&id, app, g.as_deref(), c)
            })
            .collect();
        s.commands.insert(g.clone(), out.clone());
        out
    });
    Ok(ok(200, Value::Array(stored)))
}

/// The largest upload without boosts (`attachment_size_limit`): 8 MiB.
const ATTACHMENT_LIMIT: usize = 8 << 20;

/// `POST /channels/{channel}/messages` as `multipart/form-data`: `payload_json` and the files
/// as `files[n]`. Each `attachments[i].id` in the payload must name a `files[n]` part (else
/// 400 Invalid Form Body; the inner error code is this fake's own), the files together stay
/// within 8 MiB (else 413, code 40005), and a message may hold only files.
fn create_message_with_files(inner: &Inner, channel: &str, body: &Value, files: &[FilePart]) -> Result<Answer, Answer> {
    check_message(body)?;
    if files.is_empty() {
        check_not_empty(body)?;
    }
    let listed = body["attachments"].as_array().cloned().unwrap_or_default();
    for (i, a) in listed.iter().enumerate() {
        let id = a["id"].as_u64().or_else(|| a["id"].as_str().and_then(|s| s.parse().ok()));
        if !id.is_some_and(|id| files.iter().any(|f| f.index == id)) {
            return Err(invalid_field(&["attachments", &i.to_string(), "id"], "ATTACHMENT_FILE_MISSING", "No files[n] part has this id."));
        }
    }
    if files.iter().map(|f| f.bytes.len()).sum::<usize>() > ATTACHMENT_LIMIT {
        return Err(error(413, 40005, "Request entity too large"));
    }
    let title = |n: u64| {
        listed
            .iter()
            .find(|a| a["id"].as_u64() == Some(n) || a["id"].as_str() == Some(&n.to_string()))
            .and_then(|a| a["title"].as_str().map(str::to_string))
    };
    let posted = inner.with(|s| match s.chan(channel) {
        Some(c) if c.kind == 0 || c.kind == 11 => {
            let p = new_message(s, channel, Author::Bot, 0, None, content_of(body));
            for f in files {
                s.attachments.push(Attachment {
                    channel_id: channel.to_string(),
                    message_id: p.id.clone(),
                    filename: f.filename.clone(),
                    title: title(f.index),
                    content: f.bytes.clone(),
                });
            }
            Some(p)
        }
        _ => None,
    });
    let p = posted.ok_or_else(|| error(404, 10003, "Unknown Channel"))?;
    let mut o = object(inner, &p);
    o["attachments"] = files.iter().map(|f| json!({"id": f.index.to_string(), "filename": f.filename, "size": f.bytes.len()})).collect();
    Ok(ok(200, o))
}
