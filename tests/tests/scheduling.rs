//! Scheduling with pg_cron (Debian's postgresql-15-cron): the test cluster
//! preloads pg_cron with jobs in background workers; a job runs
//! expire_reservations() every minute in this database and an order whose
//! hold ended moves to `expired` without anyone calling anything.

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

    let admin = connect("postgres", 1).await;
    admin.execute("CREATE EXTENSION IF NOT EXISTS pg_cron").await.expect("pg_cron is preloaded in the test cluster");
    admin.execute("SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname = 'sf-test-expire'").await.unwrap();
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
    admin.execute("SELECT cron.unschedule('sf-test-expire')").await.unwrap();
    assert_eq!(status, "expired", "pg_cron did not expire the order in time; job runs: {runs:?}");
    assert!(runs.iter().any(|r| r == "succeeded"), "job runs: {runs:?}");
    let available: i32 = sqlx::query_scalar("SELECT available FROM storefront.stock('CRON-1')").fetch_one(&pool).await.unwrap();
    assert_eq!(available, 3);
    assert_invariants(&pool).await;
}
