//! Shared helpers for the integration tests: a fresh database per test with
//! the extension created, SQLSTATE assertions, and a digest of every store
//! table so a failing call can be shown to have changed nothing.
//!
//! The cluster comes from `STOREFRONT_TEST_URL` (no database part), which
//! `scripts/test.sh` sets; the default matches its test cluster.

pub mod docs;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Executor, PgPool, Row};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

pub const DEFAULT_URL: &str = "postgres://postgres:storefront@127.0.0.1:28816";

pub fn base_url() -> String {
    std::env::var("STOREFRONT_TEST_URL").unwrap_or_else(|_| DEFAULT_URL.to_string())
}

pub fn db_url(db: &str) -> String {
    format!("{}/{}", base_url().trim_end_matches('/'), db)
}

/// The repository root (for book pages and SQL files).
pub fn repo_root() -> PathBuf {
    match std::env::var("STOREFRONT_ROOT") {
        Ok(r) => PathBuf::from(r),
        Err(_) => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."),
    }
}

pub async fn connect(db: &str, max: u32) -> PgPool {
    let opts = PgConnectOptions::from_str(&db_url(db)).expect("valid test URL");
    PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(60))
        .connect_with(opts)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {}: {e} (is the test cluster running?)", db_url(db)))
}

/// Drop and re-create database `name`, without the extension.
pub async fn empty_db(name: &str) -> PgPool {
    let admin = connect("postgres", 1).await;
    admin
        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
        .await
        .expect("drop test database");
    admin.execute(format!("CREATE DATABASE {name}").as_str()).await.expect("create test database");
    admin.close().await;
    connect(name, 40).await
}

/// A fresh database `name` with `CREATE EXTENSION storefront`.
pub async fn fresh_db(name: &str) -> PgPool {
    let pool = empty_db(name).await;
    pool.execute("CREATE EXTENSION storefront").await.expect("CREATE EXTENSION storefront");
    pool
}

/// The SQLSTATE of a database error.
pub fn sqlstate(err: &sqlx::Error) -> Option<String> {
    err.as_database_error().and_then(|e| e.code()).map(|c| c.to_string())
}

/// Message, detail and hint of a PostgreSQL error.
#[derive(Debug, Clone)]
pub struct PgErr {
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

pub fn pg_err(err: &sqlx::Error) -> Option<PgErr> {
    let db = err.as_database_error()?;
    let pg = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()?;
    Some(PgErr {
        code: pg.code().to_string(),
        message: pg.message().to_string(),
        detail: pg.detail().map(str::to_string),
        hint: pg.hint().map(str::to_string),
    })
}

/// Row count and content hash of every table in schema storefront.
pub async fn digest(pool: &PgPool) -> Vec<(String, i64, String)> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c
         WHERE c.relnamespace = 'storefront'::regnamespace AND c.relkind IN ('r', 'p')
         ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .expect("list tables");
    let mut out = Vec::new();
    for t in tables {
        let row = sqlx::query(&format!(
            "SELECT count(*), md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), ''))
             FROM storefront.{t} x"
        ))
        .fetch_one(pool)
        .await
        .expect("digest table");
        out.push((t, row.get::<i64, _>(0), row.get::<String, _>(1)));
    }
    out
}

/// Run `sql`; it must fail with `code`, and leave every store table as it
/// was. Returns the error for further checks (message, detail).
pub async fn fails_unchanged(pool: &PgPool, sql: &str, code: &str) -> PgErr {
    let before = digest(pool).await;
    let res = pool.execute(sql).await;
    let err = match res {
        Ok(_) => panic!("expected SQLSTATE {code}, but it succeeded: {sql}"),
        Err(e) => e,
    };
    let pe = pg_err(&err).unwrap_or_else(|| panic!("not a database error: {err} ({sql})"));
    assert_eq!(pe.code, code, "wrong SQLSTATE for {sql}: {pe:?}");
    assert!(
        pe.message.chars().next().is_some_and(|c| !c.is_uppercase()) && !pe.message.ends_with('.'),
        "message not in PostgreSQL style: {:?}",
        pe.message
    );
    let after = digest(pool).await;
    assert_eq!(before, after, "store data changed after a failed call: {sql}");
    pe
}

/// Every row of check_invariants() is ok.
pub async fn assert_invariants(pool: &PgPool) {
    let rows: Vec<(String, bool, String)> =
        sqlx::query_as("SELECT invariant, ok, detail FROM storefront.check_invariants()")
            .fetch_all(pool)
            .await
            .expect("check_invariants()");
    assert!(rows.len() >= 10, "check_invariants() returned {} rows", rows.len());
    let broken: Vec<_> = rows.iter().filter(|r| !r.1).collect();
    assert!(broken.is_empty(), "invariants broken: {broken:#?}");
}

/// Run a SQL script through psql (as users would), returning (success,
/// stdout + stderr). Used for executed book examples.
pub fn psql(db: &str, script: &str) -> (bool, String) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &db_url(db)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("psql on PATH");
    child
        .stdin
        .take()
        .expect("psql stdin")
        .write_all(script.as_bytes())
        .expect("write to psql");
    let out = child.wait_with_output().expect("psql finished");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}
