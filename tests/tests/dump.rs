//! pg_dump -Fc and pg_restore of a whole store, as a DBA does them: every
//! kind of data and every object made at run time must come back in a
//! fresh database and keep working.
//!
//! The store: orders in every state (one per state, two currencies), hot
//! stock split over slots, event partitions made at run time with events in
//! them and in the default partition, a rollup and a rollup of it (sum and
//! average too) with their bucket tables, watermarks and a late change
//! waiting to be re-aggregated, retention policies, an application and an
//! analyst role set up with the grant functions, row security switched on,
//! and the relay mode for order events with an event still queued; the
//! warehouse loaded twice, a price change between the loads.
//!
//! Restored three times: into an empty database made by hand (`pg_restore
//! -d`); in parallel (`--jobs`), which needs the extension's own table data
//! restored first and serially (see below); and with `pg_restore --create`,
//! which also brings back the database's own settings. Each must have every
//! row, every invariant, rollups whose next refresh gives what the
//! original's gives, retention that drops what the original's drops, the
//! roles' privileges, and row-level security in force for the application
//! role acting for one customer, and a warehouse whose next load gives
//! what the original's gives, report views included (they are the
//! extension's own materialized views, which pg_dump does not refresh).
//! Roles are cluster-wide, so this restores
//! into the same cluster; another cluster needs `pg_dumpall --roles-only`
//! first.

use sqlx::{Executor, PgPool, Row};
use std::collections::BTreeMap;
use std::process::Command;
use storefront_tests::*;

const SRC: &str = "sf_dumpall_src";
const PLAIN: &str = "sf_dumpall_plain";
const PARALLEL: &str = "sf_dumpall_parallel";
const APP: &str = "sf_dumptest_app";
const ANALYST: &str = "sf_dumptest_analyst";
/// Rollups and retention are checked as of this time (events are in May 2026).
const UPTO: &str = "2026-05-10 00:00+00";
const RETAIN_AS_OF: &str = "2026-06-20 00:00+00";

/// Everything compared between the original and a restored store.
#[derive(Debug, PartialEq)]
struct Facts {
    /// count and hash of every table's rows (the unlogged event queue aside)
    rows: BTreeMap<String, (i64, String)>,
    /// the last value of every sequence (the event queue's aside)
    sequences: Vec<String>,
    invariants: Vec<String>,
    statuses: Vec<(String, i64)>,
    stock: Vec<String>,
    partitions: Vec<String>,
    indexes: Vec<String>,
    rollup_views: Vec<String>,
    /// bucket tables after refreshing every rollup up to UPTO
    refreshed: Vec<String>,
    /// what apply_retention(RETAIN_AS_OF) drops
    retained: Vec<String>,
    /// the warehouse's rows and report views after the next load_warehouse()
    loaded: Vec<String>,
    privileges: Vec<String>,
    row_security: Vec<String>,
    outbox_events: i64,
}

async fn texts(pool: &PgPool, sql: &str) -> Vec<String> {
    sqlx::query_scalar(sql).fetch_all(pool).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
}

async fn texts_in(tx: &mut sqlx::PgConnection, sql: &str) -> Vec<String> {
    sqlx::query_scalar(sql).fetch_all(tx).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
}

const BUCKETS: &str = "SELECT format('%s %s', 'views_hourly', x) FROM storefront_rollups.views_hourly_buckets x
                       UNION ALL
                       SELECT format('%s %s', 'views_daily', x) FROM storefront_rollups.views_daily_buckets x
                       ORDER BY 1";

/// The warehouse's tables and its report views (materialized views).
const WAREHOUSE_TABLES: [&str; 5] = ["dim_date", "dim_customer", "dim_product", "dim_location", "fact_order_line"];
const REPORTS: [&str; 3] = ["daily_revenue", "monthly_product_sales", "monthly_segment_revenue"];

/// Every row of the warehouse and of its report views, as `name row`.
fn warehouse() -> String {
    let parts: Vec<String> = WAREHOUSE_TABLES
        .iter()
        .chain(&REPORTS)
        .map(|t| format!("SELECT format('%s %s', '{t}', x) FROM storefront_dw.{t} x"))
        .collect();
    format!("{} ORDER BY 1", parts.join(" UNION ALL "))
}

async fn facts(pool: &PgPool) -> Facts {
    let mut rows = row_digest(pool, None).await;
    rows.remove("storefront.order_event_queue");
    // where the last load got to is not dumped: a restored store loads
    // everything again (checked in check_restored)
    rows.remove("storefront_dw.load_state");
    let sequences = texts(
        pool,
        "SELECT format('%s.%s %s', s.schemaname, s.sequencename, s.last_value)
         FROM pg_sequences s
         JOIN pg_class c ON c.oid = format('%I.%I', s.schemaname, s.sequencename)::regclass
         WHERE s.schemaname LIKE 'storefront%' AND c.relpersistence = 'p'
         ORDER BY 1",
    )
    .await;
    let invariants =
        texts(pool, "SELECT format('%s %s %s', invariant, ok, detail) FROM storefront.check_invariants() ORDER BY 1").await;
    let statuses = sqlx::query_as("SELECT status, count(*) FROM storefront.orders GROUP BY 1 ORDER BY 1")
        .fetch_all(pool)
        .await
        .unwrap();
    let stock =
        texts(pool, "SELECT format('%s %s', s.code, st) FROM storefront.sku s, storefront.stock(s.code) st ORDER BY 1").await;
    let partitions = texts(
        pool,
        "SELECT format('%s %s', c.oid::regclass, pg_get_expr(c.relpartbound, c.oid))
         FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'storefront.event'::regclass ORDER BY 1",
    )
    .await;
    let indexes = texts(
        pool,
        "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
         WHERE c.relnamespace::regnamespace::text LIKE 'storefront%' ORDER BY 1",
    )
    .await;
    let rollup_views = texts(
        pool,
        "SELECT format('%s %s', 'views_hourly', x) FROM storefront_rollups.views_hourly x
         UNION ALL
         SELECT format('%s %s', 'views_daily', x) FROM storefront_rollups.views_daily x
         ORDER BY 1",
    )
    .await;
    let privileges = texts(
        pool,
        &format!(
            "WITH r(oid) AS (SELECT oid FROM pg_roles WHERE rolname IN ('{APP}', '{ANALYST}'))
             SELECT format('%s %s %s', a.grantee::regrole, c.oid::regclass, a.privilege_type)
             FROM pg_class c, aclexplode(c.relacl) a, r WHERE a.grantee = r.oid
             UNION ALL
             SELECT format('%s %s.%s %s', a.grantee::regrole, c.oid::regclass, att.attname, a.privilege_type)
             FROM pg_attribute att JOIN pg_class c ON c.oid = att.attrelid, aclexplode(att.attacl) a, r
             WHERE a.grantee = r.oid
             UNION ALL
             SELECT format('%s %s %s', a.grantee::regrole, p.oid::regprocedure, a.privilege_type)
             FROM pg_proc p, aclexplode(p.proacl) a, r WHERE a.grantee = r.oid
             UNION ALL
             SELECT format('%s schema %s %s', a.grantee::regrole, n.nspname, a.privilege_type)
             FROM pg_namespace n, aclexplode(n.nspacl) a, r WHERE a.grantee = r.oid
             ORDER BY 1"
        ),
    )
    .await;
    let row_security = texts(
        pool,
        "SELECT format('%s rls=%s', c.oid::regclass, c.relrowsecurity) FROM pg_class c
         WHERE c.relnamespace = 'storefront'::regnamespace AND c.relkind IN ('r', 'p') ORDER BY 1",
    )
    .await;
    let outbox_events = sqlx::query_scalar("SELECT count(*) FROM storefront.outbox").fetch_one(pool).await.unwrap();

    // then what needs a change, rolled back: the next refresh and the next
    // retention run (after the sequences are read: a rolled-back nextval
    // stays taken)
    let mut tx = pool.begin().await.unwrap();
    texts_in(
        &mut tx,
        &format!(
            "SELECT storefront.refresh_rollup('views_hourly', '{UPTO}')::text
             UNION ALL SELECT storefront.refresh_rollup('views_daily', '{UPTO}')::text"
        ),
    )
    .await;
    let refreshed = texts_in(&mut tx, BUCKETS).await;
    tx.rollback().await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    let retained = texts_in(
        &mut tx,
        &format!("SELECT format('%s %s', relation, dropped) FROM storefront.apply_retention('{RETAIN_AS_OF}') ORDER BY 1"),
    )
    .await;
    tx.rollback().await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    texts_in(&mut tx, "SELECT format('%s %s', step, rows) FROM storefront.load_warehouse()").await;
    let loaded = texts_in(&mut tx, &warehouse()).await;
    tx.rollback().await.unwrap();

    Facts {
        rows,
        sequences,
        invariants,
        statuses,
        stock,
        partitions,
        indexes,
        rollup_views,
        refreshed,
        retained,
        loaded,
        privileges,
        row_security,
        outbox_events,
    }
}

/// Page views in the hourly bucket that the late events fall into.
async fn late_bucket(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT n FROM storefront_rollups.views_hourly_buckets WHERE bucket = '2026-05-09 10:00+00' AND kind = 'page_view'",
    )
    .fetch_one(pool)
    .await
    .expect("the 10:00 page_view bucket")
}

/// place_order as a superuser (staff): (order id, total)
async fn place(pool: &PgPool, customer: i64, items: &str, key: &str, hold: &str) -> (i64, i64) {
    sqlx::query_as("SELECT order_id, total_cents FROM storefront.place_order($1, $2::jsonb, $3, $4::interval)")
        .bind(customer)
        .bind(items)
        .bind(key)
        .bind(hold)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("place_order({customer}, {items}): {e}"))
}

async fn pay(pool: &PgPool, order: (i64, i64), ok: bool, provider_ref: &str) {
    sqlx::query("SELECT storefront.record_payment($1, $2, $3, $4)")
        .bind(order.0)
        .bind(order.1)
        .bind(ok)
        .bind(provider_ref)
        .execute(pool)
        .await
        .unwrap_or_else(|e| panic!("record_payment({order:?}): {e}"));
}

async fn store(src: &PgPool) {
    src.execute(
        "SELECT storefront.add_location('east', 'East');
         SELECT storefront.upsert_product('TEE-' || n, 'Tee ' || n, 1000 + n, 'USD', 'Apparel/Tees') FROM generate_series(1, 4) n;
         SELECT storefront.upsert_product('MUG-1', 'Mug', 900, 'EUR', 'Home/Kitchen');
         SELECT storefront.upsert_product('HOT-1', 'Hot drop', 4999, 'USD', 'Apparel/Drops');
         SELECT storefront.restock('TEE-' || n, 50) FROM generate_series(1, 4) n;
         SELECT storefront.restock('TEE-1', 20, 'east');
         SELECT storefront.restock('MUG-1', 30, 'east');
         SELECT storefront.restock('HOT-1', 40);
         SELECT storefront.set_hot_stock('HOT-1', 4);
         SELECT storefront.register_customer('c' || n || '@example.com', 'pw' || n, 'Customer ' || n)
         FROM generate_series(1, 4) n;",
    )
    .await
    .expect("catalog, stock and customers");

    // an order in every state
    place(src, 1, r#"[{"sku": "TEE-1", "qty": 2}, {"sku": "HOT-1", "qty": 1}]"#, "pending", "15 minutes").await;
    let paid = place(src, 1, r#"[{"sku": "TEE-2", "qty": 1}, {"sku": "HOT-1", "qty": 2}]"#, "paid", "15 minutes").await;
    pay(src, paid, true, "psp-paid").await;
    let shipped = place(src, 2, r#"[{"sku": "TEE-3", "qty": 3}]"#, "shipped", "15 minutes").await;
    pay(src, shipped, true, "psp-shipped").await;
    src.execute(format!("SELECT storefront.ship_order({})", shipped.0).as_str()).await.unwrap();
    let delivered = place(src, 2, r#"[{"sku": "MUG-1", "qty": 2}]"#, "delivered", "15 minutes").await;
    pay(src, delivered, true, "psp-delivered").await;
    src.execute(format!("SELECT storefront.ship_order({0}); SELECT storefront.deliver_order({0})", delivered.0).as_str())
        .await
        .unwrap();
    let cancelled = place(src, 3, r#"[{"sku": "TEE-4", "qty": 1}, {"sku": "HOT-1", "qty": 1}]"#, "cancelled", "15 minutes").await;
    src.execute(format!("SELECT storefront.cancel_order({}, 'changed my mind')", cancelled.0).as_str()).await.unwrap();
    let failed = place(src, 3, r#"[{"sku": "TEE-1", "qty": 1}]"#, "failed", "15 minutes").await;
    pay(src, failed, false, "psp-declined").await;
    place(src, 4, r#"[{"sku": "TEE-2", "qty": 2}]"#, "expired", "150 milliseconds").await;
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let expired: i32 = sqlx::query_scalar("SELECT storefront.expire_reservations(now(), 1000)").fetch_one(src).await.unwrap();
    assert_eq!(expired, 1, "the short hold expired");

    // the warehouse: loaded, a price change, loaded again (TEE-2 gets a
    // second version; the orders placed before point at the first)
    src.execute(
        "SELECT count(*) FROM storefront.load_warehouse();
         SELECT storefront.upsert_product('TEE-2', 'Tee 2', 1500, 'USD', 'Apparel/Tees');
         SELECT count(*) FROM storefront.load_warehouse();",
    )
    .await
    .expect("warehouse loads");
    let versions: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM storefront_dw.dim_product d JOIN storefront.sku s USING (sku_id) WHERE s.code = 'TEE-2'",
    )
    .fetch_one(src)
    .await
    .unwrap();
    assert_eq!(versions, 2, "the price change is a second version of TEE-2");

    // events: partitions made now, events in them and in the default one;
    // a rollup, a rollup of it, both refreshed; then a late event below the
    // watermark, logged for the next refresh
    src.execute(
        format!(
            "SELECT storefront.ensure_event_partitions('1 day', '2 days', '{UPTO}');
             SELECT storefront.track_events(
                 ARRAY['page_view', 'page_view', 'add_to_cart', 'page_view', 'page_view', 'add_to_cart'],
                 ARRAY['2026-05-08 23:10+00', '2026-05-09 10:00+00', '2026-05-09 10:20+00', '2026-05-09 11:30+00',
                       '2026-05-10 09:00+00', '2025-01-01 12:00+00']::timestamptz[],
                 ARRAY[1, 2, 2, NULL, 3, 4]::bigint[],
                 ARRAY['{{\"path\": \"/\"}}', '{{\"path\": \"/tees\"}}', '{{\"sku\": \"TEE-1\"}}', '{{}}', '{{}}', '{{}}']::jsonb[]);
             SELECT storefront.create_rollup('views_hourly', 'storefront.event', 'at', '1 hour', '{{kind}}',
                                             '{{count, sum(customer_id), avg(customer_id)}}');
             SELECT storefront.create_rollup('views_daily', 'storefront_rollups.views_hourly', NULL, '1 day', '{{kind}}',
                                             '{{count, sum(customer_id), avg(customer_id)}}');
             SELECT storefront.refresh_rollup('views_hourly', '2026-05-09 12:00+00');
             SELECT storefront.refresh_rollup('views_daily', '2026-05-09 12:00+00');
             SELECT storefront.track_event('page_view', '2026-05-09 10:45+00', 1, '{{\"late\": true}}');
             SELECT storefront.set_retention('event', '30 days');
             SELECT storefront.set_retention('views_hourly', '20 days');"
        )
        .as_str(),
    )
    .await
    .expect("events, partitions, rollups, retention");
    assert_eq!(late_bucket(src).await, 1, "the late event waits for the next refresh");

    // roles, row security, a grant on a rollup as the book says
    src.execute(
        format!(
            "SELECT count(*) FROM storefront.grant_app_role('{APP}');
             SELECT count(*) FROM storefront.grant_analyst_role('{ANALYST}');
             GRANT USAGE ON SCHEMA storefront_rollups TO {ANALYST};
             GRANT SELECT ON storefront_rollups.views_daily TO {ANALYST};
             SELECT storefront.enable_row_security();
             ALTER DATABASE {SRC} SET storefront.event_delivery = 'relay';"
        )
        .as_str(),
    )
    .await
    .expect("roles and row security");
}

/// pg_dump / pg_restore with the given arguments, which must succeed.
fn run(tool: &str, args: &[&str]) {
    let out = Command::new(tool).args(args).output().unwrap_or_else(|e| panic!("{tool}: {e}"));
    assert!(
        out.status.success(),
        "{tool} {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn setting(db: &str) -> Option<String> {
    // a new session, so database-level settings apply
    let pool = connect(db, 1).await;
    let v: Option<String> =
        sqlx::query_scalar("SELECT current_setting('storefront.event_delivery', true)").fetch_one(&pool).await.unwrap();
    pool.close().await;
    v.filter(|s| !s.is_empty())
}

/// Everything the original had, and a store that works.
async fn check_restored(db: &str, before: &Facts, how: &str, with_create: bool) {
    let pool = connect(db, 4).await;
    let after = facts(&pool).await;
    for (table, was) in &before.rows {
        assert_eq!(after.rows.get(table), Some(was), "{how}: rows of {table} differ");
    }
    assert_eq!(after, *before, "{how}: the restored store differs");
    assert_invariants(&pool).await;
    let states: Vec<&str> = after.statuses.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        states,
        ["cancelled", "delivered", "expired", "paid", "payment_failed", "pending", "shipped"],
        "{how}: an order in every state"
    );

    // the warehouse: where the last load got to stays behind (its first
    // load reads everything again), the report views are as CREATE
    // EXTENSION made them until that load
    let state: (Option<i64>, i64) = sqlx::query_as("SELECT watermark, loads FROM storefront_dw.load_state")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(state, (None, 0), "{how}: the load state is not restored");
    let counts: Vec<String> = REPORTS.iter().map(|v| format!("(SELECT count(*) FROM storefront_dw.{v})")).collect();
    let reported: i64 =
        sqlx::query_scalar(&format!("SELECT {}", counts.join(" + "))).fetch_one(&pool).await.unwrap();
    assert_eq!(reported, 0, "{how}: the report views are empty until the first load");

    // the run-time partitions are the extension's partitions again: making
    // the same window finds them all
    let made: i32 = sqlx::query_scalar(&format!("SELECT storefront.ensure_event_partitions('1 day', '2 days', '{UPTO}')"))
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(made, 0, "{how}: ensure_event_partitions re-created restored partitions");

    // rollups: a refresh gives what the original's gives, and late events
    // still reach the buckets (pg_dump does not carry triggers on an
    // extension's own tables, such as a rollup's on storefront.event)
    pool.execute(
        format!(
            "SELECT storefront.refresh_rollup('views_hourly', '{UPTO}');
             SELECT storefront.refresh_rollup('views_daily', '{UPTO}');"
        )
        .as_str(),
    )
    .await
    .unwrap();
    assert_eq!(texts(&pool, BUCKETS).await, before.refreshed, "{how}: a refresh after the restore");
    assert_eq!(late_bucket(&pool).await, 2, "{how}: the refresh counts the late event from before the dump");
    pool.execute(
        format!(
            "SELECT storefront.track_event('page_view', '2026-05-09 10:50+00', 2);
             SELECT storefront.refresh_rollup('views_hourly', '{UPTO}');"
        )
        .as_str(),
    )
    .await
    .unwrap();
    assert_eq!(late_bucket(&pool).await, 3, "{how}: a late event after the restore is counted at the next refresh");

    // row-level security for the application role acting for customer 1
    let mut conn = pool.acquire().await.unwrap();
    let mine: (i64, i64) = sqlx::query_as("SELECT count(*), count(*) FILTER (WHERE customer_id = 1) FROM storefront.orders")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    let c2_order: i64 = sqlx::query_scalar("SELECT min(order_id) FROM storefront.orders WHERE customer_id = 2")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    conn.execute("BEGIN").await.unwrap();
    conn.execute(format!("SET LOCAL ROLE {APP}").as_str()).await.unwrap();
    conn.execute("SELECT set_config('storefront.customer_id', '1', true)").await.unwrap();
    let seen = sqlx::query(
        "SELECT (SELECT array_agg(DISTINCT customer_id) FROM storefront.orders),
                (SELECT count(*) FROM storefront.orders),
                (SELECT array_agg(DISTINCT customer_id) FROM storefront.customer),
                (SELECT array_agg(DISTINCT customer_id) FROM storefront.order_line),
                (SELECT array_agg(DISTINCT customer_id) FROM storefront.payment),
                (SELECT array_agg(DISTINCT customer_id) FROM storefront.order_status_history)",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert_eq!(seen.get::<Option<Vec<i64>>, _>(0), Some(vec![1]), "{how}: orders of customer 1 only");
    assert_eq!(seen.get::<i64, _>(1), mine.1, "{how}: every order of customer 1");
    for (i, table) in [(2, "customer"), (3, "order_line"), (4, "payment"), (5, "order_status_history")] {
        assert_eq!(seen.get::<Option<Vec<i64>>, _>(i), Some(vec![1]), "{how}: {table} rows of customer 1 only");
    }
    let err = sqlx::query("SELECT * FROM storefront.order_timeline($1)")
        .bind(c2_order)
        .fetch_all(&mut *conn)
        .await
        .expect_err("acting for customer 1, customer 2's order");
    assert_eq!(sqlstate(&err).as_deref(), Some("42501"), "{how}: {err}");
    conn.execute("ROLLBACK").await.unwrap();
    // row security is on: an application session must name its customer
    conn.execute("BEGIN").await.unwrap();
    conn.execute(format!("SET LOCAL ROLE {APP}").as_str()).await.unwrap();
    let none: i64 = sqlx::query_scalar("SELECT count(*) FROM storefront.orders").fetch_one(&mut *conn).await.unwrap();
    assert_eq!(none, 0, "{how}: no acting customer, no rows");
    let err = sqlx::query("SELECT storefront.place_order(1, '[{\"sku\": \"TEE-1\", \"qty\": 1}]')")
        .execute(&mut *conn)
        .await
        .expect_err("an application session without a customer");
    assert_eq!(sqlstate(&err).as_deref(), Some("42501"), "{how}: {err}");
    conn.execute("ROLLBACK").await.unwrap();
    // the analyst sees every order and the rollup granted to it
    conn.execute("BEGIN").await.unwrap();
    conn.execute(format!("SET LOCAL ROLE {ANALYST}").as_str()).await.unwrap();
    let (orders, daily): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM storefront.orders), (SELECT count(*) FROM storefront_rollups.views_daily)",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert_eq!(orders, mine.0, "{how}: the analyst sees every order");
    assert!(daily > 0, "{how}: the analyst reads the rollup");
    conn.execute("ROLLBACK").await.unwrap();
    drop(conn);

    // the relay mode is a database setting: pg_restore --create brings it
    // back; a restore into a database made by hand does not, and the DBA
    // sets it again
    if with_create {
        assert_eq!(setting(db).await.as_deref(), Some("relay"), "{how}: the relay mode");
    } else {
        assert_ne!(setting(db).await.as_deref(), Some("relay"), "{how}: database settings come only with --create");
        pool.execute(format!("ALTER DATABASE {db} SET storefront.event_delivery = 'relay'").as_str()).await.unwrap();
    }
    // queued events are not dumped (an unlogged queue, like NOTIFY's own);
    // the outbox holds every event
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM storefront.order_event_queue").fetch_one(&pool).await.unwrap();
    assert_eq!(queued, 0, "{how}: the event queue starts empty");
    pool.close().await;

    // and the store works: new rows take new ids, events are queued and relayed
    let pool = connect(db, 2).await;
    pool.execute(
        "SELECT storefront.upsert_product('AFTER-1', 'After restore', 100);
         SELECT storefront.restock('AFTER-1', 5);
         SELECT storefront.register_customer('after@example.com', 'pw', 'After');",
    )
    .await
    .expect("inserts after the restore");
    let receipt = place(&pool, 1, r#"[{"sku": "AFTER-1", "qty": 1}, {"sku": "HOT-1", "qty": 1}]"#, "after", "15 minutes").await;
    assert!(before.statuses.iter().map(|(_, n)| n).sum::<i64>() < receipt.0, "{how}: order ids continue");
    let (queued, sent): (i64, i32) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM storefront.order_event_queue), storefront.relay_order_events()",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((queued, sent), (1, 1), "{how}: the new order's event is queued and relayed");
    let authed: Option<i64> =
        sqlx::query_scalar("SELECT storefront.authenticate('c1@example.com', 'pw1')").fetch_one(&pool).await.unwrap();
    assert_eq!(authed, Some(1), "{how}: a restored customer signs in");
    assert_invariants(&pool).await;
    pool.close().await;
}

#[tokio::test]
async fn dump_and_restore_keep_every_kind_of_data_and_object() {
    // roles are cluster-wide: drop what a previous run left, with its databases
    let admin = connect("postgres", 1).await;
    for db in [SRC, PLAIN, PARALLEL] {
        admin.execute(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)").as_str()).await.unwrap();
    }
    for role in [APP, ANALYST] {
        admin.execute(format!("DROP ROLE IF EXISTS {role}").as_str()).await.unwrap();
        admin.execute(format!("CREATE ROLE {role} NOLOGIN").as_str()).await.unwrap();
    }

    let src = fresh_db(SRC).await;
    src.close().await;
    // a new session for the store, so the relay mode applies to what follows it
    let src = connect(SRC, 4).await;
    store(&src).await;
    src.close().await;
    let src = connect(SRC, 4).await;
    // one order placed in relay mode: its event waits in the queue
    place(&src, 4, r#"[{"sku": "MUG-1", "qty": 1}]"#, "queued", "15 minutes").await;
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM storefront.order_event_queue").fetch_one(&src).await.unwrap();
    assert_eq!(queued, 1, "relay mode queues the order's event");
    // and loaded: the warehouse has every order, so the next load (on the
    // original and on each restored copy) finds nothing new
    src.execute("SELECT count(*) FROM storefront.load_warehouse()").await.expect("load_warehouse");
    assert_invariants(&src).await;
    let before = facts(&src).await;
    assert!(before.partitions.len() >= 5, "run-time partitions: {:?}", before.partitions);
    assert!(before.retained.iter().any(|r| r.starts_with("event ")), "retention drops partitions: {:?}", before.retained);
    assert!(before.privileges.len() > 20, "the roles' privileges: {:?}", before.privileges);
    for (what, n) in [("daily_revenue ", 2), ("monthly_segment_revenue ", 2), ("dim_product ", 7), ("fact_order_line ", 8)] {
        assert!(
            before.loaded.iter().filter(|r| r.starts_with(what)).count() >= n,
            "the warehouse after a load: {what}: {:?}",
            before.loaded
        );
    }
    src.close().await;

    let file = std::env::temp_dir().join("storefront-dump-all.dump");
    let file = file.to_str().unwrap();
    run("pg_dump", &["--format=custom", "-d", &db_url(SRC), "-f", file]);

    // into a database made by hand
    let plain = empty_db(PLAIN).await;
    plain.close().await;
    run("pg_restore", &["--exit-on-error", "-d", &db_url(PLAIN), file]);
    check_restored(PLAIN, &before, "pg_restore into an empty database", false).await;

    // in parallel: the extension's tables exist with their foreign keys as
    // soon as CREATE EXTENSION has run, and pg_restore --jobs loads table
    // data in any order (23503), so their data goes in first, serially, in
    // the dump's order; then everything else in parallel
    let parallel = empty_db(PARALLEL).await;
    parallel.close().await;
    let out = Command::new("pg_restore").args(["--list", file]).output().expect("pg_restore --list");
    assert!(out.status.success(), "pg_restore --list");
    let toc = String::from_utf8(out.stdout).unwrap();
    // (the same split as the book's, warehouse included: its fact table
    // references its dimensions)
    let ours = regex::Regex::new(r" (TABLE DATA|SEQUENCE SET) storefront(_dw)? ").unwrap();
    let (first, rest): (Vec<&str>, Vec<&str>) = toc.lines().partition(|l| ours.is_match(l));
    assert!(first.len() > 20, "the extension's table data in the dump: {first:?}");
    for table in ["dim_customer", "dim_product", "fact_order_line"] {
        assert!(
            first.iter().any(|l| l.contains(&format!("TABLE DATA storefront_dw {table} "))),
            "the warehouse's {table} in the dump: {first:?}"
        );
    }
    let first_list = std::env::temp_dir().join("storefront-dump-all.first.list");
    let rest_list = std::env::temp_dir().join("storefront-dump-all.rest.list");
    std::fs::write(&first_list, first.join("\n")).unwrap();
    std::fs::write(&rest_list, rest.join("\n")).unwrap();
    let (first_list, rest_list) = (first_list.to_str().unwrap(), rest_list.to_str().unwrap());
    let url = db_url(PARALLEL);
    run("pg_restore", &["--exit-on-error", "--section=pre-data", "-d", &url, file]);
    run("pg_restore", &["--exit-on-error", "--use-list", first_list, "-d", &url, file]);
    run("pg_restore", &["--exit-on-error", "--use-list", rest_list, "--section=data", "--jobs=2", "-d", &url, file]);
    run("pg_restore", &["--exit-on-error", "--section=post-data", "--jobs=2", "-d", &url, file]);
    check_restored(PARALLEL, &before, "pg_restore --jobs, the extension's data first", false).await;
    let _ = std::fs::remove_file(first_list);
    let _ = std::fs::remove_file(rest_list);

    // with --create, in place of the original
    admin.execute(format!("DROP DATABASE {SRC} WITH (FORCE)").as_str()).await.unwrap();
    run("pg_restore", &["--exit-on-error", "--create", "-d", &db_url("postgres"), file]);
    check_restored(SRC, &before, "pg_restore --create", true).await;

    let _ = std::fs::remove_file(file);
    for db in [SRC, PLAIN, PARALLEL] {
        admin.execute(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)").as_str()).await.unwrap();
    }
    for role in [APP, ANALYST] {
        admin.execute(format!("DROP ROLE IF EXISTS {role}").as_str()).await.unwrap();
    }
    admin.close().await;
}
