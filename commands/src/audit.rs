//! The audit trail: append-only records, each linked to the previous by a SHA-256 hash, so an
//! edited, inserted or deleted record is detected by [`verify`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What happened, before it gets its place in the chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at: DateTime<Utc>,
    /// `command`, `authz`, `approval`, `step`, `state`, `error`, ...
    pub kind: String,
    pub actor: Option<String>,
    pub execution: Option<String>,
    pub detail: serde_json::Value,
}

/// A record in the chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: u64,
    #[serde(flatten)]
    pub entry: AuditEntry,
    pub prev_hash: String,
    pub hash: String,
}

/// The hash of the empty chain, linked to by record 1.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The hash of a record: SHA-256 over the previous hash and the canonical JSON of the fields
/// (serde_json orders object keys, so the encoding is canonical).
pub fn record_hash(seq: u64, prev_hash: &str, entry: &AuditEntry) -> String {
    let canonical = Canonical {
        actor: &entry.actor,
        at: entry.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        detail: &entry.detail,
        execution: &entry.execution,
        kind: &entry.kind,
        seq,
    };
    let mut h = HashWriter(Sha256::new());
    h.0.update(prev_hash.as_bytes());
    h.0.update(b"\n");
    // Writing into the hash cannot fail, nor can encoding these fields.
    let _ = serde_json::to_writer(&mut h, &canonical);
    hex::encode(h.0.finalize())
}

/// The fields a record's hash covers, in the order serde_json gives an object's keys (sorted):
/// encoded straight into the hash, the same bytes as the `json!` object of them, without
/// copying the detail.
#[derive(Serialize)]
struct Canonical<'a> {
    actor: &'a Option<String>,
    at: String,
    detail: &'a serde_json::Value,
    execution: &'a Option<String>,
    kind: &'a str,
    seq: u64,
}

struct HashWriter(Sha256);

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Links `entry` after `(prev_seq, prev_hash)`.
pub fn link(prev: Option<(u64, &str)>, entry: AuditEntry) -> AuditRecord {
    let (seq, prev_hash) = match prev {
        Some((s, h)) => (s + 1, h.to_string()),
        None => (1, GENESIS.to_string()),
    };
    let hash = record_hash(seq, &prev_hash, &entry);
    AuditRecord { seq, entry, prev_hash, hash }
}

/// Checks the chain and the stored head. Returns the number of records, or every problem found.
pub fn verify(records: &[AuditRecord], head: Option<(u64, &str)>) -> Result<u64, Vec<String>> {
    let mut problems = Vec::new();
    let mut prev_hash = GENESIS.to_string();
    let mut expected_seq = 1;
    for r in records {
        if r.seq != expected_seq {
            if r.seq > expected_seq {
                problems.push(format!(
                    "record {}: sequence jumps from {} — record(s) {}..{} deleted",
                    r.seq,
                    expected_seq - 1,
                    expected_seq,
                    r.seq - 1
                ));
            } else {
                problems.push(format!("record {}: sequence repeats or goes backwards (inserted)", r.seq));
            }
        }
        if r.prev_hash != prev_hash {
            problems.push(format!("record {}: does not link to the record before it (inserted or reordered)", r.seq));
        }
        if record_hash(r.seq, &r.prev_hash, &r.entry) != r.hash {
            problems.push(format!("record {}: contents do not match its hash (edited)", r.seq));
        }
        prev_hash = r.hash.clone();
        expected_seq = r.seq + 1;
    }
    let last = records.last().map(|r| (r.seq, r.hash.as_str()));
    match (head, last) {
        (None, None) => {}
        (Some((hs, hh)), Some((ls, lh))) if hs == ls && hh == lh => {}
        (Some((hs, _)), Some((ls, _))) if hs > ls => {
            problems.push(format!("the log ends at record {ls} but the head says {hs} — records deleted at the end"))
        }
        (Some((hs, _)), _) => problems.push(format!("the head (record {hs}) does not match the last record")),
        (None, Some(_)) => problems.push("records exist but the head is missing".into()),
    }
    if problems.is_empty() { Ok(records.len() as u64) } else { Err(problems) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: usize) -> Vec<AuditRecord> {
        let mut out: Vec<AuditRecord> = Vec::new();
        for i in 0..n {
            let e = AuditEntry {
                at: DateTime::from_timestamp(1_700_000_000 + i as i64, 0).unwrap(),
                kind: "command".into(),
                actor: Some("console:alice".into()),
                execution: None,
                detail: serde_json::json!({ "text": format!("/ops status {i}") }),
            };
            let prev = out.last().map(|r| (r.seq, r.hash.as_str()));
            let rec = link(prev, e);
            out.push(rec);
        }
        out
    }

    fn head(c: &[AuditRecord]) -> Option<(u64, &str)> {
        c.last().map(|r| (r.seq, r.hash.as_str()))
    }

    #[test]
    fn hashes_cover_the_canonical_json_object_of_the_fields() {
        let mut e = chain(1).remove(0).entry;
        e.detail = serde_json::json!({"text": "/ops help <\u{e9}> \"q\"", "ok": true, "n": [1, 2.5, null], "z": {"b": 1, "a": 2}});
        for actor in [None, Some("slack:U1".to_string())] {
            e.actor = actor;
            let object = serde_json::json!({
                "seq": 7,
                "at": e.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                "kind": e.kind,
                "actor": e.actor,
                "execution": e.execution,
                "detail": e.detail,
            });
            let mut h = Sha256::new();
            h.update(b"prev\n");
            h.update(object.to_string().as_bytes());
            assert_eq!(record_hash(7, "prev", &e), hex::encode(h.finalize()));
        }
    }

    #[test]
    fn intact_chain_verifies() {
        let c = chain(5);
        assert_eq!(verify(&c, head(&c)), Ok(5));
        assert_eq!(verify(&[], None), Ok(0));
    }

    #[test]
    fn edit_insert_delete_are_detected() {
        let c = chain(5);
        let h = head(&c).map(|(s, h)| (s, h.to_string())).unwrap();
        let hr = Some((h.0, h.1.as_str()));

        let mut edited = c.clone();
        edited[2].entry.detail = serde_json::json!({"text": "/ops status 999"});
        assert!(verify(&edited, hr).unwrap_err()[0].contains("record 3: contents do not match"));

        let mut deleted = c.clone();
        deleted.remove(2);
        assert!(verify(&deleted, hr).unwrap_err().iter().any(|p| p.contains("deleted")));

        let mut inserted = c.clone();
        let fake = link(Some((2, &c[1].hash)), c[2].entry.clone());
        inserted.insert(2, fake);
        assert!(verify(&inserted, hr).is_err());

        let mut truncated = c.clone();
        truncated.pop();
        assert!(verify(&truncated, hr).unwrap_err()[0].contains("deleted at the end"));
    }
}
