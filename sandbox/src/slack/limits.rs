//! Block Kit's documented limits, checked on every piece of content the fake receives:
//! ≤ 50 blocks; section text ≤ 3000; ≤ 10 fields of ≤ 2000; header ≤ 150; ≤ 25 elements per
//! actions block; button text ≤ 75, action_id ≤ 255, value ≤ 2000; unique block ids;
//! message text ≤ 40,000.

use serde_json::Value;
use std::collections::HashSet;

fn len(v: &Value) -> usize {
    v.as_str().map(|s| s.chars().count()).unwrap_or(0)
}

/// Every broken limit in `content` (`text` + `blocks`); empty when Slack would accept it.
pub fn violations(content: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if len(&content["text"]) > 40_000 {
        out.push(format!("text has {} characters (max 40000)", len(&content["text"])));
    }
    let Some(blocks) = content.get("blocks").and_then(|b| b.as_array()) else {
        if content.get("blocks").is_some_and(|b| !b.is_null()) {
            out.push("blocks is not an array".into());
        }
        return out;
    };
    if blocks.len() > 50 {
        out.push(format!("{} blocks (max 50)", blocks.len()));
    }
    let mut ids = HashSet::new();
    for (i, b) in blocks.iter().enumerate() {
        if let Some(id) = b["block_id"].as_str()
            && (id.chars().count() > 255 || !ids.insert(id.to_string()))
        {
            out.push(format!("blocks[{i}].block_id repeated or too long"));
        }
        match b["type"].as_str().unwrap_or("") {
            "section" => {
                if len(&b["text"]["text"]) > 3000 {
                    out.push(format!("blocks[{i}] section text has {} characters (max 3000)", len(&b["text"]["text"])));
                }
                if let Some(fs) = b["fields"].as_array() {
                    if fs.len() > 10 {
                        out.push(format!("blocks[{i}] has {} fields (max 10)", fs.len()));
                    }
                    for (j, f) in fs.iter().enumerate() {
                        if len(&f["text"]) > 2000 {
                            out.push(format!("blocks[{i}].fields[{j}] has {} characters (max 2000)", len(&f["text"])));
                        }
                    }
                }
                if b["text"].is_null() && b["fields"].is_null() {
                    out.push(format!("blocks[{i}] section without text or fields"));
                }
            }
            "header" => {
                if len(&b["text"]["text"]) > 150 {
                    out.push(format!("blocks[{i}] header has {} characters (max 150)", len(&b["text"]["text"])));
                }
            }
            "actions" => {
                let els = b["elements"].as_array().cloned().unwrap_or_default();
                if els.is_empty() || els.len() > 25 {
                    out.push(format!("blocks[{i}] actions has {} elements (1 to 25)", els.len()));
                }
                for (j, e) in els.iter().enumerate() {
                    if e["type"] == "button" {
                        if len(&e["text"]["text"]) > 75 || len(&e["text"]["text"]) == 0 {
                            out.push(format!("blocks[{i}].elements[{j}] button text length {} (1 to 75)", len(&e["text"]["text"])));
                        }
                        if len(&e["action_id"]) > 255 {
                            out.push(format!("blocks[{i}].elements[{j}] action_id too long"));
                        }
                        if len(&e["value"]) > 2000 {
                            out.push(format!("blocks[{i}].elements[{j}] value has {} characters (max 2000)", len(&e["value"])));
                        }
                    }
                }
            }
            "context" => {
                let els = b["elements"].as_array().map(|a| a.len()).unwrap_or(0);
                if els == 0 || els > 10 {
                    out.push(format!("blocks[{i}] context has {els} elements (1 to 10)"));
                }
            }
            "divider" => {}
            other => out.push(format!("blocks[{i}] has unknown type '{other}'")),
        }
    }
    out
}
