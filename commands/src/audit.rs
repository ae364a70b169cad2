//! The audit trail: append-only records, each linked to the previous by a hash, so an edited,
//! inserted or deleted record is detected by [`verify`].
//!
//! With a key (`[audit] key`), a record's hash is an HMAC-SHA256 under that key and the record
//! names the key's id: whoever can write the database but does not hold the key cannot re-hash
//! an edited chain. Without one the hash is a plain SHA-256, which anyone can recompute. The
//! head is also [`Anchor`]ed outside the store (HMAC'd the same way), so a deleted tail or a
//! wiped store is caught against the newest anchor ([`check_anchor`]).

use crate::config::Secret;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

/// `t` as RFC 3339 in UTC to the microsecond (`2026-12-06T08:47:36.349508Z`), exactly as
/// `to_rfc3339_opts(SecondsFormat::Micros, true)` writes it: the form records are stored and
/// hashed in, written for each one without chrono's general formatter. Years outside
/// 0000–9999 and leap seconds go through chrono.
pub fn rfc3339_micros(t: DateTime<Utc>) -> String {
    use chrono::{Datelike, Timelike};
    let (year, nanos) = (t.year(), t.nanosecond());
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        return t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    }
    let mut b = *b"0000-00-00T00:00:00.000000Z";
    let mut put = |at: usize, width: usize, mut v: u32| {
        for i in (at..at + width).rev() {
            b[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, year.unsigned_abs());
    put(5, 2, t.month());
    put(8, 2, t.day());
    put(11, 2, t.hour());
    put(14, 2, t.minute());
    put(17, 2, t.second());
    put(20, 6, nanos / 1_000);
    String::from_utf8_lossy(&b).into_owned()
}

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
    /// The id of the key `hash` is an HMAC under; empty: an unkeyed SHA-256.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key_id: String,
}

/// A key audit hashes are HMACs under: its id (stored with each record) and the HMAC state
/// prepared from the secret (cloned per record, so the key is not re-derived each time).
/// `Debug` shows the id only.
#[derive(Clone)]
pub struct AuditKey {
    pub id: String,
    mac: Hmac<Sha256>,
}

impl AuditKey {
    pub fn new(id: &str, secret: &Secret) -> AuditKey {
        // HMAC takes a key of any length.
        let mac =
            <Hmac<Sha256> as Mac>::new_from_slice(secret.expose().as_bytes()).unwrap_or_else(|_| unreachable!("HMAC keys have no length limit"));
        AuditKey { id: id.to_string(), mac }
    }
}

impl fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuditKey({})", self.id)
    }
}

/// The keys records are verified with: the current one (new records are keyed with it) and
/// older ones still trusted for the records written under them.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    pub current: Option<AuditKey>,
    pub previous: Vec<AuditKey>,
}

impl Keyring {
    /// The key with id `id`, current or previous.
    pub fn get(&self, id: &str) -> Option<&AuditKey> {
        self.current.iter().chain(&self.previous).find(|k| k.id == id)
    }

    /// Whether any key is configured.
    pub fn is_keyed(&self) -> bool {
        self.current.is_some()
    }
}

/// The hash of the empty chain, linked to by record 1.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The hash of a record: over the previous hash and the canonical JSON of the fields (serde_json
/// orders object keys, so the encoding is canonical) — an HMAC-SHA256 under `key`, or a plain
/// SHA-256 without one. The one place a record's hash is computed (writers and [`verify`]).
pub fn record_hash(key: Option<&AuditKey>, seq: u64, prev_hash: &str, entry: &AuditEntry) -> String {
    // Encoding a JSON value into a string cannot fail.
    let detail = serde_json::to_string(&entry.detail).unwrap_or_default();
    record_hash_encoded(key, seq, prev_hash, entry, &detail)
}

/// [`record_hash`] with the detail already encoded as serde_json encodes it (as a store keeps
/// it): the same bytes are hashed, without encoding the detail a second time. The object's
/// keys are written in serde_json's (sorted) order, each value as serde_json writes it.
pub fn record_hash_encoded(key: Option<&AuditKey>, seq: u64, prev_hash: &str, entry: &AuditEntry, detail: &str) -> String {
    use std::io::Write;
    let mut h = match key {
        Some(k) => HashWriter::Keyed(k.mac.clone()),
        None => HashWriter::Plain(Sha256::new()),
    };
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    // Writing into the hash cannot fail, nor can encoding these fields.
    h.update(br#"{"actor":"#);
    let _ = serde_json::to_writer(&mut h, &entry.actor);
    h.update(br#","at":""#);
    h.update(rfc3339_micros(entry.at).as_bytes());
    h.update(br#"","detail":"#);
    h.update(detail.as_bytes());
    h.update(br#","execution":"#);
    let _ = serde_json::to_writer(&mut h, &entry.execution);
    h.update(br#","kind":"#);
    let _ = serde_json::to_writer(&mut h, &entry.kind);
    let _ = write!(h, r#","seq":{seq}}}"#);
    h.finish()
}

/// SHA-256 or HMAC-SHA256, written into like a file.
enum HashWriter {
    Plain(Sha256),
    Keyed(Hmac<Sha256>),
}

impl HashWriter {
    fn update(&mut self, buf: &[u8]) {
        match self {
            HashWriter::Plain(h) => Digest::update(h, buf),
            HashWriter::Keyed(m) => Mac::update(m, buf),
        }
    }

    fn finish(self) -> String {
        match self {
            HashWriter::Plain(h) => hex::encode(h.finalize()),
            HashWriter::Keyed(m) => hex::encode(m.finalize().into_bytes()),
        }
    }
}

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Links `entry` after `(prev_seq, prev_hash)`, unkeyed.
pub fn link(prev: Option<(u64, &str)>, entry: AuditEntry) -> AuditRecord {
    link_with(None, prev, entry)
}

/// Links `entry` after `(prev_seq, prev_hash)`, keyed with `key` when there is one.
pub fn link_with(key: Option<&AuditKey>, prev: Option<(u64, &str)>, entry: AuditEntry) -> AuditRecord {
    let detail = serde_json::to_string(&entry.detail).unwrap_or_default();
    link_encoded(key, prev, entry, &detail)
}

/// [`link_with`] for an entry whose detail is encoded already (`detail`, as serde_json encodes
/// `entry.detail`): a store that keeps the encoding hashes it rather than encoding it twice.
pub fn link_encoded(key: Option<&AuditKey>, prev: Option<(u64, &str)>, entry: AuditEntry, detail: &str) -> AuditRecord {
    let (seq, prev_hash) = match prev {
        Some((s, h)) => (s + 1, h.to_string()),
        None => (1, GENESIS.to_string()),
    };
    let hash = record_hash_encoded(key, seq, &prev_hash, &entry, detail);
    AuditRecord { seq, entry, prev_hash, hash, key_id: key.map(|k| k.id.clone()).unwrap_or_default() }
}

/// What a chain that verified holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verified {
    pub records: u64,
    /// Records with a plain (unkeyed) hash: anyone who can write the database can rewrite them.
    pub unkeyed: u64,
}

/// Checks an unkeyed chain and the stored head: [`verify_with`] and no keys. Returns the
/// number of records.
pub fn verify(records: &[AuditRecord], head: Option<(u64, &str)>) -> Result<u64, Vec<String>> {
    verify_with(records, head, &Keyring::default()).map(|v| v.records)
}

/// Checks the chain against `keys` and the stored head. Returns what it holds, or every problem
/// found, in sequence order (the first names the first record that differs). A keyed record
/// is checked under the key it names; an unkeyed record after a keyed one is a rewrite (keys
/// are never removed from a running chain), and a key that is not in `keys` cannot be checked.
pub fn verify_with(records: &[AuditRecord], head: Option<(u64, &str)>, keys: &Keyring) -> Result<Verified, Vec<String>> {
    let mut problems = Vec::new();
    let mut prev_hash = GENESIS.to_string();
    let mut expected_seq = 1;
    let mut first_keyed = None;
    let mut unkeyed = 0;
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
        if let Some(why) = hash_problem(r, keys, &mut first_keyed) {
            problems.push(format!("record {}: {why}", r.seq));
        }
        unkeyed += u64::from(r.key_id.is_empty());
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
    if problems.is_empty() { Ok(Verified { records: records.len() as u64, unkeyed }) } else { Err(problems) }
}

/// Why `r`'s hash does not hold, if it does not. `first_keyed`: the first keyed record so far.
fn hash_problem(r: &AuditRecord, keys: &Keyring, first_keyed: &mut Option<u64>) -> Option<String> {
    if r.key_id.is_empty() {
        if let Some(first) = first_keyed {
            return Some(format!("has an unkeyed hash after keyed records (keyed from record {first}): re-hashed by someone without the key"));
        }
        return (record_hash(None, r.seq, &r.prev_hash, &r.entry) != r.hash).then(|| "contents do not match its hash (edited)".to_string());
    }
    first_keyed.get_or_insert(r.seq);
    let Some(key) = keys.get(&r.key_id) else {
        return Some(format!(
            "is keyed with key '{}', which is not configured ([audit] key or [[audit.previous_keys]]): it cannot be verified",
            r.key_id
        ));
    };
    (record_hash(Some(key), r.seq, &r.prev_hash, &r.entry) != r.hash)
        .then(|| format!("contents do not match its hash under key '{}' (edited, or re-hashed without the key)", r.key_id))
}

/// The chain head as recorded outside the store: which record was the newest, its hash, when,
/// by which instance — HMAC'd under key `key_id`, so an anchor cannot be forged or altered
/// without the key. Never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Anchor {
    pub instance: String,
    pub seq: u64,
    pub hash: String,
    pub key_id: String,
    pub at: DateTime<Utc>,
    pub mac: String,
}

/// What an anchor's MAC covers, keys in serde_json's (sorted) order.
#[derive(Serialize)]
struct AnchorFields<'a> {
    at: String,
    hash: &'a str,
    instance: &'a str,
    key_id: &'a str,
    seq: u64,
}

/// How an anchor starts when posted in a channel (the JSON follows).
pub const ANCHOR_PREFIX: &str = "runbot audit anchor";

impl Anchor {
    /// The anchor of head `(seq, hash)`, signed with `key`.
    pub fn new(key: &AuditKey, instance: &str, seq: u64, hash: &str, at: DateTime<Utc>) -> Anchor {
        let mut a = Anchor { instance: instance.into(), seq, hash: hash.into(), key_id: key.id.clone(), at, mac: String::new() };
        a.mac = a.expected_mac(key);
        a
    }

    fn expected_mac(&self, key: &AuditKey) -> String {
        let fields = AnchorFields {
            at: self.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            hash: &self.hash,
            instance: &self.instance,
            key_id: &self.key_id,
            seq: self.seq,
        };
        let mut h = HashWriter::Keyed(key.mac.clone());
        // Domain separation: an anchor's MAC is never a valid record hash, nor the reverse.
        h.update(b"runbot-audit-anchor\n");
        let _ = serde_json::to_writer(&mut h, &fields);
        h.finish()
    }

    /// The anchor as a one-line chat message.
    pub fn line(&self) -> String {
        format!("{ANCHOR_PREFIX} {}", serde_json::to_string(self).unwrap_or_default())
    }

    /// Reads an anchor: its JSON, or a chat line holding it (the JSON from the first `{`).
    pub fn parse(text: &str) -> Result<Anchor, String> {
        let start = text.find('{').ok_or("no anchor JSON object in it")?;
        let end = text.rfind('}').ok_or("no anchor JSON object in it")?;
        serde_json::from_str(text.get(start..=end).unwrap_or_default()).map_err(|e| format!("not an audit anchor: {e}"))
    }

    /// Whether the MAC holds under the configured key it names: `Err` says why not.
    pub fn authenticate(&self, keys: &Keyring) -> Result<(), String> {
        let Some(key) = keys.get(&self.key_id) else {
            return Err(format!("it is signed with key '{}', which is not configured: it cannot be checked", self.key_id));
        };
        if self.expected_mac(key) != self.mac {
            return Err(format!("it does not match its signature under key '{}': it was altered or forged", self.key_id));
        }
        Ok(())
    }
}

/// Checks the stored chain against an authentic anchor: the chain holds the anchored record
/// with the anchored hash, so it neither ends before it nor was rewritten up to it.
pub fn check_anchor(records: &[AuditRecord], anchor: &Anchor) -> Result<(), String> {
    let when = format!("the anchor written by {} at {}", anchor.instance, anchor.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    let last = records.last().map_or(0, |r| r.seq);
    match records.binary_search_by_key(&anchor.seq, |r| r.seq) {
        Ok(i) if records[i].hash == anchor.hash => Ok(()),
        Ok(_) => Err(format!("record {}: its hash differs from the one in {when}: the chain was rewritten at or before it", anchor.seq)),
        Err(_) if anchor.seq == 0 => Ok(()),
        Err(_) if last < anchor.seq && last == 0 => {
            Err(format!("record 1: missing — the store holds no audit records but {when} says there were {} (the store was wiped)", anchor.seq))
        }
        Err(_) if last < anchor.seq => Err(format!(
            "record {}: missing — the stored chain ends at record {last} but {when} says it reached record {} (records deleted at the end)",
            last + 1,
            anchor.seq
        )),
        Err(_) => Err(format!("record {}: missing, but {when} names it", anchor.seq)),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn times_are_written_as_chrono_writes_them() {
        use chrono::{NaiveDate, TimeZone};
        let chrono_way = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let mut times = vec![
            Utc::now(),
            Utc.with_ymd_and_hms(1970, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap() + chrono::TimeDelta::nanoseconds(999_999_999),
            Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(-1, 6, 15, 12, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(2024, 2, 29, 7, 8, 9).unwrap() + chrono::TimeDelta::nanoseconds(1_999),
            // A leap second, which chrono writes as :60.
            NaiveDate::from_ymd_opt(2016, 12, 31).unwrap().and_hms_nano_opt(23, 59, 59, 1_500_000_000).unwrap().and_utc(),
        ];
        // A spread of instants over four centuries, odd nanoseconds included.
        let mut x: i64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..5000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            times.push(DateTime::from_timestamp(x.rem_euclid(12_622_780_800) - 2_208_988_800, (x as u64 % 1_000_000_000) as u32).unwrap());
        }
        for t in times {
            assert_eq!(rfc3339_micros(t), chrono_way(t), "{t:?}");
        }
    }

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
            assert_eq!(record_hash(None, 7, "prev", &e), hex::encode(h.finalize()));
            let key = AuditKey::new("k1", &Secret::for_test("a key of enough length for the test"));
            let mut m = <Hmac<Sha256> as Mac>::new_from_slice(b"a key of enough length for the test").expect("hmac");
            Mac::update(&mut m, b"prev\n");
            Mac::update(&mut m, object.to_string().as_bytes());
            assert_eq!(record_hash(Some(&key), 7, "prev", &e), hex::encode(m.finalize().into_bytes()));
        }
    }

    #[test]
    fn intact_chain_verifies() {
        let c = chain(5);
        assert_eq!(verify_with(&c, head(&c), &Keyring::default()), Ok(Verified { records: 5, unkeyed: 5 }));
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

    fn key(id: &str, secret: &str) -> AuditKey {
        AuditKey::new(id, &Secret::for_test(secret))
    }

    /// `n` records keyed with `k`.
    fn keyed(k: &AuditKey, n: usize) -> Vec<AuditRecord> {
        let mut out: Vec<AuditRecord> = Vec::new();
        for r in chain(n) {
            let prev = out.last().map(|r| (r.seq, r.hash.as_str()));
            out.push(link_with(Some(k), prev, r.entry));
        }
        out
    }

    #[test]
    fn a_keyed_hash_is_the_hmac_of_the_same_bytes_the_unkeyed_one_hashes() {
        let e = chain(1).remove(0).entry;
        let object = serde_json::json!({
            "seq": 1, "at": e.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "kind": e.kind, "actor": e.actor, "execution": e.execution, "detail": e.detail,
        });
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(b"k-secret-0123456789abcdef0123456789").unwrap();
        m.update(format!("{GENESIS}\n{object}").as_bytes());
        let r = link_with(Some(&key("k1", "k-secret-0123456789abcdef0123456789")), None, e);
        assert_eq!(r.hash, hex::encode(m.finalize().into_bytes()));
        assert_eq!(r.key_id, "k1");
    }

    #[test]
    fn keyed_records_verify_only_under_their_key_and_a_downgrade_is_named() {
        let k1 = key("k1", "first-secret-0123456789abcdef0123");
        let c = keyed(&k1, 4);
        let ring = Keyring { current: Some(k1.clone()), previous: vec![] };
        assert_eq!(verify_with(&c, head(&c), &ring), Ok(Verified { records: 4, unkeyed: 0 }));
        let wrong = Keyring { current: Some(key("k1", "another-secret-0123456789abcdef01")), previous: vec![] };
        assert!(verify_with(&c, head(&c), &wrong).unwrap_err()[0].starts_with("record 1: contents do not match its hash under key 'k1'"));
        let none = verify(&c, head(&c)).unwrap_err();
        assert!(none[0].starts_with("record 1: is keyed with key 'k1', which is not configured"), "{none:?}");

        // Record 3 edited and the rest re-hashed without the key.
        let mut down = c[..2].to_vec();
        for r in &c[2..] {
            let mut e = r.entry.clone();
            if r.seq == 3 {
                e.detail = serde_json::json!({"text": "/ops status 999"});
            }
            let prev = down.last().map(|r| (r.seq, r.hash.as_str()));
            down.push(link(prev, e));
        }
        let p = verify_with(&down, head(&down), &ring).unwrap_err();
        assert!(p[0].starts_with("record 3: has an unkeyed hash after keyed records (keyed from record 1)"), "{p:?}");
    }

    #[test]
    fn an_anchor_is_checked_against_its_key_and_the_stored_chain() {
        let k1 = key("k1", "first-secret-0123456789abcdef0123");
        let ring = Keyring { current: Some(k1.clone()), previous: vec![] };
        let c = keyed(&k1, 5);
        let at = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let a = Anchor::new(&k1, "bot-1", 4, &c[3].hash, at);
        assert_eq!(Anchor::parse(&a.line()), Ok(a.clone()));
        assert!(!a.line().contains("first-secret"));
        assert_eq!(a.authenticate(&ring), Ok(()));
        assert_eq!(check_anchor(&c, &a), Ok(()));
        let mut forged = a.clone();
        forged.seq = 2;
        assert!(forged.authenticate(&ring).unwrap_err().contains("altered or forged"));
        assert!(a.authenticate(&Keyring::default()).unwrap_err().contains("not configured"));
        assert!(check_anchor(&c[..2], &a).unwrap_err().starts_with("record 3: missing — the stored chain ends at record 2"));
        assert!(check_anchor(&[], &a).unwrap_err().starts_with("record 1: missing — the store holds no audit records"));
        let mut rewritten = c.clone();
        rewritten[3].hash = "00".into();
        assert!(check_anchor(&rewritten, &a).unwrap_err().starts_with("record 4: its hash differs"));
    }
}
