//! Scheduling with pg_cron (Debian's postgresql-15-cron): the test cluster
//! preloads pg_cron with jobs in background workers. Two jobs run every
//! minute in this database, as the book documents: expire_reservations()
//! (an order whose hold ended moves to `expired` without anyone calling
//! anything) and run_maintenance() (event partitions appear ahead, a rollup
//! is refreshed).

use sqlx::Executor;
use std::time::{Duration, Instant};
use storefront_tests::*;

#[tokio::test]
async fn pg_cron_expires_holds() {
    let db = "sf_cron";
    let pool = fresh_db(db).await;
    pool.execute(
        "SELECT storefront.register_customer('cron@example.com', 'pw', 'Cron');
         SELECT storefront.upsert_product('CRON-1', 'Cron', 100);
         SELECT storefront.restock('CRON-1', 3);",
    )
    .await
    .unwrap();
    let order: i64 = sqlx::query_scalar(
        "SELECT order_id FROM storefront.place_order(1, '[{\"sku\": \"CRON-1\", \"qty\": 2}]', NULL, '1 second')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();

    pool.execute(
        "CREATE TABLE visits (at timestamptz NOT NULL);
         INSERT INTO visits SELECT now() - i * interval '1 minute' FROM generate_series(1, 300) i;
         SELECT storefront.create_rollup('visits_5min', 'visits', 'at', '5 minutes');",
    )
    .await
    .unwrap();
    let admin = connect("postgres", 1).await;
    admin.execute("CREATE EXTENSION IF NOT EXISTS pg_cron").await.expect("pg_cron is preloaded in the test cluster");
    admin
        .execute("SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname IN ('sf-test-expire', 'sf-test-maintenance')")
        .await
        .unwrap();
    let maintenance: i64 = sqlx::query_scalar(
        "SELECT cron.schedule_in_database('sf-test-maintenance', '* * * * *',
                                          'CALL storefront.run_maintenance()', $1)",
    )
    .bind(db)
    .fetch_one(&admin)
    .await
    .unwrap();
    // the statement the book documents, in this database
    let job: i64 = sqlx::query_scalar(
        "SELECT cron.schedule_in_database('sf-test-expire', '* * * * *',
                                          'SELECT storefront.expire_reservations()', $1)",
    )
    .bind(db)
    .fetch_one(&admin)
    .await
    .unwrap();

    let started = Instant::now();
    let mut status = String::new();
    while started.elapsed() < Duration::from_secs(150) {
        status = sqlx::query_scalar("SELECT status FROM storefront.orders WHERE order_id = $1")
            .bind(order)
            .fetch_one(&pool)
            .await
            .unwrap();
        if status == "expired" {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let runs: Vec<String> = sqlx::query_scalar("SELECT status FROM cron.job_run_details WHERE jobid = $1")
        .bind(job)
        .fetch_all(&admin)
        .await
        .unwrap();
    // maintenance ran too (same minute tick): partitions ahead, rollup refreshed
    let mut refreshed = false;
    while started.elapsed() < Duration::from_secs(150) && !refreshed {
        refreshed = sqlx::query_scalar("SELECT watermark > '-infinity' FROM storefront.rollup WHERE name = 'visits_5min'")
            .fetch_one(&pool)
            .await
            .unwrap();
        if !refreshed {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    let maintenance_runs: Vec<String> = sqlx::query_scalar("SELECT status FROM cron.job_run_details WHERE jobid = $1")
        .bind(maintenance)
        .fetch_all(&admin)
        .await
        .unwrap();
    admin.execute("SELECT cron.unschedule('sf-test-expire'); SELECT cron.unschedule('sf-test-maintenance');").await.unwrap();
    assert!(refreshed, "run_maintenance did not refresh the rollup; runs: {maintenance_runs:?}");
    let partitions: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_inherits WHERE inhparent = 'storefront.event'::regclass",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(partitions >= 8, "{partitions} event partitions after maintenance");
    let materialized: i64 = sqlx::query_scalar("SELECT coalesce(sum(n), 0)::bigint FROM storefront_rollups.visits_5min_buckets")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(materialized > 0);
    assert_eq!(status, "expired", "pg_cron did not expire the order in time; job runs: {runs:?}");
    assert!(runs.iter().any(|r| r == "succeeded"), "job runs: {runs:?}");
    let available: i32 = sqlx::query_scalar("SELECT available FROM storefront.stock('CRON-1')").fetch_one(&pool).await.unwrap();
    assert_eq!(available, 3);
    assert_invariants(&pool).await;
}
