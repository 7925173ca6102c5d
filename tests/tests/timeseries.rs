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

/// Every step of the last run_maintenance() succeeded.
async fn assert_maintenance_ok(pool: &PgPool) {
    let failed: Vec<(String, Option<String>, Option<String>)> =
        sqlx::query_as("SELECT step, sqlstate, message FROM storefront.maintenance_report(1) WHERE NOT ok")
            .fetch_all(pool)
            .await
            .unwrap();
    assert!(failed.is_empty(), "maintenance steps failed: {failed:?}");
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
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM storefront.rollup_pending").fetch_one(&pool).await.unwrap();
    assert_eq!(pending, 0, "every queued bucket was brought up to date");
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
    // a late event older than the horizon is added to its bucket (a delta),
    // which is never rebuilt from the partial raw data that is left: not
    // when the event arrives, and not when retention deletes it again
    pool.execute("SELECT storefront.track_event('page_view', '2026-03-05 00:05+00'); SELECT storefront.refresh_rollup('ev_hourly', '2026-03-10');")
        .await
        .unwrap();
    let bucket = "SELECT n FROM ts.ev_hourly_buckets WHERE bucket = '2026-03-05 00:00+00' AND kind = 'page_view'";
    let kept: i64 = sqlx::query_scalar(bucket).fetch_one(&pool).await.unwrap();
    assert_eq!(kept, 6);
    pool.execute("SELECT * FROM storefront.apply_retention('2026-03-10 00:00+00'); SELECT storefront.refresh_rollup('ev_hourly', '2026-03-10');")
        .await
        .unwrap();
    let kept: i64 = sqlx::query_scalar(bucket).fetch_one(&pool).await.unwrap();
    assert_eq!(kept, 6);
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

/// Calls whose answers TimescaleDB 2.28 gives, around DST changes: a
/// sub-day bucket at a fall-back change starts at or before its time (the
/// earlier reading of a local time that happens twice); an offset is
/// applied in absolute time around the local bucketing.
#[tokio::test]
async fn time_zone_buckets_at_dst_changes() {
    let pool = fresh_db("sf_ts_dst").await;
    for (call, want) in [
        ("time_bucket('1 hour', '2021-10-31 00:30+00', 'Europe/Berlin')", "2021-10-31 00:00:00+00"),
        ("time_bucket('1 hour', '2021-10-31 01:30+00', 'Europe/Berlin')", "2021-10-31 01:00:00+00"),
        ("time_bucket('2 hours', '2021-10-31 00:30+00', 'Europe/Berlin')", "2021-10-31 00:00:00+00"),
        ("time_bucket('1 hour', '2021-11-07 05:30+00', 'America/New_York')", "2021-11-07 05:00:00+00"),
        ("time_bucket('1 hour', '2021-11-07 06:30+00', 'America/New_York')", "2021-11-07 06:00:00+00"),
        ("time_bucket('30 minutes', '2021-04-03 14:45+00', 'Australia/Lord_Howe')", "2021-04-03 14:30:00+00"),
        ("time_bucket('30 minutes', '2021-04-03 15:10+00', 'Australia/Lord_Howe')", "2021-04-03 15:00:00+00"),
        ("time_bucket('1 hour', '2019-02-17 01:30+00', 'America/Sao_Paulo')", "2019-02-17 01:00:00+00"),
        ("time_bucket('1 day', '2021-03-28 12:00+00', 'Europe/Berlin', \"offset\" => '6 hours')", "2021-03-28 05:00:00+00"),
        ("time_bucket('1 day', '2021-03-28 03:00+00', 'Europe/Berlin', \"offset\" => '6 hours')", "2021-03-27 05:00:00+00"),
        ("time_bucket('1 day', '2021-10-31 12:00+00', 'Europe/Berlin', \"offset\" => '-30 minutes')", "2021-10-30 21:30:00+00"),
        (
            "time_bucket('1 day', '2021-03-28 12:00+00', 'Europe/Berlin', '2000-01-01 00:00+01', '6 hours')",
            "2021-03-28 05:00:00+00",
        ),
    ] {
        let got: String = sqlx::query_scalar(&format!("SELECT (storefront.{call} AT TIME ZONE 'UTC')::text || '+00'"))
            .fetch_one(&pool)
            .await
            .unwrap_or_else(|e| panic!("{call}: {e}"));
        assert_eq!(got, want, "{call}");
    }
}

/// For sub-day and day widths, in zones with one-hour, half-hour and
/// midnight DST changes, over windows around each change sampled every 5
/// minutes: every bucket holds its time (bucket <= ts < next bucket),
/// buckets never go backwards, the offset forms hold their time too, and
/// time_bucket_series lists exactly the buckets time_bucket returns.
#[tokio::test]
async fn every_time_zone_bucket_holds_its_time() {
    let pool = fresh_db("sf_ts_dst_property").await;
    let setup = "CREATE TEMP TABLE zones (zone text);
        INSERT INTO zones VALUES ('Europe/Berlin'), ('America/New_York'), ('Australia/Lord_Howe'),
                                 ('America/Sao_Paulo'), ('Asia/Amman'), ('America/Havana'), ('UTC');
        CREATE TEMP TABLE widths (width interval);
        INSERT INTO widths VALUES ('30 minutes'), ('1 hour'), ('2 hours'), ('1 day');
        CREATE TEMP TABLE windows (lo timestamptz);
        INSERT INTO windows VALUES ('2021-03-26 00:00+00'), ('2021-10-29 00:00+00'), ('2021-03-12 00:00+00'),
                                   ('2021-11-05 00:00+00'), ('2021-04-02 00:00+00'), ('2021-10-01 00:00+00'),
                                   ('2018-11-02 00:00+00'), ('2019-02-15 00:00+00'), ('2021-03-24 00:00+00'),
                                   ('2021-10-27 00:00+00');
        CREATE TEMP TABLE pts AS
          SELECT z.zone, w.width, win.lo, t.ts, storefront.time_bucket(w.width, t.ts, z.zone) AS b,
                 storefront.time_bucket(w.width, t.ts, z.zone, \"offset\" => interval '20 minutes') AS bo
          FROM zones z CROSS JOIN widths w CROSS JOIN windows win
          CROSS JOIN LATERAL generate_series(win.lo, win.lo + interval '4 days', interval '5 minutes') t(ts);";
    let mut conn = pool.acquire().await.unwrap();
    conn.execute(setup).await.unwrap();
    let (points, bad_bucket, backwards, bad_offset): (i64, i64, i64, i64) = sqlx::query_as(
        "WITH nexts AS (
           SELECT zone, width, lo, b, lead(b) OVER (PARTITION BY zone, width, lo ORDER BY b) AS nb
           FROM (SELECT DISTINCT zone, width, lo, b FROM pts) d)
         SELECT (SELECT count(*) FROM pts),
                (SELECT count(*) FROM pts JOIN nexts USING (zone, width, lo, b)
                  WHERE NOT (b <= ts AND (nb IS NULL OR ts < nb))),
                (SELECT count(*) FROM (SELECT b < lag(b) OVER (PARTITION BY zone, width, lo ORDER BY ts) AS back FROM pts) x
                  WHERE back),
                (SELECT count(*) FROM pts WHERE NOT (bo <= ts AND ts - bo < width + interval '2 hours'))",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert!(points > 100_000, "{points} points");
    assert_eq!((bad_bucket, backwards, bad_offset), (0, 0, 0), "of {points} points");
    // the series of each window lists exactly the buckets seen in it
    let mismatches: i64 = sqlx::query_scalar(
        "WITH seen AS (
           SELECT zone, width, lo, b FROM pts
           WHERE b >= storefront.time_bucket(width, lo, zone) AND b < lo + interval '4 days'
           GROUP BY 1, 2, 3, 4),
         series AS (
           SELECT z.zone, w.width, win.lo, s AS b
           FROM zones z CROSS JOIN widths w CROSS JOIN windows win
           CROSS JOIN LATERAL storefront.time_bucket_series(w.width, win.lo, win.lo + interval '4 days', z.zone) s)
         SELECT count(*) FROM ((SELECT * FROM seen EXCEPT SELECT * FROM series)
                               UNION ALL (SELECT * FROM series EXCEPT SELECT * FROM seen)) x",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert_eq!(mismatches, 0);
}

/// The date forms with an offset: like TimescaleDB, a sub-day, negative or
/// month offset is refused, and the width must be whole days (as in the
/// other date forms).
#[tokio::test]
async fn date_offsets_are_whole_days() {
    let pool = fresh_db("sf_ts_date_offset").await;
    for sql in [
        "SELECT storefront.time_bucket('1 day', date '2024-03-17', interval '1 hour')",
        "SELECT storefront.time_bucket('1 week', date '2024-03-17', interval '-1 day')",
        "SELECT storefront.time_bucket('1 week', date '2024-03-17', interval '1 month')",
        "SELECT storefront.time_bucket('1 day', date '2024-03-17', interval '1 day 1 second')",
    ] {
        let e = fails_unchanged(&pool, sql, "22023").await;
        assert_eq!(e.message, "offset for dates must be zero or more whole days", "{sql}");
    }
    let e = fails_unchanged(&pool, "SELECT storefront.time_bucket('1 hour', date '2024-03-17', interval '1 day')", "22023").await;
    assert_eq!(e.message, "bucket width for dates must be a whole number of days");
    let got: String = sqlx::query_scalar(
        "SELECT concat_ws(' ', storefront.time_bucket('1 week', date '2024-03-17', interval '2 days'),
                               storefront.time_bucket('1 month', date '2024-03-01', interval '1 day'),
                               storefront.time_bucket('1 day', date '2024-03-17', interval '0'))",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(got, "2024-03-13 2024-02-02 2024-03-17");
}

/// Event times are real times: non-finite and out-of-range ones are
/// refused at ingest (22008) by both entry points and by the table. One
/// -infinity event used to make every later run_maintenance() fail.
#[tokio::test]
async fn event_times_are_checked_at_ingest() {
    let pool = fresh_db("sf_ts_event_times").await;
    pool.execute(
        "SELECT storefront.ensure_event_partitions();
         SELECT storefront.create_rollup('views', 'storefront.event', 'at', '1 hour', '{kind}', '{count}');
         SELECT storefront.track_event('view', now() - interval '2 hours');",
    )
    .await
    .unwrap();
    pool.execute("CALL storefront.run_maintenance()").await.unwrap();
    for at in ["-infinity", "infinity", "1969-12-31 23:59:59+00", "3000-01-01 00:00+00", "4714-11-24 00:00+00 BC"] {
        let e = fails_unchanged(&pool, &format!("SELECT storefront.track_event('view', '{at}')"), "22008").await;
        assert_eq!(e.message, "event time is out of range");
        let e = fails_unchanged(
            &pool,
            &format!("SELECT storefront.track_events(ARRAY['view', 'view'], ARRAY[now(), '{at}']::timestamptz[])"),
            "22008",
        )
        .await;
        assert!(e.detail.unwrap().starts_with("Event 2 has time"));
        fails_unchanged(&pool, &format!("INSERT INTO storefront.event (at, kind) VALUES ('{at}', 'view')"), "23514").await;
    }
    pool.execute("CALL storefront.run_maintenance()").await.unwrap();
    pool.execute("CALL storefront.run_maintenance()").await.unwrap();
    assert_maintenance_ok(&pool).await;
    // the edges themselves are fine
    pool.execute(
        "SELECT storefront.track_event('view', '1970-01-01 00:00+00');
         SELECT storefront.track_event('view', '2999-12-31 23:59:59.999999+00');",
    )
    .await
    .unwrap();
    pool.execute("CALL storefront.run_maintenance()").await.unwrap();
    assert_maintenance_ok(&pool).await;
}

/// No row of a rollup's source can stop its refresh: a user table may hold
/// infinite times and times at the very edges of the timestamp range.
#[tokio::test]
async fn extreme_source_times_cannot_wedge_a_refresh() {
    let pool = fresh_db("sf_ts_extreme_rows").await;
    pool.execute(
        "CREATE TABLE readings (at timestamptz NOT NULL, value bigint NOT NULL);
         SELECT storefront.create_rollup('r_weekly', 'readings', 'at', '7 days', '{}', '{count, sum(value)}', 'ts');
         SELECT storefront.create_rollup('r_monthly', 'readings', 'at', '1 month', '{}', '{count, sum(value)}', 'ts');
         INSERT INTO readings VALUES ('2026-01-01', 1);
         SELECT storefront.refresh_rollup('r_weekly', '2026-06-01');
         SELECT storefront.refresh_rollup('r_monthly', '2026-06-01');
         INSERT INTO readings VALUES ('-infinity', 2), ('infinity', 3), ('4714-11-24 00:00+00 BC', 4),
                                     ('294276-12-31 23:59:59+00', 5), ('2025-12-31', 6);
         DELETE FROM readings WHERE value = 6;",
    )
    .await
    .unwrap();
    for _ in 0..2 {
        pool.execute(
            "SELECT storefront.refresh_rollup('r_weekly', '2026-06-01');
             SELECT storefront.refresh_rollup('r_monthly', '2026-06-01');",
        )
        .await
        .expect("refresh runs with extreme rows in the source");
        pool.execute("CALL storefront.run_maintenance()").await.expect("maintenance runs with extreme rows in the source");
        assert_maintenance_ok(&pool).await;
    }
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM storefront.rollup_pending").fetch_one(&pool).await.unwrap();
    assert_eq!(pending, 0, "every queued bucket was brought up to date");
    let total: i64 = sqlx::query_scalar("SELECT sum(sum_value)::bigint FROM ts.r_weekly").fetch_one(&pool).await.unwrap();
    assert_eq!(total, 1 + 2 + 3 + 4 + 5);
}

/// Event props go in exactly as sent: big numbers are not rounded to a
/// float on the way (track_event always kept them; track_events did not).
#[tokio::test]
async fn event_props_keep_exact_numbers() {
    let pool = fresh_db("sf_ts_exact_props").await;
    pool.execute(
        "SELECT storefront.track_events(ARRAY['view', 'view'], ARRAY[now(), now()], NULL,
           ARRAY['{\"n\": 123456789012345678901234, \"x\": 0.1000000000000000055511151231257827}',
                 '{\"deep\": [[[[[[[[[[1]]]]]]]]]]}']::jsonb[]);
         SELECT storefront.track_event('view', now(), NULL, '{\"n\": 123456789012345678901234}');",
    )
    .await
    .unwrap();
    let got: Vec<String> = sqlx::query_scalar("SELECT props->>'n' FROM storefront.event WHERE props ? 'n' ORDER BY 1")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(got, ["123456789012345678901234", "123456789012345678901234"]);
    let x: String = sqlx::query_scalar("SELECT props->>'x' FROM storefront.event WHERE props ? 'x'").fetch_one(&pool).await.unwrap();
    assert_eq!(x, "0.1000000000000000055511151231257827");
    let e = fails_unchanged(
        &pool,
        "SELECT storefront.track_events(ARRAY['view'], ARRAY[now()], NULL, ARRAY['[1]']::jsonb[])",
        "22023",
    )
    .await;
    assert_eq!(e.message, "event props must be a JSON object");
}

/// Gap filling refuses points at -infinity or infinity (22008); they used
/// to overflow the interpolation.
#[tokio::test]
async fn gapfill_refuses_infinite_points() {
    let pool = fresh_db("sf_ts_gapfill_inf").await;
    for t in ["-infinity", "infinity"] {
        for fill in ["none", "locf", "linear"] {
            let sql = format!(
                "SELECT * FROM storefront.gapfill('1 hour', '2026-01-01', '2026-01-02',
                   ARRAY['{t}', '2026-01-01 05:00+00']::timestamptz[], ARRAY[1, 2]::float8[], '{fill}')"
            );
            let e = fails_unchanged(&pool, &sql, "22008").await;
            assert_eq!(e.message, "gap filling needs finite times");
            let in_zone = format!("{}, 'Europe/Berlin')", sql.trim_end().trim_end_matches(')'));
            fails_unchanged(&pool, &in_zone, "22008").await;
        }
    }
}
