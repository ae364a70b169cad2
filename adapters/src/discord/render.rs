//! The neutral [`Message`] as a Discord message body, within Discord's limits: `content` ≤
//! 2000; an embed with title ≤ 256, description ≤ 4096, ≤ 25 fields (name ≤ 256, value ≤
//! 1024), footer ≤ 2048, all of it ≤ 6000; ≤ 5 action rows × 5 buttons, `custom_id` 1–100 and
//! unique, label ≤ 80. Nothing is cut silently: what does not fit goes into follow-up parts
//! (posted into the message's thread, or after a reply), and a button that cannot be shown is
//! named in the message.
//!
//! Shapes: a message with only text and/or a code block (step output, private answers) is
//! plain `content` — the code fenced; everything else (status messages) is one embed — title,
//! text, short fields as embed fields, the step list, the code block, the footer — with the
//! buttons as components. Text is markdown-escaped; no rendered text can ping anyone
//! (`allowed_mentions.parse` is empty).
//!
//! Button `custom_id`s are the engine's button value verbatim (`R-42|approve|<fingerprint>`,
//! at most 2 + 12 + 1 + 9 + 1 + 64 = 89 characters, so always within 100); a click's
//! `custom_id` is handed back to the engine as the value, which re-checks everything.

use runbot_commands::message::{ButtonStyle, Message};
use serde_json::{Value, json};

pub const MAX_CONTENT: usize = 2000;
pub const MAX_TITLE: usize = 256;
pub const MAX_DESCRIPTION: usize = 4096;
pub const MAX_FIELDS: usize = 25;
pub const MAX_FIELD_NAME: usize = 256;
pub const MAX_FIELD_VALUE: usize = 1024;
pub const MAX_FOOTER: usize = 2048;
pub const MAX_EMBED_TOTAL: usize = 6000;
pub const MAX_ROWS: usize = 5;
pub const MAX_PER_ROW: usize = 5;
pub const MAX_CUSTOM_ID: usize = 100;
pub const MAX_LABEL: usize = 80;
/// Room kept in the first part for the "continued" note.
const NOTE_ROOM: usize = 80;

/// A message as Discord bodies: the main one, and the parts that did not fit, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub main: Value,
    pub overflow: Vec<Value>,
}

/// The `custom_id` of a button value, or `None` when Discord cannot carry it (empty, or over
/// 100 characters) — the engine's values always fit (see the module docs).
pub fn custom_id(value: &str) -> Option<String> {
    let n = value.chars().count();
    (1..=MAX_CUSTOM_ID).contains(&n).then(|| value.to_string())
}

/// The button value a click's `custom_id` stands for. It is only ever a claim: the engine
/// parses it and re-checks the execution, the action and the fingerprint.
pub fn button_value(custom_id: &str) -> String {
    custom_id.to_string()
}

const INLINE_SPECIAL: &[char] = &['\\', '*', '_', '~', '`', '|', '<', '[', ']'];
const LINE_START_SPECIAL: &[char] = &['>', '#', '-', '+'];

fn escape_char(c: char, line_start: bool, out: &mut String) {
    if INLINE_SPECIAL.contains(&c) || (line_start && LINE_START_SPECIAL.contains(&c)) {
        out.push('\\');
    }
    out.push(c);
}

/// Escapes Discord markdown so text shows as written: `\ * _ ~ \` | < [ ]` anywhere, and
/// `> # - +` at the start of a line (quotes, headings, lists).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    let mut start = true;
    for c in s.chars() {
        escape_char(c, start, &mut out);
        start = c == '\n';
    }
    out
}

fn len(s: &str) -> usize {
    s.chars().count()
}

/// Escapes `text` and splits it into pieces of at most `max` characters (escaped), on line
/// boundaries where possible and never inside an escape. Unescaped, the pieces are the text.
pub fn escaped_chunks(text: &str, max: usize) -> Vec<String> {
    let room = max.max(8);
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut cur_len = 0usize;
    for line in text.split_inclusive('\n') {
        let esc = escape(line);
        let l = len(&esc);
        if cur_len + l > room && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
            cur_len = 0;
        }
        if l > room {
            // One very long line: cut it by characters, after a space where one is in the
            // second half of the piece, never inside an escape.
            let mut space: Option<usize> = None;
            for (i, c) in line.chars().enumerate() {
                let mut e = String::new();
                escape_char(c, i == 0, &mut e);
                let el = len(&e);
                if cur_len + el > room {
                    match space.filter(|at| *at * 2 > cur.len()) {
                        Some(at) => {
                            let carry = cur.split_off(at);
                            out.push(std::mem::replace(&mut cur, carry));
                            cur_len = len(&cur);
                        }
                        None => {
                            out.push(std::mem::take(&mut cur));
                            cur_len = 0;
                        }
                    }
                    space = None;
                }
                cur.push_str(&e);
                cur_len += el;
                if c == ' ' {
                    space = Some(cur.len());
                }
            }
            continue;
        }
        cur.push_str(&esc);
        cur_len += l;
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// A code block: three backticks in the code would end the fence, so a zero-width space is
/// put between them (shown the same); then fenced pieces of at most `max` characters.
pub fn code_chunks(code: &str, max: usize) -> Vec<String> {
    let mut safe = code.to_string();
    while safe.contains("```") {
        safe = safe.replace("```", "``\u{200b}`");
    }
    runbot_commands::message::split_text(&safe, max.saturating_sub(8).max(8))
        .into_iter()
        .map(|c| format!("```\n{}\n```", c.strip_suffix('\n').unwrap_or(&c)))
        .collect()
}

fn truncate_chars(s: &str, max: usize) -> String {
    if len(s) <= max {
        return s.to_string();
    }
    let mut o: String = s.chars().take(max.saturating_sub(1)).collect();
    o.push('…');
    o
}

/// Greedily packs blocks (each ≤ the smallest budget) into texts: the first of at most
/// `first` characters, the others of at most `rest`.
fn pack(blocks: Vec<String>, first: usize, rest: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut cur = String::new();
    let mut cur_len = 0usize;
    for b in blocks {
        let budget = if out.is_empty() { first } else { rest };
        let bl = len(&b);
        if cur.is_empty() {
            cur = b;
            cur_len = bl;
        } else if cur_len + 1 + bl <= budget {
            cur.push('\n');
            cur.push_str(&b);
            cur_len += 1 + bl;
        } else {
            out.push(std::mem::replace(&mut cur, b));
            cur_len = bl;
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn no_pings() -> Value {
    json!({"parse": []})
}

fn body(content: String, embeds: Vec<Value>, components: Vec<Value>) -> Value {
    json!({"content": content, "embeds": embeds, "components": components, "allowed_mentions": no_pings()})
}

/// The buttons as action rows (≤ 5 × 5 per message), plus notes for those that cannot be shown.
fn buttons(msg: &Message) -> (Vec<Vec<Value>>, Vec<String>) {
    let mut shown: Vec<Value> = Vec::new();
    let mut notes = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for b in &msg.buttons {
        let label = if b.label.trim().is_empty() { b.action_id.clone() } else { b.label.clone() };
        let Some(id) = custom_id(&b.value) else {
            tracing::error!(action_id = %truncate_chars(&b.action_id, 40), "a button's value does not fit Discord's custom_id; not shown");
            notes.push(format!("(The {label} button could not be shown in Discord: its value is empty or longer than {MAX_CUSTOM_ID} characters.)"));
            continue;
        };
        if !seen.insert(id.clone()) {
            notes.push(format!("(The {label} button is the same action as another button and is shown once.)"));
            continue;
        }
        let style = match b.style {
            Some(ButtonStyle::Primary) => 1,
            Some(ButtonStyle::Danger) => 4,
            None => 2,
        };
        // A label is a few words; an over-long one is shortened visibly with an ellipsis.
        shown.push(json!({"type": 2, "style": style, "label": truncate_chars(&label, MAX_LABEL), "custom_id": id}));
    }
    let rows: Vec<Value> = shown.chunks(MAX_PER_ROW).map(|c| json!({"type": 1, "components": c})).collect();
    (rows.chunks(MAX_ROWS).map(|c| c.to_vec()).collect(), notes)
}

fn continued_note(n: usize) -> String {
    format!("*… continued in {n} more message{}.*", if n == 1 { "" } else { "s" })
}

/// Renders a message (see the module docs for the two shapes).
pub fn render(msg: &Message) -> Rendered {
    let plain = msg.title.is_empty()
        && msg.fields.is_empty()
        && msg.steps.is_empty()
        && msg.buttons.is_empty()
        && msg.footer.as_deref().is_none_or(str::is_empty);
    if plain { render_plain(msg) } else { render_embed(msg) }
}

fn render_plain(msg: &Message) -> Rendered {
    let mut blocks = Vec::new();
    if !msg.text.trim().is_empty() {
        blocks.extend(escaped_chunks(msg.text.trim_end_matches('\n'), MAX_CONTENT - NOTE_ROOM));
    }
    if let Some(code) = msg.code.as_deref().filter(|c| !c.is_empty()) {
        blocks.extend(code_chunks(code, MAX_CONTENT - NOTE_ROOM));
    }
    if blocks.is_empty() {
        // Discord refuses an empty message; say that there was nothing rather than fail.
        blocks.push("(no content)".to_string());
    }
    let mut parts = pack(blocks, MAX_CONTENT - NOTE_ROOM, MAX_CONTENT);
    let rest = parts.split_off(1);
    let mut main = parts.pop().unwrap_or_default();
    if !rest.is_empty() {
        main.push('\n');
        main.push_str(&continued_note(rest.len()));
    }
    Rendered { main: body(main, Vec::new(), Vec::new()), overflow: rest.into_iter().map(|c| body(c, Vec::new(), Vec::new())).collect() }
}

fn render_embed(msg: &Message) -> Rendered {
    let title_line = msg.title.replace('\n', " ");
    let title_fits = len(&escape(&title_line)) <= MAX_TITLE;
    let title = if title_fits { escape(&title_line) } else { truncate_chars(&escape(&title_line), MAX_TITLE) };
    let footer = msg.footer.clone().filter(|f| !f.is_empty());
    let footer_fits = footer.as_deref().is_none_or(|f| len(f) <= MAX_FOOTER);

    // The description's flow: the full title when the embed title had to be shortened, the
    // text, the steps, notes on buttons not shown, fields too long (or too many) for embed
    // fields, the code block, a footer too long for the footer.
    let mut flow: Vec<(Option<String>, String, bool)> = Vec::new();
    if !title_fits {
        flow.push((None, title_line.clone(), false));
    }
    if !msg.text.trim().is_empty() {
        flow.push((None, msg.text.trim_end_matches('\n').to_string(), false));
    }
    // The step list next: it belongs in the main message whenever it fits.
    if !msg.steps.is_empty() {
        let lines: String = msg.steps.iter().enumerate().map(|(i, s)| s.line(i) + "\n").collect();
        flow.push((None, lines.trim_end().to_string(), false));
    }
    let (mut rows, notes) = buttons(msg);
    for n in notes {
        flow.push((None, n, false));
    }
    // Embed fields, within their own limits and leaving the description at least 1500.
    let mut fields: Vec<Value> = Vec::new();
    let mut used = len(&title) + footer.as_deref().filter(|_| footer_fits).map(len).unwrap_or(0);
    let field_room = MAX_EMBED_TOTAL.saturating_sub(1500 + NOTE_ROOM);
    for (k, v) in &msg.fields {
        let name = escape(&k.replace('\n', " "));
        let value = if v.trim().is_empty() { "—".to_string() } else { escape(v) };
        let size = len(&name) + len(&value);
        if fields.len() < MAX_FIELDS
            && len(&name) <= MAX_FIELD_NAME
            && !name.is_empty()
            && len(&value) <= MAX_FIELD_VALUE
            && used + size <= field_room
        {
            let inline = len(v) <= 60 && !v.contains('\n');
            fields.push(json!({"name": name, "value": value, "inline": inline}));
            used += size;
        } else {
            flow.push((Some(format!("**{}**", escape(k))), v.clone(), false));
        }
    }
    if let Some(code) = msg.code.as_deref().filter(|c| !c.is_empty()) {
        flow.push((None, code.to_string(), true));
    }
    if !footer_fits && let Some(f) = &footer {
        flow.push((None, f.clone(), false));
    }

    // Blocks no larger than the first description's room; packed into descriptions.
    let first = MAX_DESCRIPTION.min(MAX_EMBED_TOTAL.saturating_sub(used)).saturating_sub(NOTE_ROOM).max(500);
    let rest_budget = MAX_DESCRIPTION - NOTE_ROOM;
    let mut blocks = Vec::new();
    for (head, text, code) in flow {
        let head_len = head.as_deref().map(|h| len(h) + 1).unwrap_or(0);
        let pieces = if code { code_chunks(&text, first) } else { escaped_chunks(&text, first.saturating_sub(head_len)) };
        for (i, p) in pieces.into_iter().enumerate() {
            match (&head, i) {
                (Some(h), 0) => blocks.push(format!("{h}\n{p}")),
                _ => blocks.push(p),
            }
        }
    }
    let mut descs = pack(blocks, first, rest_budget);
    let rest_descs = if descs.is_empty() { Vec::new() } else { descs.split_off(1) };
    let extra_rows: Vec<Vec<Value>> = if rows.len() > 1 { rows.split_off(1) } else { Vec::new() };
    let more = rest_descs.len() + extra_rows.len();

    let mut embed = json!({"title": title});
    let mut desc = descs.pop().unwrap_or_default();
    if more > 0 {
        if !desc.is_empty() {
            desc.push('\n');
        }
        desc.push_str(&continued_note(more));
    }
    if !desc.is_empty() {
        embed["description"] = json!(desc);
    }
    if !fields.is_empty() {
        embed["fields"] = json!(fields);
    }
    if footer_fits && let Some(f) = &footer {
        embed["footer"] = json!({"text": f});
    }
    if title.is_empty()
        && let Some(o) = embed.as_object_mut()
    {
        o.remove("title");
    }
    let main = body(String::new(), vec![embed], rows.pop().unwrap_or_default());

    let n = more + 1;
    let short_title = truncate_chars(&escape(&title_line), 200);
    let mut overflow: Vec<Value> = rest_descs
        .into_iter()
        .enumerate()
        .map(|(i, d)| {
            let t = if short_title.is_empty() {
                format!("(continued, part {} of {n})", i + 2)
            } else {
                format!("{short_title} (continued, part {} of {n})", i + 2)
            };
            body(String::new(), vec![json!({"title": t, "description": d})], Vec::new())
        })
        .collect();
    for r in extra_rows {
        let label = if short_title.is_empty() { "More actions".to_string() } else { format!("More actions for {short_title}") };
        overflow.push(body(label, Vec::new(), r));
    }
    Rendered { main, overflow }
}

/// Undoes [`escape`] (tests, and reading back what was posted).
pub fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c == '\\' {
            if let Some(n) = it.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use runbot_commands::message::{Button, StepLine};
    use runbot_commands::model::StepStatus;
    use runbot_sandbox::discord::limits::message_problems;

    fn plan() -> Message {
        Message {
            title: "R-42 · restart promotions-api (prod)".into(),
            text: "⏳ Waiting for approval: 0 of 1 from sre — expires in 30 min.".into(),
            fields: vec![("Requested by".into(), "discord:1001".into()), ("Acts on".into(), "promotions_api-7d9 *bold* <@everyone>".into())],
            steps: vec![StepLine { status: StepStatus::Succeeded, name: "diagnose".into(), detail: "1 of 3 pods unhealthy".into() }],
            code: None,
            buttons: vec![
                Button {
                    label: "Approve".into(),
                    action_id: "approve".into(),
                    value: "R-42|approve|0123456789abcdef".into(),
                    style: Some(ButtonStyle::Primary),
                },
                Button {
                    label: "Reject".into(),
                    action_id: "reject".into(),
                    value: "R-42|reject|0123456789abcdef".into(),
                    style: Some(ButtonStyle::Danger),
                },
            ],
            footer: Some("plan 0123456789abcdef".into()),
        }
    }

    fn parts(r: &Rendered) -> Vec<Value> {
        let mut v = vec![r.main.clone()];
        v.extend(r.overflow.clone());
        v
    }

    fn assert_valid(r: &Rendered) {
        for p in parts(r) {
            let probs = message_problems(&p);
            assert!(probs.is_empty(), "{probs:?}");
            assert!(!runbot_sandbox::discord::limits::is_empty_message(&p));
        }
    }

    #[test]
    fn status_message_is_an_embed_with_fields_steps_and_buttons() {
        let r = render(&plan());
        assert!(r.overflow.is_empty());
        assert_valid(&r);
        let e = &r.main["embeds"][0];
        assert_eq!(e["title"], "R-42 · restart promotions-api (prod)");
        assert_eq!(e["fields"][1]["value"], "promotions\\_api-7d9 \\*bold\\* \\<@everyone>");
        assert!(e["description"].as_str().unwrap_or("").contains("✅ 1. diagnose (succeeded) — 1 of 3 pods unhealthy"));
        assert_eq!(e["footer"]["text"], "plan 0123456789abcdef");
        let row = &r.main["components"][0];
        assert_eq!(row["type"], 1);
        assert_eq!(row["components"][0]["custom_id"], "R-42|approve|0123456789abcdef");
        assert_eq!(row["components"][0]["style"], 1);
        assert_eq!(row["components"][1]["style"], 4);
        assert_eq!(r.main["allowed_mentions"]["parse"], json!([]));
        // serenity reads the body as its own types without losing the components.
        let typed: Vec<serenity::model::application::ActionRow> = serde_json::from_value(r.main["components"].clone()).expect("typed rows");
        assert_eq!(typed.len(), 1);
    }

    #[test]
    fn the_engines_button_values_always_fit_a_custom_id() {
        // The longest value the engine can make: R- and 12 digits, the longest action, and
        // the longest fingerprint its parser accepts.
        let longest = format!("R-{}|{}|{}", "9".repeat(12), "follow_up", "f".repeat(64));
        assert!(longest.chars().count() <= MAX_CUSTOM_ID);
        assert_eq!(custom_id(&longest).map(|c| button_value(&c)), Some(longest));
        assert_eq!(custom_id(""), None);
        assert_eq!(custom_id(&"x".repeat(101)), None);
    }

    #[test]
    fn long_content_is_split_never_cut() {
        let mut m = plan();
        let code: String = (0..3000).map(|i| format!("line {i} <&> *x* ```\n")).collect();
        m.code = Some(code.clone());
        m.fields.push(("Long".into(), "ж".repeat(5000)));
        m.fields.extend((0..30).map(|i| (format!("f{i}"), format!("v{i}"))));
        m.title = "T".repeat(400);
        m.text = "intro _text_\n".repeat(200);
        let r = render(&m);
        assert!(r.overflow.len() > 5, "{}", r.overflow.len());
        assert_valid(&r);
        let all: Vec<Value> = parts(&r);
        // Buttons stay in the main message.
        assert_eq!(r.main["components"][0]["components"][0]["custom_id"], "R-42|approve|0123456789abcdef");
        // Every line of the code block arrives, in order, between fences.
        let descs: String = all.iter().filter_map(|p| p["embeds"][0]["description"].as_str().map(str::to_string)).collect::<Vec<_>>().join("\n");
        let mut got = String::new();
        let mut inside = false;
        for line in descs.lines() {
            if line == "```" {
                inside = !inside;
                continue;
            }
            if inside {
                got.push_str(line);
                got.push('\n');
            }
        }
        assert_eq!(got.replace('\u{200b}', ""), code);
        // Every character of the long field and of the text, and all 32 fields.
        let text = unescape(&all.iter().map(runbot_sandbox::discord::content_text).collect::<String>());
        assert_eq!(text.matches('ж').count(), 5000);
        assert_eq!(text.matches("intro _text_").count(), 200);
        for i in 0..30 {
            assert!(text.contains(&format!("f{i}")) && text.contains(&format!("v{i}")), "field {i}");
        }
        assert!(text.contains(&"T".repeat(400)), "the full title is shown");
    }

    #[test]
    fn many_buttons_go_to_follow_up_parts() {
        let mut m = plan();
        m.buttons = (0..32)
            .map(|i| Button { label: format!("Action {i}"), action_id: format!("a{i}"), value: format!("R-1|a{i}|00"), style: None })
            .collect();
        let r = render(&m);
        assert_valid(&r);
        let ids: Vec<String> = parts(&r)
            .iter()
            .flat_map(|p| p["components"].as_array().cloned().unwrap_or_default())
            .flat_map(|row| row["components"].as_array().cloned().unwrap_or_default())
            .map(|b| b["custom_id"].as_str().unwrap_or("").to_string())
            .collect();
        assert_eq!(ids, (0..32).map(|i| format!("R-1|a{i}|00")).collect::<Vec<_>>());
        assert_eq!(r.main["components"].as_array().map(|a| a.len()), Some(5));
    }

    #[test]
    fn unusable_buttons_are_named_not_sent() {
        let mut m = plan();
        m.buttons[0].value = "x".repeat(101);
        m.buttons[1].label = "L".repeat(100);
        m.buttons.push(m.buttons[1].clone());
        let r = render(&m);
        assert_valid(&r);
        let s = r.main.to_string();
        assert!(s.contains("The Approve button could not be shown in Discord"), "{s}");
        assert!(s.contains("is shown once"), "{s}");
        assert!(s.contains(&format!("{}…", "L".repeat(79))));
        assert_eq!(r.main["components"][0]["components"].as_array().map(|a| a.len()), Some(1));
    }

    #[test]
    fn text_and_code_are_plain_content() {
        let mut m = Message::code("a\nb ``` c\n");
        m.text = "Output of step 1 (greet):\n".into();
        let r = render(&m);
        assert!(r.overflow.is_empty());
        assert_eq!(r.main["content"], "Output of step 1 (greet):\n```\na\nb ``\u{200b}` c\n```");
        assert_eq!(r.main["embeds"], json!([]));
        let big = Message::code((0..2000).map(|i| format!("{i}\n")).collect::<String>());
        let r = render(&big);
        assert!(!r.overflow.is_empty());
        assert_valid(&r);
        assert!(r.main["content"].as_str().unwrap_or("").ends_with(&format!("*… continued in {} more messages.*", r.overflow.len())));
        let empty = render(&Message::default());
        assert_eq!(empty.main["content"], "(no content)");
    }

    #[test]
    fn escaping_roundtrips_and_chunks_respect_the_limit() {
        let t = "*_~`|<[]\\\n> quote\n# head\n- item\n".repeat(300);
        assert_eq!(unescape(&escape(&t)), t);
        let parts = escaped_chunks(&t, 500);
        assert!(parts.iter().all(|p| p.chars().count() <= 500));
        assert_eq!(unescape(&parts.concat()), t);
        let long_line = "*".repeat(1200);
        let parts = escaped_chunks(&long_line, 100);
        assert!(parts.iter().all(|p| p.chars().count() <= 100));
        // Never cut inside an escape: each part unescapes on its own.
        assert_eq!(parts.iter().map(|p| unescape(p)).collect::<String>(), long_line);
    }
}
