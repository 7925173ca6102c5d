//! The warehouse: scd2_upsert's semantics (versions, deletes, batches with
//! several changes per key, late changes, errors, concurrent runs),
//! load_warehouse() (incremental, idempotent, nothing missed while orders
//! arrive, facts pointing at the versions valid when ordered), the analyst
//! role, and the saved analytics on demo data (their book page).

use sqlx::{Executor, PgPool, Row};
use std::time::Duration;
use storefront_tests::docs::check_page;
use storefront_tests::*;

/// Count and content of each table, for "nothing changed".
async fn tables_digest(pool: &PgPool, tables: &[&str]) -> Vec<(String, i64, String)> {
    let mut out = Vec::new();
    for t in tables {
        let row = sqlx::query(&format!(
            "SELECT count(*), md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM {t} x"
        ))
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("digest {t}: {e}"));
        out.push((t.to_string(), row.get::<i64, _>(0), row.get::<String, _>(1)));
    }
    out
}

/// `sql` fails with `code` and leaves `tables` (and the store) as they were.
async fn refused(pool: &PgPool, sql: &str, code: &str, tables: &[&str]) -> PgErr {
    let before = tables_digest(pool, tables).await;
    let e = fails_unchanged(pool, sql, code).await;
    assert_eq!(before, tables_digest(pool, tables).await, "tables changed after a failed call: {sql}");
    e
}

/// The history of a dimension as (id, tracked, valid_from, valid_to, is_current) text.
async fn history(pool: &PgPool, sql: &str) -> Vec<String> {
    sqlx::query_scalar(sql).fetch_all(pool).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
}

async fn counts(pool: &PgPool, sql: &str) -> (i64, i64, i64, i64) {
    let r = sqlx::query(sql).fetch_one(pool).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    (r.get(0), r.get(1), r.get(2), r.get(3))
}

const DIM: &str = "CREATE TABLE dim (
    sk         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id         integer NOT NULL,
    price      numeric(10,2),
    label      text,
    note       text,
    valid_from timestamptz NOT NULL,
    valid_to   timestamptz NOT NULL,
    is_current boolean NOT NULL,
    is_deleted boolean NOT NULL DEFAULT false,
    CHECK (valid_from < valid_to),
    EXCLUDE USING gist (id WITH =, tstzrange(valid_from, valid_to) WITH &&));
CREATE UNIQUE INDEX dim_current ON dim (id) WHERE is_current;
CREATE TABLE stage (id integer, price numeric, label text, note text, at timestamptz);";

const HIST: &str = "SELECT format('%s %s %s %s %s..%s%s%s', id, coalesce(price::text, 'NULL'), coalesce(label, 'NULL'),
        coalesce(note, 'NULL'), to_char(valid_from AT TIME ZONE 'UTC', 'MM-DD'),
        CASE WHEN valid_to = 'infinity' THEN 'inf' ELSE to_char(valid_to AT TIME ZONE 'UTC', 'MM-DD') END,
        CASE WHEN is_current THEN ' current' ELSE '' END, CASE WHEN is_deleted THEN ' deleted' ELSE '' END)
    FROM dim ORDER BY id, valid_from";

fn upsert(as_of: &str, extra: &str) -> String {
    format!("SELECT * FROM storefront.scd2_upsert('dim', 'stage', '{{id}}', '{{price,label}}', '{as_of}'{extra})")
}

async fn scd2_db(name: &str) -> PgPool {
    let pool = fresh_db(name).await;
    pool.execute(DIM).await.expect("dim and stage");
    pool
}

#[tokio::test]
async fn scd2_versions_changed_keys_and_leaves_the_rest() {
    let pool = scd2_db("sf_wh_scd2_basic").await;
    pool.execute("INSERT INTO stage VALUES (1, 1.5, 'a', 'n1', NULL), (2, 2, '', 'n2', NULL), (3, 3, 'c', NULL, NULL)")
        .await
        .unwrap();
    assert_eq!(counts(&pool, &upsert("2024-01-01", "")).await, (3, 0, 0, 0));
    // 1.5 -> 1.50 is no change (numeric equality); '' -> NULL is; a change
    // of the untracked note alone makes no version
    pool.execute(
        "UPDATE stage SET price = 1.50, note = 'n1 edited' WHERE id = 1;
         UPDATE stage SET label = NULL WHERE id = 2;
         UPDATE stage SET price = 4, note = 'n3' WHERE id = 3;
         INSERT INTO stage VALUES (4, NULL, NULL, NULL, NULL);",
    )
    .await
    .unwrap();
    assert_eq!(counts(&pool, &upsert("2024-02-01", "")).await, (1, 2, 1, 0));
    let want = [
        "1 1.50 a n1 01-01..inf current",
        "2 2.00  n2 01-01..02-01",
        "2 2.00 NULL n2 02-01..inf current",
        // untracked columns are copied into the new version
        "3 3.00 c NULL 01-01..02-01",
        "3 4.00 c n3 02-01..inf current",
        "4 NULL NULL NULL 02-01..inf current",
    ];
    assert_eq!(history(&pool, HIST).await, want);
    // the surrogate key came from its identity, one per version
    let sks: i64 = sqlx::query_scalar("SELECT count(DISTINCT sk) FROM dim").fetch_one(&pool).await.unwrap();
    assert_eq!(sks, 6);
    // the same batch with the same as_of again: nothing changes
    let before = tables_digest(&pool, &["dim"]).await;
    assert_eq!(counts(&pool, &upsert("2024-02-01", "")).await, (0, 0, 4, 0));
    assert_eq!(before, tables_digest(&pool, &["dim"]).await);
    // validity is contiguous and half-open: each closed version ends where
    // the next begins
    let gaps: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM dim a WHERE NOT a.is_current
           AND NOT EXISTS (SELECT 1 FROM dim b WHERE b.id = a.id AND b.valid_from = a.valid_to)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(gaps, 0);
    // the merge turns JIT off for its staging statement only, and hash
    // joins too when source and target both have a btree index on the key
    // (a merge join in key order): the same history either way, and the
    // caller's settings are back afterwards
    let mut histories = Vec::new();
    for indexed in [false, true] {
        let mut tx = pool.begin().await.unwrap();
        if indexed {
            (&mut *tx).execute("CREATE INDEX ON stage (id); CREATE UNIQUE INDEX ON dim (id, valid_from)").await.unwrap();
        }
        (&mut *tx)
            .execute("SET LOCAL jit = on; SET LOCAL enable_hashjoin = on; UPDATE stage SET price = coalesce(price, 0) + 1 WHERE id IN (1, 4)")
            .await
            .unwrap();
        let r = sqlx::query(&upsert("2024-03-01", "")).fetch_one(&mut *tx).await.unwrap();
        let got: (i64, i64, i64, i64) = (r.get(0), r.get(1), r.get(2), r.get(3));
        assert_eq!(got, (0, 2, 2, 0), "indexed: {indexed}");
        let settings: String =
            sqlx::query_scalar("SELECT current_setting('jit') || ' ' || current_setting('enable_hashjoin')").fetch_one(&mut *tx).await.unwrap();
        assert_eq!(settings, "on on", "indexed: {indexed}");
        let hist: Vec<String> = sqlx::query_scalar(HIST).fetch_all(&mut *tx).await.unwrap();
        histories.push(hist);
        tx.rollback().await.unwrap();
    }
    assert_eq!(histories[0], histories[1]);
}

#[tokio::test]
async fn scd2_deletes_ignore_close_or_version() {
    let pool = scd2_db("sf_wh_scd2_deletes").await;
    pool.execute("INSERT INTO stage VALUES (1, 1, 'a', NULL, NULL), (2, 2, 'b', NULL, NULL), (3, 3, 'c', NULL, NULL)")
        .await
        .unwrap();
    counts(&pool, &upsert("2024-01-01", "")).await;
    pool.execute("DELETE FROM stage WHERE id IN (2, 3)").await.unwrap();
    // ignore: missing keys stay current
    assert_eq!(counts(&pool, &upsert("2024-02-01", "")).await, (0, 0, 1, 0));
    // close: key 2's version ends at as_of
    pool.execute("INSERT INTO stage VALUES (3, 3, 'c', NULL, NULL)").await.unwrap();
    assert_eq!(counts(&pool, &upsert("2024-03-01", ", deletes => 'close'")).await, (0, 0, 2, 1));
    // version: key 3 is closed and gets a tombstone with its last values
    pool.execute("DELETE FROM stage WHERE id = 3").await.unwrap();
    assert_eq!(counts(&pool, &upsert("2024-04-01", ", deletes => 'version'")).await, (0, 0, 1, 1));
    // both come back: new versions from that as_of
    pool.execute("INSERT INTO stage VALUES (2, 2, 'b', NULL, NULL), (3, 30, 'c', NULL, NULL)").await.unwrap();
    assert_eq!(counts(&pool, &upsert("2024-05-01", ", deletes => 'version'")).await, (2, 0, 1, 0));
    let want = [
        "1 1.00 a NULL 01-01..inf current",
        "2 2.00 b NULL 01-01..03-01",
        "2 2.00 b NULL 05-01..inf current",
        "3 3.00 c NULL 01-01..04-01",
        "3 3.00 c NULL 04-01..05-01 deleted",
        "3 30.00 c NULL 05-01..inf current",
    ];
    assert_eq!(history(&pool, HIST).await, want);
    // a target without is_deleted cannot take tombstones
    pool.execute("CREATE TABLE dim2 (id integer, price numeric, label text, valid_from timestamptz, valid_to timestamptz, is_current boolean)")
        .await
        .unwrap();
    let e = refused(
        &pool,
        "SELECT * FROM storefront.scd2_upsert('dim2', 'stage', '{id}', '{price}', deletes => 'version')",
        "22023",
        &["dim2", "dim"],
    )
    .await;
    assert_eq!(e.message, "target \"dim2\" has no column \"is_deleted\"");
}

#[tokio::test]
async fn scd2_chains_several_changes_of_a_key_in_one_batch() {
    let pool = scd2_db("sf_wh_scd2_chain").await;
    pool.execute(
        "INSERT INTO stage VALUES
            (1, 10, 'a', NULL, '2024-01-01'), (1, 11, 'a', NULL, '2024-01-05'),
            (1, 11, 'a', 'same values', '2024-01-07'), (1, 12, 'a', NULL, '2024-01-09'),
            (2, 20, 'b', NULL, '2024-01-03')",
    )
    .await
    .unwrap();
    let call = "SELECT * FROM storefront.scd2_upsert('dim', 'stage', '{id}', '{price,label}', '2024-02-01', 'at')";
    assert_eq!(counts(&pool, call).await, (2, 2, 1, 0));
    let want = [
        "1 10.00 a NULL 01-01..01-05",
        "1 11.00 a NULL 01-05..01-09",
        "1 12.00 a NULL 01-09..inf current",
        "2 20.00 b NULL 01-03..inf current",
    ];
    assert_eq!(history(&pool, HIST).await, want);
    // again: nothing
    assert_eq!(counts(&pool, call).await, (0, 0, 5, 0));
    assert_eq!(history(&pool, HIST).await, want);
    // two rows of one key at one time: 21000 naming the key
    pool.execute("INSERT INTO stage VALUES (2, 21, 'b', NULL, '2024-01-03'), (1, 13, 'a', NULL, '2024-01-20')")
        .await
        .unwrap();
    let e = refused(&pool, call, "21000", &["dim", "stage"]).await;
    assert_eq!(e.message, "source \"stage\" has more than one row for a key at one time");
    assert_eq!(e.detail.as_deref(), Some("Key (id)=(2) has 2 rows at 2024-01-03 00:00:00+00."));
    // without a change time, two rows of a key are two rows for a key
    let e = refused(&pool, &upsert("2024-02-01", ""), "21000", &["dim"]).await;
    assert!(e.detail.unwrap().contains("Key (id)=(1) has 5 rows."));
    // a change time after as_of is refused
    pool.execute("DELETE FROM stage WHERE id = 2 AND price = 21").await.unwrap();
    let e = refused(
        &pool,
        "SELECT * FROM storefront.scd2_upsert('dim', 'stage', '{id}', '{price}', '2024-01-10', 'at')",
        "22023",
        &["dim"],
    )
    .await;
    assert_eq!(e.message, "source \"stage\" has changes after as_of");
}

#[tokio::test]
async fn scd2_places_late_changes_in_history_or_refuses_them() {
    let pool = scd2_db("sf_wh_scd2_late").await;
    pool.execute("INSERT INTO stage VALUES (1, 10, 'a', NULL, '2024-01-01'), (1, 12, 'a', NULL, '2024-03-01')")
        .await
        .unwrap();
    let call = |late: &str| {
        format!(
            "SELECT * FROM storefront.scd2_upsert('dim', 'stage', '{{id}}', '{{price,label}}', '2024-06-01', 'at', late_changes => '{late}')"
        )
    };
    counts(&pool, &call("split")).await;
    // a change from February arrives after March's: refused on request...
    pool.execute("DELETE FROM stage; INSERT INTO stage VALUES (1, 11, 'a', 'late', '2024-02-01')").await.unwrap();
    let e = refused(&pool, &call("reject"), "55000", &["dim"]).await;
    assert_eq!(
        e.detail.as_deref(),
        Some("Key (id)=(1) changes at 2024-02-01 00:00:00+00, before its current version (from 2024-03-01 00:00:00+00).")
    );
    // ...else it splits the version that covered February
    assert_eq!(counts(&pool, &call("split")).await, (0, 1, 0, 0));
    let want = ["1 10.00 a NULL 01-01..02-01", "1 11.00 a late 02-01..03-01", "1 12.00 a NULL 03-01..inf current"];
    assert_eq!(history(&pool, HIST).await, want);
    // the same late batch again changes nothing, in either mode
    assert_eq!(counts(&pool, &call("split")).await, (0, 0, 1, 0));
    assert_eq!(counts(&pool, &call("reject")).await, (0, 0, 1, 0));
    // a restatement of a version (same start, other values) rewrites it
    pool.execute("UPDATE stage SET price = 11.5").await.unwrap();
    assert_eq!(counts(&pool, &call("split")).await, (0, 1, 0, 0));
    assert_eq!(history(&pool, HIST).await[1], "1 11.50 a late 02-01..03-01");
    // a change before the key's first version opens its history earlier
    pool.execute("DELETE FROM stage; INSERT INTO stage VALUES (1, 9, 'a', NULL, '2023-12-01')").await.unwrap();
    assert_eq!(counts(&pool, &call("split")).await, (1, 0, 0, 0));
    assert_eq!(history(&pool, HIST).await[0], "1 9.00 a NULL 12-01..01-01");
}

#[tokio::test]
async fn scd2_refuses_bad_calls_and_changes_nothing() {
    let pool = scd2_db("sf_wh_scd2_errors").await;
    pool.execute("INSERT INTO stage VALUES (1, 1, 'a', NULL, NULL)").await.unwrap();
    counts(&pool, &upsert("2024-01-01", "")).await;
    let t = ["dim", "stage"];
    // a NULL key
    pool.execute("INSERT INTO stage VALUES (NULL, 2, 'b', NULL, NULL)").await.unwrap();
    let e = refused(&pool, &upsert("2024-02-01", ""), "23502", &t).await;
    assert_eq!(e.message, "null value in key column \"id\" of source \"stage\"");
    pool.execute("DELETE FROM stage WHERE id IS NULL").await.unwrap();
    // NULL change time
    let e = refused(
        &pool,
        "SELECT * FROM storefront.scd2_upsert('dim', 'stage', '{id}', '{price}', '2024-02-01', 'at')",
        "23502",
        &t,
    )
    .await;
    assert!(e.message.starts_with("null value in change-time column \"at\""));
    // missing tables and columns
    refused(&pool, "SELECT * FROM storefront.scd2_upsert('nope', 'stage', '{id}', '{price}')", "42P01", &t).await;
    refused(&pool, "SELECT * FROM storefront.scd2_upsert(0::oid::regclass, 'stage', '{id}', '{price}')", "42P01", &t).await;
    let e = refused(&pool, "SELECT * FROM storefront.scd2_upsert('dim', 'stage', '{id}', '{colour}')", "42703", &t).await;
    assert_eq!(e.message, "column \"colour\" of relation \"dim\" does not exist");
    refused(&pool, "SELECT * FROM storefront.scd2_upsert('dim', 'stage', '{id}', '{price}', changed_at_column => 'when')", "42703", &t).await;
    // column names are names: no injection
    refused(
        &pool,
        "SELECT * FROM storefront.scd2_upsert('dim', 'stage', '{id}', ARRAY['price\"); DROP TABLE dim; --'])",
        "42703",
        &t,
    )
    .await;
    // a target without the validity columns, a type mismatch
    pool.execute("CREATE TABLE plain (id integer, price numeric); CREATE TABLE badtype (id integer, price numeric, valid_from date, valid_to timestamptz, is_current boolean); CREATE TABLE textstage (id integer, price text)").await.unwrap();
    let e = refused(&pool, "SELECT * FROM storefront.scd2_upsert('plain', 'stage', '{id}', '{price}')", "22023", &t).await;
    assert_eq!(e.message, "target \"plain\" has no column \"valid_from\"");
    assert!(e.hint.unwrap().contains("ALTER TABLE public.plain ADD COLUMN valid_from timestamp with time zone NOT NULL"));
    let e = refused(&pool, "SELECT * FROM storefront.scd2_upsert('badtype', 'stage', '{id}', '{price}')", "22023", &t).await;
    assert_eq!(e.message, "column \"valid_from\" of target \"badtype\" has type date, not timestamp with time zone");
    let e = refused(&pool, "SELECT * FROM storefront.scd2_upsert('dim', 'textstage', '{id}', '{price}')", "22023", &t).await;
    assert_eq!(e.message, "column \"price\" has type text in source \"textstage\" but numeric(10,2) in target \"dim\"");
    // bad arguments
    refused(&pool, "SELECT * FROM storefront.scd2_upsert('dim', 'stage', '{}', '{price}')", "22023", &t).await;
    refused(&pool, "SELECT * FROM storefront.scd2_upsert('dim', 'stage', '{id}', '{price}', deletes => 'drop')", "22023", &t).await;
    refused(&pool, "SELECT * FROM storefront.scd2_upsert('dim', 'stage', '{id}', '{price}', late_changes => 'ignore')", "22023", &t).await;
    refused(&pool, "SELECT * FROM storefront.scd2_upsert('dim', 'stage', NULL, '{price}')", "22004", &t).await;
    refused(&pool, "SELECT * FROM storefront.scd2_upsert('dim', 'stage', '{id}', '{price}', 'infinity')", "22008", &t).await;
    refused(&pool, "SELECT * FROM storefront.scd2_upsert('dim', 'dim', '{id}', '{price}')", "22023", &t).await;
    // the surrogate key is the database's: it cannot be a key column
    refused(&pool, "SELECT * FROM storefront.scd2_upsert('dim', 'stage', '{sk}', '{price}')", "42703", &t).await;
}

#[tokio::test]
async fn scd2_concurrent_runs_take_turns_and_the_database_guards_history() {
    let pool = scd2_db("sf_wh_scd2_concurrent").await;
    pool.execute("INSERT INTO stage SELECT g, g, 'x', NULL, NULL FROM generate_series(1, 2000) g").await.unwrap();
    counts(&pool, &upsert("2024-01-01", "")).await;
    pool.execute("UPDATE stage SET price = price + 1").await.unwrap();
    // two sessions merge the same batch: the second waits for the first,
    // then finds nothing to do
    let mut a = pool.begin().await.unwrap();
    let first = counts_tx(&mut a, &upsert("2024-02-01", "")).await;
    assert_eq!(first, (0, 2000, 0, 0));
    let p2 = pool.clone();
    let second = tokio::spawn(async move { counts(&p2, &upsert("2024-02-01", "")).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!second.is_finished(), "the second merge did not wait for the first");
    a.commit().await.unwrap();
    assert_eq!(second.await.unwrap(), (0, 0, 2000, 0));
    let current: i64 = sqlx::query_scalar("SELECT count(*) FROM dim WHERE is_current").fetch_one(&pool).await.unwrap();
    assert_eq!(current, 2000);
    // the constraints: never two current versions, never overlapping ones
    refused(
        &pool,
        "INSERT INTO dim (id, price, valid_from, valid_to, is_current) VALUES (1, 5, '2023-01-01', '2023-06-01', true)",
        "23505",
        &["dim"],
    )
    .await;
    refused(
        &pool,
        "INSERT INTO dim (id, price, valid_from, valid_to, is_current) VALUES (1, 5, '2024-01-15', '2024-01-20', false)",
        "23P01",
        &["dim"],
    )
    .await;
}

async fn counts_tx(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>, sql: &str) -> (i64, i64, i64, i64) {
    let r = sqlx::query(sql).fetch_one(&mut **tx).await.unwrap();
    (r.get(0), r.get(1), r.get(2), r.get(3))
}

// ------------------------------------------------------------ the loader

/// A small store: customers, SKUs with stock.
async fn small_store(name: &str) -> PgPool {
    let pool = fresh_db(name).await;
    pool.execute(
        "SELECT storefront.upsert_product('TEE-' || n, 'Tee ' || n, 1000 + n, 'USD', 'Apparel/Tees') FROM generate_series(1, 20) n;
         SELECT storefront.upsert_product('MUG-' || n, 'Mug ' || n, 500 + n, 'USD', 'Home/Kitchen') FROM generate_series(1, 20) n;
         SELECT storefront.restock(code, 100000) FROM storefront.sku;
         INSERT INTO storefront.customer (email, password_hash, full_name, region)
         SELECT 'c' || n || '@example.com', '!test', 'Customer ' || n, CASE WHEN n % 2 = 0 THEN 'Europe' ELSE 'Asia Pacific' END
         FROM generate_series(1, 50) n;",
    )
    .await
    .expect("small store");
    pool
}

async fn order(pool: &PgPool, customer: i64, sku: &str, qty: i32, pay: bool) -> i64 {
    let items = serde_json::json!([{"sku": sku, "qty": qty}]);
    let r = sqlx::query("SELECT order_id, total_cents FROM storefront.place_order($1, $2)")
        .bind(customer)
        .bind(items)
        .fetch_one(pool)
        .await
        .expect("place_order");
    let (id, total): (i64, i64) = (r.get(0), r.get(1));
    if pay {
        sqlx::query("SELECT storefront.record_payment($1, $2, true, $3)")
            .bind(id)
            .bind(total)
            .bind(format!("pay-{id}"))
            .execute(pool)
            .await
            .expect("record_payment");
    }
    id
}

async fn load(pool: &PgPool) -> Vec<(String, i64)> {
    sqlx::query_as("SELECT step, rows FROM storefront.load_warehouse()").fetch_all(pool).await.expect("load_warehouse")
}

/// The facts must be exactly the order lines, with each order's status.
async fn facts_match_orders(pool: &PgPool) {
    let missing: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM storefront.order_line l JOIN storefront.orders o USING (customer_id, order_id)
         WHERE NOT EXISTS (SELECT 1 FROM storefront_dw.fact_order_line f
                           WHERE f.customer_id = l.customer_id AND f.order_id = l.order_id AND f.line_no = l.line_no
                             AND f.order_status = o.status AND f.quantity = l.qty
                             AND f.amount_cents = l.qty * l.unit_price_cents)",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    let lines: i64 = sqlx::query_scalar("SELECT count(*) FROM storefront.order_line").fetch_one(pool).await.unwrap();
    let facts: i64 = sqlx::query_scalar("SELECT count(*) FROM storefront_dw.fact_order_line").fetch_one(pool).await.unwrap();
    assert_eq!(missing, 0, "order lines missing from the facts (or with another status)");
    assert_eq!(lines, facts, "facts that are no order line");
}

#[tokio::test]
async fn load_is_incremental_idempotent_and_keeps_history() {
    let pool = small_store("sf_wh_load").await;
    let o1 = order(&pool, 1, "TEE-1", 2, true).await;
    order(&pool, 2, "MUG-1", 1, false).await;
    let first = load(&pool).await;
    assert!(first.contains(&("fact_order_line".to_string(), 2)), "{first:?}");
    facts_match_orders(&pool).await;
    // a second load reads nothing and changes nothing
    let before = tables_digest(
        &pool,
        &["storefront_dw.fact_order_line", "storefront_dw.dim_customer", "storefront_dw.dim_product", "storefront_dw.dim_date"],
    )
    .await;
    // (it may read again what the last load read while other transactions
    // ran: the watermark is the oldest one still running)
    let again = load(&pool).await;
    assert!(again.iter().all(|(step, n)| step == "orders read" || *n == 0), "{again:?}");
    assert_eq!(
        before,
        tables_digest(
            &pool,
            &["storefront_dw.fact_order_line", "storefront_dw.dim_customer", "storefront_dw.dim_product", "storefront_dw.dim_date"]
        )
        .await
    );

    // a price change, a region change, more paid orders
    pool.execute("SELECT storefront.upsert_product('TEE-1', 'Tee 1', 1500, 'USD', 'Apparel/Tees')").await.unwrap();
    pool.execute("SELECT storefront.set_customer_region(1, 'North America')").await.unwrap();
    let o2 = order(&pool, 1, "TEE-1", 1, true).await;
    order(&pool, 1, "MUG-2", 1, true).await;
    let third = load(&pool).await;
    assert!(third.contains(&("fact_order_line".to_string(), 2)), "{third:?}");
    facts_match_orders(&pool).await;

    // each fact points at the versions valid when its order was placed
    let seen: Vec<(i64, i64, String, Option<String>)> = sqlx::query_as(
        "SELECT f.order_id, p.price_cents, c.segment, c.region
         FROM storefront_dw.fact_order_line f
         JOIN storefront_dw.dim_product p ON p.product_key = f.product_key
         JOIN storefront_dw.dim_customer c ON c.customer_key = f.customer_key
         WHERE f.customer_id = 1 ORDER BY f.order_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(seen[0], (o1, 1001, "new".to_string(), Some("Asia Pacific".to_string())));
    assert_eq!(seen[1], (o2, 1500, "one-time".to_string(), Some("North America".to_string())));
    assert_eq!(seen[2].2, "repeat");
    // and every fact's versions really cover its order time
    let wrong: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM storefront_dw.fact_order_line f
         JOIN storefront_dw.dim_product p ON p.product_key = f.product_key
         JOIN storefront_dw.dim_customer c ON c.customer_key = f.customer_key
         WHERE NOT (p.valid_from <= f.ordered_at AND f.ordered_at < p.valid_to)
            OR NOT (c.valid_from <= f.ordered_at AND f.ordered_at < c.valid_to)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(wrong, 0);
    // customer 1: new -> (region change) -> one-time -> repeat, contiguous
    let hist: Vec<String> = sqlx::query_scalar(
        "SELECT segment || ' ' || coalesce(region, '-') || CASE WHEN is_current THEN ' current' ELSE '' END
         FROM storefront_dw.dim_customer WHERE customer_id = 1 ORDER BY valid_from",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        hist,
        ["new Asia Pacific", "one-time Asia Pacific", "one-time North America", "repeat North America current"]
    );
    // the reports follow
    let revenue: i64 = sqlx::query_scalar("SELECT sum(revenue_cents)::bigint FROM storefront_dw.daily_revenue")
        .fetch_one(&pool)
        .await
        .unwrap();
    let paid: i64 = sqlx::query_scalar(
        "SELECT sum(total_cents)::bigint FROM storefront.orders WHERE status IN ('paid', 'shipped', 'delivered')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(revenue, paid);
    // a status change reaches the fact
    pool.execute(format!("SELECT storefront.ship_order({o1})").as_str()).await.unwrap();
    load(&pool).await;
    facts_match_orders(&pool).await;
    assert_invariants(&pool).await;
}

#[tokio::test]
async fn load_misses_and_doubles_nothing_while_orders_arrive() {
    let pool = small_store("sf_wh_load_concurrent").await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4i64 {
        let pool = pool.clone();
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut n = 0i64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 400 {
                let customer = 1 + (w * 13 + n) % 50;
                let sku = if n % 2 == 0 { format!("TEE-{}", 1 + n % 20) } else { format!("MUG-{}", 1 + n % 20) };
                // some orders in a transaction that stays open for a while
                // (stamped early, committed late), some paid later
                if n % 7 == 0 {
                    let mut tx = pool.begin().await.unwrap();
                    sqlx::query("SELECT storefront.place_order($1, $2)")
                        .bind(customer)
                        .bind(serde_json::json!([{"sku": sku, "qty": 1}]))
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    tx.commit().await.unwrap();
                } else {
                    order(&pool, customer, &sku, 1, n % 3 != 0).await;
                }
                n += 1;
            }
            n
        }));
    }
    let mut loads = 0;
    while writers.iter().any(|w| !w.is_finished()) {
        load(&pool).await;
        loads += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
        if loads > 400 {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let placed: i64 = {
        let mut total = 0;
        for w in writers {
            total += w.await.unwrap();
        }
        total
    };
    assert!(loads >= 5, "only {loads} loads ran while orders arrived");
    assert_eq!(placed, 1600);
    // one more load after the last commit: every line exactly once
    load(&pool).await;
    facts_match_orders(&pool).await;
    assert_invariants(&pool).await;
}

#[tokio::test]
async fn the_analyst_reads_the_warehouse_and_writes_nothing() {
    let pool = small_store("sf_wh_analyst").await;
    order(&pool, 1, "TEE-1", 1, true).await;
    load(&pool).await;
    pool.execute("DROP ROLE IF EXISTS wh_analyst; CREATE ROLE wh_analyst NOLOGIN").await.unwrap();
    pool.execute("SELECT * FROM storefront.grant_analyst_role('wh_analyst')").await.unwrap();
    let mut c = pool.acquire().await.unwrap();
    c.execute("SET ROLE wh_analyst").await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM storefront_dw.fact_order_line JOIN storefront_dw.dim_customer USING (customer_key)")
        .fetch_one(&mut *c)
        .await
        .unwrap();
    assert_eq!(n, 1);
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM storefront_dw.daily_revenue").fetch_one(&mut *c).await.unwrap();
    assert_eq!(n, 1);
    for sql in [
        "DELETE FROM storefront_dw.fact_order_line",
        "SELECT * FROM storefront.load_warehouse()",
        "REFRESH MATERIALIZED VIEW storefront_dw.daily_revenue",
        "SELECT * FROM storefront.scd2_upsert('storefront_dw.dim_customer', 'storefront_dw.dim_customer', '{customer_id}', '{segment}')",
    ] {
        let e = sqlx::query(sql).execute(&mut *c).await.expect_err(sql);
        assert_eq!(sqlstate(&e).as_deref(), Some("42501"), "{sql}: {e}");
    }
    c.execute("RESET ROLE").await.unwrap();
    drop(c);
    pool.execute("DROP OWNED BY wh_analyst; DROP ROLE wh_analyst").await.unwrap();
}

/// The saved analytics (sql/queries) on demo data, through their book page:
/// every query file appears in the page verbatim, and the page's outputs
/// are what the queries return on seed_demo_data(1, '2026-11-01') after
/// one load. Seeding takes a few minutes.
#[tokio::test]
async fn saved_analytics_answer_on_demo_data() {
    let root = repo_root();
    let page_path = root.join("book/src/warehouse/analytics.md");
    let page = std::fs::read_to_string(&page_path).expect("book/src/warehouse/analytics.md");
    let mut files: Vec<_> = std::fs::read_dir(root.join("sql/queries")).expect("sql/queries").flatten().map(|e| e.path()).collect();
    files.sort();
    assert!(files.len() >= 5, "saved queries: {files:?}");
    for f in &files {
        let sql = std::fs::read_to_string(f).unwrap();
        let body = sql.trim_end();
        assert!(page.contains(&format!("```sql\n{body}\n```")), "{} is not shown verbatim in the analytics page", f.display());
    }
    let db = "sf_wh_analytics";
    // tests/tests/seed.rs leaves exactly this data in sf_seed: copy it
    // when it is there (seeding takes minutes), else seed
    let admin = connect("postgres", 1).await;
    let seeded: Option<String> = sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE datname = 'sf_seed'")
        .fetch_optional(&admin)
        .await
        .unwrap();
    let mut copied = false;
    if seeded.is_some() {
        let seed = connect("sf_seed", 1).await;
        let same: Option<bool> = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM storefront.order_line) = 1053137
                AND (SELECT max(placed_at) FROM storefront.orders) < '2026-11-01'
                AND (SELECT count(*) FROM storefront_dw.fact_order_line) = 0",
        )
        .fetch_one(&seed)
        .await
        .ok();
        seed.close().await;
        if same == Some(true) {
            admin.execute(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)").as_str()).await.unwrap();
            copied = admin.execute(format!("CREATE DATABASE {db} TEMPLATE sf_seed").as_str()).await.is_ok();
        }
    }
    admin.close().await;
    let pool = if copied {
        connect(db, 4).await
    } else {
        let pool = fresh_db(db).await;
        pool.execute("SELECT * FROM storefront.seed_demo_data(1, '2026-11-01')").await.expect("seed");
        pool
    };
    load(&pool).await;
    facts_match_orders(&pool).await;
    let src = root.join("book/src");
    let failures = check_page(&src, &page_path, db, false).await;
    assert!(failures.is_empty(), "book/src/warehouse/analytics.md:\n{}", failures.join("\n"));
}

/// dbt snapshots (check strategy, dbt-postgres 1.11) are the reference:
/// the same four batches through `dbt snapshot` and through scd2_upsert
/// give the same history (times compared as batch numbers). The batches
/// hold what dbt's users meet: 1.5 vs 1.50, '' vs NULL, a change in an
/// untracked column only, a new key, a deleted key ('invalidate' in dbt,
/// 'close' here) and its return. dbt comes from STOREFRONT_DBT
/// (scripts/test.sh installs it into target/venv).
#[tokio::test]
async fn scd2_matches_dbt_snapshot() {
    let dbt = std::env::var("STOREFRONT_DBT")
        .expect("STOREFRONT_DBT is not set: run the tests through scripts/test.sh, which installs dbt");
    let db = "sf_wh_dbt";
    let pool = fresh_db(db).await;
    pool.execute(
        "CREATE TABLE src (id integer PRIMARY KEY, price numeric, label text, note text);
         CREATE TABLE ours (id integer NOT NULL, price numeric, label text, note text,
                            valid_from timestamptz NOT NULL, valid_to timestamptz NOT NULL, is_current boolean NOT NULL);
         CREATE UNIQUE INDEX ON ours (id) WHERE is_current;
         CREATE TABLE runs (n integer, at timestamptz);",
    )
    .await
    .unwrap();
    // a dbt project against this database
    let dir = repo_root().join("target/dbt-test");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("snapshots")).unwrap();
    std::fs::create_dir_all(dir.join("models")).unwrap();
    let url = base_url();
    let rest = url.trim_start_matches("postgres://");
    let (cred, hostport) = rest.split_once('@').expect("user:password@host:port");
    let (user, password) = cred.split_once(':').unwrap_or((cred, ""));
    let (host, port) = hostport.trim_end_matches('/').split_once(':').unwrap_or((hostport, "5432"));
    std::fs::write(dir.join("dbt_project.yml"), "name: scd2test\nversion: '1.0'\nprofile: scd2test\nconfig-version: 2\n").unwrap();
    std::fs::write(
        dir.join("profiles.yml"),
        format!("scd2test:\n  target: t\n  outputs:\n    t:\n      type: postgres\n      host: {host}\n      port: {port}\n      user: {user}\n      password: '{password}'\n      dbname: {db}\n      schema: public\n      threads: 1\n"),
    )
    .unwrap();
    std::fs::write(dir.join("models/sources.yml"), "version: 2\nsources:\n  - name: t\n    schema: public\n    tables:\n      - name: src\n").unwrap();
    std::fs::write(
        dir.join("snapshots/theirs.yml"),
        "snapshots:\n  - name: theirs\n    relation: source('t', 'src')\n    config:\n      unique_key: id\n      strategy: check\n      check_cols: ['price', 'label']\n      hard_deletes: invalidate\n",
    )
    .unwrap();
    let batches = [
        "INSERT INTO src VALUES (1, 1.5, 'a', 'x'), (2, 2, '', 'x'), (3, 3, 'c', 'x'), (4, NULL, 'd', 'x')",
        "UPDATE src SET price = 1.50 WHERE id = 1; UPDATE src SET label = NULL WHERE id = 2;
         UPDATE src SET note = 'edited' WHERE id = 3; UPDATE src SET price = 4 WHERE id = 4;
         INSERT INTO src VALUES (5, 5, 'e', 'x')",
        "DELETE FROM src WHERE id = 3; UPDATE src SET price = 1.6 WHERE id = 1",
        "INSERT INTO src VALUES (3, 3, 'c', 'back')",
    ];
    for (n, batch) in batches.iter().enumerate() {
        pool.execute(*batch).await.unwrap();
        let out = std::process::Command::new(&dbt)
            .args(["snapshot", "--profiles-dir", ".", "--project-dir", "."])
            .current_dir(&dir)
            .output()
            .expect("run dbt");
        assert!(out.status.success(), "dbt snapshot failed:\n{}", String::from_utf8_lossy(&out.stdout));
        // dbt stamps a run with its transaction's time: this batch's is the
        // newest time in its table
        pool.execute(
            format!(
                "INSERT INTO runs SELECT {n}, max(t) FROM (SELECT dbt_valid_from AS t FROM theirs
                 UNION ALL SELECT dbt_valid_to FROM theirs) x;
                 SELECT * FROM storefront.scd2_upsert('ours', 'src', '{{id}}', '{{price,label}}', '2026-01-0{}', deletes => 'close');",
                n + 1
            )
            .as_str(),
        )
        .await
        .unwrap();
    }
    let theirs: Vec<String> = history(
        &pool,
        "SELECT format('%s %s %s %s..%s', t.id, coalesce(t.price::text, 'NULL'), coalesce(t.label, 'NULL'),
                      (SELECT r.n FROM runs r WHERE r.at = t.dbt_valid_from),
                      coalesce((SELECT r.n FROM runs r WHERE r.at = t.dbt_valid_to)::text, 'current'))
         FROM theirs t ORDER BY 1",
    )
    .await;
    let ours: Vec<String> = history(
        &pool,
        "SELECT format('%s %s %s %s..%s', id, coalesce(price::text, 'NULL'), coalesce(label, 'NULL'),
                      extract(day FROM valid_from AT TIME ZONE 'UTC')::int - 1,
                      CASE WHEN is_current THEN 'current' ELSE (extract(day FROM valid_to AT TIME ZONE 'UTC')::int - 1)::text END)
         FROM ours ORDER BY 1",
    )
    .await;
    assert_eq!(ours, theirs, "scd2_upsert and dbt snapshot disagree");
    assert_eq!(ours.len(), 9, "{ours:?}");
}
