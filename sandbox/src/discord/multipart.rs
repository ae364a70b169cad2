//! `multipart/form-data` as Discord reads it for a message with files: a `payload_json` part
//! (the JSON body) and one `files[n]` part per file, each with a `filename`.

/// One file part.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct FilePart {
    /// `n` of `files[n]`.
    pub index: u64,
    pub filename: String,
    pub bytes: Vec<u8>,
}

/// The boundary of a `multipart/form-data` content type, if it is one.
pub(super) fn boundary(content_type: &str) -> Option<String> {
    let (kind, rest) = content_type.split_once(';')?;
    if !kind.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    rest.split(';').find_map(|p| p.trim().strip_prefix("boundary=").map(|b| b.trim_matches('"').to_string())).filter(|b| !b.is_empty())
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?.windows(needle.len()).position(|w| w == needle).map(|i| i + from)
}

/// A `name="…"` or `filename="…"` parameter of a Content-Disposition line.
fn param(disposition: &str, key: &str) -> Option<String> {
    disposition.split(';').find_map(|p| p.trim().strip_prefix(&format!("{key}=")).map(|v| v.trim_matches('"').to_string()))
}

/// The `payload_json` text (if any) and the `files[n]` parts; `Err` names what is malformed.
pub(super) fn parse(boundary: &str, body: &[u8]) -> Result<(Option<String>, Vec<FilePart>), String> {
    let delim = format!("--{boundary}").into_bytes();
    let mut at = find(body, &delim, 0).ok_or("no boundary in the body")? + delim.len();
    let (mut payload, mut files) = (None, Vec::new());
    loop {
        if body.get(at..at + 2) == Some(b"--") {
            return Ok((payload, files));
        }
        at += 2; // CRLF after the boundary
        let head_end = find(body, b"\r\n\r\n", at).ok_or("a part without headers")?;
        let head = String::from_utf8_lossy(&body[at..head_end]).into_owned();
        let next = find(body, &[b"\r\n".as_slice(), &delim].concat(), head_end + 4).ok_or("an unterminated part")?;
        let content = body[head_end + 4..next].to_vec();
        at = next + 2 + delim.len();
        let disposition = head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("content-disposition:"))
            .ok_or("a part without Content-Disposition")?
            .to_string();
        let name = param(&disposition, "name").ok_or("a part without a name")?;
        if name == "payload_json" {
            payload = Some(String::from_utf8(content).map_err(|_| "payload_json is not UTF-8")?);
        } else if let Some(n) = name.strip_prefix("files[").and_then(|r| r.strip_suffix(']')) {
            let index = n.parse().map_err(|_| format!("'{name}' is not files[n]"))?;
            let filename = param(&disposition, "filename").filter(|f| !f.is_empty()).ok_or(format!("{name} has no filename"))?;
            files.push(FilePart { index, filename, bytes: content });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_and_a_file_are_read_back_as_sent() {
        let body = b"--xyz\r\nContent-Disposition: form-data; name=\"files[0]\"; filename=\"t.md\"\r\nContent-Type: text/markdown\r\n\r\n# a\r\nb\r\n--xyz\r\nContent-Disposition: form-data; name=\"payload_json\"\r\n\r\n{\"content\":\"c\"}\r\n--xyz--\r\n";
        assert_eq!(boundary("multipart/form-data; boundary=xyz").as_deref(), Some("xyz"));
        assert_eq!(boundary("application/json"), None);
        let (payload, files) = parse("xyz", body).expect("parses");
        assert_eq!(payload.as_deref(), Some("{\"content\":\"c\"}"));
        assert_eq!(files, vec![FilePart { index: 0, filename: "t.md".into(), bytes: b"# a\r\nb".to_vec() }]);
        assert!(parse("xyz", b"--xyz\r\nContent-Disposition: form-data; name=\"files[0]\"\r\n\r\nx\r\n--xyz--").is_err(), "no filename");
    }
}
