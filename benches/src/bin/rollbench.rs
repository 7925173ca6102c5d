//! Rollup benchmarks, in one run on one cluster, on a year of events
//! (10M rows by default, daily partitions of storefront.event):
//! 1. a full rebuild of an hourly rollup (create + first refresh);
//! 2. the refresh after 1,000 late inserts scattered uniformly over the
//!    year (deltas merged into their buckets);
//! 3. the refresh after 1,000 scattered late updates, and after 1,000
//!    scattered late deletes (exactly their buckets re-aggregated);
//! 4. the refresh after 1% new data at the tail (the next day);
//! 5. ingestion with track_events (8 clients, 1,000 events a call) with no
//!    rollup, with two stacked rollups (1 minute -> 1 hour) attached, and
//!    with them while CALL run_maintenance() runs in a loop: throughput,
//!    and p50/p99 call latency.
//!
//!   cargo run --release -p storefront-benches --bin rollbench -- \
//!       --url postgres://postgres:storefront@127.0.0.1:28818 --out book/src/benchmarks
//!
//! Refresh timings are medians of 3 rounds; each ingestion case runs for
//! --seconds after a warm-up.

use sqlx::postgres::PgPoolOptions;
use sqlx::{Executor, PgPool};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use storefront_benches::{bar_chart, flag_pairs, percentile, timed};

struct Args {
    url: String,
    rows: i64,
    seconds: u64,
    clients: usize,
    batch: usize,
    out: Option<String>,
}

fn parse_args() -> Args {
    let mut a = Args {
        url: "postgres://postgres:storefront@127.0.0.1:28818".into(),
        rows: 10_000_000,
        seconds: 20,
        clients: 8,
        batch: 1_000,
        out: None,
    };
    let usage = "the header of benches/src/bin/rollbench.rs";
    for (flag, val) in flag_pairs(usage) {
        match flag.as_str() {
            "--url" => a.url = val,
            "--rows" => a.rows = val.parse().expect("--rows N"),
            "--seconds" => a.seconds = val.parse().expect("--seconds N"),
            "--clients" => a.clients = val.parse().expect("--clients N"),
            "--batch" => a.batch = val.parse().expect("--batch N"),
            "--out" => a.out = Some(val),
            other => panic!("unknown argument {other}; see {usage}"),
        }
    }
    a
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// `n` timestamps spread uniformly over the year, as SQL, shifted by `k`
/// seconds so each round touches different rows.
fn scattered(n: i64, k: i64) -> String {
    format!(
        "SELECT timestamptz '2025-01-01 00:00+00' + ((i::bigint * 31536000 / {n}) + {k} * 7919 % 3600) * interval '1 second'
         FROM generate_series(0, {n} - 1) i"
    )
}

/// The times of `n` rows of the load, evenly spread over the year (row
/// i * rows / n + k), as an SQL array.
fn loaded(args: &Args, n: i64, k: i64) -> String {
    let step_us = 31_536_000_000_000i64 / args.rows;
    format!(
        "ARRAY(SELECT timestamptz '2025-01-01 00:00+00' + (i::bigint * {} + {k}) * interval '{step_us} microseconds'
               FROM generate_series(0, {n} - 1) i)",
        args.rows / n
    )
}

struct Ingest {
    label: String,
    per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// `clients` sessions calling track_events with `batch` events (times NULL,
/// that is now()) for `seconds`; optionally a session running maintenance
/// in a loop meanwhile.
async fn ingest(url: &str, args: &Args, label: &str, maintenance: bool) -> Ingest {
    let pool = PgPoolOptions::new().max_connections(args.clients as u32 + 1).connect(url).await.expect("connect");
    let stop = Arc::new(AtomicBool::new(false));
    let kinds: Vec<&'static str> = (0..args.batch).map(|i| ["page_view", "add_to_cart", "checkout_started"][i % 3]).collect();
    let customers: Vec<Option<i64>> = (0..args.batch as i64).map(|i| (i % 5 != 0).then_some(i % 100_000)).collect();
    let mut tasks = Vec::new();
    let started = Instant::now();
    let warmup = Duration::from_secs(2);
    for _ in 0..args.clients {
        let pool = pool.clone();
        let stop = stop.clone();
        let kinds = kinds.clone();
        let customers = customers.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut events = 0u64;
            let times: Vec<Option<chrono::DateTime<chrono::Utc>>> = vec![None; kinds.len()];
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                sqlx::query("SELECT storefront.track_events($1, $2, $3)")
                    .bind(&kinds)
                    .bind(&times)
                    .bind(&customers)
                    .execute(&pool)
                    .await
                    .expect("track_events");
                if started.elapsed() > warmup {
                    lat.push(t.elapsed().as_micros() as u64);
                    events += kinds.len() as u64;
                }
            }
            (lat, events)
        }));
    }
    let maint = if maintenance {
        let pool = pool.clone();
        let stop = stop.clone();
        Some(tokio::spawn(async move {
            let mut runs = 0u64;
            while !stop.load(Ordering::Relaxed) {
                pool.execute("CALL storefront.run_maintenance()").await.expect("run_maintenance");
                runs += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            runs
        }))
    } else {
        None
    };
    tokio::time::sleep(warmup + Duration::from_secs(args.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    let mut events = 0u64;
    for t in tasks {
        let (l, e) = t.await.expect("client");
        lat.extend(l);
        events += e;
    }
    let runs = match maint {
        Some(m) => m.await.expect("maintenance"),
        None => 0,
    };
    lat.sort_unstable();
    let r = Ingest {
        label: label.to_string(),
        per_sec: events as f64 / args.seconds as f64,
        p50_ms: percentile(&lat, 0.50) as f64 / 1000.0,
        p99_ms: percentile(&lat, 0.99) as f64 / 1000.0,
    };
    eprintln!(
        "  {label:<46} {:>9.0} events/s  p50 {:>7.2} ms  p99 {:>7.2} ms{}",
        r.per_sec,
        r.p50_ms,
        r.p99_ms,
        if maintenance { format!("  ({runs} maintenance runs)") } else { String::new() }
    );
    pool.close().await;
    r
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args = parse_args();
    let base = args.url.trim_end_matches('/').to_string();
    let admin = PgPool::connect(&format!("{base}/postgres")).await.expect("connect");
    admin.execute("DROP DATABASE IF EXISTS sf_rollbench WITH (FORCE)").await.expect("drop");
    admin.execute("CREATE DATABASE sf_rollbench").await.expect("create");
    let url = format!("{base}/sf_rollbench");
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .after_connect(|c, _| {
            Box::pin(async move {
                c.execute("SET timezone = 'UTC'; SET jit = off").await?;
                Ok(())
            })
        })
        .connect(&url)
        .await
        .expect("connect sf_rollbench");
    pool.execute("CREATE EXTENSION storefront CASCADE").await.expect("extension");
    let mut report = String::new();
    let _ = writeln!(report, "<!-- generated by benches/src/bin/rollbench.rs; do not edit -->");

    eprintln!("loading {} events over 2025 into daily partitions", args.rows);
    let step_us = 31_536_000_000_000i64 / args.rows;
    pool.execute(
        format!(
            "SELECT storefront.ensure_event_partitions('0 days', '366 days', '2026-01-01 00:00+00');
             INSERT INTO storefront.event (at, kind, customer_id)
             SELECT timestamptz '2025-01-01 00:00+00' + i * interval '{step_us} microseconds',
                    (ARRAY['page_view', 'add_to_cart', 'checkout_started'])[1 + i % 3], i % 50000
             FROM generate_series(0, {} - 1) i;",
            args.rows
        )
        .as_str(),
    )
    .await
    .expect("load");
    pool.execute("VACUUM ANALYZE storefront.event").await.expect("vacuum");

    // -------------------------------------------------- 1. full rebuild --
    eprintln!("1. full rebuild of an hourly rollup");
    let create = "SELECT storefront.create_rollup('ev_hourly', 'storefront.event', 'at', '1 hour', '{kind}',
                                                  '{count, max(customer_id)}', 'bench')";
    let mut fulls = Vec::new();
    for r in 0..3 {
        pool.execute("SELECT storefront.drop_rollup(name) FROM storefront.rollup").await.expect("drop");
        pool.execute(create).await.expect("create");
        let t = timed(&pool, "SELECT storefront.refresh_rollup('ev_hourly', '2026-01-01 00:00+00')").await;
        eprintln!("  full rebuild {r}: {t:.2} s");
        fulls.push(t);
    }
    let full = median(fulls);

    // ---------------------------------------------- 2. 1,000 late inserts --
    eprintln!("2. refresh after 1,000 late inserts scattered over the year");
    let mut v = Vec::new();
    for r in 0..3 {
        pool.execute(
            format!("INSERT INTO storefront.event (at, kind, customer_id) SELECT t, 'page_view', 7 FROM ({}) s(t)", scattered(1000, r))
                .as_str(),
        )
        .await
        .expect("late inserts");
        let t = timed(&pool, "SELECT storefront.refresh_rollup('ev_hourly', '2026-01-01 00:00+00')").await;
        eprintln!("  round {r}: {t:.3} s");
        v.push(t);
    }
    let late_inserts = median(v);

    // ------------------------------------- 3. 1,000 late updates, deletes --
    eprintln!("3. refresh after 1,000 scattered late updates, and deletes");
    let mut ups = Vec::new();
    let mut dels = Vec::new();
    for r in 0..3 {
        // 1,000 rows of the load, evenly spread over the year
        pool.execute(
            format!("UPDATE storefront.event SET customer_id = customer_id + 1 WHERE at = ANY ({})", loaded(&args, 1000, 10 + r))
                .as_str(),
        )
        .await
        .expect("late updates");
        let t = timed(&pool, "SELECT storefront.refresh_rollup('ev_hourly', '2026-01-01 00:00+00')").await;
        eprintln!("  updates round {r}: {t:.3} s");
        ups.push(t);
        pool.execute(format!("DELETE FROM storefront.event WHERE at = ANY ({})", loaded(&args, 1000, 20 + r)).as_str())
            .await
            .expect("late deletes");
        let t = timed(&pool, "SELECT storefront.refresh_rollup('ev_hourly', '2026-01-01 00:00+00')").await;
        eprintln!("  deletes round {r}: {t:.3} s");
        dels.push(t);
    }
    let late_updates = median(ups);
    let late_deletes = median(dels);
    let touched: i64 = sqlx::query_scalar("SELECT count(*) FROM bench.ev_hourly_buckets").fetch_one(&pool).await.expect("buckets");

    // ---------------------------------------------------- 4. 1% new tail --
    eprintln!("4. refresh after 1% new data at the tail");
    let tail_rows = args.rows / 100;
    let mut v = Vec::new();
    for r in 0..3i64 {
        let day = format!("2026-01-{:02}", r + 1);
        pool.execute(
            format!(
                "SELECT storefront.ensure_event_partitions('0 days', '0 days', '{day} 12:00+00');
                 INSERT INTO storefront.event (at, kind, customer_id)
                 SELECT timestamptz '{day} 00:00+00' + i * (interval '1 day' / {tail_rows}),
                        (ARRAY['page_view', 'add_to_cart', 'checkout_started'])[1 + i % 3], i % 50000
                 FROM generate_series(0, {tail_rows} - 1) i;"
            )
            .as_str(),
        )
        .await
        .expect("tail");
        let t = timed(&pool, &format!("SELECT storefront.refresh_rollup('ev_hourly', '{day} 00:00+00'::timestamptz + interval '1 day')")).await;
        eprintln!("  round {r}: {t:.3} s");
        v.push(t);
    }
    let tail = median(v);

    let _ = writeln!(report, "### Refresh of an hourly rollup ({} events over 2025, median of 3)\n", args.rows);
    let _ = writeln!(report, "| refresh | time (s) | vs full rebuild |");
    let _ = writeln!(report, "|---|---:|---:|");
    let _ = writeln!(report, "| full rebuild (create + first refresh, {} rows) | {full:.3} | 100% |", args.rows);
    let pct = |t: f64| 100.0 * t / full;
    let _ = writeln!(report, "| after 1,000 late inserts scattered over the year | {late_inserts:.3} | {:.2}% |", pct(late_inserts));
    let _ = writeln!(report, "| after 1,000 scattered late updates | {late_updates:.3} | {:.2}% |", pct(late_updates));
    let _ = writeln!(report, "| after 1,000 scattered late deletes | {late_deletes:.3} | {:.2}% |", pct(late_deletes));
    let _ = writeln!(report, "| after 1% new data at the tail ({tail_rows} rows, the next day) | {tail:.3} | {:.2}% |", pct(tail));
    let _ = writeln!(report, "\nThe rollup has {touched} buckets (hour × kind); 1,000 scattered changes touch up to 1,000 of them.");
    let refresh_chart = bar_chart(
        "Refresh time as % of a full rebuild",
        &["1,000 late inserts", "1,000 late updates", "1,000 late deletes", "1% new tail"].iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        &["% of full rebuild"],
        &[vec![pct(late_inserts)], vec![pct(late_updates)], vec![pct(late_deletes)], vec![pct(tail)]],
        "% of full rebuild",
    );

    // ------------------------------------------------------- 5. ingest --
    eprintln!("5. ingestion, {} clients x {} events a call, {} s each", args.clients, args.batch, args.seconds);
    pool.execute(
        "SELECT storefront.drop_rollup(name) FROM storefront.rollup;
         SELECT storefront.ensure_event_partitions();",
    )
    .await
    .expect("reset");
    let none = ingest(&url, &args, "no rollup", false).await;
    pool.execute(
        "SELECT storefront.create_rollup('ev_minute', 'storefront.event', 'at', '1 minute', '{kind}', '{count, max(customer_id)}', 'bench');
         SELECT storefront.create_rollup('ev_hour', 'bench.ev_minute', NULL, '1 hour', '{kind}', '{count, max(customer_id)}', 'bench');
         SELECT storefront.refresh_rollup('ev_minute');
         SELECT storefront.refresh_rollup('ev_hour');",
    )
    .await
    .expect("stacked rollups");
    let with = ingest(&url, &args, "two stacked rollups (1 minute -> 1 hour)", false).await;
    let during = ingest(&url, &args, "the same while run_maintenance() loops", true).await;
    let _ = writeln!(
        report,
        "\n### Ingestion with rollups attached ({} clients, track_events with {} events a call, {} s each)\n",
        args.clients, args.batch, args.seconds
    );
    let _ = writeln!(report, "| case | events/s | vs no rollup | p50 (ms) | p99 (ms) | p99 vs idle |");
    let _ = writeln!(report, "|---|---:|---:|---:|---:|---:|");
    for r in [&none, &with, &during] {
        let _ = writeln!(
            report,
            "| {} | {:.0} | {:.2}× | {:.2} | {:.2} | {:.2}× |",
            r.label,
            r.per_sec,
            r.per_sec / none.per_sec,
            r.p50_ms,
            r.p99_ms,
            r.p99_ms / with.p99_ms
        );
    }
    let ingest_chart = bar_chart(
        "Ingestion: events/s (thousands) and p99 latency (ms)",
        &[none.label.clone(), "two stacked rollups".into(), "… while maintenance runs".into()],
        &["thousand events/s", "p99 ms"],
        &[
            vec![none.per_sec / 1000.0, none.p99_ms],
            vec![with.per_sec / 1000.0, with.p99_ms],
            vec![during.per_sec / 1000.0, during.p99_ms],
        ],
        "",
    );

    println!("{report}");
    if let Some(dir) = &args.out {
        std::fs::write(format!("{dir}/rollups-results.md"), &report).expect("write report");
        std::fs::write(format!("{dir}/rollups-refresh.svg"), refresh_chart).expect("write chart");
        std::fs::write(format!("{dir}/rollups-ingest.svg"), ingest_chart).expect("write chart");
        eprintln!("wrote {dir}/rollups-results.md, rollups-refresh.svg and rollups-ingest.svg");
    }
    pool.close().await;
    admin.execute("DROP DATABASE IF EXISTS sf_rollbench WITH (FORCE)").await.expect("drop");
}
