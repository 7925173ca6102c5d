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

/// Where a test's private cluster `pg-<name>` lives: under target/ when the
/// postgres user can reach it (as scripts/common.sh decides), else under
/// /tmp.
pub fn private_cluster_dir(name: &str) -> PathBuf {
    let target = repo_root().join("target");
    std::fs::create_dir_all(&target).expect("target directory");
    let t = target.to_str().unwrap_or_default();
    let reachable = std::process::Command::new("sudo")
        .args(["-u", "postgres", "test", "-x", t, "-a", "-r", t])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if reachable {
        target.join(format!("pg-{name}"))
    } else {
        PathBuf::from(format!("/tmp/storefront-pg-{name}"))
    }
}

/// The extension's version (extension/Cargo.toml), which CREATE
/// EXTENSION installs by default.
pub fn extension_version() -> String {
    let manifest = std::fs::read_to_string(repo_root().join("extension/Cargo.toml")).expect("extension/Cargo.toml");
    manifest
        .lines()
        .find_map(|l| l.strip_prefix("version = \"").and_then(|v| v.strip_suffix('"')))
        .expect("a version line in extension/Cargo.toml")
        .to_string()
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

/// A fresh database `name` with `CREATE EXTENSION storefront CASCADE` (which
/// installs btree_gist, which it requires).
pub async fn fresh_db(name: &str) -> PgPool {
    let pool = empty_db(name).await;
    pool.execute("CREATE EXTENSION storefront CASCADE").await.expect("CREATE EXTENSION storefront CASCADE");
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

/// A description of everything the extension installed in the current
/// database, one line per fact, sorted: member relations with their
/// columns (in order), constraints, indexes, triggers, policies and
/// privileges; member functions with their whole definitions and
/// privileges; types, sequences, schemas (storefront and the warehouse's
/// storefront_dw); comments on all of them; the tables registered for
/// pg_dump; the extensions it requires. Object ids and run-time objects (event
/// partitions, rollups) are left out, and so are privileges granted to
/// roles other than PUBLIC and the object's owner (the DBA's grants).
/// A fresh install and an upgraded one must give the same lines.
pub async fn schema_fingerprint(pool: &PgPool) -> Vec<String> {
    let sql = r#"
WITH ext AS (SELECT oid, extowner FROM pg_extension WHERE extname = 'storefront'),
members AS (
    SELECT d.classid, d.objid FROM pg_depend d, ext
    WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'),
rels AS (SELECT c.* FROM pg_class c JOIN members m ON m.classid = 'pg_class'::regclass AND m.objid = c.oid),
procs AS (SELECT p.* FROM pg_proc p JOIN members m ON m.classid = 'pg_proc'::regclass AND m.objid = p.oid),
lines AS (
    SELECT format('relation %s kind=%s persistence=%s options=%s acl=%s rls=%s force_rls=%s',
                  r.oid::regclass, r.relkind, r.relpersistence, r.reloptions,
                  (SELECT array_agg(format('%s=%s', CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE 'owner' END, a.privilege_type)
                                    ORDER BY 1)
                   FROM aclexplode(r.relacl) a WHERE a.grantee IN (0, r.relowner)),
                  r.relrowsecurity, r.relforcerowsecurity) AS line
    FROM rels r
    UNION ALL
    SELECT format('column %s #%s %s %s notnull=%s default=%s identity=%s generated=%s collation=%s acl=%s',
                  a.attrelid::regclass,
                  row_number() OVER (PARTITION BY a.attrelid ORDER BY a.attnum), a.attname,
                  format_type(a.atttypid, a.atttypmod), a.attnotnull,
                  pg_get_expr(ad.adbin, ad.adrelid), a.attidentity, a.attgenerated,
                  a.attcollation::regcollation,
                  (SELECT array_agg(format('%s=%s', CASE x.grantee WHEN 0 THEN 'PUBLIC' ELSE 'owner' END, x.privilege_type)
                                    ORDER BY 1)
                   FROM aclexplode(a.attacl) x WHERE x.grantee IN (0, r.relowner)))
    FROM pg_attribute a JOIN rels r ON r.oid = a.attrelid
    LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
    WHERE a.attnum > 0 AND NOT a.attisdropped
    UNION ALL
    SELECT format('constraint %s %s %s validated=%s', c.conrelid::regclass, c.conname, pg_get_constraintdef(c.oid),
                  c.convalidated)
    FROM pg_constraint c JOIN rels r ON r.oid = c.conrelid
    UNION ALL
    SELECT format('index %s', pg_get_indexdef(i.indexrelid))
    FROM pg_index i JOIN rels r ON r.oid = i.indrelid
    UNION ALL
    SELECT format('trigger %s', pg_get_triggerdef(t.oid))
    FROM pg_trigger t JOIN rels r ON r.oid = t.tgrelid
    -- not the ones create_rollup() puts on a source at run time
    WHERE NOT t.tgisinternal AND t.tgname NOT LIKE 'storefront\_rollup\_%'
    UNION ALL
    SELECT format('policy %s %s %s roles=%s using=%s check=%s', p.polrelid::regclass, p.polname, p.polcmd,
                  p.polroles::regrole[], pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid))
    FROM pg_policy p JOIN rels r ON r.oid = p.polrelid
    UNION ALL
    SELECT format('view %s %s', r.oid::regclass, pg_get_viewdef(r.oid)) FROM rels r WHERE r.relkind IN ('v', 'm')
    UNION ALL
    SELECT format('sequence %s %s start=%s inc=%s min=%s max=%s cache=%s cycle=%s', s.seqrelid::regclass,
                  format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache, s.seqcycle)
    FROM pg_sequence s JOIN rels r ON r.oid = s.seqrelid
    UNION ALL
    SELECT format('function %s kind=%s acl=%s %s', p.oid::regprocedure, p.prokind,
                  (SELECT array_agg(format('%s=%s', CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE 'owner' END, a.privilege_type)
                                    ORDER BY 1)
                   FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a WHERE a.grantee IN (0, p.proowner)),
                  CASE WHEN p.prokind = 'a' THEN
                      (SELECT format('aggregate sfunc=%s stype=%s', a.aggtransfn, format_type(a.aggtranstype, NULL))
                       FROM pg_aggregate a WHERE a.aggfnoid = p.oid)
                  ELSE pg_get_functiondef(p.oid) END)
    FROM procs p
    UNION ALL
    SELECT format('type %s kind=%s %s', t.oid::regtype, t.typtype,
                  (SELECT string_agg(format('%s %s', a.attname, format_type(a.atttypid, a.atttypmod)), ', ' ORDER BY a.attnum)
                   FROM pg_attribute a WHERE a.attrelid = t.typrelid AND a.attnum > 0))
    FROM pg_type t JOIN members m ON m.classid = 'pg_type'::regclass AND m.objid = t.oid
    UNION ALL
    SELECT format('schema %s acl=%s', n.nspname,
                  (SELECT array_agg(format('%s=%s', CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE 'owner' END, a.privilege_type)
                                    ORDER BY 1)
                   FROM aclexplode(n.nspacl) a WHERE a.grantee IN (0, n.nspowner)))
    FROM pg_namespace n JOIN members m ON m.classid = 'pg_namespace'::regclass AND m.objid = n.oid
    UNION ALL
    SELECT format('member %s', pg_describe_object(m.classid, m.objid, 0)) FROM members m
    UNION ALL
    SELECT format('comment %s: %s', pg_describe_object(d.classoid, d.objoid, d.objsubid), d.description)
    FROM pg_description d JOIN members m ON m.classid = d.classoid AND m.objid = d.objoid
    UNION ALL
    SELECT format('dumped %s %s', c.cfg::regclass, coalesce(e.extcondition[c.n], ''))
    FROM pg_extension e, ext, unnest(e.extconfig) WITH ORDINALITY c(cfg, n) WHERE e.oid = ext.oid
    UNION ALL
    SELECT format('extension schema=%s relocatable=%s', e.extnamespace::regnamespace, e.extrelocatable)
    FROM pg_extension e, ext WHERE e.oid = ext.oid
    UNION ALL
    -- the extensions it requires (recorded by CREATE and by ALTER ... UPDATE)
    SELECT format('requires %s', r.extname)
    FROM pg_depend d JOIN ext ON d.objid = ext.oid JOIN pg_extension r ON r.oid = d.refobjid
    WHERE d.classid = 'pg_extension'::regclass AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'n'
)
SELECT line FROM lines ORDER BY line"#;
    sqlx::query_scalar(sql).fetch_all(pool).await.expect("schema fingerprint")
}

/// Count and an order-independent hash of the rows of every table in the
/// store's schemas (each row over `columns` of its table when given, else
/// all columns), by table.
pub async fn row_digest(pool: &PgPool, columns: Option<&std::collections::BTreeMap<String, Vec<String>>>) -> std::collections::BTreeMap<String, (i64, String)> {
    let tables: Vec<(String, Vec<String>)> = sqlx::query_as(
        "SELECT c.oid::regclass::text,
                array_agg(quote_ident(a.attname) ORDER BY a.attnum)
         FROM pg_class c
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
         WHERE c.relkind = 'r' AND c.relnamespace::regnamespace::text LIKE 'storefront%'
         GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .expect("list tables");
    let mut out = std::collections::BTreeMap::new();
    for (table, all) in tables {
        let cols = columns.and_then(|c| c.get(&table)).cloned().unwrap_or(all);
        let row = sqlx::query(&format!(
            "SELECT count(*), coalesce(sum(('x' || substr(md5(ROW({})::text), 1, 15))::bit(60)::bigint::numeric), 0)::text
             FROM {table}",
            cols.join(", ")
        ))
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("digest {table}: {e}"));
        out.insert(table, (row.get::<i64, _>(0), row.get::<String, _>(1)));
    }
    out
}

/// The columns of every table in the store's schemas (quoted names, in
/// order), for digests over the same columns later.
pub async fn table_columns(pool: &PgPool) -> std::collections::BTreeMap<String, Vec<String>> {
    let rows: Vec<(String, Vec<String>)> = sqlx::query_as(
        "SELECT c.oid::regclass::text, array_agg(quote_ident(a.attname) ORDER BY a.attnum)
         FROM pg_class c
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
         WHERE c.relkind = 'r' AND c.relnamespace::regnamespace::text LIKE 'storefront%'
         GROUP BY 1",
    )
    .fetch_all(pool)
    .await
    .expect("table columns");
    rows.into_iter().collect()
}
