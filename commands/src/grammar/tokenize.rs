//! Splits chat text into words, honouring quotes (including the curly quotes chat clients
//! substitute for straight ones), so `--date "2023-10-27T10:00:00Z"` works as typed in the runbook.

/// Splits on whitespace; `"..."`, `'...'`, `“...”` and `‘...’` group words.
pub fn tokenize(input: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = input.chars().peekable();
    while let Some(c) = chars.next() {
        let close = match c {
            '"' => Some('"'),
            '\'' => Some('\''),
            '“' | '”' => Some('”'),
            '‘' | '’' => Some('’'),
            _ => None,
        };
        if let Some(close) = close {
            in_word = true;
            let mut closed = false;
            for q in chars.by_ref() {
                let is_close = q == close || (close == '”' && q == '“') || (close == '’' && q == '‘');
                if is_close {
                    closed = true;
                    break;
                }
                cur.push(q);
            }
            if !closed {
                return Err(format!("A quote ({c}) is not closed."));
            }
        } else if c.is_whitespace() {
            if in_word {
                out.push(std::mem::take(&mut cur));
                in_word = false;
            }
        } else {
            in_word = true;
            cur.push(c);
        }
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::tokenize;

    #[test]
    fn quotes_group_words_and_smart_quotes_work() {
        assert_eq!(tokenize(r#"restore db --date "2023-10-27T10:00:00Z""#).unwrap(), vec!["restore", "db", "--date", "2023-10-27T10:00:00Z"]);
        assert_eq!(tokenize("a “b c” ‘d’").unwrap(), vec!["a", "b c", "d"]);
        assert_eq!(tokenize("  a   b ").unwrap(), vec!["a", "b"]);
        assert!(tokenize("a \"b").unwrap_err().contains("not closed"));
    }
}
