//! Rollups: refresh by what changed (deltas for late inserts, dirty
//! buckets for late updates, deletes and truncates), exact through stacked
//! levels; capture of writes straight into partitions, of renames and
//! truncates; refresh inside a transaction block and a function; the
//! maintenance procedure isolating a failing step; refreshes running as
//! the rollup's owner; bad input with its SQLSTATE and nothing changed.
//! Exact interleavings are in tests/isolation/specs (rollup_*,
//! maintenance_vs_ingest, create_rollup_foreign_schema).

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sqlx::{Connection, Executor, PgPool, Row};
use storefront_tests::*;

/// (bucket, device, n, sum, min, max) of a rollup level or of a direct
/// aggregation, sorted (device may be NULL).
type Rows = Vec<(i64, Option<String>, i64, String, Option<i64>, Option<i64>)>;

async fn rows(pool: &PgPool, sql: &str) -> Rows {
    sqlx::query_as(sql).fetch_all(pool).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn direct(width: &str, below: Option<&str>) -> String {
    format!(
        "SELECT extract(epoch FROM storefront.time_bucket('{width}', at))::bigint AS b, device, count(*)::bigint,
                coalesce(sum(value), 0)::text, min(value), max(value)
         FROM readings {} GROUP BY 1, 2 ORDER BY 1, 2 NULLS FIRST",
        below.map(|u| format!("WHERE storefront.time_bucket('{width}', at) < '{u}'")).unwrap_or_default()
    )
}

fn stored(relation: &str) -> String {
    format!(
        "SELECT extract(epoch FROM bucket)::bigint, device, n, coalesce(sum_value, 0)::text, min_value, max_value
         FROM {relation} ORDER BY 1, 2 NULLS FIRST"
    )
}

async fn watermark(pool: &PgPool, name: &str) -> String {
    sqlx::query_scalar("SELECT watermark::text FROM storefront.rollup WHERE name = $1")
        .bind(name)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Every level equals a from-scratch aggregation of the source: the
/// materialized buckets below its watermark, and the real-time view
/// everywhere.
async fn assert_exact(pool: &PgPool, context: &str) {
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM storefront.rollup_pending").fetch_one(pool).await.unwrap();
    assert_eq!(queued, 0, "{context}: buckets left queued");
    for (name, width) in [("r_minute", "1 minute"), ("r_hour", "1 hour"), ("r_day", "1 day")] {
        let wm = watermark(pool, name).await;
        assert_eq!(
            rows(pool, &stored(&format!("ts.{name}_buckets"))).await,
            rows(pool, &direct(width, Some(&wm))).await,
            "{context}: {name} buckets"
        );
        assert_eq!(rows(pool, &stored(&format!("ts.{name}"))).await, rows(pool, &direct(width, None)).await, "{context}: {name} view");
    }
}

/// The property: random late inserts, updates and deletes scattered over
/// the whole history (through the parent and straight into partitions),
/// with stacked rollups 1 minute -> 1 hour -> 1 day, equal a from-scratch
/// aggregation after every refresh, whether the refresh is refresh_rollup()
/// or CALL run_maintenance().
#[tokio::test]
async fn stacked_rollups_stay_exact_under_scattered_changes() {
    let pool = fresh_db("sf_rollup_exact").await;
    let day0 = 1_767_225_600i64; // 2026-01-01 00:00 UTC
    let days = 6;
    let mut ddl = String::from(
        "CREATE TABLE readings (id bigserial, at timestamptz NOT NULL, device text, value bigint) PARTITION BY RANGE (at);",
    );
    for d in 0..days + 2 {
        ddl.push_str(&format!(
            "CREATE TABLE readings_d{d} PARTITION OF readings FOR VALUES FROM (to_timestamp({})) TO (to_timestamp({}));",
            day0 + d * 86_400,
            day0 + (d + 1) * 86_400
        ));
    }
    ddl.push_str(
        "SELECT storefront.create_rollup('r_minute', 'readings', 'at', '1 minute', '{device}',
                                         '{count, sum(value), min(value), max(value)}', 'ts');
         SELECT storefront.create_rollup('r_hour', 'ts.r_minute', NULL, '1 hour', '{device}',
                                         '{count, sum(value), min(value), max(value)}', 'ts');
         SELECT storefront.create_rollup('r_day', 'ts.r_hour', NULL, '1 day', '{device}',
                                         '{count, sum(value), min(value), max(value)}', 'ts');",
    );
    pool.execute(ddl.as_str()).await.unwrap();
    let mut rng = SmallRng::seed_from_u64(7);
    let device = |rng: &mut SmallRng| match rng.gen_range(0..4) {
        0 => "NULL".to_string(),
        n => format!("'d{n}'"),
    };
    // history: four days, a row every ~3 minutes
    let mut values = Vec::new();
    for i in 0..(4 * 86_400 / 180) {
        let t = day0 + i * 180 + rng.gen_range(0..180);
        values.push(format!("(to_timestamp({t}), {}, {})", device(&mut rng), rng.gen_range(-500..500)));
    }
    pool.execute(format!("INSERT INTO readings (at, device, value) VALUES {}", values.join(", ")).as_str()).await.unwrap();
    let mut now = day0 + 4 * 86_400;
    for level in ["r_minute", "r_hour", "r_day"] {
        pool.execute(format!("SELECT storefront.refresh_rollup('{level}', to_timestamp({now}))").as_str()).await.unwrap();
    }
    assert_exact(&pool, "after the first refresh").await;

    for round in 0..12 {
        let mut sql = String::new();
        // late inserts anywhere in history, some straight into a partition
        let mut through_parent = Vec::new();
        for _ in 0..rng.gen_range(5..40) {
            let t = day0 + rng.gen_range(0..(now - day0));
            let row = format!("(to_timestamp({t}), {}, {})", device(&mut rng), rng.gen_range(-500..500));
            if rng.gen_bool(0.3) {
                let d = (t - day0) / 86_400;
                sql.push_str(&format!("INSERT INTO readings_d{d} (at, device, value) VALUES {row};"));
            } else {
                through_parent.push(row);
            }
        }
        if !through_parent.is_empty() {
            sql.push_str(&format!("INSERT INTO readings (at, device, value) VALUES {};", through_parent.join(", ")));
        }
        // late updates (values, devices, times moving within their day) and deletes
        let k = rng.gen_range(40..90);
        let d = rng.gen_range(0..4);
        sql.push_str(&format!(
            "UPDATE readings SET value = value + {}, device = CASE WHEN id % 3 = 0 THEN NULL ELSE device END WHERE id % {k} = {};
             UPDATE readings_d{d} SET at = at + interval '{} seconds' WHERE id % {k} = {} AND at < to_timestamp({}) - interval '1 hour';
             UPDATE readings SET at = at - interval '{} minutes' WHERE id % {k} = {} AND at > to_timestamp({day0}) + interval '1 day';
             DELETE FROM readings WHERE id % {} = {};",
            rng.gen_range(1..100),
            rng.gen_range(0..k),
            rng.gen_range(1..3000),
            rng.gen_range(0..k),
            day0 + (d + 1) * 86_400,
            rng.gen_range(1..1500),
            rng.gen_range(0..k),
            rng.gen_range(60..200),
            rng.gen_range(0..60)
        ));
        // new data at the tail
        let mut tail = Vec::new();
        for _ in 0..rng.gen_range(10..60) {
            let t = now + rng.gen_range(0..7200);
            tail.push(format!("(to_timestamp({t}), {}, {})", device(&mut rng), rng.gen_range(-500..500)));
        }
        sql.push_str(&format!("INSERT INTO readings (at, device, value) VALUES {};", tail.join(", ")));
        pool.execute(sql.as_str()).await.unwrap_or_else(|e| panic!("round {round}: {e}"));
        now += rng.gen_range(600..7200);
        if round % 3 == 2 {
            pool.execute(format!("CALL storefront.run_maintenance(to_timestamp({now}))").as_str()).await.unwrap();
            let failed: i64 = sqlx::query_scalar("SELECT count(*) FROM storefront.maintenance_report(1) WHERE NOT ok")
                .fetch_one(&pool)
                .await
                .unwrap();
            assert_eq!(failed, 0, "round {round}: a maintenance step failed");
        } else {
            for level in ["r_minute", "r_hour", "r_day"] {
                pool.execute(format!("SELECT storefront.refresh_rollup('{level}', to_timestamp({now}))").as_str())
                    .await
                    .unwrap();
            }
        }
        assert_exact(&pool, &format!("round {round}")).await;
    }
    // a truncated partition: its buckets are re-aggregated (emptied)
    pool.execute("TRUNCATE readings_d1").await.unwrap();
    for level in ["r_minute", "r_hour", "r_day"] {
        pool.execute(format!("SELECT storefront.refresh_rollup('{level}', to_timestamp({now}))").as_str()).await.unwrap();
    }
    assert_exact(&pool, "after TRUNCATE of a partition").await;
    // and the whole source
    pool.execute("TRUNCATE readings").await.unwrap();
    for level in ["r_minute", "r_hour", "r_day"] {
        pool.execute(format!("SELECT storefront.refresh_rollup('{level}', to_timestamp({now}))").as_str()).await.unwrap();
    }
    assert_exact(&pool, "after TRUNCATE of the source").await;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM ts.r_day_buckets").fetch_one(&pool).await.unwrap();
    assert_eq!(left, 0);
}

/// Scans of a table by this session since its statistics were last
/// flushed (never inside a transaction block).
async fn source_scans(c: &mut sqlx::pool::PoolConnection<sqlx::Postgres>, table: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT coalesce(sum(seq_scan + coalesce(idx_scan, 0)), 0)::bigint FROM pg_stat_xact_user_tables WHERE relid = $1::regclass",
    )
    .bind(table)
    .fetch_one(&mut **c)
    .await
    .unwrap()
}

/// Late work is proportional to what changed: late inserts, updates and
/// deletes each leave delta rows in their buckets (queued clean), and the
/// refresh folds them in without reading the source.
#[tokio::test]
async fn late_changes_queue_exactly_their_buckets() {
    let pool = fresh_db("sf_rollup_queue").await;
    pool.execute(
        "CREATE TABLE m (at timestamptz NOT NULL, v bigint);
         -- an index on the time column: dirty buckets are re-read range by range
         CREATE INDEX ON m (at);
         INSERT INTO m SELECT '2026-01-01'::timestamptz + i * interval '1 minute', i FROM generate_series(0, 2879) i;
         SELECT storefront.create_rollup('m_hourly', 'm', 'at', '1 hour', '{}', '{count, sum(v)}', 'ts');
         SELECT storefront.refresh_rollup('m_hourly', '2026-01-03');
         INSERT INTO m VALUES ('2026-01-01 05:30', 1), ('2026-01-01 05:31', 2), ('2026-01-02 10:00', 3);
         UPDATE m SET v = v + 1 WHERE at = '2026-01-01 07:00';
         DELETE FROM m WHERE at = '2026-01-02 23:59';",
    )
    .await
    .unwrap();
    let queued: Vec<(String, bool)> = sqlx::query_as(
        "SELECT to_char(bucket AT TIME ZONE 'UTC', 'DD HH24'), dirty FROM storefront.rollup_pending ORDER BY bucket",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        queued,
        [("01 05".into(), false), ("01 07".into(), false), ("02 10".into(), false), ("02 23".into(), false)],
        "every late change queues its bucket clean"
    );
    let deltas: Vec<(String, i64, String, Option<i64>)> = sqlx::query_as(
        "SELECT to_char(bucket AT TIME ZONE 'UTC', 'DD HH24'), n, sum_v::text, gone FROM ts.m_hourly_deltas ORDER BY 1, 2",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        deltas,
        [
            ("01 05".into(), 2, "3".into(), None),
            ("01 07".into(), -1, "-420".into(), Some(1)),
            ("01 07".into(), 1, "421".into(), Some(0)),
            ("02 10".into(), 1, "3".into(), None),
            ("02 23".into(), -1, "-2879".into(), Some(1)),
        ],
        "one delta row per bucket and statement side: inserts add, an update retracts and adds, a delete retracts"
    );
    let mut c = pool.acquire().await.unwrap();
    // a backend's table statistics are not flushed inside a transaction
    // block: the difference is this refresh's
    c.execute("BEGIN").await.unwrap();
    let before = source_scans(&mut c, "m").await;
    let written: i64 = sqlx::query_scalar("SELECT storefront.refresh_rollup('m_hourly', '2026-01-03')").fetch_one(&mut *c).await.unwrap();
    assert_eq!(written, 4, "four buckets written, nothing else re-aggregated");
    assert_eq!(source_scans(&mut c, "m").await, before, "the refresh did not read the source");
    c.execute("COMMIT").await.unwrap();
    let (n, s): (i64, String) = sqlx::query_as("SELECT sum(n)::bigint, sum(sum_v)::text FROM ts.m_hourly_buckets").fetch_one(&pool).await.unwrap();
    let (dn, ds): (i64, String) = sqlx::query_as("SELECT count(*), sum(v)::text FROM m WHERE at < '2026-01-03'").fetch_one(&pool).await.unwrap();
    assert_eq!((n, s), (dn, ds));
    // an update of a row at the tail queues nothing
    pool.execute("INSERT INTO m VALUES ('2026-01-03 01:00', 5); UPDATE m SET v = 6 WHERE at = '2026-01-03 01:00';").await.unwrap();
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM storefront.rollup_pending").fetch_one(&pool).await.unwrap();
    assert_eq!(queued, 0);
}

/// Retractions fold into their buckets unless they may not compose; then
/// the bucket is re-read from the source. Each case checks the rollup
/// against a direct aggregation and whether the refresh read the source.
#[tokio::test]
async fn retractions_fold_unless_an_extreme_or_an_inexact_sum_is_at_stake() {
    let pool = fresh_db("sf_rollup_retract").await;
    pool.execute(
        "CREATE TABLE r (at timestamptz NOT NULL, g text, v bigint, f double precision, c money);
         INSERT INTO r SELECT '2026-01-01'::timestamptz + i * interval '1 minute', 'g' || (i % 2), i, i / 10.0, i
         FROM generate_series(0, 599) i;
         SELECT storefront.create_rollup('r_hourly', 'r', 'at', '1 hour', '{g}',
                                         '{count, sum(v), min(v), max(v), avg(v), sum(c)}', 'ts');
         SELECT storefront.create_rollup('r_float', 'r', 'at', '1 hour', '{}', '{count, sum(f)}', 'ts');
         SELECT storefront.create_rollup('r_sum', 'r', 'at', '1 hour', '{}', '{count, sum(v)}', 'ts');
         SELECT storefront.refresh_rollup('r_hourly', '2026-01-02');
         SELECT storefront.refresh_rollup('r_float', '2026-01-02');
         SELECT storefront.refresh_rollup('r_sum', '2026-01-02');",
    )
    .await
    .unwrap();
    let exact = |name: &'static str| {
        let pool = pool.clone();
        async move {
            let (mine, direct): (String, String) = if name == "r_hourly" {
                sqlx::query_as(
                    "SELECT (SELECT string_agg(format('%s %s %s %s %s %s %s %s', bucket, g, n, sum_v, min_v, max_v, avg_v, sum_c), E'\\n' ORDER BY bucket, g)
                             FROM ts.r_hourly_buckets b, LATERAL (SELECT b.sum_v / nullif(b.n_v, 0) AS avg_v) a),
                            (SELECT string_agg(format('%s %s %s %s %s %s %s %s', b, g, n, s, mn, mx, av, sc), E'\\n' ORDER BY b, g)
                             FROM (SELECT storefront.time_bucket('1 hour', at) b, g, count(*) n, sum(v) s, min(v) mn, max(v) mx,
                                          sum(v) / nullif(count(v), 0) av, sum(c) sc FROM r GROUP BY 1, 2) d)",
                )
            } else if name == "r_sum" {
                sqlx::query_as(
                    "SELECT (SELECT string_agg(format('%s %s %s', bucket, n, sum_v), E'\\n' ORDER BY bucket) FROM ts.r_sum_buckets),
                            (SELECT string_agg(format('%s %s %s', b, n, s), E'\\n' ORDER BY b)
                             FROM (SELECT storefront.time_bucket('1 hour', at) b, count(*) n, sum(v) s FROM r GROUP BY 1) d)",
                )
            } else {
                sqlx::query_as(
                    "SELECT (SELECT string_agg(format('%s %s %s', bucket, n, sum_f), E'\\n' ORDER BY bucket) FROM ts.r_float_buckets),
                            (SELECT string_agg(format('%s %s %s', b, n, s), E'\\n' ORDER BY b)
                             FROM (SELECT storefront.time_bucket('1 hour', at) b, count(*) n, sum(f) s FROM r GROUP BY 1) d)",
                )
            }
            .fetch_one(&pool)
            .await
            .unwrap();
            assert_eq!(mine, direct, "{name}");
        }
    };
    // refresh in a transaction and report whether it read the source
    let refresh = |name: &'static str| {
        let pool = pool.clone();
        async move {
            let mut c = pool.acquire().await.unwrap();
            c.execute("BEGIN").await.unwrap();
            let before = source_scans(&mut c, "r").await;
            sqlx::query(&format!("SELECT storefront.refresh_rollup('{name}', '2026-01-02')")).execute(&mut *c).await.unwrap();
            let scans = source_scans(&mut c, "r").await - before;
            c.execute("COMMIT").await.unwrap();
            let left: i64 = sqlx::query_scalar("SELECT count(*) FROM storefront.rollup_pending WHERE rollup_name = $1")
                .bind(name)
                .fetch_one(&pool)
                .await
                .unwrap();
            assert_eq!(left, 0);
            scans > 0
        }
    };
    let cases: [(&str, &str, bool); 7] = [
        ("a value inside the range leaves", "DELETE FROM r WHERE at = '2026-01-01 00:10'", false),
        ("the group's maximum leaves", "DELETE FROM r WHERE at = '2026-01-01 00:59'", true),
        ("the minimum rises past what stays", "UPDATE r SET v = v + 1000 WHERE at = '2026-01-01 01:00'", true),
        ("the maximum grows", "UPDATE r SET v = v + 1000 WHERE at = '2026-01-01 02:59'", false),
        ("a row moves to another bucket", "UPDATE r SET at = at + interval '3 hours' WHERE at = '2026-01-01 03:20'", false),
        // g1 of hour 4 keeps only NULL values: its sum and average are NULL, not 0
        ("every value of a group goes NULL", "UPDATE r SET v = NULL, c = NULL WHERE g = 'g1' AND at >= '2026-01-01 04:00' AND at < '2026-01-01 05:00'", true),
        ("a group loses every row", "DELETE FROM r WHERE g = 'g0' AND at >= '2026-01-01 05:00' AND at < '2026-01-01 06:00'", true),
    ];
    for (what, sql, reads) in cases {
        pool.execute(sql).await.unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(refresh("r_hourly").await, reads, "{what}: re-read the source?");
        exact("r_hourly").await;
        refresh("r_float").await;
        refresh("r_sum").await;
    }
    // a sum alone: a retraction composes unless the sum comes to zero (the
    // values left may all be NULL)
    pool.execute("UPDATE r SET v = v + 1 WHERE at = '2026-01-01 08:08'").await.unwrap();
    assert!(!refresh("r_sum").await, "a sum that stays non-zero folds");
    exact("r_sum").await;
    pool.execute("UPDATE r SET v = NULL WHERE at >= '2026-01-01 08:00' AND at < '2026-01-01 09:00'").await.unwrap();
    assert!(refresh("r_sum").await, "a sum that comes to zero re-reads");
    exact("r_sum").await;
    let groups: i64 = sqlx::query_scalar("SELECT count(*) FROM ts.r_hourly_buckets WHERE bucket = '2026-01-01 05:00+00'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(groups, 1, "the emptied group left its bucket");
    // floating-point sums do not subtract exactly: their retractions re-read
    pool.execute("UPDATE r SET f = f + 0.1 WHERE at = '2026-01-01 07:07'").await.unwrap();
    assert!(refresh("r_float").await, "a float sum re-read the source");
    exact("r_float").await;
    refresh("r_hourly").await;
    exact("r_hourly").await;
}

/// The source is kept by OID: renaming it (and its schema) keeps capture
/// and refresh working. A partition made after the rollup is armed at the
/// next refresh, and rows written to it before count.
#[tokio::test]
async fn capture_survives_renames_and_new_partitions() {
    let pool = fresh_db("sf_rollup_rename").await;
    pool.execute(
        "CREATE SCHEMA raw;
         CREATE TABLE raw.m (at timestamptz NOT NULL, v bigint) PARTITION BY RANGE (at);
         CREATE TABLE raw.m_jan PARTITION OF raw.m FOR VALUES FROM ('2026-01-01') TO ('2026-02-01');
         INSERT INTO raw.m VALUES ('2026-01-10', 1), ('2026-01-20', 2);
         SELECT storefront.create_rollup('m_daily', 'raw.m', 'at', '1 day', '{}', '{count, sum(v)}', 'ts');
         SELECT storefront.refresh_rollup('m_daily', '2026-03-01');
         ALTER TABLE raw.m RENAME TO measurements;
         ALTER SCHEMA raw RENAME TO source_data;
         INSERT INTO source_data.measurements VALUES ('2026-01-10 12:00', 10);
         CREATE TABLE source_data.m_feb PARTITION OF source_data.measurements FOR VALUES FROM ('2026-02-01') TO ('2026-03-01');
         INSERT INTO source_data.m_feb VALUES ('2026-02-02', 100);",
    )
    .await
    .unwrap();
    pool.execute("SELECT storefront.refresh_rollup('m_daily', '2026-03-01')").await.unwrap();
    let got: Vec<(String, i64, String)> =
        sqlx::query_as("SELECT to_char(bucket AT TIME ZONE 'UTC', 'MM-DD'), n, sum_v::text FROM ts.m_daily_buckets ORDER BY 1")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(got, [("01-10".into(), 2, "11".into()), ("01-20".into(), 1, "2".into()), ("02-02".into(), 1, "100".into())]);
    let armed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'source_data.m_feb'::regclass AND tgname LIKE 'storefront_rollup_%'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(armed, 4, "the new partition has the capture triggers");
    pool.execute("INSERT INTO source_data.m_feb VALUES ('2026-02-02 01:00', 1000)").await.unwrap();
    pool.execute("SELECT storefront.refresh_rollup('m_daily', '2026-03-01')").await.unwrap();
    let feb: String = sqlx::query_scalar("SELECT sum_v::text FROM ts.m_daily_buckets WHERE bucket = '2026-02-02'").fetch_one(&pool).await.unwrap();
    assert_eq!(feb, "1100");

    // a partition whose capture trigger was disabled is re-armed by the
    // next refresh, and the rows written meanwhile count; partitions with
    // their triggers in place keep them as they are
    let triggers = "SELECT array_agg(oid ORDER BY oid)::text FROM pg_trigger WHERE tgrelid = 'source_data.m_feb'::regclass AND tgname LIKE 'storefront_rollup_%'";
    let feb_before: String = sqlx::query_scalar(triggers).fetch_one(&pool).await.unwrap();
    pool.execute(
        "ALTER TABLE source_data.m_jan DISABLE TRIGGER storefront_rollup_ins;
         INSERT INTO source_data.m_jan VALUES ('2026-01-20 06:00', 20);",
    )
    .await
    .unwrap();
    pool.execute("SELECT storefront.refresh_rollup('m_daily', '2026-03-01')").await.unwrap();
    let jan: (i64, String) = sqlx::query_as("SELECT n, sum_v::text FROM ts.m_daily_buckets WHERE bucket = '2026-01-20'").fetch_one(&pool).await.unwrap();
    assert_eq!(jan, (2, "22".into()), "the row written while capture was off counts");
    let enabled: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'source_data.m_jan'::regclass AND tgname LIKE 'storefront_rollup_%' AND tgenabled <> 'D'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(enabled, 4, "the partition was re-armed");
    let feb_after: String = sqlx::query_scalar(triggers).fetch_one(&pool).await.unwrap();
    assert_eq!(feb_before, feb_after, "an armed partition keeps its triggers");
}

/// refresh_rollup() runs in the caller's transaction: inside a
/// transaction block (rolled back with it) and inside a function. It
/// refuses REPEATABLE READ (0A000); CALL run_maintenance() refuses a
/// transaction block (25001). Each changes nothing.
#[tokio::test]
async fn refresh_runs_in_transactions_and_functions() {
    let pool = fresh_db("sf_rollup_txn").await;
    pool.execute(
        "CREATE TABLE m (at timestamptz NOT NULL, v bigint);
         INSERT INTO m SELECT '2026-01-01'::timestamptz + i * interval '1 hour', i FROM generate_series(0, 47) i;
         SELECT storefront.create_rollup('m_daily', 'm', 'at', '1 day', '{}', '{count, sum(v)}', 'ts');
         CREATE FUNCTION refresh_all(upto timestamptz) RETURNS bigint LANGUAGE plpgsql AS $$
         BEGIN RETURN storefront.refresh_rollup('m_daily', upto); END $$;",
    )
    .await
    .unwrap();
    let mut conn = pool.acquire().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    let written: i64 = sqlx::query_scalar("SELECT storefront.refresh_rollup('m_daily', '2026-01-03')").fetch_one(&mut *tx).await.unwrap();
    assert_eq!(written, 2);
    let seen: i64 = sqlx::query_scalar("SELECT sum(n)::bigint FROM ts.m_daily_buckets").fetch_one(&mut *tx).await.unwrap();
    assert_eq!(seen, 48);
    tx.rollback().await.unwrap();
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM ts.m_daily_buckets").fetch_one(&pool).await.unwrap();
    assert_eq!(after, 0, "rolled back with its transaction");
    let wm: String = watermark(&pool, "m_daily").await;
    assert_eq!(wm, "-infinity");

    let written: i64 = sqlx::query_scalar("SELECT refresh_all('2026-01-03')").fetch_one(&pool).await.unwrap();
    assert_eq!(written, 2, "inside a function");
    pool.execute("INSERT INTO m VALUES ('2026-01-01 00:30', 1000)").await.unwrap();

    for (sql, code) in [
        (
            "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT storefront.refresh_rollup('m_daily', '2026-01-03'); COMMIT;",
            "0A000",
        ),
        ("BEGIN; CALL storefront.run_maintenance(); COMMIT;", "25001"),
    ] {
        let mut conn = pool.acquire().await.unwrap();
        let before = rows_of(&pool).await;
        let err = conn.execute(sql).await.expect_err(sql);
        assert_eq!(sqlstate(&err).as_deref(), Some(code), "{sql}: {err}");
        let _ = conn.execute("ROLLBACK").await;
        assert_eq!(rows_of(&pool).await, before, "{sql} changed something");
    }
    let written: i64 = sqlx::query_scalar("SELECT storefront.refresh_rollup('m_daily', '2026-01-03')").fetch_one(&pool).await.unwrap();
    assert_eq!(written, 1, "the late row, merged");
}

/// Buckets, deltas and the queue of a database's rollups, as text.
async fn rows_of(pool: &PgPool) -> Vec<String> {
    let mut out: Vec<String> = sqlx::query_scalar(
        "SELECT format('%s %s', 'pending', p) FROM storefront.rollup_pending p
         UNION ALL SELECT format('%s %s', 'rollup', r) FROM storefront.rollup r",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind = 'r' AND (c.relname LIKE '%\\_buckets' OR c.relname LIKE '%\\_deltas')
           AND n.nspname NOT IN ('storefront', 'pg_catalog')",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    for t in tables {
        let rows: Vec<String> = sqlx::query_scalar(&format!("SELECT format('%s %s', '{t}', x) FROM {t} x ORDER BY 1"))
            .fetch_all(pool)
            .await
            .unwrap();
        out.extend(rows);
    }
    out.sort();
    out
}

/// A failing rollup is reported and logged; partitions, the other rollups
/// and retention still run.
#[tokio::test]
async fn maintenance_isolates_a_failing_step() {
    let pool = fresh_db("sf_rollup_maint").await;
    pool.execute(
        "CREATE TABLE good (at timestamptz NOT NULL, v bigint);
         CREATE TABLE bad (at timestamptz NOT NULL, v bigint);
         INSERT INTO good VALUES ('2026-01-01 10:00', 1);
         INSERT INTO bad VALUES ('2026-01-01 10:00', 1);
         SELECT storefront.create_rollup('a_bad', 'bad', 'at', '1 hour', '{}', '{count, sum(v)}', 'ts');
         SELECT storefront.create_rollup('b_good', 'good', 'at', '1 hour', '{}', '{count, sum(v)}', 'ts');
         SELECT storefront.set_retention('b_good', '30 days');
         -- the source loses a column the rollup sums (and its views with it)
         ALTER TABLE bad DROP COLUMN v CASCADE;",
    )
    .await
    .unwrap();
    pool.execute("CALL storefront.run_maintenance('2026-01-02')").await.expect("the run completes");
    let steps: Vec<(String, bool, Option<String>)> =
        sqlx::query_as("SELECT step, ok, sqlstate FROM storefront.maintenance_report(1) ORDER BY started_at, step")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        steps,
        [
            ("partitions".to_string(), true, None),
            ("rollup a_bad".to_string(), false, Some("42703".to_string())),
            ("rollup b_good".to_string(), true, None),
            ("retention b_good".to_string(), true, None),
        ]
    );
    let good: i64 = sqlx::query_scalar("SELECT sum(n)::bigint FROM ts.b_good_buckets").fetch_one(&pool).await.unwrap();
    assert_eq!(good, 1);
    let partitions: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_inherits WHERE inhparent = 'storefront.event'::regclass")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(partitions >= 9, "{partitions} event partitions");
    for (sql, code) in [
        ("CALL storefront.run_maintenance(lock_wait => '-1 second')", "22023"),
        ("CALL storefront.run_maintenance(batch => 0)", "22023"),
        ("CALL storefront.run_maintenance('infinity')", "22023"),
    ] {
        let before = rows_of(&pool).await;
        let err = pool.execute(sql).await.expect_err(sql);
        assert_eq!(sqlstate(&err).as_deref(), Some(code), "{sql}");
        assert_eq!(rows_of(&pool).await, before, "{sql} changed something");
    }
}

/// A refresh runs as the rollup's owner in a security-restricted
/// operation: a trigger the owner puts on its bucket or delta table runs as
/// the owner, never as the (superuser) role calling refresh or writing the
/// source; and the owner cannot use it to leave the restricted context.
#[tokio::test]
async fn refresh_runs_as_the_rollup_owner() {
    let pool = fresh_db("sf_rollup_owner").await;
    pool.execute(
        "DROP OWNED BY sf_rollup_mallory; DROP ROLE IF EXISTS sf_rollup_mallory;",
    )
    .await
    .ok();
    pool.execute(
        "CREATE ROLE sf_rollup_mallory;
         GRANT CREATE ON DATABASE sf_rollup_owner TO sf_rollup_mallory;
         SELECT count(*) FROM storefront.grant_operations_role('sf_rollup_mallory');",
    )
    .await
    .unwrap();
    let mut conn = pool.acquire().await.unwrap();
    conn.execute(
        "SET ROLE sf_rollup_mallory;
         CREATE SCHEMA mal;
         CREATE TABLE mal.m (at timestamptz NOT NULL, v bigint);
         CREATE TABLE mal.seen (who text, superuser boolean, what text);
         INSERT INTO mal.m VALUES ('2026-01-01 10:00', 1);
         SELECT storefront.create_rollup('mal_hourly', 'mal.m', 'at', '1 hour', '{}', '{count}', 'mal');
         CREATE FUNCTION mal.spy() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             INSERT INTO mal.seen SELECT current_user, r.rolsuper, TG_TABLE_NAME FROM pg_roles r WHERE r.rolname = current_user;
             RETURN NULL;
         END $$;
         CREATE TRIGGER spy AFTER INSERT ON mal.mal_hourly_buckets FOR EACH STATEMENT EXECUTE FUNCTION mal.spy();
         CREATE TRIGGER spy AFTER INSERT ON mal.mal_hourly_deltas FOR EACH STATEMENT EXECUTE FUNCTION mal.spy();
         RESET ROLE;",
    )
    .await
    .unwrap();
    // the superuser refreshes, and writes a late row
    pool.execute("SELECT storefront.refresh_rollup('mal_hourly', '2026-01-02')").await.unwrap();
    pool.execute("INSERT INTO mal.m VALUES ('2026-01-01 10:30', 2)").await.unwrap();
    pool.execute("SELECT storefront.refresh_rollup('mal_hourly', '2026-01-02')").await.unwrap();
    let seen: Vec<(String, bool, String)> = sqlx::query_as("SELECT who, superuser, what FROM mal.seen ORDER BY what, who")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen.iter().all(|(who, su, _)| who == "sf_rollup_mallory" && !su), "triggers ran as: {seen:?}");
    // a trigger that tries to leave the restricted operation fails the refresh
    conn.execute(
        "SET ROLE sf_rollup_mallory;
         CREATE FUNCTION mal.escape() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RESET ROLE; RETURN NULL; END $$;
         DROP TRIGGER spy ON mal.mal_hourly_buckets;
         CREATE TRIGGER escape AFTER INSERT ON mal.mal_hourly_buckets FOR EACH STATEMENT EXECUTE FUNCTION mal.escape();
         RESET ROLE;",
    )
    .await
    .unwrap();
    pool.execute("INSERT INTO mal.m VALUES ('2026-01-01 10:40', 3)").await.unwrap();
    let err = pool.execute("SELECT storefront.refresh_rollup('mal_hourly', '2026-01-02')").await.expect_err("restricted");
    assert_eq!(sqlstate(&err).as_deref(), Some("42501"), "{err}");
    drop(conn);
    pool.execute("SELECT storefront.drop_rollup('mal_hourly')").await.unwrap();
    pool.execute(
        "DROP SCHEMA mal CASCADE; REVOKE CREATE ON DATABASE sf_rollup_owner FROM sf_rollup_mallory;
         DROP OWNED BY sf_rollup_mallory; DROP ROLE sf_rollup_mallory;",
    )
    .await
    .unwrap();
}

/// Who may create, drop and refresh what; bad arguments of the new
/// functions. Each fails with its SQLSTATE and changes nothing.
#[tokio::test]
async fn rollup_rights_and_bad_input() {
    let pool = fresh_db("sf_rollup_rights").await;
    pool.execute("DROP OWNED BY sf_rollup_ops; DROP ROLE IF EXISTS sf_rollup_ops;").await.ok();
    pool.execute(
        "CREATE ROLE sf_rollup_ops;
         SELECT count(*) FROM storefront.grant_operations_role('sf_rollup_ops');
         CREATE TABLE private_data (at timestamptz NOT NULL, v bigint);
         CREATE TABLE readable (at timestamptz NOT NULL, v bigint);
         GRANT SELECT ON readable TO sf_rollup_ops;
         CREATE VIEW a_view AS SELECT * FROM readable;
         SELECT storefront.create_rollup('su_hourly', 'readable', 'at', '1 hour', '{}', '{count, sum(v)}', 'ts');
         SELECT storefront.ensure_event_partitions();",
    )
    .await
    .unwrap();
    for (sql, code) in [
        ("SELECT storefront.invalidate_rollup(NULL)", "22004"),
        ("SELECT storefront.invalidate_rollup('nope')", "42704"),
        ("SELECT storefront.invalidate_rollup('su_hourly', NULL, now())", "22004"),
        ("SELECT storefront.rollup_pending_step('su_hourly', 0)", "22023"),
        ("SELECT storefront.rollup_pending_step('nope', 10)", "42704"),
        ("SELECT storefront.rollup_advance('nope', now())", "42704"),
        ("SELECT storefront.refresh_rollup('su_hourly', NULL)", "22004"),
        ("SELECT storefront.create_rollup('x', 'a_view', 'at', '1 hour')", "22023"),
        ("SELECT storefront.create_rollup('x', 'readable', 'at', '1 hour', schema => 'storefront')", "22023"),
        ("SELECT storefront.create_rollup('x', 'readable', 'at', '1 hour', schema => 'pg_x')", "22023"),
        ("SELECT storefront.create_rollup('x', 'readable', 'at', '1 hour', '{}', '{count}', repeat('s', 64))", "22023"),
        ("SELECT storefront.create_rollup('x', 'readable', 'at', '1 hour', '{v, v}')", "22023"),
        ("SELECT storefront.create_rollup('x', 'readable', 'at', '1 hour', '{}', '{}')", "22023"),
    ] {
        fails_unchanged(&pool, sql, code).await;
    }
    // as the operations role
    let mut conn = pool.acquire().await.unwrap();
    conn.execute("SET ROLE sf_rollup_ops").await.unwrap();
    for (sql, code) in [
        // no SELECT on the source
        ("SELECT storefront.create_rollup('x', 'private_data', 'at', '1 hour')", "42501"),
        // SELECT but no TRIGGER on someone else's table
        ("SELECT storefront.create_rollup('x', 'readable', 'at', '1 hour')", "42501"),
        // not the owner of the rollup
        ("SELECT storefront.drop_rollup('su_hourly')", "42501"),
        ("SELECT storefront.set_retention('su_hourly', '1 day')", "42501"),
        // no CREATE on the database for a new schema
        ("SELECT storefront.create_rollup('x', 'storefront.event', 'at', '1 hour', schema => 'ops_reports')", "42501"),
        // a table directly
        ("SELECT * FROM storefront.rollup_pending", "42501"),
    ] {
        let before = rows_of(&pool).await;
        let err = conn.execute(sql).await.expect_err(sql);
        let pe = pg_err(&err).unwrap();
        assert_eq!(pe.code, code, "{sql}: {pe:?}");
        assert_eq!(rows_of(&pool).await, before, "{sql} changed something");
    }
    // what the operations role may do: a rollup of events in the default
    // schema, owned by it; refresh, retention, maintenance; drop its own
    pool.execute("SELECT storefront.track_event('view', now() - interval '3 hours')").await.unwrap();
    conn.execute(
        "SELECT storefront.create_rollup('ops_views', 'storefront.event', 'at', '1 hour', '{kind}');
         SELECT storefront.refresh_rollup('ops_views');
         SELECT storefront.set_retention('ops_views', '30 days');
         SELECT storefront.invalidate_rollup('ops_views', now() - interval '1 day', now());
         SELECT * FROM storefront.maintenance_report();",
    )
    .await
    .expect("the operations role runs rollups");
    conn.execute("CALL storefront.run_maintenance()").await.expect("the operations role runs maintenance");
    let owner: String = sqlx::query_scalar("SELECT tableowner::text FROM pg_tables WHERE tablename = 'ops_views_buckets'")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(owner, "sf_rollup_ops");
    let failed: i64 = sqlx::query_scalar("SELECT count(*) FROM storefront.maintenance_report(1) WHERE NOT ok")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(failed, 0);
    conn.execute("SELECT storefront.drop_rollup('ops_views'); RESET ROLE;").await.unwrap();
    drop(conn);
    let row = sqlx::query("SELECT count(*) FROM storefront.rollup WHERE name = 'ops_views'").fetch_one(&pool).await.unwrap();
    assert_eq!(row.get::<i64, _>(0), 0);
    pool.execute("DROP OWNED BY sf_rollup_ops; DROP ROLE sf_rollup_ops;").await.unwrap();
}
