//! Order events through the relay (storefront.event_delivery = 'relay'):
//! queued in the changing transaction, sent with NOTIFY after its commit by
//! relay_order_events() or the relay worker, in order, exactly once; never
//! for a rolled-back change; bad arguments refused with nothing changed.

use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{Executor, PgPool};
use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::Duration;
use storefront_tests::*;

/// Tests that start relay workers take turns: one of them fills every
/// background worker slot on purpose.
fn worker_slots() -> &'static tokio::sync::Mutex<()> {
    static SLOTS: OnceLock<tokio::sync::Mutex<()>> = OnceLock::new();
    SLOTS.get_or_init(|| tokio::sync::Mutex::new(()))
}

/// A store with two customers and SKU A (10.00, 1000 units), whose
/// connections use relay delivery.
async fn relay_store(name: &str) -> PgPool {
    let setup = fresh_db(name).await;
    setup
        .execute(
            format!(
                "ALTER DATABASE {name} SET storefront.event_delivery = 'relay';
                 SELECT storefront.register_customer('one@example.com', 'pw', 'One');
                 SELECT storefront.register_customer('two@example.com', 'pw', 'Two');
                 SELECT storefront.upsert_product('A', 'Alpha', 1000);
                 SELECT storefront.restock('A', 1000);"
            )
            .as_str(),
        )
        .await
        .unwrap();
    setup.close().await;
    // new connections see the database's setting
    let opts = PgConnectOptions::from_str(&db_url(name)).unwrap();
    PgPoolOptions::new().max_connections(20).connect_with(opts).await.unwrap()
}

async fn queued(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM storefront.order_event_queue").fetch_one(pool).await.unwrap()
}

async fn relay(pool: &PgPool) -> i32 {
    sqlx::query_scalar("SELECT storefront.relay_order_events()").fetch_one(pool).await.unwrap()
}

async fn place(pool: &PgPool, customer: i64) -> i64 {
    sqlx::query_scalar(&format!(
        "SELECT order_id FROM storefront.place_order({customer}, '[{{\"sku\": \"A\", \"qty\": 1}}]')"
    ))
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn pay(pool: &PgPool, order_id: i64, reference: &str) {
    sqlx::query("SELECT storefront.record_payment($1, 1000, true, $2)")
        .bind(order_id)
        .bind(reference)
        .execute(pool)
        .await
        .unwrap();
}

async fn next_event(listener: &mut PgListener, within: Duration) -> Option<Value> {
    match tokio::time::timeout(within, listener.recv()).await {
        Ok(n) => Some(serde_json::from_str(n.unwrap().payload()).unwrap()),
        Err(_) => None,
    }
}

/// Queued at the change, heard only when the relay runs, in order, once;
/// a rolled-back change is never queued, so never heard.
#[tokio::test]
async fn relay_sends_committed_events_in_order() {
    let pool = relay_store("sf_relay_manual").await;
    let mut listener = PgListener::connect(&db_url("sf_relay_manual")).await.unwrap();
    listener.listen("storefront_order_events").await.unwrap();
    let mode: String = sqlx::query_scalar("SHOW storefront.event_delivery").fetch_one(&pool).await.unwrap();
    assert_eq!(mode, "relay");

    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SELECT storefront.place_order(1, '[{\"sku\": \"A\", \"qty\": 1}]')")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(queued(&pool).await, 0, "a rolled-back order left an event behind");

    let order = place(&pool, 1).await;
    pay(&pool, order, "psp-1").await;
    assert_eq!(queued(&pool).await, 2);
    // nothing is sent until a relay runs
    assert!(next_event(&mut listener, Duration::from_millis(300)).await.is_none());

    assert_eq!(relay(&pool).await, 2);
    assert_eq!(queued(&pool).await, 0);
    for (seq, status) in [(1, "pending"), (2, "paid")] {
        let e = next_event(&mut listener, Duration::from_secs(5)).await.expect("an event");
        assert_eq!(e["order_id"], json!(order));
        assert_eq!(e["seq"], json!(seq));
        assert_eq!(e["status"], json!(status));
    }
    assert_eq!(relay(&pool).await, 0);
    assert!(next_event(&mut listener, Duration::from_millis(300)).await.is_none(), "an event was sent twice");

    // the payloads are the outbox's, which stays the durable record
    let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM storefront.outbox").fetch_one(&pool).await.unwrap();
    assert_eq!(outbox, 2);

    // batches: max_events at a time, oldest first
    let o2 = place(&pool, 2).await;
    let o3 = place(&pool, 1).await;
    let sent: i32 = sqlx::query_scalar("SELECT storefront.relay_order_events(1)").fetch_one(&pool).await.unwrap();
    assert_eq!(sent, 1);
    assert_eq!(next_event(&mut listener, Duration::from_secs(5)).await.expect("event")["order_id"], json!(o2));
    assert_eq!(relay(&pool).await, 1);
    assert_eq!(next_event(&mut listener, Duration::from_secs(5)).await.expect("event")["order_id"], json!(o3));
    assert_invariants(&pool).await;
}

/// One relay at a time: while one holds the relay lock, another call sends
/// nothing and returns 0 at once, so it cannot reorder events.
#[tokio::test]
async fn one_relay_at_a_time() {
    let pool = relay_store("sf_relay_single").await;
    place(&pool, 1).await;
    let mut first = pool.begin().await.unwrap();
    let sent: i32 = sqlx::query_scalar("SELECT storefront.relay_order_events()").fetch_one(&mut *first).await.unwrap();
    assert_eq!(sent, 1);
    place(&pool, 2).await;
    assert_eq!(relay(&pool).await, 0, "a second relay ran while the first was open");
    first.commit().await.unwrap();
    assert_eq!(relay(&pool).await, 1);
}

/// Bad arguments: SQLSTATE and nothing changed (the queue included).
#[tokio::test]
async fn relay_refuses_bad_arguments() {
    let pool = relay_store("sf_relay_errors").await;
    place(&pool, 1).await;
    let e = fails_unchanged(&pool, "SELECT storefront.relay_order_events(0)", "22023").await;
    assert_eq!(e.detail.as_deref(), Some("The max_events given was 0."));
    fails_unchanged(&pool, "SELECT storefront.relay_order_events(NULL)", "22023").await;
    fails_unchanged(&pool, "SELECT storefront.start_event_relay(0)", "22023").await;
    fails_unchanged(&pool, "SELECT storefront.start_event_relay(60001)", "22023").await;
    let pid: Option<i32> =
        sqlx::query_scalar("SELECT relay_pid FROM storefront.event_relay_status()").fetch_one(&pool).await.unwrap();
    assert_eq!(pid, None, "a refused start left a worker running");
    assert_eq!(queued(&pool).await, 1);

    // the setting, once the library is loaded in a session: an enum, and
    // the superuser's (or the database's) to choose
    pool.execute("DROP ROLE IF EXISTS sf_relay_app; CREATE ROLE sf_relay_app").await.unwrap();
    let mut conn = pool.acquire().await.unwrap();
    conn.execute("LOAD 'storefront'").await.unwrap();
    let err = conn.execute("SET storefront.event_delivery = 'pigeon'").await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("22023"));
    conn.execute("SET ROLE sf_relay_app").await.unwrap();
    let err = conn.execute("SET storefront.event_delivery = 'notify'").await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("42501"));
    conn.execute("RESET ROLE").await.unwrap();
    let mode: String = sqlx::query_scalar("SHOW storefront.event_delivery").fetch_one(&mut *conn).await.unwrap();
    assert_eq!(mode, "relay");
    drop(conn);
    pool.execute("DROP ROLE sf_relay_app").await.unwrap();
}

/// The worker: one per database, delivers without anyone calling the relay,
/// keeps every order's events in order under concurrent load, and stops
/// for good when told to.
#[tokio::test]
async fn worker_delivers_every_event_once_in_order() {
    let _turn = worker_slots().lock().await;
    let pool = relay_store("sf_relay_worker").await;
    let mut listener = PgListener::connect(&db_url("sf_relay_worker")).await.unwrap();
    listener.listen("storefront_order_events").await.unwrap();

    let pid: i32 = sqlx::query_scalar("SELECT storefront.start_event_relay(5)").fetch_one(&pool).await.unwrap();
    let again: i32 = sqlx::query_scalar("SELECT storefront.start_event_relay()").fetch_one(&pool).await.unwrap();
    assert_eq!(pid, again, "a second start must return the running worker");
    let (delivery, running): (String, Option<i32>) =
        sqlx::query_as("SELECT delivery, relay_pid FROM storefront.event_relay_status()")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((delivery.as_str(), running), ("relay", Some(pid)));

    // 8 clients, each placing and paying 25 orders
    let mut tasks = Vec::new();
    for c in 0..8i64 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..25 {
                let order = place(&pool, 1 + c % 2).await;
                pay(&pool, order, &format!("psp-{c}-{i}")).await;
                ids.push(order);
            }
            ids
        }));
    }
    let mut orders = Vec::new();
    for t in tasks {
        orders.extend(t.await.unwrap());
    }
    let mut heard: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for _ in 0..orders.len() * 2 {
        let e = next_event(&mut listener, Duration::from_secs(10)).await.expect("the worker to deliver every event");
        heard.entry(e["order_id"].as_i64().unwrap()).or_default().push(e["seq"].as_i64().unwrap());
    }
    assert!(next_event(&mut listener, Duration::from_millis(300)).await.is_none(), "more events than changes");
    assert_eq!(heard.len(), orders.len());
    for o in &orders {
        assert_eq!(heard.get(o), Some(&vec![1, 2]), "events of order {o}");
    }
    assert_eq!(queued(&pool).await, 0);
    assert_invariants(&pool).await;

    let stopped: bool = sqlx::query_scalar("SELECT storefront.stop_event_relay()").fetch_one(&pool).await.unwrap();
    assert!(stopped);
    // a stopped relay stays stopped (the postmaster never restarts one)
    tokio::time::sleep(Duration::from_secs(6)).await;
    let running: Option<i32> =
        sqlx::query_scalar("SELECT relay_pid FROM storefront.event_relay_status()").fetch_one(&pool).await.unwrap();
    assert_eq!(running, None);
    let stopped: bool = sqlx::query_scalar("SELECT storefront.stop_event_relay()").fetch_one(&pool).await.unwrap();
    assert!(!stopped);
    // events wait in the queue until a relay runs again
    place(&pool, 1).await;
    assert_eq!(queued(&pool).await, 1);
}

/// A relay round that fails (here a cancel request, pg_cancel_backend) ends
/// the round, not the worker: the same process goes on delivering. (The
/// postmaster never restarts a relay, so one that ended would stay ended.)
#[tokio::test]
async fn a_failed_round_does_not_end_the_worker() {
    let _turn = worker_slots().lock().await;
    let pool = relay_store("sf_relay_cancel").await;
    let mut listener = PgListener::connect(&db_url("sf_relay_cancel")).await.unwrap();
    listener.listen("storefront_order_events").await.unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT storefront.start_event_relay(5)").fetch_one(&pool).await.unwrap();
    for _ in 0..3 {
        let cancelled: bool =
            sqlx::query_scalar("SELECT pg_cancel_backend($1)").bind(pid).fetch_one(&pool).await.unwrap();
        assert!(cancelled);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let order = place(&pool, 1).await;
    let e = next_event(&mut listener, Duration::from_secs(10)).await.expect("the relay to go on delivering");
    assert_eq!(e["order_id"], json!(order));
    let running: Option<i32> =
        sqlx::query_scalar("SELECT relay_pid FROM storefront.event_relay_status()").fetch_one(&pool).await.unwrap();
    assert_eq!(running, Some(pid), "the relay is not the same process");
    assert!(sqlx::query_scalar::<_, bool>("SELECT storefront.stop_event_relay()").fetch_one(&pool).await.unwrap());
}

/// With every background worker slot taken (max_worker_processes), starting
/// a relay fails with 53000 and changes nothing; once a slot is free again,
/// it starts.
#[tokio::test]
async fn no_free_worker_slot_is_53000() {
    let _turn = worker_slots().lock().await;
    let pool = relay_store("sf_relay_full").await;
    // one relay per database: fill the slots with relays of other databases
    let mut fillers = Vec::new();
    for i in 0..64 {
        let name = format!("sf_relay_fill_{i}");
        let p = fresh_db(&name).await;
        let started = sqlx::query_scalar::<_, i32>("SELECT storefront.start_event_relay()").fetch_one(&p).await;
        fillers.push((name, p));
        if let Err(e) = started {
            assert_eq!(sqlstate(&e).as_deref(), Some("53000"), "{e}");
            break;
        }
    }
    assert!(fillers.len() < 64, "64 relays started: max_worker_processes is not what the test cluster sets");
    let e = fails_unchanged(&pool, "SELECT storefront.start_event_relay()", "53000").await;
    assert_eq!(e.message, "could not start the event relay worker");
    assert!(e.hint.unwrap_or_default().contains("max_worker_processes"));
    let running: Option<i32> =
        sqlx::query_scalar("SELECT relay_pid FROM storefront.event_relay_status()").fetch_one(&pool).await.unwrap();
    assert_eq!(running, None);

    let admin = connect("postgres", 1).await;
    for (name, p) in fillers {
        sqlx::query("SELECT storefront.stop_event_relay()").execute(&p).await.unwrap();
        p.close().await;
        admin.execute(format!("DROP DATABASE {name} WITH (FORCE)").as_str()).await.unwrap();
    }
    // the postmaster frees a slot when it has reaped the worker
    let mut started = None;
    for _ in 0..50 {
        match sqlx::query_scalar::<_, i32>("SELECT storefront.start_event_relay()").fetch_one(&pool).await {
            Ok(pid) => {
                started = Some(pid);
                break;
            }
            Err(e) => {
                assert_eq!(sqlstate(&e).as_deref(), Some("53000"), "{e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert!(started.is_some(), "no relay could start after the slots were freed");
    assert!(sqlx::query_scalar::<_, bool>("SELECT storefront.stop_event_relay()").fetch_one(&pool).await.unwrap());
}

/// One queued event NOTIFY cannot carry (8000 bytes or more) goes out as a
/// stub naming the order, and the events after it still go out: a single
/// row can never stop delivery. (Free text in events is bounded, so only a
/// row written by other means can be this long; it used to fail every
/// relay batch from then on.)
#[tokio::test]
async fn an_oversized_event_goes_out_as_a_stub_and_delivery_goes_on() {
    let pool = relay_store("sf_relay_stub").await;
    let mut listener = PgListener::connect(&db_url("sf_relay_stub")).await.unwrap();
    listener.listen("storefront_order_events").await.unwrap();
    let first = place(&pool, 1).await;
    pool.execute(
        "UPDATE storefront.order_event_queue
         SET payload = jsonb_set(payload::jsonb, '{detail}', jsonb_build_object('note', repeat('x', 9000)))::text",
    )
    .await
    .unwrap();
    let second = place(&pool, 2).await;
    assert_eq!(relay(&pool).await, 2);
    let stub = next_event(&mut listener, Duration::from_secs(5)).await.expect("the stub");
    assert_eq!(stub["order_id"], json!(first));
    assert_eq!(stub["status"], json!("pending"));
    assert_eq!(stub["seq"], json!(1));
    assert_eq!(stub["truncated"], json!(true));
    let next = next_event(&mut listener, Duration::from_secs(5)).await.expect("the next event");
    assert_eq!(next["order_id"], json!(second));
    assert!(next.get("truncated").is_none());
    assert_eq!(queued(&pool).await, 0);
    // the outbox keeps the full event
    let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM storefront.outbox WHERE aggregateid = $1::text")
        .bind(first)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(outbox, 1);
}
