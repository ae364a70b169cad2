//! The YAML subset the stand-ins read (chart `Chart.yaml`/`values.yaml`, `-f` values files,
//! kubeconfigs, compose files), parsed into JSON values: block mappings and sequences by
//! indentation (a sequence may sit at its key's indentation), `- key: value` items, plain,
//! single- and double-quoted scalars (plain ones typed as YAML 1.2's core schema: null, bools,
//! integers, floats, else strings), single-line flow collections (`[a, b]`, `{a: 1}`),
//! literal/folded block scalars (`|`, `|-`, `>`, `>-`), comments, a leading `---`.
//! Anchors, aliases, tags, multi-document streams and multi-line flow collections are refused
//! with the line number rather than misread.

use serde_json::{Map, Value};

/// Parses one YAML document. An empty document is `null`.
pub(crate) fn parse(src: &str) -> Result<Value, String> {
    let raw: Vec<&str> = src.lines().collect();
    let mut lines = Vec::new();
    let mut started = false;
    for (no, l) in raw.iter().enumerate() {
        let content = strip_comment(l);
        let trimmed = content.trim_end();
        if trimmed.trim().is_empty() {
            continue;
        }
        if trimmed == "---" || trimmed.starts_with("--- ") {
            if started {
                return Err(format!("line {}: only one YAML document is supported", no + 1));
            }
            continue;
        }
        if trimmed == "..." {
            break;
        }
        started = true;
        let indent = trimmed.len() - trimmed.trim_start_matches(' ').len();
        if trimmed[indent..].starts_with('\t') {
            return Err(format!("line {}: found a tab character where an indentation space is expected", no + 1));
        }
        lines.push(Line { no, indent, text: trimmed[indent..].to_string() });
    }
    let mut p = Parser { raw, lines, pos: 0 };
    if p.lines.is_empty() {
        return Ok(Value::Null);
    }
    let v = p.node(0)?;
    if let Some(l) = p.lines.get(p.pos) {
        return Err(format!("line {}: unexpected content (bad indentation?): {}", l.no + 1, l.text));
    }
    Ok(v)
}

struct Line {
    no: usize,
    indent: usize,
    text: String,
}

struct Parser<'a> {
    raw: Vec<&'a str>,
    lines: Vec<Line>,
    pos: usize,
}

fn is_seq_item(t: &str) -> bool {
    t == "-" || t.starts_with("- ")
}

impl Parser<'_> {
    fn err(&self, msg: &str) -> String {
        match self.lines.get(self.pos) {
            Some(l) => format!("line {}: {msg}", l.no + 1),
            None => msg.to_string(),
        }
    }

    /// The block starting at the current line.
    fn node(&mut self, min_indent: usize) -> Result<Value, String> {
        let l = &self.lines[self.pos];
        if l.indent < min_indent {
            return Ok(Value::Null);
        }
        let indent = l.indent;
        if is_seq_item(&l.text) {
            self.seq(indent)
        } else if split_key(&l.text)?.is_some() {
            self.map(indent)
        } else {
            let text = l.text.clone();
            self.pos += 1;
            scalar_or_flow(&text).map_err(|e| format!("line {}: {e}", self.lines[self.pos - 1].no + 1))
        }
    }

    fn map(&mut self, indent: usize) -> Result<Value, String> {
        let mut m = Map::new();
        while let Some(l) = self.lines.get(self.pos) {
            if l.indent < indent {
                break;
            }
            if l.indent > indent || is_seq_item(&l.text) {
                return Err(self.err("bad indentation of a mapping entry"));
            }
            let Some((key, rest)) = split_key(&l.text)? else {
                return Err(self.err("expected a `key: value` mapping entry"));
            };
            let (no, rest) = (l.no, rest.to_string());
            self.pos += 1;
            let v = self.value_after_key(indent, no, &rest)?;
            m.insert(key, v);
        }
        Ok(Value::Object(m))
    }

    /// What follows `key:` on line `no` (indentation `indent`): inline, a block scalar, or a
    /// nested block.
    fn value_after_key(&mut self, indent: usize, no: usize, rest: &str) -> Result<Value, String> {
        if rest.starts_with('|') || rest.starts_with('>') {
            return self.block_scalar(indent, no, rest);
        }
        if !rest.is_empty() {
            return scalar_or_flow(rest).map_err(|e| format!("line {}: {e}", no + 1));
        }
        match self.lines.get(self.pos) {
            Some(n) if n.indent > indent || (n.indent == indent && is_seq_item(&n.text)) => {
                let min = n.indent;
                self.node(min)
            }
            _ => Ok(Value::Null),
        }
    }

    fn seq(&mut self, indent: usize) -> Result<Value, String> {
        let mut items = Vec::new();
        while let Some(l) = self.lines.get(self.pos) {
            if l.indent < indent || (l.indent == indent && !is_seq_item(&l.text)) {
                break;
            }
            if l.indent > indent {
                return Err(self.err("bad indentation of a sequence entry"));
            }
            let after = &l.text[1..];
            let rest = after.trim_start();
            if rest.is_empty() {
                self.pos += 1;
                items.push(match self.lines.get(self.pos) {
                    Some(n) if n.indent > indent => {
                        let min = n.indent;
                        self.node(min)?
                    }
                    _ => Value::Null,
                });
                continue;
            }
            // `- key: value` (a mapping whose first entry shares the dash's line) or `- - x`:
            // re-read the rest of the line as a block at its own column.
            let col = indent + 1 + (after.len() - rest.len());
            if is_seq_item(rest) || split_key(rest)?.is_some() {
                let rest = rest.to_string();
                let l = &mut self.lines[self.pos];
                l.indent = col;
                l.text = rest;
                items.push(self.node(col)?);
            } else {
                let (no, rest) = (l.no, rest.to_string());
                self.pos += 1;
                items.push(scalar_or_flow(&rest).map_err(|e| format!("line {}: {e}", no + 1))?);
            }
        }
        Ok(Value::Array(items))
    }

    /// `|`, `|-`, `>`, `>-` after a key on raw line `no`: the following lines indented more
    /// than `indent` (blank lines included), read from the raw text (comments are content).
    fn block_scalar(&mut self, indent: usize, no: usize, header: &str) -> Result<Value, String> {
        let folded = header.starts_with('>');
        let chomp = &header[1..];
        if !matches!(chomp, "" | "-" | "+") {
            return Err(format!("line {}: unsupported block scalar header {header:?}", no + 1));
        }
        let mut body: Vec<&str> = Vec::new();
        let mut block_indent = None;
        let mut last = no;
        for (i, l) in self.raw.iter().enumerate().skip(no + 1) {
            if l.trim().is_empty() {
                body.push("");
                continue;
            }
            let ind = l.len() - l.trim_start_matches(' ').len();
            if ind <= indent {
                break;
            }
            let bi = *block_indent.get_or_insert(ind);
            if ind < bi {
                break;
            }
            body.push(&l[bi..]);
            last = i;
        }
        // Trailing blank lines belong to the chomping, not the content.
        let content_lines = body.len() - body.iter().rev().take_while(|l| l.is_empty()).count();
        let body = &body[..content_lines];
        while self.lines.get(self.pos).is_some_and(|l| l.no <= last) {
            self.pos += 1;
        }
        let mut text = if folded {
            let mut out = String::new();
            for (i, l) in body.iter().enumerate() {
                if i > 0 {
                    out.push(if l.is_empty() || body[i - 1].is_empty() { '\n' } else { ' ' });
                }
                out.push_str(l);
            }
            out
        } else {
            body.join("\n")
        };
        if chomp != "-" && !text.is_empty() {
            text.push('\n');
        }
        Ok(Value::String(text))
    }
}

/// Removes a trailing comment: `#` at the start or after whitespace, outside quotes.
fn strip_comment(l: &str) -> &str {
    let (mut sq, mut dq, mut prev_space) = (false, false, true);
    let mut prev = '\0';
    for (i, c) in l.char_indices() {
        match c {
            '\'' if !dq => sq = !sq,
            '"' if !sq && prev != '\\' => dq = !dq,
            '#' if !sq && !dq && prev_space => return &l[..i],
            _ => {}
        }
        prev_space = c == ' ' || c == '\t';
        prev = c;
    }
    l
}

/// `key: rest` → (key, rest); `None` when the line is not a mapping entry.
fn split_key(t: &str) -> Result<Option<(String, &str)>, String> {
    if t.starts_with('"') || t.starts_with('\'') {
        let q = t.chars().next().unwrap_or('"');
        let Some(end) = find_closing_quote(t, q) else {
            return Ok(None);
        };
        let after = &t[end + 1..];
        let Some(rest) = after.strip_prefix(':') else {
            return Ok(None);
        };
        if !rest.is_empty() && !rest.starts_with(' ') {
            return Ok(None);
        }
        let key = match scalar(&t[..=end])? {
            Value::String(s) => s,
            other => other.to_string(),
        };
        return Ok(Some((key, rest.trim())));
    }
    if t.starts_with('[') || t.starts_with('{') {
        return Ok(None);
    }
    let mut search = 0;
    while let Some(i) = t[search..].find(':').map(|i| i + search) {
        let rest = &t[i + 1..];
        if rest.is_empty() || rest.starts_with(' ') {
            return Ok(Some((t[..i].trim().to_string(), rest.trim())));
        }
        search = i + 1;
    }
    Ok(None)
}

fn find_closing_quote(t: &str, q: char) -> Option<usize> {
    let b = t.as_bytes();
    let mut i = 1;
    while i < b.len() {
        let c = b[i] as char;
        if q == '"' && c == '\\' {
            i += 2;
            continue;
        }
        if c == q {
            if q == '\'' && b.get(i + 1) == Some(&b'\'') {
                i += 2;
                continue;
            }
            return Some(i);
        }
        i += 1;
    }
    None
}

fn scalar_or_flow(t: &str) -> Result<Value, String> {
    let t = t.trim();
    if t.starts_with('[') || t.starts_with('{') {
        let mut f = Flow { s: t.as_bytes(), i: 0 };
        let v = f.value()?;
        f.ws();
        if f.i != t.len() {
            return Err(format!("unexpected text after a flow collection: {t}"));
        }
        return Ok(v);
    }
    scalar(t)
}

/// A scalar: quoted → string; plain → YAML 1.2 core schema types.
fn scalar(t: &str) -> Result<Value, String> {
    let t = t.trim();
    if let Some(inner) = t.strip_prefix('"') {
        let inner = inner.strip_suffix('"').ok_or_else(|| format!("unterminated double-quoted string: {t}"))?;
        return unescape_double(inner).map(Value::String);
    }
    if let Some(inner) = t.strip_prefix('\'') {
        let inner = inner.strip_suffix('\'').ok_or_else(|| format!("unterminated single-quoted string: {t}"))?;
        return Ok(Value::String(inner.replace("''", "'")));
    }
    if t.starts_with('&') || t.starts_with('*') || t.starts_with('!') {
        return Err(format!("anchors, aliases and tags are not supported: {t}"));
    }
    Ok(match t {
        "" | "~" | "null" | "Null" | "NULL" => Value::Null,
        "true" | "True" | "TRUE" => Value::Bool(true),
        "false" | "False" | "FALSE" => Value::Bool(false),
        _ => {
            if let Ok(i) = t.parse::<i64>() {
                Value::from(i)
            } else if let Some(h) = t.strip_prefix("0x").and_then(|h| i64::from_str_radix(h, 16).ok()) {
                Value::from(h)
            } else if t.chars().any(|c| c.is_ascii_digit())
                && t.chars().all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+'))
                && let Ok(f) = t.parse::<f64>()
            {
                serde_json::Number::from_f64(f).map(Value::Number).unwrap_or(Value::String(t.into()))
            } else {
                Value::String(t.to_string())
            }
        }
    })
}

fn unescape_double(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('0') => out.push('\0'),
            Some('"') => out.push('"'),
            Some('\\') => out.push('\\'),
            Some('/') => out.push('/'),
            Some(' ') => out.push(' '),
            Some('u') => {
                let h: String = it.by_ref().take(4).collect();
                let n = u32::from_str_radix(&h, 16).map_err(|_| format!("bad \\u escape in \"{s}\""))?;
                out.push(char::from_u32(n).ok_or_else(|| format!("bad \\u escape in \"{s}\""))?);
            }
            other => {
                return Err(format!("unsupported escape \\{} in \"{s}\"", other.unwrap_or(' ')));
            }
        }
    }
    Ok(out)
}

/// Single-line flow collections.
struct Flow<'a> {
    s: &'a [u8],
    i: usize,
}

impl Flow<'_> {
    fn ws(&mut self) {
        while self.s.get(self.i).is_some_and(|c| *c == b' ') {
            self.i += 1;
        }
    }

    fn value(&mut self) -> Result<Value, String> {
        self.ws();
        match self.s.get(self.i) {
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                loop {
                    self.ws();
                    if self.s.get(self.i) == Some(&b']') {
                        self.i += 1;
                        return Ok(Value::Array(items));
                    }
                    items.push(self.value()?);
                    self.sep(b']')?;
                }
            }
            Some(b'{') => {
                self.i += 1;
                let mut m = Map::new();
                loop {
                    self.ws();
                    if self.s.get(self.i) == Some(&b'}') {
                        self.i += 1;
                        return Ok(Value::Object(m));
                    }
                    let k = match self.atom(true)? {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    self.ws();
                    if self.s.get(self.i) != Some(&b':') {
                        return Err("expected `:` in a flow mapping".into());
                    }
                    self.i += 1;
                    let v = self.value()?;
                    m.insert(k, v);
                    self.sep(b'}')?;
                }
            }
            Some(_) => self.atom(false),
            None => Err("unterminated flow collection (multi-line flow collections are not supported)".into()),
        }
    }

    fn sep(&mut self, close: u8) -> Result<(), String> {
        self.ws();
        match self.s.get(self.i) {
            Some(b',') => {
                self.i += 1;
                Ok(())
            }
            Some(c) if *c == close => Ok(()),
            _ => Err("expected `,` or the end of the flow collection".into()),
        }
    }

    fn atom(&mut self, key: bool) -> Result<Value, String> {
        let start = self.i;
        match self.s.get(self.i) {
            Some(q @ (b'"' | b'\'')) => {
                let q = *q as char;
                let rest = std::str::from_utf8(&self.s[start..]).map_err(|e| e.to_string())?;
                let end = find_closing_quote(rest, q).ok_or("unterminated quoted string")?;
                self.i = start + end + 1;
                scalar(&rest[..=end])
            }
            _ => {
                while let Some(c) = self.s.get(self.i) {
                    if matches!(c, b',' | b']' | b'}') || (key && *c == b':') {
                        break;
                    }
                    self.i += 1;
                }
                scalar(std::str::from_utf8(&self.s[start..self.i]).map_err(|e| e.to_string())?)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse;
    use serde_json::json;

    #[test]
    fn values_and_compose_shapes() {
        let v = parse(
            "# values\n---\nimage:\n  repository: registry.example.com/promotions  # the repo\n  tag: \"1.2.4\"\nreplicaCount: 2\nenabled: true\nempty:\nlist:\n- a\n- 'b c'\nflow: [1, two, \"3\"]\nobj: {a: 1, b: x}\nurl: http://x:80/#frag\n",
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"image": {"repository": "registry.example.com/promotions", "tag": "1.2.4"}, "replicaCount": 2,
                   "enabled": true, "empty": null, "list": ["a", "b c"], "flow": [1, "two", "3"], "obj": {"a": 1, "b": "x"},
                   "url": "http://x:80/#frag"})
        );
        let c = parse(
            "version: \"3.8\"\nservices:\n  app:\n    image: myrpo/app:v1.2.4\n    ports:\n      - \"8080:80\"\n    deploy:\n      replicas: 3\n",
        )
        .unwrap();
        assert_eq!(c["services"]["app"]["image"], "myrpo/app:v1.2.4");
        assert_eq!(c["services"]["app"]["ports"][0], "8080:80");
        assert_eq!(c["services"]["app"]["deploy"]["replicas"], 3);
    }

    #[test]
    fn kubeconfig_sequences_of_maps_and_block_scalars() {
        let k = parse(
            "apiVersion: v1\nclusters:\n- cluster:\n    server: http://127.0.0.1:6443\n  name: sandbox\ncontexts:\n  - name: ctx\n    context:\n      cluster: sandbox\ncurrent-context: ctx\nnotes: |\n  line one\n  # not a comment\n\n  line three\nfolded: >-\n  a\n  b\nafter: 1\n",
        )
        .unwrap();
        assert_eq!(k["clusters"][0]["cluster"]["server"], "http://127.0.0.1:6443");
        assert_eq!(k["clusters"][0]["name"], "sandbox");
        assert_eq!(k["contexts"][0]["context"]["cluster"], "sandbox");
        assert_eq!(k["notes"], "line one\n# not a comment\n\nline three\n");
        assert_eq!(k["folded"], "a b");
        assert_eq!(k["after"], 1);
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        assert!(parse("a: &x 1\nb: *x\n").is_err());
        assert!(parse("a: 1\n---\nb: 2\n").is_err());
        assert!(parse("a:\n  b: 1\n c: 2\n").is_err());
        assert!(parse("a: [1,\n  2]\n").is_err());
    }
}
