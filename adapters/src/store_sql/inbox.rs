//! The chat inbox in SQL (`inbox` table, migration 0003): received commands recorded inside the
//! audit writer's group commits (`audit.rs` calls [`record_in`] and [`done_in`] in its
//! transaction), consumed by an execution's creation (`executions.rs`), and taken over after a
//! restart or a lease that ran out ([`claim`]).

use super::{Backend, SqlStore, backend_err, parse_ts, ts};
use runbot_commands::ports::store::{Inbound, InboxClaim, StoreError};
use sqlx::{AnyConnection, AssertSqlSafe, Row};
use std::collections::HashSet;
use std::sync::OnceLock;

/// The largest multi-row statement; smaller ones are powers of two (few prepared statements).
pub(super) const CHUNK: usize = 64;
const INSERT_HEAD: &str = "INSERT INTO inbox (inbox_key, platform, received_at, owner, lease_until, payload, done) VALUES ";
const COLUMNS: usize = 7;

/// `count` placeholders from `first` (PostgreSQL `$n`; SQLite anonymous `?`, bound in order).
fn placeholders(backend: Backend, first: usize, count: usize) -> String {
    (first..first + count).map(|n| if backend == Backend::Postgres { format!("${n}") } else { "?".into() }).collect::<Vec<_>>().join(", ")
}

/// The statement for `rows` rows (a power of two ≤ [`CHUNK`]), built once per backend.
fn cached(cell: &'static OnceLock<Vec<String>>, rows: usize, build: impl Fn(usize) -> String) -> &'static str {
    let all = cell.get_or_init(|| (0..=CHUNK.trailing_zeros()).map(|p| build(1 << p)).collect());
    &all[rows.trailing_zeros() as usize]
}

fn insert_sql(backend: Backend, rows: usize) -> &'static str {
    static PG: OnceLock<Vec<String>> = OnceLock::new();
    static SQLITE: OnceLock<Vec<String>> = OnceLock::new();
    let cell = if backend == Backend::Postgres { &PG } else { &SQLITE };
    cached(cell, rows, |rows| {
        let values: Vec<String> = (0..rows).map(|r| format!("({})", placeholders(backend, r * COLUMNS + 1, COLUMNS))).collect();
        format!("{INSERT_HEAD}{} ON CONFLICT (inbox_key) DO NOTHING RETURNING inbox_key", values.join(", "))
    })
}

/// Binds `i`'s columns, in [`INSERT_HEAD`]'s order, `payload` being its encoding.
pub(super) fn bind_item<'q>(q: AnyQuery<'q>, i: &'q Inbound, payload: &'q str) -> AnyQuery<'q> {
    q.bind(i.key.as_str())
        .bind(i.platform.as_str())
        .bind(ts(i.received_at))
        .bind(i.owner.as_str())
        .bind(ts(i.lease_until))
        .bind(payload)
        .bind(i64::from(i.done))
}

/// What an item's payload is stored as.
pub(super) fn encode_payload(i: &Inbound) -> Result<String, StoreError> {
    serde_json::to_string(&i.payload).map_err(|e| StoreError::Backend(format!("encoding a received command: {e}")))
}

pub(super) type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

pub(super) fn done_sql(backend: Backend, rows: usize) -> &'static str {
    static PG: OnceLock<Vec<String>> = OnceLock::new();
    static SQLITE: OnceLock<Vec<String>> = OnceLock::new();
    let cell = if backend == Backend::Postgres { &PG } else { &SQLITE };
    cached(cell, rows, |rows| format!("UPDATE inbox SET done = 1 WHERE done = 0 AND inbox_key IN ({})", placeholders(backend, 1, rows)))
}

/// Splits `n` items into chunks of [`CHUNK`] and then powers of two.
pub(super) fn chunks(n: usize) -> impl Iterator<Item = (usize, usize)> {
    let mut start = 0;
    std::iter::from_fn(move || {
        let left = n - start;
        if left == 0 {
            return None;
        }
        let rows = if left >= CHUNK { CHUNK } else { 1 << left.ilog2() };
        let at = start;
        start += rows;
        Some((at, rows))
    })
}

/// Records `items` inside the caller's write transaction (a SQLite file's group commit writes
/// its own, `sqlite_writer.rs`); for each, whether it was new (an item whose key is already
/// stored, or repeated earlier in `items`, is not).
pub(super) async fn record_in(backend: Backend, conn: &mut AnyConnection, items: &[Inbound]) -> Result<Vec<bool>, StoreError> {
    let mut seen = HashSet::with_capacity(items.len());
    let fresh: Vec<&Inbound> = items.iter().filter(|i| seen.insert(i.key.as_str())).collect();
    let payloads = fresh.iter().map(|i| encode_payload(i)).collect::<Result<Vec<_>, _>>()?;
    let mut inserted = HashSet::with_capacity(fresh.len());
    for (at, rows) in chunks(fresh.len()) {
        let mut q = sqlx::query(AssertSqlSafe(insert_sql(backend, rows)));
        for (i, payload) in fresh[at..at + rows].iter().zip(&payloads[at..at + rows]) {
            q = bind_item(q, i, payload);
        }
        for row in q.fetch_all(&mut *conn).await.map_err(backend_err("recording received commands"))? {
            inserted.insert(row.try_get::<String, _>("inbox_key").map_err(backend_err("recording received commands"))?);
        }
    }
    // The first occurrence of a key that was inserted is the new one.
    Ok(items.iter().map(|i| inserted.remove(&i.key)).collect())
}

/// Marks `keys` done inside the caller's write transaction.
pub(super) async fn done_in(backend: Backend, conn: &mut AnyConnection, keys: &[String]) -> Result<(), StoreError> {
    for (at, rows) in chunks(keys.len()) {
        let mut q = sqlx::query(AssertSqlSafe(done_sql(backend, rows)));
        for k in &keys[at..at + rows] {
            q = q.bind(k.as_str());
        }
        q.execute(&mut *conn).await.map_err(backend_err("marking received commands done"))?;
    }
    Ok(())
}

/// Consumes the item `key` for a new execution inside the caller's transaction: fails with
/// [`StoreError::AlreadyProcessed`] when it was done already. An unknown key (never recorded)
/// is not an error.
pub(super) async fn consume_in(conn: &mut AnyConnection, key: &str) -> Result<(), StoreError> {
    let changed = sqlx::query("UPDATE inbox SET done = 1 WHERE inbox_key = $1 AND done = 0")
        .bind(key)
        .execute(&mut *conn)
        .await
        .map_err(backend_err("consuming a received command"))?
        .rows_affected();
    if changed == 1 {
        return Ok(());
    }
    let known = sqlx::query("SELECT done FROM inbox WHERE inbox_key = $1")
        .bind(key)
        .fetch_optional(&mut *conn)
        .await
        .map_err(backend_err("reading a received command"))?;
    if known.is_some() { Err(StoreError::AlreadyProcessed(key.to_string())) } else { Ok(()) }
}

/// `Store::claim_inbound`: one write transaction that forgets old done items and takes over
/// the unprocessed ones due, returning them oldest first.
pub(super) async fn claim(store: &SqlStore, c: &InboxClaim) -> Result<Vec<Inbound>, StoreError> {
    let mut tx = store.begin_write().await?;
    sqlx::query("DELETE FROM inbox WHERE done = 1 AND received_at < $1")
        .bind(ts(c.forget_before))
        .execute(&mut *tx)
        .await
        .map_err(backend_err("forgetting old received commands"))?;
    // `owner = $1`: items of a previous run of this process (its new lease is the same name).
    let sql = if c.own {
        "UPDATE inbox SET owner = $1, lease_until = $2 WHERE done = 0 AND (lease_until < $3 OR owner = $1) \
         RETURNING inbox_key, platform, received_at, owner, lease_until, payload"
    } else {
        "UPDATE inbox SET owner = $1, lease_until = $2 WHERE done = 0 AND lease_until < $3 \
         RETURNING inbox_key, platform, received_at, owner, lease_until, payload"
    };
    let rows = sqlx::query(sql)
        .bind(c.owner.as_str())
        .bind(ts(c.until))
        .bind(ts(c.now))
        .fetch_all(&mut *tx)
        .await
        .map_err(backend_err("taking over received commands"))?;
    tx.commit("taking over received commands").await?;
    let mut items = rows.iter().map(decode).collect::<Result<Vec<_>, _>>()?;
    items.sort_by(|a, b| a.received_at.cmp(&b.received_at).then_with(|| a.key.cmp(&b.key)));
    Ok(items)
}

fn decode(row: &sqlx::any::AnyRow) -> Result<Inbound, StoreError> {
    let get = |c: &str| row.try_get::<String, _>(c).map_err(|e| StoreError::Backend(format!("reading received command column {c}: {e}")));
    let key = get("inbox_key")?;
    let payload =
        serde_json::from_str(&get("payload")?).map_err(|e| StoreError::Backend(format!("received command {key}: unreadable payload: {e}")))?;
    Ok(Inbound {
        platform: get("platform")?,
        received_at: parse_ts(&get("received_at")?)?,
        owner: get("owner")?,
        lease_until: parse_ts(&get("lease_until")?)?,
        payload,
        key,
        done: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_chunked_in_powers_of_two_and_numbered_on_postgres() {
        assert_eq!(chunks(0).count(), 0);
        assert_eq!(chunks(70).collect::<Vec<_>>(), vec![(0, 64), (64, 4), (68, 2)]);
        assert_eq!(chunks(3).collect::<Vec<_>>(), vec![(0, 2), (2, 1)]);
        let pg = insert_sql(Backend::Postgres, 2);
        assert!(pg.contains("($1, $2, $3, $4, $5, $6, $7), ($8, $9, $10, $11, $12, $13, $14)"), "{pg}");
        assert_eq!(insert_sql(Backend::Sqlite, 4).matches('?').count(), 4 * COLUMNS);
        assert!(done_sql(Backend::Postgres, 2).ends_with("IN ($1, $2)"));
    }
}
