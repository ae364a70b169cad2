//! PostgreSQL database administration for test isolation and first-time setup: create or drop
//! a database on the server a URL points at, and derive the URL of a sibling database.

use runbot_commands::setup::{Doing, SetupError, ensure};
use sqlx::AnyConnection;
use sqlx::{AssertSqlSafe, Connection};

/// A database name safe to splice into SQL: lowercase letters, digits and `_`, at most 63.
fn check_name(name: &str) -> Result<(), SetupError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit();
    ensure(ok, || format!("'{name}' is not a plain database name (a-z, 0-9, _; at most 63)"))
}

/// The URL of database `name` on the same server as `url` (same credentials and options).
pub fn with_database(url: &str, name: &str) -> Result<String, SetupError> {
    check_name(name)?;
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let Some(scheme_end) = base.find("://") else { return Err(SetupError("not a postgres:// URL".into())) };
    let authority_start = scheme_end + 3;
    let authority_end = base[authority_start..].find('/').map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{name}", &base[..authority_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    Ok(out)
}

async fn admin_connection(server_url: &str) -> Result<AnyConnection, SetupError> {
    sqlx::any::install_default_drivers();
    ensure(server_url.starts_with("postgres://") || server_url.starts_with("postgresql://"), || {
        "database administration needs a postgres:// URL".into()
    })?;
    AnyConnection::connect(server_url).await.doing("connecting to the PostgreSQL server")
}

/// Creates database `name` on the server `server_url` points at; returns the new database's URL.
pub async fn create_database(server_url: &str, name: &str) -> Result<String, SetupError> {
    let url = with_database(server_url, name)?;
    let mut conn = admin_connection(server_url).await?;
    sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await.doing(format_args!("creating database {name}"))?;
    conn.close().await.doing("closing the admin connection")?;
    Ok(url)
}

/// Drops database `name` (if it exists), disconnecting anyone still using it.
pub async fn drop_database(server_url: &str, name: &str) -> Result<(), SetupError> {
    check_name(name)?;
    let mut conn = admin_connection(server_url).await?;
    sqlx::raw_sql(AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
        .execute(&mut conn)
        .await
        .doing(format_args!("dropping database {name}"))?;
    conn.close().await.doing("closing the admin connection")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sibling_database_urls() -> Result<(), SetupError> {
        let u = "postgres://postgres@127.0.0.1:55439/runbot_test";
        assert_eq!(with_database(u, "x_1")?, "postgres://postgres@127.0.0.1:55439/x_1");
        assert_eq!(with_database("postgres://h:5432?sslmode=disable", "db")?, "postgres://h:5432/db?sslmode=disable");
        assert!(with_database(u, "x; DROP").is_err());
        assert!(with_database(u, "9lives").is_err());
        Ok(())
    }
}
