//! Time series: rollups stay exact (against direct aggregation of the
//! source) through late inserts, updates and deletes, stacking and
//! retention; ingestion by track_events and COPY lands in day partitions;
//! every bad input fails with its SQLSTATE and changes nothing.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sqlx::{Executor, PgPool};
use storefront_tests::*;

/// (bucket, device, n, sum, min, max) rows of a query, sorted.
type Rows = Vec<(i64, String, i64, String, i64, i64)>;

async fn rows(pool: &PgPool, sql: &str) -> Rows {
    sqlx::query_as(sql).fetch_all(pool).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn direct(width: &str, upto: Option<&str>) -> String {
    format!(
        "SELECT extract(epoch FROM storefront.time_bucket('{width}', at))::bigint AS b, device, count(*)::bigint,
                sum(value)::text, min(value), max(value)
         FROM metrics {} GROUP BY 1, 2 ORDER BY 1, 2",
        upto.map(|u| format!("WHERE storefront.time_bucket('{width}', at) < to_timestamp({u})")).unwrap_or_default()
    )
}

fn from_view(view: &str) -> String {
    format!("SELECT extract(epoch FROM bucket)::bigint, device, n, sum_value::text, min_value, max_value FROM {view} ORDER BY 1, 2")
}

fn from_table(table: &str) -> String {
    format!("SELECT extract(epoch FROM bucket)::bigint, device, n, sum_value::text, min_value, max_value FROM {table} ORDER BY 1, 2")
}

async fn watermark(pool: &PgPool, name: &str) -> String {
    sqlx::query_scalar("SELECT extract(epoch FROM watermark)::bigint::text FROM storefront.rollup WHERE name = $1")
        .bind(name)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn rollups_stay_exact_under_late_changes() {
    let pool = fresh_db("sf_ts_rollups").await;
    pool.execute(
        "CREATE TABLE metrics (id bigserial PRIMARY KEY, at timestamptz NOT NULL, device text NOT NULL, value bigint NOT NULL);
         SELECT storefront.create_rollup('m_hourly', 'metrics', 'at', '1 hour', '{device}',
                                         '{count, sum(value), min(value), max(value), avg(value)}', 'ts');
         SELECT storefront.create_rollup('m_daily', 'ts.m_hourly', NULL, '1 day', '{device}',
                                         '{count, sum(value), min(value), max(value), avg(value)}', 'ts');",
    )
    .await
    .unwrap();
    let mut rng = SmallRng::seed_from_u64(42);
    let base = 1_767_225_600i64; // 2026-01-01 00:00 UTC
    let mut now = base + 6 * 3600;
    for round in 0..25 {
        // new rows around `now`, late rows up to two days back
        let mut values = Vec::new();
        for _ in 0..rng.gen_range(20..80) {
            let late = rng.gen_bool(0.3);
            let t = if late { now - rng.gen_range(0..2 * 86400) } else { now - rng.gen_range(0..3600) };
            values.push(format!(
                "(to_timestamp({t}), 'd{}', {})",
                rng.gen_range(0..4),
                rng.gen_range(-1000..1000)
            ));
        }
        pool.execute(format!("INSERT INTO metrics (at, device, value) VALUES {}", values.join(", ")).as_str())
            .await
            .unwrap();
        // late updates (value and time) and deletes
        pool.execute(
            format!(
                "UPDATE metrics SET value = value + {}, at = at - interval '{} minutes' WHERE id % 17 = {};
                 DELETE FROM metrics WHERE id % 23 = {};",
                rng.gen_range(1..50),
                rng.gen_range(0..120),
                round % 17,
                round % 23
            )
            .as_str(),
        )
        .await
        .unwrap();
        now += rng.gen_range(1800..10_000);
        let upto = format!("to_timestamp({now})");
        pool.execute(format!("SELECT storefront.refresh_rollup('m_hourly', {upto}); SELECT storefront.refresh_rollup('m_daily', {upto});").as_str())
            .await
            .unwrap();

        // the real-time views equal direct aggregation, always
        assert_eq!(rows(&pool, &from_view("ts.m_hourly")).await, rows(&pool, &direct("1 hour", None)).await, "hourly view, round {round}");
        assert_eq!(rows(&pool, &from_view("ts.m_daily")).await, rows(&pool, &direct("1 day", None)).await, "daily view, round {round}");
        // and the materialized part equals it below the watermark
        let wm = watermark(&pool, "m_hourly").await;
        assert_eq!(rows(&pool, &from_table("ts.m_hourly_buckets")).await, rows(&pool, &direct("1 hour", Some(&wm))).await, "hourly buckets, round {round}");
        let wm = watermark(&pool, "m_daily").await;
        assert_eq!(rows(&pool, &from_table("ts.m_daily_buckets")).await, rows(&pool, &direct("1 day", Some(&wm))).await, "daily buckets, round {round}");
    }
    // averages compose: the daily view's avg equals avg over the raw rows
    let diff: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM ts.m_daily v
         JOIN (SELECT storefront.time_bucket('1 day', at) AS b, device, avg(value) AS a FROM metrics GROUP BY 1, 2) d
           ON d.b = v.bucket AND d.device = v.device
         WHERE abs(v.avg_value - d.a) > 1e-9",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(diff, 0);
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM storefront.rollup_invalidation").fetch_one(&pool).await.unwrap();
    assert_eq!(pending, 0, "every invalidation was consumed");
}

#[tokio::test]
async fn events_partitions_and_retention() {
    let pool = fresh_db("sf_ts_events").await;
    pool.execute("SELECT storefront.ensure_event_partitions('1 day', '5 days', '2026-03-10')").await.unwrap();
    // batched ingestion and COPY land in the day partitions
    let n: i64 = sqlx::query_scalar(
        "SELECT storefront.track_events(array_fill('page_view'::text, ARRAY[600]),
                                        ARRAY(SELECT timestamptz '2026-03-05 00:00+00' + i * interval '12 minutes'
                                              FROM generate_series(0, 599) i))",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(n, 600);
    let mut copy = pool.acquire().await.unwrap();
    let mut sink = copy.copy_in_raw("COPY storefront.event (at, kind, customer_id, props) FROM STDIN").await.unwrap();
    sink.send(b"2026-03-09 10:00:00+00\tadd_to_cart\t7\t{}\n2026-03-09 11:00:00+00\tpage_view\t\\N\t{\"path\": \"/\"}\n".as_slice())
        .await
        .unwrap();
    assert_eq!(sink.finish().await.unwrap(), 2);
    drop(copy);
    let in_default: i64 = sqlx::query_scalar("SELECT count(*) FROM storefront.event_default").fetch_one(&pool).await.unwrap();
    assert_eq!(in_default, 0);
    // a day without a partition goes to the default, and moves when its partition is made
    pool.execute("SELECT storefront.track_event('page_view', '2026-03-20 08:00+00')").await.unwrap();
    let created: i32 = sqlx::query_scalar("SELECT storefront.ensure_event_partitions('0 days', '0 days', '2026-03-20 12:00+00')")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(created, 1);
    let moved: i64 = sqlx::query_scalar("SELECT count(*) FROM storefront.event_p20260320").fetch_one(&pool).await.unwrap();
    assert_eq!(moved, 1);

    // a rollup, then raw retention: the rollup keeps its buckets
    pool.execute(
        "SELECT storefront.create_rollup('ev_hourly', 'storefront.event', 'at', '1 hour', '{kind}', '{count}', 'ts');
         SELECT storefront.refresh_rollup('ev_hourly', '2026-03-10');
         SELECT storefront.set_retention('event', '2 days');",
    )
    .await
    .unwrap();
    let before: i64 = sqlx::query_scalar("SELECT sum(n)::bigint FROM ts.ev_hourly WHERE bucket < '2026-03-08'").fetch_one(&pool).await.unwrap();
    let dropped: i64 = sqlx::query_scalar("SELECT dropped FROM storefront.apply_retention('2026-03-10 00:00+00') WHERE relation = 'event'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(dropped >= 3, "dropped {dropped} partitions");
    let raw_left: i64 = sqlx::query_scalar("SELECT count(*) FROM storefront.event WHERE at < '2026-03-08'").fetch_one(&pool).await.unwrap();
    assert_eq!(raw_left, 0);
    let after: i64 = sqlx::query_scalar("SELECT sum(n)::bigint FROM ts.ev_hourly WHERE bucket < '2026-03-08'").fetch_one(&pool).await.unwrap();
    assert_eq!(after, before, "rollups survive raw retention");
    // a late event older than the horizon does not make a refresh rebuild
    // its bucket from the partial raw data that is left
    pool.execute("SELECT storefront.track_event('page_view', '2026-03-05 00:05+00'); SELECT storefront.refresh_rollup('ev_hourly', '2026-03-10');")
        .await
        .unwrap();
    let kept: i64 = sqlx::query_scalar("SELECT n FROM ts.ev_hourly_buckets WHERE bucket = '2026-03-05 00:00+00' AND kind = 'page_view'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(kept, 5);
    // rollup retention
    pool.execute("SELECT storefront.set_retention('ev_hourly', '3 days'); SELECT * FROM storefront.apply_retention('2026-03-10 00:00+00');")
        .await
        .unwrap();
    let oldest: bool = sqlx::query_scalar("SELECT min(bucket) = '2026-03-07 00:00+00' FROM ts.ev_hourly_buckets")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(oldest, "rollup retention keeps buckets from the cutoff on");
    pool.execute("SELECT storefront.drop_rollup('ev_hourly')").await.unwrap();
    let triggers: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'storefront.event'::regclass AND NOT tgisinternal")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(triggers, 0, "drop_rollup removes the source triggers");
}

#[tokio::test]
async fn time_series_bad_input_fails_cleanly() {
    let pool = fresh_db("sf_ts_bad").await;
    pool.execute(
        "CREATE TABLE metrics (at timestamptz NOT NULL, device text, value bigint, day date);
         SELECT storefront.create_rollup('m_hourly', 'metrics', 'at', '1 hour', '{device}', '{count, sum(value)}', 'ts');
         SELECT storefront.create_rollup('m_daily', 'ts.m_hourly', NULL, '1 day', '{device}', '{count, sum(value)}', 'ts');",
    )
    .await
    .unwrap();
    for (sql, code) in [
        ("SELECT storefront.time_bucket('0 seconds', now())", "22023"),
        ("SELECT storefront.time_bucket('-1 hour', now())", "22023"),
        ("SELECT storefront.time_bucket('1 month 1 day', now())", "22023"),
        ("SELECT storefront.time_bucket('-1 month', localtimestamp)", "22023"),
        ("SELECT storefront.time_bucket('1 hour', current_date)", "22023"),
        ("SELECT storefront.time_bucket('1 day', now(), 'Mars/Olympus')", "22023"),
        ("SELECT storefront.time_bucket('1 hour', timestamptz '294276-12-31 23:59:59+00', interval '-2 hours')", "22008"),
        ("SELECT * FROM storefront.time_bucket_series('1 second', '2020-01-01', '2021-01-01')", "22023"),
        ("SELECT * FROM storefront.gapfill('1 hour', now(), now() + interval '1 day', '{}', '{}', 'spline')", "22023"),
        ("SELECT * FROM storefront.gapfill('1 hour', now(), now() + interval '1 day', ARRAY[now()], '{}')", "22023"),
        ("SELECT * FROM storefront.gapfill('1 hour', now(), now() + interval '1 day', ARRAY[now(), now()], '{1, 2}')", "22023"),
        ("SELECT storefront.track_event('Page View')", "22023"),
        ("SELECT storefront.track_event('page_view', now(), NULL, '[1]')", "22023"),
        ("SELECT storefront.track_events(ARRAY['a', 'b'], ARRAY[now()])", "22023"),
        ("SELECT storefront.track_events(ARRAY['ok', 'NOT OK'], ARRAY[now(), now()])", "22023"),
        ("SELECT storefront.ensure_event_partitions('-1 day')", "22023"),
        ("SELECT storefront.create_rollup('x', 'no_such_table', 'at', '1 hour')", "42P01"),
        ("SELECT storefront.create_rollup('x', 'metrics', 'no_such_column', '1 hour')", "42703"),
        ("SELECT storefront.create_rollup('x', 'metrics', 'at', '1 hour', '{nope}')", "42703"),
        ("SELECT storefront.create_rollup('x', 'metrics', 'at', '1 hour', '{}', '{sum(nope)}')", "42703"),
        ("SELECT storefront.create_rollup('x', 'metrics', 'day', '1 hour')", "22023"),
        ("SELECT storefront.create_rollup('Bad Name', 'metrics', 'at', '1 hour')", "22023"),
        ("SELECT storefront.create_rollup('x', 'metrics', 'at', '1 hour', '{}', '{median(value)}')", "22023"),
        ("SELECT storefront.create_rollup('x', 'metrics', 'at', '0 hours')", "22023"),
        ("SELECT storefront.create_rollup('m_hourly', 'metrics', 'at', '1 hour')", "23505"),
        ("SELECT storefront.create_rollup('x', 'ts.m_hourly', NULL, '90 minutes')", "22023"),
        ("SELECT storefront.create_rollup('x', 'ts.m_hourly', NULL, '1 day', '{}', '{max(value)}')", "22023"),
        ("SELECT storefront.refresh_rollup('nope')", "42704"),
        ("SELECT storefront.drop_rollup('nope')", "42704"),
        ("SELECT storefront.drop_rollup('m_hourly')", "2BP01"),
        ("SELECT storefront.set_retention('nope', '1 day')", "42704"),
        ("SELECT storefront.set_retention('event', '-1 day')", "22023"),
    ] {
        fails_unchanged(&pool, sql, code).await;
    }
}
