//! The neutral [`Message`] as Block Kit, within Slack's limits: at most 50 blocks, section text
//! ≤ 3000 characters, ≤ 10 fields of ≤ 2000, button text ≤ 75, `action_id` ≤ 255, `value`
//! ≤ 2000, ≤ 25 elements per actions block, header ≤ 150. Nothing is cut silently: what does
//! not fit in the message goes into follow-up messages meant for its thread.

use runbot_commands::message::{ButtonStyle, Message};
use serde_json::{Value, json};

pub const MAX_BLOCKS: usize = 50;
pub const MAX_SECTION: usize = 3000;
pub const MAX_FIELDS: usize = 10;
pub const MAX_FIELD: usize = 2000;
pub const MAX_BUTTON_TEXT: usize = 75;
pub const MAX_ACTION_ID: usize = 255;
pub const MAX_VALUE: usize = 2000;
pub const MAX_ACTIONS: usize = 25;
pub const MAX_HEADER: usize = 150;
/// The notification (`text`) fallback kept well under chat.postMessage's 4,000.
pub const MAX_FALLBACK: usize = 3000;

/// A message as Slack content (`text` + `blocks`), plus the overflow parts for its thread.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub main: Value,
    pub overflow: Vec<Value>,
}

/// Escapes the three characters mrkdwn gives a meaning to.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    escape_into(&mut o, s);
    o
}

/// [`escape`] appending to `o`: the unescaped runs are copied whole (the three are ASCII, so a
/// byte scan never splits a character).
fn escape_into(o: &mut String, s: &str) {
    let mut copied = 0;
    for (i, b) in s.bytes().enumerate() {
        let with = match b {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            _ => continue,
        };
        o.push_str(&s[copied..i]);
        o.push_str(with);
        copied = i + 1;
    }
    o.push_str(&s[copied..]);
}

/// Escapes `text` and splits it into pieces whose escaped length (plus `overhead`) is at most
/// `max` characters, on line boundaries where possible. The pieces, unescaped, are the text.
pub fn escaped_chunks(text: &str, max: usize, overhead: usize) -> Vec<String> {
    let room = max.saturating_sub(overhead).max(8);
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut cur_len = 0usize;
    let mut esc = String::new();
    for line in text.split_inclusive('\n') {
        esc.clear();
        escape_into(&mut esc, line);
        let len = esc.chars().count();
        if cur_len + len > room && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
            cur_len = 0;
        }
        if len > room {
            // One very long line: cut it by characters, never inside an escape.
            for c in line.chars() {
                let e = escape(c.encode_utf8(&mut [0u8; 4]));
                let l = e.chars().count();
                if cur_len + l > room {
                    out.push(std::mem::take(&mut cur));
                    cur_len = 0;
                }
                cur.push_str(&e);
                cur_len += l;
            }
            continue;
        }
        cur.push_str(&esc);
        cur_len += len;
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn section(text: String) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": text}})
}

fn truncate_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut o: String = s.chars().take(max.saturating_sub(1)).collect();
    o.push('…');
    o
}

/// Renders a message. The first part carries the header, the state, the fields, the steps
/// and the buttons; anything past 50 blocks continues in `overflow` (for thread replies).
pub fn render(msg: &Message) -> Rendered {
    let mut blocks: Vec<Value> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    if !msg.title.is_empty() {
        let title = msg.title.replace('\n', " ");
        if title.chars().count() <= MAX_HEADER {
            blocks.push(json!({"type": "header", "text": {"type": "plain_text", "text": title, "emoji": true}}));
        } else {
            for t in escaped_chunks(&title, MAX_SECTION, 4) {
                blocks.push(section(format!("*{t}*")));
            }
        }
    }
    if !msg.text.trim().is_empty() {
        for t in escaped_chunks(&msg.text, MAX_SECTION, 0) {
            blocks.push(section(t));
        }
    }
    // Fields: ten per section, each within 2000; a longer value becomes its own sections.
    let mut fields: Vec<Value> = Vec::new();
    let flush = |fields: &mut Vec<Value>, blocks: &mut Vec<Value>| {
        if !fields.is_empty() {
            blocks.push(json!({"type": "section", "fields": std::mem::take(fields)}));
        }
    };
    for (k, v) in &msg.fields {
        let text = format!("*{}*\n{}", escape(k), escape(v));
        if text.chars().count() <= MAX_FIELD {
            fields.push(json!({"type": "mrkdwn", "text": text}));
            if fields.len() == MAX_FIELDS {
                flush(&mut fields, &mut blocks);
            }
        } else {
            flush(&mut fields, &mut blocks);
            let head = format!("*{}*\n", escape(k));
            for (i, t) in escaped_chunks(v, MAX_SECTION, head.chars().count()).into_iter().enumerate() {
                blocks.push(section(if i == 0 { format!("{head}{t}") } else { t }));
            }
        }
    }
    flush(&mut fields, &mut blocks);
    if !msg.steps.is_empty() {
        let lines: String = msg.steps.iter().enumerate().map(|(i, s)| s.line(i) + "\n").collect();
        for t in escaped_chunks(lines.trim_end(), MAX_SECTION, 0) {
            blocks.push(section(t));
        }
    }
    if let Some(code) = msg.code.as_deref().filter(|c| !c.is_empty()) {
        for t in escaped_chunks(code, MAX_SECTION, 8) {
            blocks.push(section(format!("```{}```", t.trim_end_matches('\n'))));
        }
    }
    let mut buttons = Vec::new();
    for b in &msg.buttons {
        if b.action_id.is_empty() || b.action_id.chars().count() > MAX_ACTION_ID || b.value.chars().count() > MAX_VALUE {
            tracing::error!(action_id = %truncate_chars(&b.action_id, 40), "a button exceeds Slack's limits and is not shown");
            notes.push(format!("(The {} button could not be shown in Slack: its id or value is too long.)", b.label));
            continue;
        }
        let mut e = json!({
            "type": "button",
            // A label is a few words; an over-long one is shortened visibly with an ellipsis.
            "text": {"type": "plain_text", "text": truncate_chars(&b.label, MAX_BUTTON_TEXT), "emoji": true},
            "action_id": b.action_id,
            "value": b.value,
        });
        if let Some(style) = b.style {
            e["style"] = json!(match style {
                ButtonStyle::Primary => "primary",
                ButtonStyle::Danger => "danger",
            });
        }
        buttons.push(e);
    }
    for n in notes {
        blocks.push(section(escape(&n)));
    }
    let mut tail: Vec<Value> = Vec::new();
    // One actions block per 25 buttons; block ids must be unique within the message.
    for (i, chunk) in buttons.chunks(MAX_ACTIONS).enumerate() {
        tail.push(json!({"type": "actions", "block_id": format!("runbot-actions-{i}"), "elements": chunk}));
    }
    if let Some(f) = msg.footer.as_deref().filter(|f| !f.is_empty()) {
        for t in escaped_chunks(f, MAX_SECTION, 0) {
            tail.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": t}]}));
        }
    }
    let fallback = {
        let first = msg.text.lines().next().unwrap_or("");
        let t = if msg.title.is_empty() {
            first.to_string()
        } else if first.is_empty() {
            msg.title.clone()
        } else {
            format!("{} — {first}", msg.title)
        };
        let t = if t.is_empty() { msg.code.clone().unwrap_or_default() } else { t };
        truncate_chars(&t, MAX_FALLBACK)
    };

    // Fit into 50 blocks: buttons and footer always stay in the main message.
    let room = MAX_BLOCKS.saturating_sub(tail.len());
    if blocks.len() + tail.len() <= MAX_BLOCKS {
        blocks.extend(tail);
        return Rendered { main: json!({"text": fallback, "blocks": blocks}), overflow: Vec::new() };
    }
    let keep = room.saturating_sub(1);
    let rest: Vec<Value> = blocks.split_off(keep);
    let parts: Vec<Vec<Value>> = rest.chunks(MAX_BLOCKS).map(|c| c.to_vec()).collect();
    blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn",
        "text": format!("… continued in this message's thread ({} more part{}).", parts.len(), if parts.len() == 1 { "" } else { "s" })}]}));
    blocks.extend(tail);
    let n = parts.len();
    let overflow = parts
        .into_iter()
        .enumerate()
        .map(|(i, p)| json!({"text": format!("{} (continued, part {} of {n})", truncate_chars(&msg.title, 200), i + 2), "blocks": p}))
        .collect();
    Rendered { main: json!({"text": fallback, "blocks": blocks}), overflow }
}

/// Every violation of the documented limits in one piece of content (`text` + `blocks`);
/// empty when Slack would accept it. The fake Slack runs the same rules independently.
#[cfg(test)]
fn violations(content: &Value) -> Vec<String> {
    let mut v = Vec::new();
    let blocks = content["blocks"].as_array().cloned().unwrap_or_default();
    if blocks.len() > MAX_BLOCKS {
        v.push(format!("{} blocks", blocks.len()));
    }
    let len = |x: &Value| x.as_str().map(|s| s.chars().count()).unwrap_or(0);
    for b in &blocks {
        if len(&b["text"]["text"]) > MAX_SECTION {
            v.push("section text".into());
        }
        if let Some(fs) = b["fields"].as_array()
            && (fs.len() > MAX_FIELDS || fs.iter().any(|f| len(&f["text"]) > MAX_FIELD))
        {
            v.push("fields".into());
        }
        if b["type"] == "header" && len(&b["text"]["text"]) > MAX_HEADER {
            v.push("header".into());
        }
        for e in b["elements"].as_array().into_iter().flatten() {
            if e["type"] == "button"
                && (len(&e["text"]["text"]) > MAX_BUTTON_TEXT || len(&e["action_id"]) > MAX_ACTION_ID || len(&e["value"]) > MAX_VALUE)
            {
                v.push("button".into());
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use runbot_commands::message::{Button, StepLine};
    use runbot_commands::model::StepStatus;

    fn plan() -> Message {
        Message {
            title: "R-42 · restart promotions-api (prod)".into(),
            text: "⏳ Waiting for approval: 0 of 1 from sre — expires in 30 min.".into(),
            fields: vec![("Requested by".into(), "slack:U1".into()), ("Acts on".into(), "promotions-api-7d9 <bad>".into())],
            steps: vec![StepLine { status: StepStatus::Succeeded, name: "diagnose".into(), detail: "1 of 3 pods unhealthy".into() }],
            code: None,
            buttons: vec![
                Button { label: "Approve".into(), action_id: "approve".into(), value: "R-42|approve|abc".into(), style: Some(ButtonStyle::Primary) },
                Button { label: "Reject".into(), action_id: "reject".into(), value: "R-42|reject|abc".into(), style: Some(ButtonStyle::Danger) },
            ],
            footer: Some("plan abc".into()),
        }
    }

    #[test]
    fn status_message_has_header_fields_steps_and_buttons() {
        let r = render(&plan());
        assert!(r.overflow.is_empty());
        let b = r.main["blocks"].as_array().cloned().unwrap_or_default();
        assert_eq!(b[0]["type"], "header");
        let all = r.main.to_string();
        assert!(all.contains("&lt;bad&gt;"), "mrkdwn is escaped: {all}");
        let actions = b.iter().find(|x| x["type"] == "actions").cloned().unwrap_or_default();
        assert_eq!(actions["elements"][0]["value"], "R-42|approve|abc");
        assert_eq!(actions["elements"][0]["style"], "primary");
        assert_eq!(actions["elements"][1]["action_id"], "reject");
        assert!(violations(&r.main).is_empty());
        // slack-morphism accepts the JSON as its typed content, losing nothing.
        let typed: slack_morphism::prelude::SlackMessageContent = serde_json::from_value(r.main.clone()).expect("typed");
        assert_eq!(serde_json::to_value(&typed).expect("json")["blocks"], r.main["blocks"]);
    }

    #[test]
    fn long_content_is_split_never_cut() {
        let mut m = plan();
        let code: String = (0..12000).map(|i| format!("line {i} <&>\n")).collect();
        m.code = Some(code.clone());
        m.fields.push(("Long".into(), "ж".repeat(5000)));
        m.title = "T".repeat(400);
        let r = render(&m);
        let mut parts = vec![r.main.clone()];
        parts.extend(r.overflow.clone());
        assert!(parts.len() > 1, "more than 50 blocks of content spill into the thread");
        for p in &parts {
            assert!(violations(p).is_empty(), "{:?}", violations(p));
        }
        // Buttons stay in the main message.
        assert!(r.main.to_string().contains("R-42|approve|abc"));
        // Every line of the code block arrives, in order.
        let text: String = parts
            .iter()
            .flat_map(|p| p["blocks"].as_array().cloned().unwrap_or_default())
            .filter_map(|b| b["text"]["text"].as_str().map(str::to_string))
            .filter(|t| t.starts_with("```"))
            .map(|t| t.trim_start_matches("```").trim_end_matches("```").to_string() + "\n")
            .collect();
        assert_eq!(text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"), code);
        assert_eq!(parts.iter().map(|p| p["blocks"].to_string()).collect::<String>().matches('ж').count(), 5000);
    }

    #[test]
    fn oversized_buttons_are_reported_not_sent() {
        let mut m = plan();
        m.buttons[0].value = "x".repeat(2001);
        m.buttons[1].label = "L".repeat(100);
        let r = render(&m);
        assert!(violations(&r.main).is_empty());
        let s = r.main.to_string();
        assert!(s.contains("The Approve button could not be shown"), "{s}");
        assert!(s.contains(&format!("{}…", "L".repeat(74))));
    }

    #[test]
    fn escaped_chunks_respect_the_limit_and_roundtrip() {
        let t = "<>&".repeat(3000);
        let parts = escaped_chunks(&t, 3000, 0);
        assert!(parts.iter().all(|p| p.chars().count() <= 3000));
        assert_eq!(parts.concat().replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"), t);
    }
}
